"""The oracle: a Gaussian mixture pushed through any linear SDE stays a Gaussian mixture.

With components N(μ_k, diag(c_k²)) and weights w_k, the marginal at time t of a LinearSDE with scale s(t)
and std σ(t) is

    p_t(x) = Σ_k w_k N(x; s μ_k, diag(s² c_k² + σ²)),

so its density and score are exact at every t. Every sampler, likelihood and loss is tested against it.

With ``labels`` (component k belongs to class c(k)) every class's law stays a mixture too, and the noisy
classifier is exact:

    p_t(x | c) = Σ_{k: c(k)=c} w_k N_k,t(x) / Σ_{k: c(k)=c} w_k,     p_t(c | x) = Σ_{k: c(k)=c} w_k N_k,t(x) / p_t(x),

so ∇ log p_t(x) + ∇ log p_t(c | x) = ∇ log p_t(x | c) (Bayes): classifier guidance at γ = 1 with the exact
classifier *is* the exact conditional score.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import conversions
from ._utils import ScoreFn, as_time
from .guidance import check_labels

Tensor = torch.Tensor


class GaussianMixture:
    """Mixture of K diagonal Gaussians in D dimensions.

    Args:
        means: (K, D) component means.
        stds: (K,) isotropic or (K, D) diagonal component standard deviations, all > 0.
        weights: (K,) non-negative mixture weights (normalised here); uniform when omitted.
        labels: optional (K,) integer class of each component, every class 0 … C − 1 used at least once.
        dtype: parameters are stored in this dtype (float64 by default, for sharp checks).

    Data may have shape (B, D) or (B, *S) with prod(S) = D; it is flattened internally.
    """

    def __init__(self, means, stds, weights=None, labels=None, dtype=torch.float64, device=None):
        means = torch.as_tensor(means, dtype=dtype, device=device)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D); got {tuple(means.shape)}")
        K, D = means.shape
        _check_finite_rows(means, "means")
        stds = torch.as_tensor(stds, dtype=dtype, device=means.device)
        if stds.dim() == 0:
            stds = stds.expand(K)
        if stds.shape == (K,):
            stds = stds[:, None].expand(K, D)
        if stds.shape != (K, D):
            raise ValueError(f"stds must have shape (K,) = ({K},) or (K, D) = ({K}, {D}); got {tuple(stds.shape)}")
        _check_finite_rows(stds, "stds")
        if not bool((stds > 0).all()):
            raise ValueError("stds must be positive")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=dtype, device=means.device)
        weights = torch.as_tensor(weights, dtype=dtype, device=means.device)
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape (K,) = ({K},); got {tuple(weights.shape)}")
        _check_finite_rows(weights, "weights")
        if not bool((weights >= 0).all()) or not float(weights.sum()) > 0:
            raise ValueError("weights must be non-negative with a positive sum")
        self.means, self.stds = means, stds.contiguous()
        self.weights = weights / weights.sum()
        self.dim = D
        self.labels = None if labels is None else _check_labels(labels, K, means.device)

    @property
    def num_classes(self):
        """C, the number of classes (labels 0 … C − 1), or None for an unlabelled mixture."""
        return None if self.labels is None else int(self.labels.max()) + 1

    @property
    def device(self):
        return self.means.device

    @property
    def dtype(self):
        return self.means.dtype

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        """A copy with parameters on ``device`` / in ``dtype``."""
        dtype = dtype or self.dtype
        return GaussianMixture(self.means.to(device=device, dtype=dtype), self.stds.to(device=device, dtype=dtype),
                               self.weights.to(device=device, dtype=dtype), labels=self.labels, dtype=dtype,
                               device=device)

    # -- sampling and density at t = 0 --------------------------------------------------------------
    def sample(self, n: int, generator: Optional[torch.Generator] = None, return_labels: bool = False):
        """Draw n samples, shape (n, D), on the mixture's device and dtype; with ``return_labels`` also their
        classes, (n,) long (the same draws: the component is drawn first either way)."""
        k = torch.multinomial(self.weights, int(n), replacement=True, generator=generator)
        z = torch.randn((int(n), self.dim), generator=generator, device=self.device, dtype=self.dtype)
        x = self.means[k] + self.stds[k] * z
        if not return_labels:
            return x
        self._require_labels("sample(return_labels=True)")
        return x, self.labels[k]

    def conditional(self, c: int) -> "GaussianMixture":
        """The law of class c: the mixture of its components, weights renormalised (unlabelled)."""
        keep = self.labels == self._check_class(c)
        return GaussianMixture(self.means[keep], self.stds[keep], self.weights[keep], dtype=self.dtype,
                               device=self.device)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_0(x), shape (B,)."""
        flat = self._flatten(x)
        return self._log_prob(flat, self.means.to(flat), self.stds.to(flat) ** 2)

    def entropy_mc(self, n: int = 100_000, generator: Optional[torch.Generator] = None) -> tuple:
        """Monte Carlo estimate of the differential entropy −E log p(x) in nats: (mean, standard error)."""
        lp = self.log_prob(self.sample(n, generator))
        return float(-lp.mean()), float(lp.std() / math.sqrt(n))

    # -- pushed through a linear SDE -----------------------------------------------------------------
    def marginal(self, sde, t: Tensor):
        """Component means (B, K, D) and variances (B, K, D) of p_t; ``sde`` is any LinearSDE, t is (B,)."""
        s = sde.scale(t).to(self.dtype)
        sigma = sde.std(t).to(self.dtype)
        means = self.means.to(t.device)
        var0 = self.stds.to(t.device) ** 2
        m = s[:, None, None] * means[None]
        v = (s * s)[:, None, None] * var0[None] + (sigma * sigma)[:, None, None]
        return m, v

    def log_prob_t(self, sde, x: Tensor, t: Tensor) -> Tensor:
        """log p_t(x) of the mixture pushed through ``sde`` to time t: shape (B,)."""
        t = as_time(t, x)
        flat = self._flatten(x)
        m, v = self.marginal(sde, t.to(self.dtype))
        return self._log_prob(flat, m.to(flat), v.to(flat))

    def score_t(self, sde, x: Tensor, t: Tensor) -> Tensor:
        """∇_x log p_t(x), shape of x: the responsibility-weighted sum of the component scores."""
        return self._score_over(sde, x, t)

    def _score_over(self, sde, x: Tensor, t: Tensor, excluded: Optional[Tensor] = None) -> Tensor:
        """The responsibility-weighted component scores, leaving out the components ``excluded`` (B, K) marks:
        the score of the mixture of the remaining ones (all of them: ∇ log p_t)."""
        t = as_time(t, x)
        flat = self._flatten(x)
        m, v = self.marginal(sde, t.to(self.dtype))
        m, v = m.to(flat), v.to(flat)
        diff = flat[:, None, :] - m                                  # (B, K, D)
        log_comp = self._log_components(diff, v)                      # (B, K)
        if excluded is not None:
            log_comp = log_comp.masked_fill(excluded, -math.inf)
        resp = torch.softmax(log_comp, dim=1)                         # (B, K)
        return (-(resp[..., None] * diff / v).sum(1)).reshape(x.shape)

    def score(self, sde) -> ScoreFn:
        """The exact score function ``(x, t) -> ∇_x log p_t(x)`` of the mixture under ``sde``."""

        def exact_score(x: Tensor, t: Tensor) -> Tensor:
            return self.score_t(sde, x, t)

        return exact_score

    def class_log_prob_t(self, sde, x: Tensor, t: Tensor) -> Tensor:
        """log p_t(c | x) for every class c: shape (B, C); each row's exponentials sum to one."""
        log_comp = self._log_components_t(sde, x, t)                                # (B, K)
        log_joint = torch.logsumexp(log_comp[:, None, :] + self._class_mask().to(log_comp), dim=2)   # (B, C)
        return log_joint - torch.logsumexp(log_comp, dim=1, keepdim=True)

    def classifier(self, sde):
        """The exact noisy classifier ``(x, t) -> log p_t(c | x)`` of shape (B, C) under ``sde``."""
        self._require_labels("classifier")

        def exact_classifier(x: Tensor, t: Tensor) -> Tensor:
            return self.class_log_prob_t(sde, x, t)

        return exact_classifier

    def conditional_score_t(self, sde, x: Tensor, t: Tensor, cond) -> Tensor:
        """∇_x log p_t(x | c) for each row's class ``cond`` ((B,) or one int); ``cond == num_classes`` (∅) gives
        the unconditional score ∇_x log p_t(x) for that row."""
        num_classes = self._require_labels("conditional_score")
        cond = check_labels(cond, x.shape[0], num_classes, device=x.device, null_allowed=True)
        outside = (self.labels[None, :] != cond[:, None]) & (cond[:, None] < num_classes)
        return self._score_over(sde, x, t, excluded=outside)

    def conditional_score(self, sde):
        """The exact conditional score ``(x, t, cond) -> ∇_x log p_t(x | c)`` under ``sde``; ``cond`` is (B,) long
        (or one int), and the index ``num_classes`` (∅) means the unconditional score."""
        self._require_labels("conditional_score")

        def exact_conditional_score(x: Tensor, t: Tensor, cond) -> Tensor:
            return self.conditional_score_t(sde, x, t, cond)

        exact_conditional_score.num_classes = self.num_classes
        return exact_conditional_score

    def denoiser(self, sde) -> ScoreFn:
        """Tweedie's exact denoiser ``(x, t) -> E[x_0 | x_t = x] = (x + σ² score) / s``."""

        def exact_denoiser(x: Tensor, t: Tensor) -> Tensor:
            return conversions.denoise(sde, self.score(sde), x, t)

        return exact_denoiser

    # -- internals -----------------------------------------------------------------------------------
    def _require_labels(self, what: str):
        if self.labels is None:
            raise ValueError(f"GaussianMixture.{what} needs a labelled mixture: pass labels=(K,) class indices")
        return self.num_classes

    def _check_class(self, c) -> int:
        num_classes = self._require_labels("conditional")
        if isinstance(c, bool) or not isinstance(c, int) and not (torch.is_tensor(c) and c.numel() == 1):
            raise TypeError(f"the class must be an integer in [0, {num_classes}); got {c!r}")
        c = int(c)
        if not 0 <= c < num_classes:
            raise ValueError(f"the class must be in [0, {num_classes}); got {c}")
        return c

    def _class_mask(self) -> Tensor:
        """(C, K): 0 where component k belongs to class c, −inf elsewhere."""
        num_classes = self._require_labels("class_log_prob_t")
        member = self.labels[None, :] == torch.arange(num_classes, device=self.labels.device)[:, None]
        return torch.zeros(member.shape, dtype=self.dtype, device=self.device).masked_fill(~member, -math.inf)

    def _log_components_t(self, sde, x: Tensor, t: Tensor) -> Tensor:
        """log w_k N_k,t(x), shape (B, K)."""
        t = as_time(t, x)
        flat = self._flatten(x)
        m, v = self.marginal(sde, t.to(self.dtype))
        return self._log_components(flat[:, None, :] - m.to(flat), v.to(flat))

    def _flatten(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x[0].numel() != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}) (or (B, *S) with {self.dim} elements per "
                             f"sample); got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim)

    def _log_components(self, diff: Tensor, var: Tensor) -> Tensor:
        """log w_k + log N(diff; 0, diag(var)) for diff (B, K, D) and var broadcastable to it: (B, K)."""
        log_w = torch.log(self.weights.to(diff))
        quad = (diff * diff / var).sum(-1)
        log_det = torch.log(var).sum(-1)
        return log_w - 0.5 * (quad + log_det + self.dim * math.log(2 * math.pi))

    def _log_prob(self, flat: Tensor, means: Tensor, var: Tensor) -> Tensor:
        diff = flat[:, None, :] - (means if means.dim() == 3 else means[None])
        return torch.logsumexp(self._log_components(diff, var if var.dim() == 3 else var[None]), dim=1)


def _check_finite_rows(values: Tensor, name: str) -> None:
    """Raise a ValueError naming the first component (row) of ``values`` with a NaN or an inf."""
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        k = int((~finite).reshape(values.shape[0], -1).any(1).nonzero()[0, 0])
        raise ValueError(f"{name} must be finite; got a NaN or inf in component {k}: {values[k].tolist()}")


def _check_labels(labels, K: int, device) -> Tensor:
    labels = torch.as_tensor(labels, device=device)
    if labels.shape != (K,) or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of shape (K,) = ({K},), the class of each component; "
                         f"got {tuple(labels.shape)} of dtype {labels.dtype}")
    labels = labels.long()
    if bool((labels < 0).any()):
        raise ValueError(f"labels must be class indices >= 0; got {labels.tolist()}")
    missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"labels must use every class 0 … {int(labels.max())} at least once; classes {missing} "
                         f"have no component")
    return labels


def eight_gaussians(radius: float = 2.0, std: float = 0.1, num_classes: int = 8, dtype=torch.float64,
                    device=None) -> GaussianMixture:
    """Eight equally weighted Gaussians evenly spaced on a circle: the classic 2-D benchmark.

    Component k (at angle 2πk/8) has the label k mod ``num_classes`` (1 ≤ num_classes ≤ 8): with 8 every
    Gaussian is its own class, with 4 each class is a pair of opposite Gaussians.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= 8:
        raise ValueError(f"num_classes must be an integer in [1, 8]; got {num_classes!r}")
    angles = torch.arange(8, dtype=dtype) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(means, torch.full((8,), std, dtype=dtype), labels=torch.arange(8) % num_classes,
                           dtype=dtype, device=device)
