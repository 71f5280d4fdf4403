"""Conversions between the score, the noise ε, the data prediction x0 and the velocity v, written once.

For a linear SDE, x_t = s x_0 + σ z with s = scale(t), σ = std(t), z ~ N(0, I), and Tweedie's formula
E[x_0 | x_t] = (x_t + σ² ∇ log p_t(x_t)) / s ties every prediction to the score:

    ε  = E[z | x_t]   = −σ score                           score = −ε / σ
    x0 = E[x_0 | x_t] = (x_t + σ² score) / s               score = (s x0 − x_t) / σ²
    v  = ᾱ ε − σ̄ x0                                        ε = σ̄ x̄ + ᾱ v

with ᾱ = s / √(s² + σ²), σ̄ = σ / √(s² + σ²) and x̄ = x_t / √(s² + σ²) = ᾱ x_0 + σ̄ z (for VP, ᾱ = s, σ̄ = σ);
the ε identity follows from σ̄ x̄ + ᾱ v = σ̄ ᾱ x_0 + σ̄² z + ᾱ² z − ᾱ σ̄ x_0 = z.

The flow-matching velocity is the conditional speed of the path, u = ṡ x_0 + σ̇ z (z − x_0 for rectified flow,
s = 1 − t, σ = t). With ṡ = f s and σ̇ = f σ + g²/(2σ) its regression E[u | x_t] is the probability-flow drift:

    u = E[ṡ x_0 + σ̇ z | x_t] = f x_t − ½ g² score            score = 2 (f x_t − u) / g²

The intermediate-state denoiser generalises Tweedie to u < t: with the forward kernel x_t = a x_u + b z
(``sde.transition(u, t)``), p_t = p_u ∗ N(0, b²) after scaling by a, so

    E[X_u | X_t = x] = (x + b² score(x, t)) / a,      score(x, t) = (a E[X_u | X_t = x] − x) / b².

u = 0 gives back x0 (a = s, b = σ). In the elementwise functions, ``s``, ``sigma``, ``a``, ``b`` are numbers or
tensors that broadcast against x (use `scale_std` for per-sample (B,) values).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

from ._utils import ScoreFn, as_time, batch_time, expand_like
from .sde import diffusion_values

Tensor = torch.Tensor


# -- elementwise conversions --------------------------------------------------------------------------------
def score_to_eps(score: Tensor, sigma) -> Tensor:
    """ε = −σ score."""
    return -sigma * score


def eps_to_score(eps: Tensor, sigma) -> Tensor:
    """score = −ε / σ."""
    return -eps / sigma


def score_to_x0(x: Tensor, score: Tensor, s, sigma) -> Tensor:
    """Tweedie: x0 = (x + σ² score) / s."""
    return (x + sigma * sigma * score) / s


def x0_to_score(x: Tensor, x0: Tensor, s, sigma) -> Tensor:
    """score = (s x0 − x) / σ²."""
    return (s * x0 - x) / (sigma * sigma)


def v_to_eps(x: Tensor, v: Tensor, s, sigma) -> Tensor:
    """ε = σ̄ x̄ + ᾱ v with ᾱ = s/√(s² + σ²), σ̄ = σ/√(s² + σ²), x̄ = x/√(s² + σ²)."""
    norm = (s * s + sigma * sigma) ** 0.5
    return (sigma / norm) * (x / norm) + (s / norm) * v


def v_to_score(x: Tensor, v: Tensor, s, sigma) -> Tensor:
    """score = −ε/σ with ε from `v_to_eps`."""
    return eps_to_score(v_to_eps(x, v, s, sigma), sigma)


def score_to_v(x: Tensor, score: Tensor, s, sigma) -> Tensor:
    """v = ᾱ ε − σ̄ x0."""
    norm = (s * s + sigma * sigma) ** 0.5
    return (s / norm) * score_to_eps(score, sigma) - (sigma / norm) * score_to_x0(x, score, s, sigma)


def score_to_velocity(x: Tensor, score: Tensor, f, g2) -> Tensor:
    """The flow-matching velocity u = f x − ½ g² score (f = drift_coef(t), g2 = diffusion(t)²)."""
    return f * x - 0.5 * g2 * score


def velocity_to_score(x: Tensor, u: Tensor, f, g2) -> Tensor:
    """score = 2 (f x − u) / g²."""
    return 2 * (f * x - u) / g2


def to_intermediate(x: Tensor, score: Tensor, a, b) -> Tensor:
    """E[X_u | X_t = x] = (x + b² score) / a for the kernel x_t = a x_u + b z."""
    return (x + b * b * score) / a


def intermediate_to_score(x: Tensor, x_u: Tensor, a, b) -> Tensor:
    """score(x, t) = (a E[X_u | X_t = x] − x) / b²."""
    return (a * x_u - x) / (b * b)


# -- with an SDE ------------------------------------------------------------------------------------------
def scale_std(sde, t: Tensor, x: Tensor) -> Tuple[Tensor, Tensor]:
    """s(t) and σ(t), computed in float64 and returned in x's dtype, shaped (B, 1, …, 1) to broadcast against x."""
    t64 = as_time(t, x).to(torch.float64)
    s, sigma = sde.scale(t64).to(x.dtype), sde.std(t64).to(x.dtype)
    return expand_like(s, x), expand_like(sigma, x)


