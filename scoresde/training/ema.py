"""Moving averages of a model's weights: exponential with a decay warm-up, EDM's half-life in samples with a
ramp-up, and EDM2's power-function profile."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional

import torch
from torch import nn

Tensor = torch.Tensor


class EMA:
    """Exponential moving average θ̄ ← d θ̄ + (1 − d) θ of every floating-point entry of a state dict.

    The decay d_n of the n-th update (n = 0, 1, …) is one of:

    - exponential (default): ``decay``, with ``warmup`` min(decay, (1 + n)/(10 + n)), so that the average is not
      dominated by the random initialisation early in training;
    - ``half_life`` (EDM, Karras et al. 2022): 0.5^{B/h_n} with B = ``batch_size`` samples per update and the
      half-life h_n = min(half_life, rampup · (n + 1) B) in samples (the ramp-up keeps it a fraction of the
      samples seen);
    - ``power`` γ (EDM2, Karras et al. 2024): (1 − 1/(n + 1))^{γ+1}. The average after N updates then weighs update
      τ = 1 … N by exactly (τ^{γ+1} − (τ − 1)^{γ+1})/N^{γ+1}, the power function (γ + 1) τ^γ / N^{γ+1} integrated
      over each step; γ = 0 is the running mean.

    Integer buffers (e.g. counters) are copied, not averaged.

    Args:
        model: the module whose weights are averaged.
        decay: the asymptotic decay d in [0, 1) of the exponential profile.
        warmup: use the decay warm-up above.
        half_life: EDM's half-life in samples (None: not this profile).
        rampup: EDM's ramp-up ratio (0: none).
        batch_size: samples per update, for ``half_life``.
        power: EDM2's γ > −1 (None: not this profile).

    Example:
        ema = sd.EMA(model, decay=0.999)
        ...; optimizer.step(); ema.update()
        with ema.average_parameters():
            samples = sampler.sample(sde, model, shape)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True,
                 half_life: Optional[float] = None, rampup: float = 0.05, batch_size: int = 1,
                 power: Optional[float] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must be in [0, 1); got {decay!r}")
        if half_life is not None and power is not None:
            raise ValueError("give half_life (EDM) or power (EDM2), not both")
        if half_life is not None and not float(half_life) > 0:
            raise ValueError(f"half_life must be a positive number of samples; got {half_life!r}")
        if power is not None and not float(power) > -1:
            raise ValueError(f"power (EDM2's γ) must be > −1; got {power!r}")
        if not float(rampup) >= 0 or int(batch_size) < 1:
            raise ValueError(f"need rampup >= 0 and batch_size >= 1; got {rampup!r}, {batch_size!r}")
        self.model = model
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.half_life = None if half_life is None else float(half_life)
        self.rampup, self.batch_size = float(rampup), int(batch_size)
        self.power = None if power is None else float(power)
        self.num_updates = 0
        self.shadow: Dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next `update` uses (the class docstring's profiles)."""
        n = self.num_updates
        if self.power is not None:
            return (1.0 - 1.0 / (n + 1)) ** (self.power + 1)
        if self.half_life is not None:
            life = self.half_life
            if self.rampup > 0:
                life = min(life, self.rampup * (n + 1) * self.batch_size)
            return 0.5 ** (self.batch_size / max(life, 1e-12))
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    @torch.no_grad()
    def update(self) -> None:
        """θ̄ ← d θ̄ + (1 − d) θ for the model's current weights θ."""
        d = self.current_decay()
        for key, value in self.model.state_dict().items():
            avg = self.shadow[key]
            if avg.is_floating_point():
                avg.lerp_(value.detach(), 1.0 - d)
            else:
                avg.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: Optional[nn.Module] = None) -> None:
        """Write the averaged weights into ``model`` (default: the tracked model)."""
        (self.model if model is None else model).load_state_dict(self.shadow, strict=True)

    @contextlib.contextmanager
    def average_parameters(self, model: Optional[nn.Module] = None) -> Iterator[nn.Module]:
        """Temporarily swap the averaged weights into ``model`` (default: the tracked one); restore on exit."""
        model = self.model if model is None else model
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=True)

    def state_dict(self) -> Dict[str, object]:
        """Decay settings, update count and the averaged tensors (plain containers only)."""
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "half_life": self.half_life, "rampup": self.rampup, "batch_size": self.batch_size,
                "power": self.power, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore from `state_dict`; a ValueError names keys that do not match the model."""
        from .checkpoint import check_state_dict

        check_state_dict(self.shadow, state["shadow"], what="EMA")
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        self.half_life, self.power = state.get("half_life"), state.get("power")
        self.rampup, self.batch_size = float(state.get("rampup", 0.05)), int(state.get("batch_size", 1))
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)
