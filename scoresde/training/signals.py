"""Preemption: SIGTERM and SIGINT turned into a request to stop at the end of the current step.

    with StopOnSignal() as stop:
        while ...:
            step()
            if stop.requested:      # SLURM preemption, scancel, Ctrl-C: finish the step, checkpoint, leave
                break

A second signal while one is pending interrupts at once (KeyboardInterrupt). Handlers can only be installed from
the main thread; elsewhere the context does nothing (``requested`` stays False). The previous handlers are put
back on exit, whatever happens inside.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

#: The signals that request a stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    """A context in which SIGTERM/SIGINT set `signum` (the first one received) instead of ending the process."""

    def __init__(self, signals=STOP_SIGNALS):
        self.signals = tuple(signals)
        self.signum: Optional[int] = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signum is not None

    @property
    def name(self) -> str:
        """The signal's name ("SIGTERM", "SIGINT"; SIGTERM when none arrived)."""
        return signal.Signals(self.signum if self.signum is not None else signal.SIGTERM).name

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:               # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopOnSignal":
        self.signum = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
