"""Discrete-time views of the seed notes: DDPM β schedules, the NCSN σ ladder, and their SNR.

The continuous SDEs are the limits of these chains: VP with β(t) = N β_{tN} for DDPM, VE for NCSN.
For the N-step chain of *any* LinearSDE use [`scoresde.LinearSDE.discretize`][scoresde.LinearSDE.discretize].
"""
from __future__ import annotations

import math

import torch

from ._utils import check_choice

Tensor = torch.Tensor


def ddpm_betas(steps: int = 1000, schedule: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02,
               cosine_s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """DDPM noise schedule β_1..β_N (float64, shape (N,)).

    ``"linear"``: β linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020).
    ``"cosine"``: ᾱ(t) = cos²((t + s)/(1 + s) · π/2) / cos²(s/(1 + s) · π/2) and β_i = 1 − ᾱ_i/ᾱ_{i−1},
    clipped at ``max_beta`` (Nichol & Dhariwal 2021).
    """
    check_choice(schedule, ("linear", "cosine"), "schedule")
    if int(steps) < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, int(steps), dtype=torch.float64)
    t = torch.linspace(0, 1, int(steps) + 1, dtype=torch.float64)
    alpha_bar = torch.cos((t + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def alphas_cumprod(betas: Tensor) -> Tensor:
    """ᾱ_i = ∏_{j ≤ i} (1 − β_j), shape (N,)."""
    return torch.cumprod(1 - betas, dim=0)


def discrete_snr(betas: Tensor) -> Tensor:
    """SNR_i = ᾱ_i / (1 − ᾱ_i) of a DDPM chain, shape (N,)."""
    a = alphas_cumprod(betas)
    return a / (1 - a)


def ncsn_sigmas(levels: int = 10, sigma_min: float = 0.01, sigma_max: float = 50.0) -> Tensor:
    """The NCSN geometric ladder σ_1 < … < σ_L of ``levels`` = L noise levels from ``sigma_min`` to ``sigma_max``
    (float64, shape (L,)). The count comes first, as the step count of `ddpm_betas` does."""
    if isinstance(levels, bool) or int(levels) != levels or int(levels) < 2:
        raise ValueError(f"levels must be an integer >= 2 (the number of noise levels); got {levels!r}")
    if not (0 < sigma_min < sigma_max < math.inf):
        raise ValueError(f"need finite 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), int(levels), dtype=torch.float64))
