"""Class labels of a conditional model: checked (B,) long indices in [0, K], K = ``num_classes`` the null label ∅,
and label dropout for classifier-free training."""
from __future__ import annotations

from typing import Optional, Union

import torch

from .._registry import signature_parameters

Tensor = torch.Tensor
Labels = Union[int, Tensor]


def check_labels(cond: Labels, batch: int, num_classes: Optional[int], device=None,
                 null_allowed: bool = True) -> Tensor:
    """``cond`` as a (batch,) long tensor on ``device``, checked: one int (or a 0-d tensor) is repeated.

    Valid values are 0 … K − 1, plus K (the null label ∅) when ``null_allowed``; without a K
    (``num_classes`` None) only non-negativity is checked.
    """
    if isinstance(cond, bool):
        raise TypeError(f"cond must be class indices (an int or a (B,) long tensor); got {cond!r}")
    if isinstance(cond, int):
        cond = torch.full((batch,), cond, dtype=torch.long, device=device)
    elif torch.is_tensor(cond):
        if cond.is_floating_point() or cond.is_complex() or cond.dtype == torch.bool:
            raise TypeError(f"cond must hold integer class indices (dtype torch.long); got dtype {cond.dtype} "
                            f"(use cond.long())")
        if cond.dim() == 0 or (tuple(cond.shape) == (1,) and batch != 1):
            cond = cond.reshape(()).expand(batch)              # one class for every sample
        if tuple(cond.shape) != (batch,):
            raise ValueError(f"cond must have shape (B,) = ({batch},), one class per sample; got {tuple(cond.shape)}")
        cond = cond.to(device=device, dtype=torch.long)
    else:
        raise TypeError(f"cond must be class indices (an int or a (B,) long tensor); got {type(cond).__name__}")
    top = None if num_classes is None else int(num_classes) + (1 if null_allowed else 0)
    low, high = int(cond.min()), int(cond.max())
    if low < 0 or (top is not None and high >= top):
        valid = "any index >= 0" if top is None else (
            f"0 … {num_classes - 1}" + (f", or {num_classes} for no label (∅)" if null_allowed else ""))
        raise ValueError(f"cond must hold class indices in {valid}; got values in [{low}, {high}]")
    return cond


def model_classes(model) -> Optional[int]:
    """K of a conditional model (one called ``model(x, t, cond)`` with a ``num_classes`` attribute), else None."""
    k = getattr(model, "num_classes", None)
    if k is None:
        return None
    fn = model.forward if isinstance(model, torch.nn.Module) else model
    return int(k) if "cond" in signature_parameters(fn) else None


def drop_labels(cond: Tensor, probability: float, null_cond: int,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """Replace each label by ``null_cond`` (∅) with the given probability (label dropout for classifier-free
    training): `scoresde.guidance.drop_cond` on labels."""
    from .condition import drop_cond

    return drop_cond(cond, probability, int(null_cond), generator=generator)
