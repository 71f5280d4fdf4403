"""SDEdit (Meng et al. 2022): image-to-image by noising the input part of the way and sampling back.

    x_{t0} = s(t0) x0 + σ(t0) z,   t0 = strength · T   (the exact marginal, `sde.sample_marginal`)

then any sampler runs from t0 down to its last time on its own grid cut at t0. When x0 is a sample of p_0 and the
score is exact, x_{t0} is a sample of p_{t0}, so the result is again a sample of p_0 (up to the solver's error).
"""
from __future__ import annotations

from typing import Optional

import torch

from .._utils import ScoreFn, expand_like
from ._base import SampleResult, Sampler, as_generator, randn_like

Tensor = torch.Tensor


def sdedit(sde, score: ScoreFn, x0: Tensor, strength: float, sampler: Sampler,
           generator: Optional[torch.Generator] = None, **sample_kwargs) -> SampleResult:
    """Noise x0 to t0 = strength · T by the exact marginal and sample from there with ``sampler``.

    The sampler runs on its own grid (`Sampler.times`) with the times above t0 removed and t0 put first, so
    strength = 1 is plain sampling started from the noised input, and a small strength keeps the input's coarse
    structure (and costs fewer steps).

    Args:
        sde: the forward SDE (linear: its marginal is exact).
        score: ``score(x, t)``.
        x0: the inputs, (B, *D).
        strength: in (0, 1], the fraction of the time range to noise to.
        sampler: any `Sampler`.
        generator: seeds the noising draw and the sampler's own draws (or one generator per sample).
        **sample_kwargs: passed to ``sampler.sample`` (trajectory, callback, progress).

    Returns:
        the sampler's `SampleResult`.
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not (0 < strength <= 1):
        raise ValueError(f"strength must be a number in (0, 1]; got {strength!r}")
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a scoresde Sampler (e.g. sd.DPMSolver()); got {type(sampler).__name__}")
    if not torch.is_tensor(x0) or not x0.is_floating_point() or x0.dim() < 1:
        got = f"dtype {x0.dtype}" if torch.is_tensor(x0) else type(x0).__name__
        raise TypeError(f"x0 must be a floating-point tensor of shape (B, *D); got {got}")
    t0 = float(strength) * float(sde.T)
    grid = sampler.times(sde, device=x0.device)
    below = grid[grid < t0]
    if len(below) == 0:
        raise ValueError(f"strength {strength:g} gives t0 = {t0:.6g}, at or below the sampler's last time "
                         f"{float(grid[-1]):.6g}: nothing to sample")
    times = torch.cat([grid.new_tensor([t0]), below])
    t = torch.full((x0.shape[0],), t0, dtype=torch.float64, device=x0.device)
    generator = as_generator(generator, x0.shape[0])
    mean, std = sde.marginal(x0, t)
    x_t0 = mean + expand_like(std, x0) * randn_like(x0, generator)     # row by row for per-sample generators
    return sampler.sample(sde, score, tuple(x0.shape), generator=generator, x_T=x_t0, times=times, **sample_kwargs)
