"""Checkpoints: atomic writes, ``weights_only`` loads, and errors that name the mismatching keys.

A checkpoint is a plain dict of tensors and plain containers (dict, list, tuple, str, int, float, bool,
None), so ``torch.load(path, weights_only=True)`` reads it without unpickling arbitrary objects.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional

import torch

from .._utils import write_atomically

Tensor = torch.Tensor

#: Written into every checkpoint; bumped when the layout changes.
CHECKPOINT_FORMAT = "scoresde.checkpoint/1"


def save_checkpoint(payload: Dict[str, Any], path: str) -> str:
    """Write ``payload`` to ``path`` atomically and flushed to disk (`scoresde._utils.write_atomically`): a crash
    mid-write leaves the previous file intact. Returns ``path``."""
    return write_atomically(path, lambda f: torch.save(payload, f), fsync=True)


def read_weights(path: str, map_location=None, what: str = "checkpoint") -> Any:
    """Read a ``torch.save`` file with ``torch.load(weights_only=True)``: tensors, containers and numbers only.

    A missing file raises FileNotFoundError; anything unreadable (truncated, empty, another format, or a pickle
    asking to import or run code) raises a ValueError, and ``weights_only`` refuses to execute anything while
    reading.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {what} at {path!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, or a refused global: all "not a checkpoint"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path!r} is not a valid {what} (refused without executing anything): "
                         f"{reason[:200]}") from None


def load_checkpoint(path: str, map_location=None) -> Dict[str, Any]:
    """Read a scoresde checkpoint safely (`read_weights`) and check its format; tensors go to ``map_location``."""
    payload = read_weights(path, map_location, what="scoresde checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{os.fspath(path)!r} is not a valid scoresde checkpoint: expected format "
                         f"{CHECKPOINT_FORMAT!r}, got {got!r}")
    return payload


