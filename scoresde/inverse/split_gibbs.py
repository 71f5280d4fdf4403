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
from typing import Optional, Sequence

import torch

from .. import conversions
from .._utils import ScoreFn
from ..sampling import SAMPLERS, DPMSolverSDE, SampleResult, Sampler
from ..sampling._base import CountedScore, Recorder
from ..sampling.grids import _positive_int
from ..sde import Coefficients
from .measurement import LinearMeasurement

Tensor = torch.Tensor


@SAMPLERS.register("split_gibbs")
class SplitGibbsSampler(Sampler):
    """Split Gibbs for y = A x₀ + n with the score as the prior: ``sample(sde, score, shape, generator)``.

    Args:
        measurement: a `scoresde.LinearMeasurement` with isotropic noise (σ_y = 0 allowed).
        rho: the coupling ρ > 0: a number, or a non-increasing sequence of one ρ per sweep.
        iterations: the Gibbs sweeps (each one likelihood and one prior step).
        rho_min: with a number ``rho``, anneal geometrically from ``rho`` to ``rho_min`` over the sweeps.
        sampler: the stochastic sampler of the prior step, run on its own grid kind from t*(ρ) down to its eps
            (default ``DPMSolverSDE(steps=30)``, SDE-DPM-Solver++(2M) with the final denoising).
        initial: ``"prior"`` (default: the first x is an unconditional sample of the same sampler, run from the
            prior draw x_T), ``"measurement"`` (the first z from x = 0 at the first ρ: no extra run) or ``"x_T"``
            (the chain starts at the ``x_T`` given to `sample`, e.g. a draw of the target to check stationarity).

    NFE: ``iterations`` × the prior step's NFE (+ one full run for ``initial="prior"``). The result's x is the
    last prior step's sample: at a fixed ρ a draw of p(x₀ | y′). A ``callback`` and a trajectory see one report
    per sweep, ``(k, ρ_k, x)``: the "time" of a sweep is its coupling ρ_k.
    """

    label = "split Gibbs"

    @classmethod
    def example(cls, **fixed) -> "SplitGibbsSampler":
        """Two sweeps of 4-step prior runs on (B, 2) data with y = x₁ + n, σ_y = 0.1."""
        measurement = LinearMeasurement(torch.tensor([[1.0, 0.0]]), torch.tensor([1.0]), 0.1)
        return cls(**{"measurement": measurement, "rho": 0.5, "iterations": 2, "sampler": DPMSolverSDE(steps=4),
                      **fixed})

    def __init__(self, measurement, rho=0.5, iterations: int = 20, rho_min: Optional[float] = None,
                 sampler: Optional[Sampler] = None, initial: str = "prior"):
        if not isinstance(measurement, LinearMeasurement):
            raise TypeError(f"SplitGibbsSampler needs a scoresde.LinearMeasurement; got {type(measurement).__name__}")
        measurement.require_isotropic("SplitGibbsSampler")
        self.measurement = measurement
        self.iterations = _positive_int(iterations, "iterations")
        self.rhos = _rho_schedule(rho, rho_min, self.iterations)
        sampler = DPMSolverSDE(steps=30) if sampler is None else sampler
        if not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be a scoresde Sampler; got {type(sampler).__name__}")
        if initial not in INITIAL:
            raise ValueError(f"unknown initial {initial!r}; valid choices: {', '.join(repr(i) for i in INITIAL)}")
        self.sampler, self.initial = sampler, initial
        self.schedule = sampler.schedule          # the grid of the initial run from T

    def nfe(self, times: Optional[Tensor] = None) -> Optional[int]:
        inner = self.sampler.nfe()
        if inner is None:
            return None
        return inner * (self.iterations + int(self.initial == "prior"))

    def _reports(self, times: Tensor) -> int:
        return self.iterations

    def sample(self, sde, score: ScoreFn, shape: Sequence[int], generator: Optional[torch.Generator] = None,
               x_T: Optional[Tensor] = None, *, times: Optional[Tensor] = None, **options) -> SampleResult:
        """Run the sweeps and return the last x (shape ``shape``); see `scoresde.Sampler.sample` for the options.
        ``times`` is refused: every prior step runs on the inner sampler's own grid from t*(ρ_k)."""
        if times is not None:
            raise ValueError("SplitGibbsSampler runs its prior steps on its inner sampler's grid from t*(rho); give "
                             "the inner sampler's settings (sampler=...) instead of times")
        if self.initial == "x_T" and x_T is None:
            raise ValueError("initial='x_T' starts the chain at x_T: pass x_T (shape (B, *D))")
        return super().sample(sde, score, shape, generator, x_T, **options)

    def _run(self, sde, score: CountedScore, x: Tensor, grid: Coefficients, generator: Optional[torch.Generator],
             report: Recorder) -> Tensor:
        meas, shape = self.measurement, tuple(x.shape)
        if self.initial == "prior":
            x = self.sampler.sample(sde, score, shape, generator, x_T=x).x
        elif self.initial == "measurement":
            x = torch.zeros_like(x)
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
            x = self.sampler.sample(sde, score, shape, generator, x_T=s_star * z, times=times).x
            report(k + 1, rho, x)
        return x


#: How the chain of `SplitGibbsSampler` starts.
INITIAL = ("prior", "measurement", "x_T")


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
