"""RED (Romano et al. 2017) with a score prior: the point estimate whose residual x − D(x) balances the data term."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .. import conversions
from .._utils import ScoreFn, SummaryRepr
from .posterior import _check_measurement, _check_scale

Tensor = torch.Tensor


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
