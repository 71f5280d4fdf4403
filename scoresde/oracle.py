"""The oracle: a Gaussian mixture pushed through any linear SDE stays a Gaussian mixture.

With components N(μ_k, diag(c_k²)) and weights w_k, the marginal at time t of a LinearSDE with scale s(t)
and std σ(t) is

    p_t(x) = Σ_k w_k N(x; s μ_k, diag(s² c_k² + σ²)),

so its density and score are exact at every t. Every sampler, likelihood and loss is tested against it.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import conversions
from ._utils import ScoreFn, as_time

Tensor = torch.Tensor


class GaussianMixture:
    """Mixture of K diagonal Gaussians in D dimensions.

    Args:
        means: (K, D) component means.
        stds: (K,) isotropic or (K, D) diagonal component standard deviations, all > 0.
        weights: (K,) non-negative mixture weights (normalised here); uniform when omitted.
        dtype: parameters are stored in this dtype (float64 by default, for sharp checks).

    Data may have shape (B, D) or (B, *S) with prod(S) = D; it is flattened internally.
    """

    def __init__(self, means, stds, weights=None, dtype=torch.float64, device=None):
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
                               self.weights.to(device=device, dtype=dtype), dtype=dtype)

    # -- sampling and density at t = 0 --------------------------------------------------------------
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw n samples, shape (n, D), on the mixture's device and dtype."""
        k = torch.multinomial(self.weights, int(n), replacement=True, generator=generator)
        z = torch.randn((int(n), self.dim), generator=generator, device=self.device, dtype=self.dtype)
        return self.means[k] + self.stds[k] * z

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
        t = as_time(t, x)
        flat = self._flatten(x)
        m, v = self.marginal(sde, t.to(self.dtype))
        m, v = m.to(flat), v.to(flat)
        if m.dim() == 2:
            m, v = m[None], v[None]
        diff = flat[:, None, :] - m                                  # (B, K, D)
        log_comp = self._log_components(diff, v)                      # (B, K)
        resp = torch.softmax(log_comp, dim=1)                         # (B, K)
        score = -(resp[..., None] * diff / v).sum(1)
        return score.reshape(x.shape)

    def score(self, sde) -> ScoreFn:
        """The exact score function ``(x, t) -> ∇_x log p_t(x)`` of the mixture under ``sde``."""

        def exact_score(x: Tensor, t: Tensor) -> Tensor:
            return self.score_t(sde, x, t)

        return exact_score

    def denoiser(self, sde) -> ScoreFn:
        """Tweedie's exact denoiser ``(x, t) -> E[x_0 | x_t = x] = (x + σ² score) / s``."""

        def exact_denoiser(x: Tensor, t: Tensor) -> Tensor:
            return conversions.denoise(sde, self.score(sde), x, t)

        return exact_denoiser

    # -- internals -----------------------------------------------------------------------------------
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


def eight_gaussians(radius: float = 2.0, std: float = 0.1, dtype=torch.float64, device=None) -> GaussianMixture:
    """Eight equally weighted Gaussians evenly spaced on a circle: the classic 2-D benchmark."""
    angles = torch.arange(8, dtype=dtype) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(means, torch.full((8,), std, dtype=dtype), dtype=dtype, device=device)
