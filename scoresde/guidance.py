"""Conditional scores and guidance: every result is a plain ``score(x, t)``, so every sampler and
[`scoresde.log_likelihood`][scoresde.log_likelihood] take it unchanged.

    score = sd.conditional_score(model, cond)                                # ∇ log p_t(x | c)
    score = sd.classifier_free_guidance(model, cond, scale=w)                # (1 + w) s_c − w s_∅
    score = sd.classifier_guidance(score_uncond, classifier, cond, scale=γ)  # ∇ log p_t(x) + γ ∇ log p_t(c | x)

A conditional model is called ``model(x, t, cond)`` with ``cond`` of shape (B,), long class indices in
[0, K]; the index K = ``num_classes`` is the null label ∅ (no label), so one network trained with label dropout
is both p(x | c) and p(x). Classifier-free guidance (Ho & Salimans 2022) tilts the conditional law,

    s_w = (1 + w) ∇ log p_t(x | c) − w ∇ log p_t(x) = ∇ log [p_t(x | c)^{1+w} p_t(x)^{−w}],

and is the same formula on ε, x0 or v at fixed (x, t) (each is affine in the score with weights summing to one).
Classifier guidance (Dhariwal & Nichol 2021) with a noise-conditional classifier p_t(c | x) at γ = 1 is exactly
∇ log p_t(x | c) by Bayes' rule.

**Counting.** A sampler's ``res.nfe`` counts calls of the score function; a guided score is a `scoresde.Score` that
says how many network evaluations one call costs (``network_evaluations``), and ``res.network_evaluations`` sums them.
A classifier-free call with w ≠ 0 runs the network once on a doubled batch (2B rows: conditional and null), which
counts as 2 evaluations; at w = 0 it is the conditional model alone (1). A classifier-guided call is 2: the score
model, and the classifier with its gradient (one forward and one backward pass).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch

from ._registry import signature_parameters
from ._utils import ScoreFn, check_same_shape
from .score import Score, as_score

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
        if cond.dim() == 0:
            cond = cond.expand(batch)
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
    training); one uniform per row from ``generator``, on cond's device."""
    if not 0.0 <= float(probability) <= 1.0:
        raise ValueError(f"the label dropout probability must be in [0, 1]; got {probability!r}")
    u = torch.rand(cond.shape, generator=generator, device=cond.device)
    return torch.where(u < float(probability), torch.full_like(cond, int(null_cond)), cond)


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


def classifier_guidance(score: ScoreFn, classifier: Callable, cond: Labels, scale: float = 1.0) -> Score:
    """``(x, t) -> score(x, t) + γ ∇_x log p_t(c | x)`` with γ = ``scale``.

    Args:
        score: the unconditional score ``score(x, t)`` (a model, or ``GaussianMixture.score(sde)``).
        classifier: a noise-conditional classifier ``classifier(x, t)`` returning log-probabilities (or logits:
            they are normalised by log_softmax, which leaves log-probabilities unchanged) of shape (B, C), e.g.
            `scoresde.nets.Classifier` or ``GaussianMixture.classifier(sde)``.
        cond: one class (an int) or (B,) long indices in 0 … C − 1.
        scale: γ; at γ = 1 with the exact classifier this is the exact conditional score.

    The gradient is taken by autograd inside (also under ``torch.no_grad``, as samplers run); when the caller
    differentiates through the result (as the likelihood's divergence does) the graph is kept.
    """
    if not callable(score) or not callable(classifier):
        raise TypeError("classifier_guidance needs callables score(x, t) and classifier(x, t)")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale (the classifier weight γ) must be a finite number; got {scale!r}")
    gamma = float(scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        keep_graph = torch.is_grad_enabled() and x.requires_grad
        with torch.enable_grad():
            x_in = x if keep_graph else x.detach().requires_grad_(True)
            log_probs = classifier(x_in, t)
            if not torch.is_tensor(log_probs) or log_probs.dim() != 2 or log_probs.shape[0] != x.shape[0]:
                got = tuple(log_probs.shape) if torch.is_tensor(log_probs) else type(log_probs).__name__
                raise ValueError(f"classifier(x, t) must return log-probabilities of shape (B, C) = "
                                 f"({x.shape[0]}, C); got {got}")
            labels = check_labels(cond, x.shape[0], log_probs.shape[1], device=x.device, null_allowed=False)
            picked = torch.log_softmax(log_probs, dim=1).gather(1, labels[:, None]).sum()
            (grad,) = torch.autograd.grad(picked, x_in, create_graph=keep_graph, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(x)
        return score(x, t) + gamma * grad.to(x.dtype)

    inner = as_score(score)
    return Score(guided, network_evaluations=inner.network_evaluations + 1, network=inner.network,
                 closed_form=inner.closed_form and bool(getattr(classifier, "closed_form", False)))
