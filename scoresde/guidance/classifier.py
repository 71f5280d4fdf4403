"""Classifier guidance (Dhariwal & Nichol 2021): ∇ log p_t(x) + γ ∇ log p_t(c | x), exactly ∇ log p_t(x | c) at
γ = 1 with the exact noise-conditional classifier (Bayes' rule)."""
from __future__ import annotations

import math
from typing import Callable

import torch

from .._utils import ScoreFn
from ..score import Score, as_score
from .labels import Labels, check_labels

Tensor = torch.Tensor


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
