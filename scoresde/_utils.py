"""Small shared helpers: broadcasting per-sample scalars and validating (x, t)."""
from __future__ import annotations

from typing import Callable, Union

import torch

Number = Union[float, int]
#: A score function ``score(x, t)``: x of shape (B, *D), t of shape (B,), returns x's shape.
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def expand_like(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector ``v`` of shape (B,) to (B, 1, ..., 1) so it broadcasts against ``x`` (B, *D)."""
    return v.reshape(v.shape + (1,) * (x.dim() - v.dim()))


def as_time(t, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    """Return ``t`` as a (B,) tensor on x's device and dtype.

    A Python number or a 0-dim tensor is broadcast to the batch; anything else must have shape (B,)
    with B = x.shape[0], otherwise a ValueError states the expected and received shapes.
    """
    if x.dim() == 0:
        raise ValueError("x must have a batch dimension, shape (B, *D); got a 0-dim tensor")
    batch = x.shape[0]
    if not torch.is_tensor(t):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(
            f"{name} must have shape (B,) = ({batch},) to match x of shape {tuple(x.shape)}; "
            f"got {name} of shape {tuple(t.shape)}"
        )
    return t.to(device=x.device, dtype=x.dtype) if x.is_floating_point() else t


def check_time_vector(t: torch.Tensor, name: str = "t") -> torch.Tensor:
    """Check that ``t`` is a 1-D tensor (B,) and return it."""
    if not torch.is_tensor(t):
        t = torch.as_tensor(t, dtype=torch.get_default_dtype())
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ValueError(f"{name} must have shape (B,); got shape {tuple(t.shape)}")
    return t


def check_choice(value: str, choices, what: str) -> str:
    """Raise a ValueError naming the valid choices when ``value`` is not one of them."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {what} {value!r}; valid choices: {valid}")
    return value


def check_same_shape(out: torch.Tensor, x: torch.Tensor, what: str = "score") -> torch.Tensor:
    """Raise a ValueError if a callable's output does not have x's shape."""
    if not torch.is_tensor(out) or out.shape != x.shape:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"{what}(x, t) must return a tensor of x's shape {tuple(x.shape)}; got {got}")
    return out
