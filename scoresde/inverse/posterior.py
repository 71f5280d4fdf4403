"""Inverse problems with a score prior: posterior scores for any sampler, RED, and one entry point for every method.

For y = A x₀ + n (a `scoresde.LinearMeasurement`), the posterior's diffused score splits by Bayes,

    ∇ log p_t(x | y) = ∇ log p_t(x) + ∇ log p(y | x_t = x),

and p(y | x_t) = ∫ p(y | x₀) p(x₀ | x_t) dx₀ is approximated through Tweedie's moments of p(x₀ | x_t)
(x̂₀ = E[x₀ | x_t] = (x + σ² score)/s, Cov[x₀ | x_t] = (σ²/s) ∂x̂₀/∂x):

- DPS (Chung et al. 2023): p(y | x_t) ≈ N(y; A x̂₀, σ_y² I), i.e. ∇ ≈ −ζ ∇_x ‖y − A x̂₀‖²/(2σ_y²)
  (``normalized=False``), or the paper's practical step ζ/‖y − A x̂₀‖ on the squared residual, in score units
  −ζ ∇_x ‖y − A x̂₀‖ / σ(t)² (``normalized=True``, the default, for σ_y = 0 too). Biased in general, even with the
  exact score. The plain Gaussian form is overconfident at high noise, where the true p(y | x_t) is far wider than
  σ_y: with a learned score its guidance there is amplified by 1/s(t) and the sampler diverges (docs/benchmarks.md,
  lab notes); the normalized form stays bounded.
- ΠGDM (Song et al. 2023): p(y | x_t) ≈ N(y; A x̂₀, σ_y² I + r_t² A Aᵀ), r_t² = σ_d² σ²/(s² σ_d² + σ²), the
  posterior variance of a N(μ, σ_d² I) prior: exact for such a prior (σ_d = ``data_std``).
- Tweedie-moment guidance: N(y; A x̂₀, A Cov[x₀ | x_t] Aᵀ + R) with the second-order Tweedie covariance
  (Boys et al. 2023's TMPD, with the full Jacobian): exact for every Gaussian prior N(μ, Σ). It ignores the
  derivative of the covariance in x (zero for a Gaussian prior).

The guidance term is a vector–Jacobian product through the score network, so each score call costs a forward and a
backward pass (``network_evaluations = 2``); Tweedie-moment guidance adds one backward pass per measured entry m
(``m + 2``) to build A ∂x̂₀/∂x (B, m, d), so it is for small m (up to a few hundred). Each keeps the graph of a
forward pass through the network: memory grows like training, not like sampling.
"""
from __future__ import annotations

import math

import torch

from .. import conversions
from .._utils import ScoreFn, as_time, check_same_shape
from ..score import Score, as_score
from .measurement import LinearMeasurement

Tensor = torch.Tensor


def _check_measurement(measurement, what: str) -> LinearMeasurement:
    if not isinstance(measurement, LinearMeasurement):
        raise TypeError(f"{what} needs a scoresde.LinearMeasurement(A, y, noise_std); got "
                        f"{type(measurement).__name__}")
    return measurement


def _check_scale(scale, name: str = "scale") -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {scale!r}")
    return float(scale)


class _Denoised:
    """x̂₀ = E[x₀ | x_t] with the graph to x kept, for vector–Jacobian products: the score, s, σ and x̂₀."""

    def __init__(self, sde, score: ScoreFn, x: Tensor, t):
        self.keep_graph = torch.is_grad_enabled() and x.requires_grad
        t = as_time(t, x)
        with torch.enable_grad():
            self.x = x if self.keep_graph else x.detach().requires_grad_(True)
            self.score = check_same_shape(score(self.x, t), x)
            self.s, self.sigma = conversions.scale_std(sde, t, x)
            self.x0 = conversions.score_to_x0(self.x, self.score, self.s, self.sigma)

    def vjp(self, v: Tensor, retain: bool = False) -> Tensor:
        """(∂x̂₀/∂x)ᵀ v, shape of x."""
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.x0, self.x, grad_outputs=v, retain_graph=retain or self.keep_graph,
                                          create_graph=self.keep_graph)
        return grad

    def gradient(self, objective: Tensor) -> Tensor:
        """∇_x of a scalar built from x̂₀."""
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective, self.x, create_graph=self.keep_graph)
        return grad

    def plus(self, guidance: Tensor) -> Tensor:
        prior = self.score if self.keep_graph else self.score.detach()
        return prior + guidance.to(prior.dtype)