def rates(sde, t: Tensor, x: Tensor) -> Tuple[Tensor, Tensor]:
    """f(t) and g(t)², computed in float64 and returned in x's dtype, shaped (B, 1, …, 1) (the SDE must have
    ``drift_coef``, as every `scoresde.LinearSDE` has)."""

    if not hasattr(sde, "drift_coef"):
        raise TypeError(f"{type(sde).__name__} has no drift_coef(t) (f of dx = f x dt + g dw), which the velocity "
                        f"parameterization needs: subclass scoresde.LinearSDE")
    t64 = as_time(t, x).to(torch.float64)
    f = torch.as_tensor(sde.drift_coef(t64), dtype=torch.float64, device=x.device).expand(t64.shape)
    g2 = diffusion_values(sde, t64).to(torch.float64) ** 2
    return expand_like(f.to(x.dtype), x), expand_like(g2.to(x.dtype), x)


def denoised_at(score: ScoreFn, x_tilde: Tensor, t: float, s: float, sigma: float) -> Tensor:
    """EDM's denoiser D(x̃; σ̃) = E[x_0 | x_t = s x̃] (Tweedie) from a score at the time t where the kernel has
    scale s and std σ = s σ̃ (numbers): the one place the samplers that step in x̃ (Heun, ancestral) form it."""
    x = s * x_tilde
    return score_to_x0(x, score(x, batch_time(t, x)), s, sigma)


def denoise(sde, score: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """Tweedie's denoiser E[x_0 | x_t = x] = (x + σ(t)² score(x, t)) / s(t), shape of x (B, *D); t (B,)."""
    t = as_time(t, x)
    s, sigma = scale_std(sde, t, x)
    return score_to_x0(x, score(x, t), s, sigma)


def denoise_to(sde, score: ScoreFn, x: Tensor, t: Tensor, u: Tensor) -> Tensor:
    """E[X_u | X_t = x] for times u ≤ t (each (B,) or a number), shape of x: (x + b² score(x, t)) / a."""
    t, u = as_time(t, x), as_time(u, x)
    a, b = sde.transition(u.to(torch.float64), t.to(torch.float64))
    return to_intermediate(x, score(x, t), expand_like(a.to(x.dtype), x), expand_like(b.to(x.dtype), x))


def time_at_noise_level(sde, noise_level: float) -> float:
    """The time t* with σ(t*)/s(t*) = ``noise_level`` (x_{t*}/s(t*) = x_0 + noise_level · z), by inverting log SNR.

    It must lie in (0, T]: the noise level must be positive and at most σ(T)/s(T).
    """
    level = float(noise_level)
    if not (math.isfinite(level) and level > 0):
        raise ValueError(f"the noise level must be a finite number > 0; got {noise_level!r}")
    top = float(sde.std(torch.tensor([sde.T], dtype=torch.float64)) / sde.scale(torch.tensor([sde.T],
                                                                                           dtype=torch.float64)))
    if level > top * (1 + 1e-9):
        raise ValueError(f"the noise level {level:g} is above the SDE's largest, σ(T)/s(T) = {top:.4g}")
    if level >= top:
        return float(sde.T)
    t = float(sde.time_from_log_snr(torch.tensor([-2 * math.log(level)], dtype=torch.float64))[0])
    if not 0 < t <= sde.T:
        raise ValueError(f"the noise level {level:g} maps to t = {t:.3g}, outside (0, T={sde.T}]")
    return t
