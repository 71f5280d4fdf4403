"""StopOnSignal: the preemption context the Trainer's loop runs in."""
import os
import signal

import pytest

from scoresde.training.signals import StopOnSignal


def test_a_signal_becomes_a_request_a_second_one_interrupts_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        assert not stop.requested and stop.name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    with StopOnSignal() as again:                     # a fresh context forgets the last signal
        assert not again.requested
