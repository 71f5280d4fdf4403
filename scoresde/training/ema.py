"""Exponential moving average of a model's weights, with a decay warm-up."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional

import torch
from torch import nn

Tensor = torch.Tensor


class EMA:
    """Exponential moving average θ̄ ← d θ̄ + (1 − d) θ of every floating-point entry of a state dict.

    With ``warmup`` the decay of the n-th update (n = 0, 1, …) is d_n = min(decay, (1 + n)/(10 + n)), so the
    average is not dominated by the random initialisation early in training. Integer buffers (e.g. counters)
    are copied, not averaged.

    Args:
        model: the module whose weights are averaged.
        decay: the asymptotic decay d in [0, 1).
        warmup: use the decay warm-up above.

    Example:
        ema = sd.EMA(model, decay=0.999)
        ...; optimizer.step(); ema.update()
        with ema.average_parameters():
            samples = sampler.sample(sde, model, shape)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must be in [0, 1); got {decay!r}")
        self.model = model
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: Dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next `update` uses: min(decay, (1 + n)/(10 + n)) with warm-up, else decay."""
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
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore from `state_dict`; a ValueError names keys that do not match the model."""
        from .checkpoint import check_state_dict

        check_state_dict(self.shadow, state["shadow"], what="EMA")
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)