def dps_score(sde, score: ScoreFn, measurement, scale: float = 1.0, normalized: bool = True) -> Score:
    """Diffusion posterior sampling: ``(x, t) -> score − (ζ/σ(t)²) ∇_x ‖y − A x̂₀(x)‖`` per sample, ζ = ``scale``.

    This normalized form is Chung et al.'s step ζ/‖y − A x̂₀‖ on the squared residual, written in score units (the
    1/σ² makes a sampler's move per unit time the same at every noise level); it needs no σ_y, and ζ ≈ 1 suits
    data of unit scale (on the 2-D benchmark ζ = 1 beat 0.3 and 3). With ``normalized=False`` it is the plain
    Gaussian approximation ``score + ζ ∇_x log N(y; A x̂₀, σ_y² I)`` (σ_y > 0), which diverges at high noise with
    learned scores (see the module docstring). The normalized form does not see σ_y: with noisy data it fits y as
    if it were exact (on the benchmark's 2-D denoising at σ_y = 0.5, a residual of 0.05–0.46 against the
    posterior's 0.95, 22–27× the noise floor at every ζ; docs/benchmarks.md). x: (B, *D), t: (B,).
    """
    meas = _check_measurement(measurement, "dps_score")
    zeta = _check_scale(scale)
    sigma_y = meas.require_isotropic("dps_score", positive=not normalized)

    def posterior_score(x: Tensor, t: Tensor) -> Tensor:
        meas.check_x(x)
        d = _Denoised(sde, score, x, t)
        with torch.enable_grad():
            r = meas.residual(d.x0).reshape(x.shape[0], -1)
            if normalized:
                objective = -zeta * (r.norm(dim=1) / (d.sigma * d.sigma).reshape(-1)).sum()
            else:
                objective = -zeta * (r * r).sum() / (2 * sigma_y ** 2)
        return d.plus(d.gradient(objective))

    inner = as_score(score)              # a forward and a backward pass through it per call
    return inner.wrap(posterior_score, network_evaluations=2 * inner.network_evaluations)


def pigdm_score(sde, score: ScoreFn, measurement, scale: float = 1.0, data_std: float = 1.0) -> Score:
    """ΠGDM: ``(x, t) -> score + ζ (∂x̂₀/∂x)ᵀ Aᵀ (σ_y² I + r_t² A Aᵀ)⁻¹ (y − A x̂₀)``, r_t² = σ_d² σ²/(s² σ_d² + σ²).

    The gradient of log N(y; A x̂₀, σ_y² I + r_t² A Aᵀ) with the covariance held fixed; exact (at ζ = 1) when the
    prior is N(μ, σ_d² I) with σ_d = ``data_std``. σ_y = 0 is allowed when A has full row rank.

    With a learned ε-prediction model the Jacobian of x̂₀ = (x − σ ε̂)/s amplifies the network's errors by
    1/s(T) (≈ 150 on VP) at high noise. An undertrained digits model diverged after about 6 of 200 steps; a
    ``parameterization="v"`` model of the same size did not (notebooks/06_inverse_problems.ipynb).
    """
    meas = _check_measurement(measurement, "pigdm_score")
    zeta = _check_scale(scale)
    data_var = _check_scale(data_std, "data_std") ** 2
    if data_var == 0:
        raise ValueError("data_std must be > 0")
    sigma_y = meas.require_isotropic("pigdm_score")
    if sigma_y == 0 and meas.matrix is not None and meas._svd[0].shape[1] < meas.m:
        raise ValueError("pigdm_score with noise_std = 0 needs A of full row rank (A Aᵀ invertible)")

    def posterior_score(x: Tensor, t: Tensor) -> Tensor:
        meas.check_x(x)
        d = _Denoised(sde, score, x, t)
        s, sigma = d.s.reshape(-1), d.sigma.reshape(-1)
        r2 = data_var * sigma * sigma / (s * s * data_var + sigma * sigma)
        v = meas.solve_outer(meas.residual(d.x0 if d.keep_graph else d.x0.detach()), sigma_y ** 2, r2)
        return d.plus(zeta * d.vjp(meas.adjoint(v, x)))

    inner = as_score(score)              # a forward and a backward pass through it per call
    return inner.wrap(posterior_score, network_evaluations=2 * inner.network_evaluations)


def tweedie_moment_score(sde, score: ScoreFn, measurement, scale: float = 1.0) -> Score:
    """Tweedie-moment guidance: ``(x, t) -> score + ζ Jᵀ Aᵀ (A Cov Aᵀ + R)⁻¹ (y − A x̂₀)``, J = ∂x̂₀/∂x,
    Cov = (σ²/s) J (the second-order Tweedie identity).

    Exact for any Gaussian prior. A J is built row by row (m backward passes, J symmetric), so the cost per call is
    a forward pass and m + 1 backward passes; R may be a general noise covariance, and may be 0 while A Cov Aᵀ is
    invertible.
    """
    meas = _check_measurement(measurement, "tweedie_moment_score")
    zeta = _check_scale(scale)

    def posterior_score(x: Tensor, t: Tensor) -> Tensor:
        meas.check_x(x)
        A, y = meas.dense(dtype=x.dtype, device=x.device)                  # (m, d), (m,) or (B, m)
        R = meas.noise_covariance(dtype=x.dtype, device=x.device)
        d = _Denoised(sde, score, x, t)
        B = x.shape[0]
        rows = torch.stack([d.vjp(A[j].reshape((1,) + x.shape[1:]).expand_as(x), retain=True).reshape(B, -1)
                            for j in range(A.shape[0])], dim=1)            # A J: (B, m, d)
        factor = (d.sigma * d.sigma / d.s).reshape(B, 1, 1)
        M = factor * rows @ A.T + R                                         # A Cov Aᵀ + R: (B, m, m)
        M = (M + M.transpose(1, 2)) / 2
        r = y - d.x0.reshape(B, -1) @ A.T                                   # (B, m)
        v = torch.linalg.solve(M, r[..., None])[..., 0]
        if not d.keep_graph:
            v = v.detach()
        return d.plus(zeta * d.vjp((v @ A).reshape(x.shape)))

    inner = as_score(score)              # a forward pass and m + 1 backward passes through it per call
    return inner.wrap(posterior_score, network_evaluations=(meas.m + 2) * inner.network_evaluations)
