"""Choosing a sampler's time steps for a given model: a search over the knots of the grid in log SNR (in the spirit
of "Align Your Steps", Sabour et al. 2024, with a plain deterministic objective).

For a deterministic sampler with N steps, the grid T = t_0 > … > t_N = eps is parameterised by the shares
w = softmax(θ) of the log-SNR span, λ_k = λ(T) + (λ(eps) − λ(T)) Σ_{j<k} w_j, so that every θ is a valid
decreasing grid with fixed ends. The objective is the RMS distance of the sampler's output from a tight
probability-flow solve from the same prior draws x_T (``reference``). The search starts from the best of the fixed
grids and accepts only improvements (coordinate search on θ with a shrinking step), so on its batch it is never
worse than the best fixed grid; on fresh draws the tests check that it still is not.

The batch must represent the error's tail. In 2-D, and in 16-D at 5–10 evaluations, 256 draws suffice (gains of
1.2–34× on fresh draws, benchmarks/grid_search.py). In 16-D at 20 evaluations the RMS error is dominated by the
few draws whose path ends near another mode, so a search on 256 draws can return a grid that is worse on fresh
draws (docs/benchmarks.md, lab notes); use thousands of draws there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch

from .._utils import SummaryRepr
from .grids import GRIDS, time_grid
from .pc import PCSampler
from .probability_flow import ProbabilityFlowSampler
from .reverse_sde import ReverseSDESampler

Tensor = torch.Tensor


@dataclass(repr=False)
class GridSearchResult(SummaryRepr):
    """What `optimize_grid` returns.

    Attributes:
        times: the chosen decreasing float64 times (N + 1,), reusable as ``sampler.sample(..., times=times)``.
        error: RMS error of the sampler on those times against the reference, on the search batch.
        fixed: the same error for each fixed grid tried (name → error); the search started from the smallest.
        start: the name of that best fixed grid.
        evaluations: sampler runs made by the search.
    """

    times: Tensor
    error: float
    fixed: Dict[str, float]
    start: str
    evaluations: int


def rms_distance(x: Tensor, reference: Tensor) -> float:
    """sqrt(mean over samples of ‖x − reference‖²)."""
    return float((x - reference).pow(2).reshape(x.shape[0], -1).sum(1).mean().sqrt())


def optimize_grid(sde, score, sampler, x_T: Tensor, reference: Optional[Tensor] = None,
                  grids: Sequence[str] = GRIDS, max_evaluations: int = 400, step: float = 0.5,
                  min_step: float = 0.02) -> GridSearchResult:
    """Choose the N + 1 times of ``sampler`` (its ``steps`` and ``eps``) that minimise its error from ``x_T``.

    Args:
        sde: a LinearSDE.
        score: the model ``score(x, t)``.
        sampler: a deterministic fixed-grid sampler (DPMSolver, UniPCSampler, LMSSampler, HeunSampler, DDIMSampler
            with eta = 0, …); it is run with explicit ``times``.
        x_T: a batch of prior draws (B, *D) (a few hundred suffice).
        reference: the exact images of x_T at the sampler's final time (default: dopri5 on the probability-flow
            ODE at rtol = atol = 1e-9 in x_T's dtype).
        grids: the fixed grids to start from.
        max_evaluations: the most sampler runs of the search.
        step: the first step of the coordinate search on θ (log shares); it halves after a sweep without
            improvement, down to ``min_step``.
    """
    steps, eps = sampler.steps, sampler.eps
    if steps is None:
        raise ValueError(f"{type(sampler).__name__} has no fixed grid (an adaptive sampler): nothing to optimise")

    if getattr(sampler, "eta", 0.0) > 0 or isinstance(sampler, (PCSampler, ReverseSDESampler)):
        raise ValueError(f"optimize_grid needs a deterministic sampler (its error against one reference path); "
                         f"{type(sampler).__name__} draws noise")
    if reference is None:

        tight = ProbabilityFlowSampler(rtol=1e-9, atol=1e-9, eps=eps, time_variable="t")
        reference = tight.sample(sde, score, tuple(x_T.shape), x_T=x_T).x
    runs = 0

    def error(times: Tensor) -> float:
        nonlocal runs
        runs += 1
        out = sampler.sample(sde, score, tuple(x_T.shape), x_T=x_T, times=times).x
        value = rms_distance(out, reference)
        return value if math.isfinite(value) else math.inf

    fixed = {}
    for name in grids:
        try:
            grid = time_grid(sde, steps, name, eps, getattr(sampler, "rho", 7.0))
        except ValueError:                  # a grid this budget cannot make (e.g. trailing with T/N <= eps)
            continue
        fixed[name] = error(grid)
    start = min(fixed, key=fixed.get)
    ends = torch.tensor([sde.T, eps], dtype=torch.float64)
    lam_T, lam_eps = sde.log_snr(ends).tolist()
    first = time_grid(sde, steps, start, eps, getattr(sampler, "rho", 7.0))
    shares = torch.diff(sde.log_snr(first)) / (lam_eps - lam_T)
    theta = torch.log(shares.clamp_min(1e-12))

    def times_of(theta: Tensor) -> Tensor:
        w = torch.softmax(theta, 0)
        lam = lam_T + (lam_eps - lam_T) * torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(w, 0)])
        t = sde.time_from_log_snr(lam).to(torch.float64)
        t[0], t[-1] = sde.T, eps
        return t

    best = fixed[start]
    best_times = first
    while runs < max_evaluations and step >= min_step:
        improved = False
        for i in range(len(theta)):
            for direction in (1.0, -1.0):
                if runs >= max_evaluations:
                    break
                trial = theta.clone()
                trial[i] += direction * step
                times = times_of(trial)
                if not bool((times[1:] < times[:-1]).all()):
                    continue
                value = error(times)
                if value < best:
                    best, theta, best_times, improved = value, trial, times, True
                    break
        if not improved:
            step /= 2
    return GridSearchResult(times=best_times, error=best, fixed=fixed, start=start, evaluations=runs)
