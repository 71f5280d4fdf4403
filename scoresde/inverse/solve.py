"""One entry point for every inverse-problem method: `solve_inverse` by a name in `INVERSE_METHODS`."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .._registry import Registry
from .._utils import ScoreFn
from ..sampling import DDIMSampler, DPMSolverSDE, SampleResult, Sampler
from .inpainting import InpaintingSampler
from .posterior import _check_measurement, dps_score, pigdm_score, tweedie_moment_score
from .red import red
from .split_gibbs import SplitGibbsSampler

#: Inverse-problem methods by name, for ``solve_inverse``, the command line and the benchmark: each entry is
#: ``f(sde, score, measurement, shape, generator=None, **options) -> SampleResult``.
INVERSE_METHODS = Registry("inverse-problem method")


def _placement(measurement) -> dict:
    """Samples are drawn on y's device and in y's dtype (floating point), as RED's estimate is."""
    return {"device": measurement.y.device, "dtype": measurement.y.dtype}


def _guided_sampler(sampler, steps: int):
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
    return InpaintingSampler(measurement, steps=steps, eta=eta).sample(sde, score, shape, generator,
                                                                      **_placement(measurement))


@INVERSE_METHODS.register("repaint")
def _repaint(sde, score, measurement, shape, generator=None, /, steps: int = 50, resamplings: int = 10,
             jump_length: int = 10, eta: float = 1.0):
    """RePaint (a Mask measurement)."""
    return InpaintingSampler(measurement, steps=steps, resamplings=resamplings, jump_length=jump_length,
                             eta=eta).sample(sde, score, shape, generator, **_placement(measurement))


@INVERSE_METHODS.register("split_gibbs")
def _split_gibbs(sde, score, measurement, shape, generator=None, /, steps: int = 30, rho: float = 1.0,
                 rho_min: Optional[float] = 0.05, iterations: int = 20, initial: str = "prior"):
    """Split Gibbs with SDE-DPM-Solver++(2M) prior steps of ``steps`` intervals, ρ annealed to ``rho_min``."""
    return SplitGibbsSampler(measurement, rho=rho, rho_min=rho_min, iterations=iterations,
                             sampler=DPMSolverSDE(steps=steps), initial=initial).sample(
        sde, score, shape, generator, **_placement(measurement))


@INVERSE_METHODS.register("red")
def _red(sde, score, measurement, shape, generator=None, /, noise_level: float = 0.1, lam: float = 1.0,
         iterations: int = 100, method: str = "fixed_point"):
    """RED's point estimate from zero (every row the same unless y is per sample)."""
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
