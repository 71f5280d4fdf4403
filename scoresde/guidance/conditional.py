"""Conditional scores of a model called ``model(x, t, cond)`` (or ``model(x, t, **cond)``): the condition bound,
and classifier-free guidance (Ho & Salimans 2022), which tilts the conditional law,

    s_w = (1 + w) ∇ log p_t(x | c) − w ∇ log p_t(x) = ∇ log [p_t(x | c)^{1+w} p_t(x)^{−w}],

the same formula on ε, x0 or v at fixed (x, t) (each is affine in the score with weights summing to one).
"""
from __future__ import annotations

import math

import torch

from .._utils import check_same_shape
from ..score import Score, as_score
from .condition import Cond, call_model, check_cond, concat_cond, label_count, model_null, null_condition

Tensor = torch.Tensor


def _check_model(model, what: str) -> None:
    if not callable(model):
        raise TypeError(f"{what}: model must be a callable model(x, t, cond); got {type(model).__name__}")


def conditional_score(model, cond: Cond) -> Score:
    """``(x, t) -> model(x, t, cond)``: the conditional score ∇ log p_t(x | c) with the condition bound.

    ``cond`` (see `scoresde.guidance.condition`): class labels (an int or (B,) long indices; the null index
    ``num_classes`` gives the unconditional score), any tensor (B, ...) or (1, ...) passed as the third argument,
    or a dict spread as keyword arguments ``model(x, t, **cond)``. Its batch must match every call's.
    """
    _check_model(model, "conditional_score")
    if cond is None:
        raise ValueError("conditional_score needs a condition; for the unconditional score use the model itself")
    num_classes = label_count(model)

    def score(x: Tensor, t: Tensor) -> Tensor:
        c = check_cond(cond, x.shape[0], model=model, num_classes=num_classes, device=x.device)
        return check_same_shape(call_model(model, x, t, c), x, what="model")

    return as_score(model).wrap(score)


def classifier_free_guidance(model, cond: Cond, scale: float, null_cond=None) -> Score:
    """``(x, t) -> (1 + w) model(x, t, c) − w model(x, t, ∅)`` with w = ``scale``, in one network call on a doubled
    batch (w = 0: the conditional model alone, one call on B rows).

    Args:
        model: a conditional score model, ``model(x, t, cond)`` (or ``model(x, t, **cond)`` for a dict), trained
            with condition dropout so that ``model(x, t, ∅)`` is the unconditional score.
        cond: class labels in 0 … K − 1 (an int or (B,) long), a tensor (B, ...) or (1, ...), or a dict of them.
        scale: the guidance weight w ≥ 0 (w = −1 would be the unconditional model; values in [−1, 0) are
            allowed and interpolate towards it).
        null_cond: ∅ — an index for labels, a tensor broadcastable to cond's shape (a zero or learned null
            embedding), or a dict of them with cond's keys. Default: the model's ``null_cond`` attribute, else its
            ``num_classes`` (the null label); a model with neither needs it given.
    """
    _check_model(model, "classifier_free_guidance")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < -1:
        raise ValueError(f"scale (the guidance weight w) must be a finite number >= -1 (usually >= 0); got {scale!r}")
    if cond is None:
        raise ValueError("classifier_free_guidance needs a condition cond")
    null = model_null(model) if null_cond is None else null_cond
    if null is None:
        raise ValueError(f"classifier_free_guidance needs the null condition ∅: {type(model).__name__} has neither "
                         f"null_cond nor num_classes, so pass null_cond= (an index for labels, a tensor "
                         f"broadcastable to cond's shape such as a zero embedding, or a dict)")
    num_classes = label_count(model)
    w = float(scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        batch = x.shape[0]
        c = check_cond(cond, batch, model=model, num_classes=num_classes, device=x.device, null_allowed=False)
        if w == 0:
            return check_same_shape(call_model(model, x, t, c), x, what="model")
        t = t.reshape(-1).expand(batch) if torch.is_tensor(t) else torch.full(
            (batch,), float(t), device=x.device, dtype=x.dtype)
        both = call_model(model, torch.cat([x, x]), torch.cat([t, t]),
                          concat_cond(c, null_condition(null, c, batch)))
        conditional, unconditional = check_same_shape(both, torch.cat([x, x]), what="model").chunk(2)
        return (1 + w) * conditional - w * unconditional

    inner = as_score(model)
    return inner.wrap(guided, network_evaluations=inner.network_evaluations * (1 if w == 0 else 2))


def unconditional_score(model):
    """A model's score with no condition, ∇ log p_t(x): the model itself when it is unconditional, else under its
    null condition ∅ — the null label, or a vector null (D,) as one row shared by the batch. A null without a batch
    shape of its own (an image's, a dict's) cannot be bound here: ValueError (give the condition instead)."""
    null = model_null(model)
    if null is None:
        return as_score(model)
    if isinstance(null, int) and not isinstance(null, bool):
        return conditional_score(model, null)
    if torch.is_tensor(null) and null.dim() == 1 and null.is_floating_point():
        return conditional_score(model, null.detach()[None])
    raise ValueError(f"{type(model).__name__}'s null condition ∅ ({type(null).__name__}) has no batch shape to use "
                     f"without a condition: give the conditions")
