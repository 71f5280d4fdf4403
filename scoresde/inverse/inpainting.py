"""Inpainting by replacement (Song et al. 2021, App. I) and RePaint's resampling (Lugmayr et al. 2022).

With a `scoresde.Mask` measurement (y observed where the mask is True), each step goes down by DDIM-η (η = 1:
DDPM's ancestral step) and then overwrites the observed entries with a fresh forward draw of the observation,

    x_{t'}[obs] ← s(t') y + σ(t') z,

so the unobserved entries are generated in agreement with the noised observation. RePaint goes back up every
``jump_length`` steps by the exact forward kernel x_t = a x_{t'} + b z (a = s/s', b² = σ² − a² σ'²) and redoes
them, ``resamplings`` times in all, which lets the unobserved entries harmonise with the observed ones. The last
state has the observed entries equal to y exactly. Replacement treats a noisy y as clean.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch

from .._utils import batch_time, check_steps
from ..sampling import SAMPLERS
from ..sampling._base import Sampler, randn_like
from ..sampling.ddim import ddim_step
from ..sampling.grids import TimeGrid, _positive_int
from .measurement import LinearMeasurement, Mask

Tensor = torch.Tensor


def repaint_path(steps: int, jump_length: int, resamplings: int) -> List[int]:
    """RePaint's walk over grid indices 0 (t = T) … N (t = eps): down one index at a time and, on reaching every
    ``jump_length``-th index, back up ``jump_length`` indices, ``resamplings − 1`` times (the paper's schedule)."""
    jumps = {p: resamplings - 1 for p in range(0, steps - jump_length, jump_length)}
    p, path = steps, [steps]
    while p >= 1:
        p -= 1
        path.append(p)
        if jumps.get(p, 0) > 0:
            jumps[p] -= 1
            for _ in range(jump_length):
                p += 1
                path.append(p)
    return [steps - q for q in path]


@SAMPLERS.register("inpainting")
class InpaintingSampler(Sampler):
    """Replacement inpainting (``resamplings=1``) and RePaint (``resamplings > 1``) for any linear SDE.

    Args:
        measurement: a `scoresde.LinearMeasurement` over a `scoresde.Mask` (y of one sample's shape, or one per
            sample).
        steps: N, the grid intervals; NFE = N + (resamplings − 1) × (the up-and-down moves), `nfe()` says.
        resamplings: RePaint's r (1: plain replacement).
        jump_length: RePaint's j, the indices gone back up at each jump.
        eta: the DDIM-η of the down steps (1: DDPM ancestral, the paper's choice).
        grid: ``"log_snr"`` (default), ``"uniform"`` or ``"edm"``.
        eps: the final time.
        rho: EDM's ρ, only for ``grid="edm"``.
    """

    label = "inpainting"

    @classmethod
    def example(cls, **fixed) -> "InpaintingSampler":
        """6 steps on (B, 2) data with the first coordinate observed at y = 1 (no noise)."""
        measurement = LinearMeasurement(Mask(torch.tensor([True, False])), torch.tensor([1.0, 0.0]), 0.0)
        return cls(**{"measurement": measurement, "steps": 6, **fixed})

    def __init__(self, measurement, steps: int = 100, resamplings: int = 1, jump_length: int = 10,
                 eta: float = 1.0, grid: str = "log_snr", eps: float = 1e-3, rho: float = 7.0):
        if not isinstance(measurement, LinearMeasurement) or measurement.mask is None:
            raise TypeError("InpaintingSampler needs a scoresde.LinearMeasurement over a scoresde.Mask (replacement "
                            "overwrites observed entries); for a general A use dps, pigdm, tweedie_moment or "
                            "split_gibbs")
        self.measurement = measurement
        self.schedule = TimeGrid(check_steps(steps), grid, eps, rho)
        self.resamplings = _positive_int(resamplings, "resamplings")
        self.jump_length = _positive_int(jump_length, "jump_length")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a finite number >= 0; got {eta!r}")
        self.eta = float(eta)

    def _path(self, intervals: int) -> List[int]:
        return repaint_path(intervals, self.jump_length, self.resamplings)

    def nfe(self, times: Optional[Tensor] = None) -> int:
        path = self._path(self.steps if times is None else len(times) - 1)
        return sum(1 for a, b in zip(path, path[1:]) if b > a)

    def _reports(self, times: Tensor) -> int:
        return len(self._path(len(times) - 1)) - 1

    def _run(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        meas = self.measurement
        meas.check_x(x)
        keep = meas.mask.mask.to(x.device)[None]
        y = meas.observation(x)
        s, sigma, t_l = grid.s.tolist(), grid.sigma.tolist(), grid.t.tolist()

        def replace(state: Tensor, i: int) -> Tensor:
            return torch.where(keep, s[i] * y + sigma[i] * randn_like(state, generator), state)

        path = self._path(len(t_l) - 1)
        x = replace(x, path[0])
        for k, (i, j) in enumerate(zip(path, path[1:])):
            if j > i:                                     # down: a denoising step, then replacement
                sc = score(x, batch_time(t_l[i], x))
                x = replace(ddim_step(x, sc, (s[i], sigma[i]), (s[j], sigma[j]), self.eta, generator), j)
            else:                                         # up: the forward kernel from t_i to t_j > t_i
                a = s[j] / s[i]
                b = math.sqrt(max(sigma[j] ** 2 - (a * sigma[i]) ** 2, 0.0))
                x = a * x + b * randn_like(x, generator)
            report(k + 1, t_l[j], x)
        return torch.where(keep, y, x)