def check_state_dict(expected: Mapping[str, Tensor], received: Mapping[str, Tensor], what: str = "model",
                     limit: int = 10) -> None:
    """Raise a ValueError naming missing, unexpected and shape-mismatching keys of a state dict.

    ``expected`` is the state dict of the module being loaded into; ``received`` comes from a checkpoint.
    """
    missing = [k for k in expected if k not in received]
    unexpected = [k for k in received if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(received[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in received and tuple(received[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return

    def listed(items):
        more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    parts = []
    if missing:
        parts.append(f"missing keys (in the {what}, not the checkpoint): {listed(missing)}")
    if unexpected:
        parts.append(f"unexpected keys (in the checkpoint, not the {what}): {listed(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches: {listed(shapes)}")
    raise ValueError(f"checkpoint does not match the {what} (a different architecture?): " + "; ".join(parts))


def rng_state(device: Optional[torch.device] = None) -> Dict[str, Any]:
    """The global torch RNG states: CPU, plus the accelerator's when ``device`` is one (e.g. CUDA)."""
    state: Dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states saved by `rng_state` (an accelerator state only where one is available)."""
    torch.set_rng_state(state["torch_cpu"].cpu())
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["torch_cuda"]])


# -- a Trainer's whole state ---------------------------------------------------------------------------------
def trainer_state(trainer) -> Dict[str, Any]:
    """Everything a `scoresde.Trainer` needs to continue exactly: model, EMA (and the snapshot EMAs), optimizer,
    step, the RNG states (global and the loss generator), the batch iterator, config, history, AMP scaler."""
    extra = trainer._extra_emas()
    return {
        "format": CHECKPOINT_FORMAT,
        "step": trainer.global_step,
        "model": trainer.model.state_dict(),
        "ema": trainer.ema.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "rng": {**rng_state(trainer.device), "loss_generator": trainer.loss_generator.get_state()},
        "data": trainer.batches.state_dict(),
        "config": trainer.config.to_dict(),
        **({} if _sample_shape(trainer) is None else {"sample_shape": _sample_shape(trainer)}),
        "history": list(trainer.history),
        **({} if trainer.scaler is None else {"scaler": trainer.scaler.state_dict()}),
        **({"snapshot_emas": [ema.state_dict() for ema in extra]} if extra else {}),
    }


def _sample_shape(trainer) -> Optional[list]:
    """The per-sample shape D of the trainer's data (for `scoresde.load` of a run trained from Python)."""
    x = getattr(getattr(trainer, "dataset", None), "x", None)
    return None if x is None else [int(s) for s in x.shape[1:]]


def check_trainer_state(trainer, state: Mapping[str, Any]) -> None:
    """A ValueError naming what does not fit (architecture, EMAs, optimizer, batch iterator) before anything of
    ``state`` is loaded into ``trainer``."""
    missing = [k for k in ("step", "model", "ema", "optimizer", "rng", "data") if k not in state]
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(missing)}: not a training checkpoint of scoresde")
    check_state_dict(trainer.model.state_dict(), state["model"], what="model")
    check_state_dict(trainer.ema.shadow, state["ema"]["shadow"], what="EMA")
    extra = [ema.power for ema in trainer._extra_emas()]
    stored = [s.get("power") for s in state.get("snapshot_emas", [])]
    if extra != stored:
        raise ValueError(f"checkpoint's snapshot EMAs have powers {stored}; this run tracks {extra} beside its EMA "
                         f"(ema_snapshot_powers must be those of the run being resumed)")
    for s in state.get("snapshot_emas", []):
        check_state_dict(trainer.ema.shadow, s["shadow"], what="snapshot EMA")
    groups = state["optimizer"].get("param_groups", [])
    ours = trainer.optimizer.param_groups
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in ours]:
        raise ValueError(f"checkpoint's optimizer has parameter groups of sizes {[len(g['params']) for g in groups]};"
                         f" this trainer's has {[len(g['params']) for g in ours]} (another optimizer?)")
    data, batches = state["data"], trainer.batches
    if bool(data["fresh"]) != batches.fresh:            # the batch size may change (RESUMABLE_FIELDS), the mode not
        raise ValueError(f"checkpoint's batch iterator has fresh={data['fresh']} (batch_size={data['batch_size']}); "
                         f"this run has fresh={batches.fresh} (batch_size={batches.batch_size})")


def load_trainer_state(trainer, state: Mapping[str, Any]) -> None:
    """Restore ``trainer`` from `trainer_state` after `check_trainer_state`: nothing is loaded unless all fits."""
    check_trainer_state(trainer, state)
    trainer.model.load_state_dict(state["model"])
    trainer.ema.load_state_dict(state["ema"])
    for ema, s in zip(trainer._extra_emas(), state.get("snapshot_emas", [])):
        ema.load_state_dict(s)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.global_step = int(state["step"])
    set_rng_state(state["rng"])
    trainer.loss_generator.set_state(state["rng"]["loss_generator"].cpu())
    # The epoch position stays valid with another batch size: the next batch starts where the last one ended.
    trainer.batches.load_state_dict({**state["data"], "batch_size": trainer.batches.batch_size})
    trainer.history = [dict(r) for r in state.get("history", [])]
    if trainer.scaler is not None and "scaler" in state:
        trainer.scaler.load_state_dict(state["scaler"])


def truncate_metrics(path: str, step: int) -> None:
    """Keep the records of a ``metrics.jsonl`` up to ``step`` (atomically), so that a resumed run does not repeat
    the ones an interrupted run wrote after its checkpoint; no file: nothing to do."""
    if not os.path.isfile(path):
        return
    with open(path) as fh:
        lines = fh.readlines()
    kept = []
    for line in lines:
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, AttributeError):
            continue                              # a torn last line from the kill
    if len(kept) == len(lines):
        return
    write_atomically(path, lambda fh: fh.writelines(kept), binary=False)
