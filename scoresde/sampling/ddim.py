"""DDIM with stochasticity η (Song, Meng & Ermon 2021) for any linear SDE: η = 0 is DDIM, η = 1 is DDPM's
ancestral sampler (the posterior mean and variance of each step).

For a step from t to t' < t, with x̂_0 = (x + σ² score)/s and ε̂ = (x − s x̂_0)/σ, and the forward kernel
x_t = a x_{t'} + b n between them (a = s/s', b² = σ² − a² σ'²):

    x_{t'} = s' x̂_0 + √(σ'² − c²) ε̂ + c z,     c = η σ' b / σ,

where c² at η = 1 is the variance of q(x_{t'} | x_t, x_0) (DDPM's posterior variance β̃, "fixed_small"). On VP it
is diffusers' DDIMScheduler step σ_η² = η² (1 − ᾱ')/(1 − ᾱ) (1 − ᾱ/ᾱ').
"""
from __future__ import annotations

import math

import torch

from .. import conversions
from .._utils import batch_time
from ._base import SAMPLERS, Sampler, randn_like
from .threshold import check_threshold
from .grids import TimeGrid, check_steps

Tensor = torch.Tensor


@SAMPLERS.register("ddim")
class DDIMSampler(Sampler):
    """DDIM-η: one score evaluation per step, NFE = N (+ 1 with ``denoise``).

    At η = 0 this is `DPMSolver(order=1)` (the same numbers to rounding); at η = 1 DDPM's ancestral sampling with
    the posterior variance; in between the family of Song et al. (2021), eq. 16. Each step with c > 0 draws one
    standard normal of x's shape from the generator, in order.

    Args:
        steps: N, the number of grid intervals.
        eta: η ≥ 0 (η > 1 adds more noise than the posterior's, as some DDIM users do; c is capped at σ').
        grid: ``"log_snr"`` (default), ``"uniform"`` or ``"edm"`` (see `time_grid`).
        eps: the final time, 0 < eps < T.
        denoise: finish with Tweedie's E[x_0 | x_eps] (one more evaluation), as diffusers' last step to ᾱ = 1.
        rho: EDM's ρ, only for ``grid="edm"``.
        threshold: `ClipThreshold` or `DynamicThreshold` applied to the data prediction x̂_0 at every score
            evaluation (see `scoresde.sampling.threshold`); None (default) leaves the score as it is.
    """

    EXAMPLE = dict(steps=6, eta=1.0)

    takes_threshold = True
    label = "ddim"

    def __init__(self, steps: int = 20, eta: float = 0.0, grid: str = "log_snr", eps: float = 1e-3,
                 denoise: bool = False, rho: float = 7.0,
                 threshold=None):
        self.threshold = check_threshold(threshold, type(self).__name__)
        self.schedule = TimeGrid(check_steps(steps), grid, eps, rho)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (eta >= 0 and math.isfinite(eta)):
            raise ValueError(f"eta must be a finite number >= 0; got {eta!r}")
        self.eta, self.denoise = float(eta), bool(denoise)

    def _cannot_invert(self):
        return None if self.eta == 0 else f"DDIMSampler(eta={self.eta:g}) draws noise at every step"

    def _run(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        s, sigma, t_l = grid.s.tolist(), grid.sigma.tolist(), grid.t.tolist()
        for i in range(len(t_l) - 1):
            sc = score(x, batch_time(t_l[i], x))
            x = ddim_step(x, sc, (s[i], sigma[i]), (s[i + 1], sigma[i + 1]), self.eta, generator)
            report(i + 1, t_l[i + 1], x)
        return x


def ddim_step(x: Tensor, score: Tensor, here, there, eta: float, generator) -> Tensor:
    """One DDIM-η step from (s, σ) = ``here`` to (s', σ') = ``there`` given score(x, t) (the module's formula)."""
    s, sigma = here
    s_next, sigma_next = there
    x0 = conversions.score_to_x0(x, score, s, sigma)
    eps_hat = (x - s * x0) / sigma
    a = s / s_next
    b2 = max(sigma ** 2 - (a * sigma_next) ** 2, 0.0)
    c = min(eta * sigma_next * math.sqrt(b2) / sigma, sigma_next)
    x = s_next * x0 + math.sqrt(max(sigma_next ** 2 - c * c, 0.0)) * eps_hat
    if c > 0:
        x = x + c * randn_like(x, generator)
    return x
