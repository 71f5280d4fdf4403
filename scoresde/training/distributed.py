"""Process-group set-up for ``torchrun``: NCCL on GPU, gloo on CPU.

``torchrun --nproc_per_node=N -m scoresde train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; a plain run has none
of them and gets a single-process context that does nothing. A script of one's own that trains under torchrun
ends with ``context.close()`` and then `exit_process` (as the CLI does), so that no rank aborts at exit.
"""
from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

_joined = False  # this process initialised a process group (see `exit_process`)


@dataclass
class DistributedContext:
    """Where this process sits in a (possibly single-process) run.

    Attributes:
        rank: as set by torchrun (0, 1, 0 for a plain run).
        world_size: as ``rank``.
        local_rank: as ``rank``.
        device: the device this process trains on (``cuda:<local_rank>`` for multi-GPU runs).
        backend: "nccl", "gloo", or None when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Optional[str] = None
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes checkpoints, figures and logs."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: Optional[str] = None) -> "DistributedContext":
        """Read torchrun's environment and initialise the process group when WORLD_SIZE > 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=device)

        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        wants_cuda = device is None or str(device).startswith("cuda")
        if wants_cuda and torch.cuda.is_available():
            backend, device = "nccl", f"cuda:{local}"
            torch.cuda.set_device(local)
        else:
            backend, device = "gloo", "cpu" if device is None or str(device).startswith("cuda") else device
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
            atexit.register(_destroy_at_exit)
            global _joined
            _joined = True
        return cls(rank=rank, world_size=world, local_rank=local, device=device, backend=backend)

    def close(self) -> None:
        """Tear the process group down (no-op for a single process)."""
        if self.enabled:

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a torchrun rank with ``code`` without interpreter finalization; return if this process never joined a
    process group (a plain run exits normally).

    Gloo's worker threads release finished work objects on their own; one released while Python finalizes needs
    the GIL, cannot get it and aborts the rank (SIGABRT, "terminate called without an active exception") after it
    has trained and written everything. Seen about once in 20-40 runs of a 2-process run on a loaded 2-core
    machine, in ``c10d::ProcessGroupGloo::runLoop`` -> ``~AsyncWork`` -> ``gil_scoped_acquire`` during
    ``Py_FinalizeEx``. Every file is closed by then (checkpoints are written atomically, metrics per record), so
    the streams are flushed and the process leaves with ``os._exit``.
    """

    if not (_joined and dist.is_available()):
        return
    _destroy_at_exit()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover - a closed stream
            pass
    os._exit(code)


def _destroy_at_exit() -> None:
    """Tear down a process group still alive at interpreter exit (a rank that stopped on an error skips `close`):
    exiting with live gloo threads aborts the process (SIGABRT, "terminate called without an active exception")
    and hides its own exit status and message."""

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # pragma: no cover - best effort at exit
            pass
