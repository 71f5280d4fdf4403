"""Ancestral samplers in EDM's variables (k-diffusion's ``sample_euler_ancestral`` and
``sample_dpmpp_2s_ancestral``) for any linear SDE.

With x̃ = x/s, σ̃ = σ/s, a step from σ̃ to σ̃' splits the next noise level into a deterministic part σ̃_↓ and fresh
noise σ̃_↑ (the ancestral step of Song et al.'s DDPM posterior at η = 1):

    σ̃_↑ = min(σ̃', η √(σ̃'² (σ̃² − σ̃'²) / σ̃²)),   σ̃_↓ = √(σ̃'² − σ̃_↑²),

the probability-flow ODE is solved from σ̃ to σ̃_↓, and σ̃_↑ s_noise z is added. Order 1 solves it by Euler,
x̃ ← x̃ + ε̂ (σ̃_↓ − σ̃); order 2 by DPM-Solver++(2S) in λ̃ = −log σ̃ with the data prediction D at the midpoint
(2 evaluations per step):

    x̃_mid = (σ̃_m/σ̃) x̃ + (1 − σ̃_m/σ̃) D(x̃),  σ̃_m = √(σ̃ σ̃_↓);   x̃_↓ = (σ̃_↓/σ̃) x̃ + (1 − σ̃_↓/σ̃) D(x̃_mid).
"""
from __future__ import annotations

import math

import torch

from .. import conversions
from .._utils import check_choice
from ._base import SAMPLERS, Sampler, randn_like
from .threshold import check_threshold
from .grids import TimeGrid, check_steps

Tensor = torch.Tensor


def ancestral_split(level: float, level_next: float, eta: float):
    """(σ̃_↓, σ̃_↑) of a step from ``level`` to ``level_next`` (the module docstring's formula)."""
    up = min(level_next, eta * math.sqrt(max(level_next ** 2 * (level ** 2 - level_next ** 2) / level ** 2, 0.0)))
    return math.sqrt(max(level_next ** 2 - up ** 2, 0.0)), up


@SAMPLERS.register("ancestral")
class AncestralSampler(Sampler):
    """Euler-ancestral (``order=1``) or DPM-Solver++(2S)-ancestral (``order=2``), NFE = order · N (+ denoise).

    Args:
        steps: N, the number of grid intervals.
        order: 1 or 2.
        eta: η ≥ 0: 0 is the deterministic ODE solver (Euler in σ̃, DPM-Solver++(2S)); 1 DDPM's ancestral noise.
        s_noise: multiplier of the injected noise.
        grid: ``"edm"`` (default, as k-diffusion's Karras σ's), ``"log_snr"``, ``"uniform"`` or ``"quadratic"``.
        eps: the final time, 0 < eps < T.
        denoise: finish with Tweedie's E[x_0 | x_eps] (k-diffusion's last step to σ = 0).
        rho: EDM's ρ, only for ``grid="edm"``.
        threshold: `ClipThreshold` or `DynamicThreshold` applied to the data prediction x̂_0 at every score
            evaluation (see `scoresde.sampling.threshold`); None (default) leaves the score as it is.
    """

    EXAMPLE = dict(steps=6)

    takes_threshold = True
    label = "ancestral"

    def __init__(self, steps: int = 30, order: int = 1, eta: float = 1.0, s_noise: float = 1.0, grid: str = "edm",
                 eps: float = 1e-3, denoise: bool = True, rho: float = 7.0,
                 threshold=None):
        self.threshold = check_threshold(threshold, type(self).__name__)
        self.schedule = TimeGrid(check_steps(steps), grid, eps, rho)
        if isinstance(order, bool):
            raise ValueError(f"unknown order {order!r}; valid choices: 1, 2")
        check_choice(order, (1, 2), "order")
        for name, value in (("eta", eta), ("s_noise", s_noise)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        self.order, self.eta, self.s_noise, self.denoise = int(order), float(eta), float(s_noise), bool(denoise)

    def _evaluations_per_step(self) -> int:
        return self.order

    def _run(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        level = grid.noise_level.tolist()
        s_l, sigma_l, t_l = grid.s.tolist(), grid.sigma.tolist(), grid.t.tolist()
        x_tilde = x / s_l[0]
        for i in range(len(t_l) - 1):
            down, up = ancestral_split(level[i], level[i + 1], self.eta)
            d = conversions.denoised_at(score, x_tilde, t_l[i], s_l[i], sigma_l[i])
            if self.order == 1:
                x_tilde = x_tilde + (x_tilde - d) / level[i] * (down - level[i])
            else:
                mid = math.sqrt(level[i] * down)
                t_mid = conversions.time_at_noise_level(sde, mid)
                s_mid = float(sde.scale(torch.tensor([t_mid], dtype=torch.float64))[0])
                x_mid = (mid / level[i]) * x_tilde + (1 - mid / level[i]) * d
                d_mid = conversions.denoised_at(score, x_mid, t_mid, s_mid, s_mid * mid)
                x_tilde = (down / level[i]) * x_tilde + (1 - down / level[i]) * d_mid
            if up > 0 and self.s_noise > 0:
                x_tilde = x_tilde + (up * self.s_noise) * randn_like(x_tilde, generator)
            report(i + 1, t_l[i + 1], s_l[i + 1] * x_tilde)
        return s_l[-1] * x_tilde
