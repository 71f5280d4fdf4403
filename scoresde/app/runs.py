"""A training run on disk (``config.yaml`` + ``checkpoint.pt``, as ``scoresde train`` and the demo write them),
rebuilt in Python:

    run = sd.load("runs/8g/checkpoint.pt")        # or the run's folder
    res = sd.DPMSolver(steps=20).sample(run.sde, run.model, (1000,) + run.sample_shape)

A run trained from Python with `scoresde.Trainer` has no ``config.yaml`` (its SDE and network are Python objects):
pass them, ``sd.load(path, sde=sde, model=model)``, and the checkpoint's weights are loaded into ``model``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import yaml

from ..training import EMA
from ..training.checkpoint import check_state_dict, load_checkpoint
from .config import SAMPLE_SHAPE_KEY, ConfigError, RunConfig, build_model, build_sde

CONFIG_NAME = "config.yaml"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class Run:
    """A loaded run.

    Attributes:
        sde: the forward SDE of the run.
        model: the score model (EMA weights unless ``ema=False``), in eval mode on the requested device.
        config: the run's `scoresde.app.config.RunConfig` (None for a run loaded with ``sde=`` and ``model=``).
        sample_shape: the per-sample shape D of its data.
        step: the number of training steps the checkpoint holds.
    """

    sde: Any
    model: torch.nn.Module
    config: Optional[RunConfig]
    sample_shape: Tuple[int, ...]
    step: int

    def __repr__(self) -> str:
        net = getattr(self.model, "net", self.model)
        params = sum(p.numel() for p in self.model.parameters())
        data = "" if self.config is None else f", data {self.config.data.get('name')!r}"
        return (f"Run({type(self.sde).__name__}, {type(net).__name__} with {params:,} parameters, step {self.step}"
                f"{data}, sample_shape {tuple(self.sample_shape)})")


def _checkpoint_path(checkpoint: str) -> str:
    if os.path.isdir(checkpoint):
        checkpoint = os.path.join(checkpoint, CHECKPOINT_NAME)
    if not os.path.isfile(checkpoint):
        raise ConfigError(f"checkpoint {checkpoint!r} does not exist")
    return checkpoint


def read_run(checkpoint: str) -> Tuple[RunConfig, Tuple[int, ...], Dict[str, Any]]:
    """The run config saved next to ``checkpoint``, the per-sample shape and the checkpoint itself."""

    checkpoint = _checkpoint_path(checkpoint)
    config_path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise ConfigError(f"no {CONFIG_NAME} next to checkpoint {checkpoint!r} (it is written by `scoresde train`; "
                          f"a run trained from Python with sd.Trainer has none): pass the run's SDE and a model of "
                          f"its architecture, sd.load(path, sde=..., model=...)")
    with open(config_path) as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path!r} must hold a mapping of sections; got {type(raw).__name__}")
    shape = tuple(raw.pop(SAMPLE_SHAPE_KEY, ()) or ())
    cfg = RunConfig.from_dict(raw)
    state = load_checkpoint(checkpoint, map_location="cpu")
    return cfg, shape, state


def load(path: str, device: str = "cpu", ema: bool = True, sde: Any = None,
         model: Optional[torch.nn.Module] = None) -> Run:
    """Rebuild a run from its checkpoint (or its folder): the SDE, the model with the EMA weights (``ema=True``)
    or the raw ones, the config and the sample shape. The checkpoint is read with ``weights_only=True``.

    Args:
        path: the checkpoint or the run's folder.
        device: where the model goes.
        ema: load the EMA weights (True) or the raw ones.
        sde: with ``model``, the run's SDE, for a run without ``config.yaml`` (one trained from Python with
            `scoresde.Trainer`); the config is then None.
        model: with ``sde``, a score model of the run's architecture; the checkpoint's weights are loaded into it
            (a ValueError names the keys that do not match).
    """

    if (sde is None) != (model is None):
        raise ValueError(f"pass both sde= and model= (the run's SDE and a model of its architecture), or neither; "
                         f"got sde={'None' if sde is None else type(sde).__name__}, "
                         f"model={'None' if model is None else type(model).__name__}")
    if model is not None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module score model; got {type(model).__name__}")
        checkpoint = _checkpoint_path(os.fspath(path))
        state = load_checkpoint(checkpoint, map_location="cpu")
        cfg, shape = None, tuple(state.get("sample_shape", ()) or ())
    else:
        cfg, shape, state = read_run(os.fspath(path))
        sde = build_sde(cfg)
        model = build_model(cfg, sde, shape)
    check_state_dict(model.state_dict(), state["model"], what="model")
    model.load_state_dict(state["model"])
    if ema and "ema" in state:
        average = EMA(model)
        average.load_state_dict(state["ema"])
        average.copy_to(model)
    model.to(device).eval()
    return Run(sde=sde, model=model, config=cfg, sample_shape=shape, step=int(state.get("step", 0)))
