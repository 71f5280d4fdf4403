"""Inverse problems with a score prior: posterior scores for any sampler, RED, and one entry point for every method.

For y = A x₀ + n (a `scoresde.LinearMeasurement`), the posterior's diffused score splits by Bayes,

    ∇ log p_t(x | y) = ∇ log p_t(x) + ∇ log p(y | x_t = x),

and p(y | x_t) = ∫ p(y | x₀) p(x₀ | x_t) dx₀ is approximated through Tweedie's moments of p(x₀ | x_t)
(x̂₀ = E[x₀ | x_t] = (x + σ² score)/s, Cov[x₀ | x_t] = (σ²/s) ∂x̂₀/∂x):

- DPS (Chung et al. 2023): p(y | x_t) ≈ N(y; A x̂₀, σ_y² I), i.e. ∇ ≈ −ζ ∇_x ‖y − A x̂₀‖²/(2σ_y²)
  (``normalized=False``), or the paper's practical step ζ/‖y − A x̂₀‖ on the squared residual, in score units
  −ζ ∇_x ‖y − A x̂₀‖ / σ(t)² (``normalized=True``, the default, for σ_y = 0 too). Biased in general, even with the
  exact score. The plain Gaussian form is overconfident at high noise, where the true p(y | x_t) is far wider than
  σ_y: with a learned score its guidance there is amplified by 1/s(t) and the sampler diverges (measured on a
  trained 2-D model: NaN after 2–12 of 200 DDPM steps, at σ_y = 0.3 and 0.05); the normalized form stays bounded.
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
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from . import conversions
from ._registry import Registry
from ._utils import ScoreFn, SummaryRepr, as_time, check_same_shape
from .measurement import LinearMeasurement
from .score import Score, as_score

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

    return as_score(score).wrap(posterior_score, extra=as_score(score).network_evaluations)


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

    return as_score(score).wrap(posterior_score, extra=as_score(score).network_evaluations)


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

    return as_score(score).wrap(posterior_score, extra=(meas.m + 1) * as_score(score).network_evaluations)


# -- RED ----------------------------------------------------------------------------------------------------
@dataclass(repr=False)
class RedResult(SummaryRepr):
    """What `red` returns.

    Attributes:
        x: the estimate, shape (B, *D).
        nfe: score evaluations (one per iteration).
        iterations: iterations run.
        converged: whether the largest relative update fell below ``tol`` before ``iterations`` ran out.
        update: the last relative update max_b ‖x_{k+1} − x_k‖ / ‖x_k‖.
    """

    x: Tensor
    nfe: int
    iterations: int
    converged: bool
    update: float


def red(sde, score: ScoreFn, measurement, noise_level: float, shape: Optional[Sequence[int]] = None,
        lam: float = 1.0, iterations: int = 100, x_init: Optional[Tensor] = None, method: str = "fixed_point",
        step_size: Optional[float] = None, tol: float = 0.0, device=None, dtype=None) -> RedResult:
    """Regularisation by denoising (Romano, Elad & Milanfar 2017) with the score's Tweedie denoiser.

    Minimises ‖y − A x‖²/(2σ_y²) + (λ/2) xᵀ(x − D(x)), where D(x) = E[x₀ | x₀ + ν n = x] is the denoiser at the
    noise level ν = ``noise_level`` (x − D(x) = −ν² ∇ log p_ν(x), from the score at t* with σ(t*)/s(t*) = ν).
    Under RED's conditions the gradient is Aᵀ(A x − y)/σ_y² + λ (x − D(x)), and

    - ``method="fixed_point"`` (default, any σ_y ≥ 0): x ← argmin_x ‖y − A x‖²/(2σ_y²) + (λ/2)‖x − D(x_k)‖², the
      proximal step of the data term at ρ² = 1/λ (σ_y = 0: the nearest x with A x = y);
    - ``method="gradient"``: x ← x − μ [Aᵀ(A x − y)/σ_y² + λ (x − D(x))], μ = ``step_size`` (default
      1/(‖A‖²/σ_y² + λ)); needs σ_y > 0.

    For a Gaussian prior N(μ, Σ) with the exact denoiser the fixed point is
    x* = (AᵀA/σ_y² + λW)⁻¹ (Aᵀy/σ_y² + λWμ), W = ν² (Σ + ν² I)⁻¹.

    Args:
        shape: (B, *D) of the estimate when ``x_init`` is not given (it starts from zero).
        iterations: the most iterations (one score evaluation each); ``tol`` > 0 stops earlier.
    """
    meas = _check_measurement(measurement, "red")
    if method not in ("fixed_point", "gradient"):
        raise ValueError(f"unknown RED method {method!r}; valid choices: 'fixed_point', 'gradient'")
    lam = _check_scale(lam, "lam")
    if lam == 0:
        raise ValueError("lam must be > 0")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer; got {iterations!r}")
    sigma_y = meas.require_isotropic("red", positive=method == "gradient")
    t_star = conversions.time_at_noise_level(sde, noise_level)
    if x_init is None:
        if shape is None:
            raise ValueError("red needs shape=(B, *D) or x_init")
        x = torch.zeros(tuple(int(s) for s in shape), device=device, dtype=dtype or torch.get_default_dtype())
    else:
        if not torch.is_tensor(x_init) or not x_init.is_floating_point():
            raise TypeError("x_init must be a floating-point tensor (B, *D)")
        x = x_init.detach().clone()
    meas.check_x(x)
    s_star = float(sde.scale(torch.tensor([t_star], dtype=torch.float64))[0])
    rho = 1.0 / math.sqrt(lam)
    if method == "gradient":
        top = float(meas._svd[1].max()) if meas.matrix is not None else 1.0
        mu = step_size if step_size is not None else 1.0 / (top * top / sigma_y ** 2 + lam)
    converged, update, k = False, math.inf, 0
    with torch.no_grad():
        for k in range(1, iterations + 1):
            t = torch.full((x.shape[0],), t_star, dtype=x.dtype, device=x.device)
            denoised = conversions.denoise(sde, score, s_star * x, t)
            if method == "fixed_point":
                new = meas.proximal(denoised, rho)
            else:
                grad = -meas.adjoint(meas.residual(x), x) / sigma_y ** 2 + lam * (x - denoised)
                new = x - mu * grad
            change = ((new - x).reshape(x.shape[0], -1).norm(dim=1)
                      / x.reshape(x.shape[0], -1).norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny))
            update, x = float(change.max()), new
            if not torch.isfinite(x).all():
                raise FloatingPointError(f"red diverged at iteration {k} (a NaN or inf); lower step_size or use "
                                         f"method='fixed_point'")
            if tol > 0 and update < tol:
                converged = True
                break
    return RedResult(x=x, nfe=k, iterations=k, converged=converged, update=update)


# -- one entry point ----------------------------------------------------------------------------------------
#: Inverse-problem methods by name, for ``solve_inverse``, the command line and the benchmark: each entry is
#: ``f(sde, score, measurement, shape, generator=None, **options) -> SampleResult``.
INVERSE_METHODS = Registry("inverse-problem method")


def _placement(measurement) -> dict:
    """Samples are drawn on y's device and in y's dtype (floating point), as RED's estimate is."""
    return {"device": measurement.y.device, "dtype": measurement.y.dtype}


