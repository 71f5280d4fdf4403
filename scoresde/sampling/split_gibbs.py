"""Split-Gibbs plug-and-play sampling (Wu et al. 2024, "PnP-DM"; Xu & Chi 2024): the score as an exact prior step.

The coupled law π(x, z) ∝ p(x) N(z; x, ρ² I) exp(−‖y − A z‖²/(2σ_y²)) has the x-marginal p(x₀ | y′) for the
inflated measurement y′ = A x₀ + n′, n′ ~ N(0, σ_y² I + ρ² A Aᵀ) (integrate z out), which tends to the posterior
as ρ → 0. Gibbs sampling alternates two exact steps:

- likelihood step: z | x ~ N((AᵀA/σ_y² + I/ρ²)⁻¹ (Aᵀy/σ_y² + x/ρ²), (AᵀA/σ_y² + I/ρ²)⁻¹), Gaussian
  (`scoresde.LinearMeasurement.sample_proximal`, by the SVD of A or the mask);
- prior step: x | z ~ p(x₀ | x₀ + ρ n = z). Since x_t/s(t) = x₀ + (σ/s) z, this is the reverse SDE started at
  x_{t*} = s(t*) z at the time t* with σ(t*)/s(t*) = ρ (`scoresde.conversions.time_at_noise_level`): any
  stochastic sampler run from t* samples it (exactly as its steps refine, given the true score). A deterministic
  (probability-flow) sampler would not: it maps p_{t*} to p_0 but not the conditional law.

ρ is fixed, annealed geometrically from ``rho`` to ``rho_min`` over the sweeps, or given as a sequence.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from .. import conversions
from ..measurement import LinearMeasurement
from ._base import SampleResult, Sampler
from .grids import _positive_int

Tensor = torch.Tensor


class SplitGibbsSampler:
    """Split Gibbs for y = A x₀ + n with the score as the prior: ``sample(sde, score, shape, generator)``.

    Args:
        measurement: a `scoresde.LinearMeasurement` with isotropic noise (σ_y = 0 allowed).
        rho: the coupling ρ > 0: a number, or a non-increasing sequence of one ρ per sweep.
        iterations: the Gibbs sweeps (each one likelihood and one prior step).
        rho_min: with a number ``rho``, anneal geometrically from ``rho`` to ``rho_min`` over the sweeps.
        sampler: the stochastic sampler of the prior step, run on its own grid kind from t*(ρ) down to its eps
            (default ``DPMSolverSDE(steps=30)``, SDE-DPM-Solver++(2M) with the final denoising).
        initial: ``"prior"`` (default: start from an unconditional sample of the same sampler, from T) or
            ``"measurement"`` (the first z from x = 0 at the first ρ: no extra run).

    NFE: ``iterations`` × the prior step's NFE (+ one full run for ``initial="prior"``). The result's x is the
    last prior step's sample: at a fixed ρ a draw of p(x₀ | y′).
    """

    def __init__(self, measurement, rho=0.5, iterations: int = 20, rho_min: Optional[float] = None,
                 sampler: Optional[Sampler] = None, initial: str = "prior"):
        if not isinstance(measurement, LinearMeasurement):
            raise TypeError(f"SplitGibbsSampler needs a scoresde.LinearMeasurement; got {type(measurement).__name__}")
        measurement.require_isotropic("SplitGibbsSampler")
        self.measurement = measurement
        self.iterations = _positive_int(iterations, "iterations")
        self.rhos = _rho_schedule(rho, rho_min, self.iterations)
        if sampler is None:
            from .dpm_solver_sde import DPMSolverSDE

            sampler = DPMSolverSDE(steps=30)
        if not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be a scoresde Sampler; got {type(sampler).__name__}")
        if initial not in ("prior", "measurement"):
            raise ValueError(f"unknown initial {initial!r}; valid choices: 'prior', 'measurement'")
        self.sampler, self.initial = sampler, initial

    def nfe(self) -> Optional[int]:
        inner = self.sampler.nfe()
        if inner is None:
            return None
        return inner * (self.iterations + int(self.initial == "prior"))

    def sample(self, sde, score, shape, generator: Optional[torch.Generator] = None, x_init: Optional[Tensor] = None,
               *, callback: Optional[Callable[[int, float, Tensor], None]] = None, device=None,
               dtype=None) -> SampleResult:
        """Run the sweeps and return the last x (shape ``shape``); ``callback(k, rho_k, x)`` after each sweep."""
        shape = tuple(int(s) for s in shape)
        meas = self.measurement
        nfe = evaluations = 0
        if x_init is not None:
            if not torch.is_tensor(x_init) or tuple(x_init.shape) != shape or not x_init.is_floating_point():
                raise ValueError(f"x_init must be a floating-point tensor of shape {shape}")
            x = x_init
        elif self.initial == "prior":
            res = self.sampler.sample(sde, score, shape, generator, device=device, dtype=dtype)
            x, nfe, evaluations = res.x, res.nfe, res.network_evaluations
        else:
            x = torch.zeros(shape, device=device, dtype=dtype or torch.get_default_dtype())
        meas.check_x(x)
        starts = {}
        for k, rho in enumerate(self.rhos):
            if rho not in starts:
                t_star = conversions.time_at_noise_level(sde, rho)
                if not t_star > self.sampler.eps:
                    raise ValueError(f"rho = {rho:g} maps to t* = {t_star:.3g}, not above the prior step's eps = "
                                     f"{self.sampler.eps:g}: raise rho_min or lower the sampler's eps")
                s_star = float(sde.scale(torch.tensor([t_star], dtype=torch.float64))[0])
                starts[rho] = (self.sampler.schedule.times(sde, device=x.device, start=t_star), s_star)
            times, s_star = starts[rho]
            z = meas.sample_proximal(x, rho, generator)
            res = self.sampler.sample(sde, score, shape, generator, x_T=s_star * z, times=times)
            x, nfe, evaluations = res.x, nfe + res.nfe, evaluations + res.network_evaluations
            if callback is not None:
                callback(k + 1, rho, x)
        return SampleResult(x=x, nfe=nfe, network_evaluations=evaluations)


def _rho_schedule(rho, rho_min, iterations: int) -> list:
    def positive(value, name):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        return float(value)

    if isinstance(rho, (int, float)) and not isinstance(rho, bool):
        rho = positive(rho, "rho")
        if rho_min is None:
            return [rho] * iterations
        rho_min = positive(rho_min, "rho_min")
        if rho_min > rho:
            raise ValueError(f"rho_min ({rho_min:g}) must not exceed rho ({rho:g})")
        if iterations == 1:
            return [rho_min]
        return [rho * (rho_min / rho) ** (k / (iterations - 1)) for k in range(iterations)]
    if rho_min is not None:
        raise ValueError("give rho_min only with a number rho (a sequence is the schedule itself)")
    values = [positive(float(v), "every rho") for v in (rho.tolist() if torch.is_tensor(rho) else list(rho))]
    if len(values) != iterations or any(b > a for a, b in zip(values, values[1:])):
        raise ValueError(f"a rho schedule must be a non-increasing sequence of iterations = {iterations} values; got "
                         f"{values}")
    return values
