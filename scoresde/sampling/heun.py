"""EDM's second-order Heun sampler (Karras et al. 2022, Algorithms 1 and 2) for any linear SDE.

A linear SDE has x_t = s(t) x_0 + σ(t) z. In the scaled state x̂ = x / s and the noise level σ̃ = σ / s the
marginals are p(x̂; σ̃) = p_data ∗ N(0, σ̃² I), and the probability-flow ODE becomes (EDM eq. 4 with s = 1)

    dx̂/dσ̃ = (x̂ − D(x̂; σ̃)) / σ̃,

where D is Tweedie's denoiser built from the score at the time t with σ(t)/s(t) = σ̃:

    D(x̂; σ̃) = E[x_0 | x_t = s x̂] = (x + σ(t)² score(x, t)) / s(t),   x = s(t) x̂.

Time enters only through σ̃, so the sampler uses nothing but ``scale``, ``std``, ``log_snr`` and
``time_from_log_snr`` of the SDE.
"""
from __future__ import annotations

import math

import torch

from .. import conversions
from ..sde import times_at_noise_levels
from ._base import SAMPLERS, Sampler, randn_like
from .threshold import check_threshold
from .grids import TimeGrid, check_steps

Tensor = torch.Tensor


@SAMPLERS.register("heun")
class HeunSampler(Sampler):
    """EDM's deterministic Heun sampler, with optional stochastic churn, in the σ/scale form of any LinearSDE.

    On a decreasing grid t_0 = T > … > t_N = eps with noise levels σ̃_i = σ(t_i)/s(t_i), each step is
    (Karras et al. 2022, Algorithm 2):

    1. churn (only when ``churn > 0`` and ``s_tmin ≤ σ̃_i ≤ s_tmax``): γ = min(churn/N, √2 − 1),
       σ̂ = min(σ̃_i (1 + γ), σ̃(t_0)), x̂ ← x̂ + s_noise √(σ̂² − σ̃_i²) z, and t̂ solves log SNR(t̂) = −2 log σ̂
       (found by ``sde.time_from_log_snr``; the cap at σ̃(t_0) keeps t̂ inside the grid, where the score lives).
       Otherwise σ̂ = σ̃_i and t̂ = t_i.
    2. Euler: d = (x̂ − D(x̂; t̂)) / σ̂ and x̂' = x̂ + (σ̃_{i+1} − σ̂) d.
    3. trapezoid correction, skipped on the last step: d' = (x̂' − D(x̂'; t_{i+1})) / σ̃_{i+1} and
       x̂' = x̂ + (σ̃_{i+1} − σ̂) (d + d') / 2.

    The result is x = s(eps) x̂_N. NFE = 2N − 1 (plus 1 with ``denoise=True``, which returns Tweedie's
    E[x_0 | x_eps] instead). The correction makes the deterministic sampler second order in the step size.

    Args:
        steps: N, the number of grid intervals.
        rho: EDM's ρ of the ``"edm"`` grid (ignored by the other grids).
        churn: EDM's S_churn ≥ 0; 0 gives the deterministic probability-flow sampler.
        s_tmin: churn is applied only while σ̃_i lies in [s_tmin, s_tmax] (EDM's S_tmin, S_tmax).
        s_tmax: as ``s_tmin``.
        s_noise: EDM's S_noise, the standard deviation multiplier of the churn noise.
        eps: the final time, 0 < eps < T.
        grid: ``"edm"`` (ρ-spacing in σ̃), ``"log_snr"`` or ``"uniform"`` (see `time_grid`).
        denoise: finish with Tweedie's denoising step at t = eps (one more score evaluation).
        order: 2 (Heun, the default) or 1 (Euler steps in σ̃ only: k-diffusion's ``sample_euler``, diffusers'
            ``EulerDiscreteScheduler``; NFE = N).
        final_correction: also correct the last step (NFE 2N). EDM skips the correction only on a step to
            σ̃ = 0; with ``denoise=True`` that step is the final denoising, so ``final_correction=True`` with
            ``denoise=True`` is EDM's and diffusers' ``HeunDiscreteScheduler``'s rule exactly (k-diffusion's
            ``sample_heun`` on a grid ending in σ = 0).
        threshold: `ClipThreshold` or `DynamicThreshold` applied to the data prediction x̂_0 at every score
            evaluation (see `scoresde.sampling.threshold`); None (default) leaves the score as it is.
    """

    EXAMPLE = dict(steps=6)

    takes_threshold = True
    label = "heun"

    def __init__(self, steps: int = 18, rho: float = 7.0, churn: float = 0.0, s_tmin: float = 0.0,
                 s_tmax: float = math.inf, s_noise: float = 1.0, eps: float = 1e-3, grid: str = "edm",
                 denoise: bool = False, order: int = 2, final_correction: bool = False,
                 threshold=None):
        self.threshold = check_threshold(threshold, type(self).__name__)
        self.schedule = TimeGrid(check_steps(steps), grid, eps, rho)
        if isinstance(order, bool) or order not in (1, 2):
            raise ValueError(f"order must be 1 (Euler) or 2 (Heun); got {order!r}")
        self.order, self.final_correction = int(order), bool(final_correction)
        if not (churn >= 0 and math.isfinite(churn)):
            raise ValueError(f"churn must be a finite number >= 0; got {churn!r}")
        if not (0 <= s_tmin <= s_tmax):
            raise ValueError(f"need 0 <= s_tmin <= s_tmax; got s_tmin={s_tmin!r}, s_tmax={s_tmax!r}")
        if not (s_noise >= 0 and math.isfinite(s_noise)):
            raise ValueError(f"s_noise must be a finite number >= 0; got {s_noise!r}")
        self.churn, self.s_tmin, self.s_tmax, self.s_noise = float(churn), float(s_tmin), float(s_tmax), float(s_noise)
        self.denoise = bool(denoise)

    def nfe(self, times=None) -> int:
        """The number of score evaluations one call of `sample` makes: 2N − 1 (2N with ``final_correction``; N
        with ``order=1``), +1 with denoise."""
        n = self.steps if times is None else len(times) - 1
        if self.order == 1:
            return n + int(self.denoise)
        return 2 * n - 1 + int(self.final_correction) + int(self.denoise)

    def _cannot_invert(self):
        return None if self.churn == 0 else f"HeunSampler(churn={self.churn:g}) draws noise at every step"

    def _run(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        t, s, sig = grid.t, grid.s, grid.noise_level                                          # σ̃_i
        n = len(t) - 1
        # Churned levels σ̂_i and their times t̂_i, all known in advance (γ depends only on i and σ̃_i).
        sig_hat, t_hat = sig.clone(), t.clone()
        if self.churn > 0:
            gamma = min(self.churn / n, math.sqrt(2.0) - 1.0)
            inside = (sig[:-1] >= self.s_tmin) & (sig[:-1] <= self.s_tmax)
            sig_hat[:-1] = torch.where(inside, (sig[:-1] * (1 + gamma)).clamp_max(sig[0]), sig[:-1])
            if score.round_noise_level is not None:           # a model of discrete levels: EDM's round_sigma
                rounded = torch.as_tensor(score.round_noise_level(sig_hat[:-1])).to(sig_hat)
                sig_hat[:-1] = torch.where(inside, torch.maximum(rounded, sig[:-1]), sig[:-1])
            bumped = sig_hat[:-1] > sig[:-1]
            if bool(bumped.any()):
                t_new = times_at_noise_levels(sde, sig_hat[:-1][bumped])
                t_hat[:-1][bumped] = t_new.to(t_hat).clamp(float(t[-1]), float(t[0]))
        s_hat = sde.scale(t_hat)
        sig_l, sig_hat_l = sig.tolist(), sig_hat.tolist()
        t_l, t_hat_l, s_l, s_hat_l = t.tolist(), t_hat.tolist(), s.tolist(), s_hat.tolist()

        def denoised(xh: Tensor, time: float, scale: float, level: float) -> Tensor:
            return conversions.denoised_at(score, xh, time, scale, scale * level)     # σ = s σ̃

        xh = x / s_l[0]
        for i in range(n):
            level, level_next = sig_hat_l[i], sig_l[i + 1]
            if sig_hat_l[i] > sig_l[i]:
                noise_std = self.s_noise * math.sqrt(sig_hat_l[i] ** 2 - sig_l[i] ** 2)
                xh = xh + noise_std * randn_like(xh, generator)
            d = (xh - denoised(xh, t_hat_l[i], s_hat_l[i], level)) / level
            x_next = xh + (level_next - level) * d
            if self.order == 2 and (i < n - 1 or self.final_correction):
                d_next = (x_next - denoised(x_next, t_l[i + 1], s_l[i + 1], level_next)) / level_next
                x_next = xh + (level_next - level) * 0.5 * (d + d_next)
            xh = x_next
            report(i + 1, t_l[i + 1], s_l[i + 1] * xh)
        return s_l[-1] * xh