def _guided_sampler(sampler, steps: int):
    from .sampling import DDIMSampler, Sampler

    if sampler is None:
        return DDIMSampler(steps=steps, eta=1.0)
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a scoresde Sampler; got {type(sampler).__name__}")
    return sampler


@INVERSE_METHODS.register("dps")
def _dps(sde, score, measurement, shape, generator=None, /, steps: int = 200, scale: float = 1.0,
         normalized: bool = True, sampler=None):
    """DPS guidance on DDPM ancestral steps (DDIM η = 1) unless ``sampler`` is given."""
    guided = dps_score(sde, score, measurement, scale=scale, normalized=normalized)
    return _guided_sampler(sampler, steps).sample(sde, guided, shape, generator, **_placement(measurement))


@INVERSE_METHODS.register("pigdm")
def _pigdm(sde, score, measurement, shape, generator=None, /, steps: int = 200, scale: float = 1.0,
           data_std: float = 1.0, sampler=None):
    """ΠGDM guidance on DDPM ancestral steps unless ``sampler`` is given."""
    guided = pigdm_score(sde, score, measurement, scale=scale, data_std=data_std)
    return _guided_sampler(sampler, steps).sample(sde, guided, shape, generator, **_placement(measurement))


@INVERSE_METHODS.register("tweedie_moment")
def _tweedie_moment(sde, score, measurement, shape, generator=None, /, steps: int = 200, scale: float = 1.0,
                    sampler=None):
    """Tweedie-moment guidance on DDPM ancestral steps unless ``sampler`` is given."""
    guided = tweedie_moment_score(sde, score, measurement, scale=scale)
    return _guided_sampler(sampler, steps).sample(sde, guided, shape, generator, **_placement(measurement))


