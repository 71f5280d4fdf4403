"""Conditional scores of a model called ``model(x, t, cond)``: the labels bound, and classifier-free guidance (Ho &
Salimans 2022), which tilts the conditional law,

    s_w = (1 + w) ∇ log p_t(x | c) − w ∇ log p_t(x) = ∇ log [p_t(x | c)^{1+w} p_t(x)^{−w}],

the same formula on ε, x0 or v at fixed (x, t) (each is affine in the score with weights summing to one).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .._utils import check_same_shape
from ..score import Score, as_score
from .labels import Labels, check_labels

Tensor = torch.Tensor


def _require_conditional(model, what: str) -> int:
    if not callable(model):
        raise TypeError(f"{what}: model must be a callable model(x, t, cond); got {type(model).__name__}")
    k = getattr(model, "num_classes", None)
    if k is None:
        raise ValueError(f"{what} needs a conditional model, called model(x, t, cond) with a num_classes "
                         f"attribute (e.g. sd.ScoreModel(sd.nets.MLP(2, num_classes=8), sde)); "
                         f"{type(model).__name__} has no num_classes")
    return int(k)


def conditional_score(model, cond: Labels) -> Score:
    """``(x, t) -> model(x, t, cond)``: the conditional score ∇ log p_t(x | c) with the labels bound.

    ``cond``: one class for every sample (an int) or (B,) long indices matching the batch of every call (the
    null index ``num_classes`` gives the unconditional score).
    """
    num_classes = _require_conditional(model, "conditional_score")

    def score(x: Tensor, t: Tensor) -> Tensor:
        labels = check_labels(cond, x.shape[0], num_classes, device=x.device)
        return check_same_shape(model(x, t, labels), x, what="model")

    return as_score(model).wrap(score)


def classifier_free_guidance(model, cond: Labels, scale: float, null_cond: Optional[int] = None) -> Score:
    """``(x, t) -> (1 + w) model(x, t, c) − w model(x, t, ∅)`` with w = ``scale``, in one network call on a doubled
    batch (w = 0: the conditional model alone, one call on B rows).

    Args:
        model: a conditional score model ``model(x, t, cond)`` (e.g. a `scoresde.ScoreModel` over a net with
            ``num_classes``), trained with label dropout so that ``model(x, t, ∅)`` is the unconditional score.
        cond: one class (an int) or (B,) long indices, in 0 … K − 1.
        scale: the guidance weight w ≥ 0 (w = −1 would be the unconditional model; values in [−1, 0) are
            allowed and interpolate towards it).
        null_cond: the index of ∅ (default ``model.num_classes``).
    """
    num_classes = _require_conditional(model, "classifier_free_guidance")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < -1:
        raise ValueError(f"scale (the guidance weight w) must be a finite number >= -1 (usually >= 0); got {scale!r}")
    null = num_classes if null_cond is None else int(null_cond)
    w = float(scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        labels = check_labels(cond, x.shape[0], num_classes, device=x.device, null_allowed=False)
        if w == 0:
            return check_same_shape(model(x, t, labels), x, what="model")
        t = t.reshape(-1).expand(x.shape[0]) if torch.is_tensor(t) else torch.full(
            (x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, null)]))
        conditional, unconditional = check_same_shape(both, torch.cat([x, x]), what="model").chunk(2)
        return (1 + w) * conditional - w * unconditional

    inner = as_score(model)
    return inner.wrap(guided, network_evaluations=inner.network_evaluations * (1 if w == 0 else 2))