@INVERSE_METHODS.register("replacement")
def _replacement(sde, score, measurement, shape, generator=None, /, steps: int = 200, eta: float = 1.0):
    """Replacement inpainting (a Mask measurement)."""
    from .sampling import InpaintingSampler

    return InpaintingSampler(measurement, steps=steps, eta=eta).sample(sde, score, shape, generator,
                                                                      **_placement(measurement))


@INVERSE_METHODS.register("repaint")
def _repaint(sde, score, measurement, shape, generator=None, /, steps: int = 50, resamplings: int = 10,
             jump_length: int = 10, eta: float = 1.0):
    """RePaint (a Mask measurement)."""
    from .sampling import InpaintingSampler

    return InpaintingSampler(measurement, steps=steps, resamplings=resamplings, jump_length=jump_length,
                             eta=eta).sample(sde, score, shape, generator, **_placement(measurement))


@INVERSE_METHODS.register("split_gibbs")
def _split_gibbs(sde, score, measurement, shape, generator=None, /, steps: int = 30, rho: float = 1.0,
                 rho_min: Optional[float] = 0.05, iterations: int = 20, initial: str = "prior"):
    """Split Gibbs with SDE-DPM-Solver++(2M) prior steps of ``steps`` intervals, ρ annealed to ``rho_min``."""
    from .sampling import DPMSolverSDE, SplitGibbsSampler

    return SplitGibbsSampler(measurement, rho=rho, rho_min=rho_min, iterations=iterations,
                             sampler=DPMSolverSDE(steps=steps), initial=initial).sample(
        sde, score, shape, generator, **_placement(measurement))


@INVERSE_METHODS.register("red")
def _red(sde, score, measurement, shape, generator=None, /, noise_level: float = 0.1, lam: float = 1.0,
         iterations: int = 100, method: str = "fixed_point"):
    """RED's point estimate from zero (every row the same unless y is per sample)."""
    from .sampling import SampleResult

    res = red(sde, score, measurement, noise_level, shape=shape, lam=lam, iterations=iterations, method=method,
              dtype=measurement.y.dtype, device=measurement.y.device)
    return SampleResult(x=res.x, nfe=res.nfe)


def solve_inverse(method: str, sde, score: ScoreFn, measurement, shape: Sequence[int],
                  generator: Optional[torch.Generator] = None, **options):
    """Run the inverse-problem method ``method`` (a name in `INVERSE_METHODS`) and return its SampleResult.

        res = sd.solve_inverse("split_gibbs", sde, score, meas, (256, 2), generator, rho=1.0, rho_min=0.05)

    ``options`` are the method's own (``steps``, ``scale``, ``rho``, …); unknown ones raise an error listing them.
    The samples are drawn on y's device and in y's dtype.
    """
    _check_measurement(measurement, "solve_inverse")
    return INVERSE_METHODS.build(method, sde, score, measurement, tuple(int(s) for s in shape), generator, **options)
