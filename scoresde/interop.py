"""Models from other libraries as scores of any linear SDE: EDM / k-diffusion denoisers and flow-matching velocities.

    sde, score = sd.from_diffusers(unet, scheduler)   # a diffusers UNet2DModel with its DDPM β table
    score = sd.from_denoiser(denoiser, sde)    # D(x̃, σ̃) ≈ E[x_0 | x_0 + σ̃ n = x̃] (EDM, k-diffusion)
    score = sd.from_velocity(velocity, sde)    # u(x, t) ≈ E[ṡ x_0 + σ̇ z | x_t] (flow matching on this path)

Any linear SDE is EDM's process in its own variables: with x_t = s x_0 + σ z, the rescaled state x̃ = x_t/s is
x_0 + σ̃ z with σ̃ = σ/s. So an EDM denoiser D(x̃, σ̃) = E[x_0 | x̃] gives Tweedie's score on this SDE,

    score(x, t) = (s D(x/s, σ/s) − x) / σ²,

and a velocity field of the same path (s, σ) gives score = 2 (f x − u)/g² (`scoresde.conversions`). The returned
scores are plain ``score(x, t)``: every sampler and the likelihood take them. Class labels pass through: give
``cond`` and the model is called ``model(..., cond)``.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from . import conversions
from ._utils import as_time, check_same_shape
from .score import Score, as_score
from .sde import DiscreteVPSDE, require_linear, times_at_noise_levels

Tensor = torch.Tensor


def _call(model: Callable, x: Tensor, level: Tensor, cond) -> Tensor:
    out = model(x, level) if cond is None else model(x, level, cond)
    return check_same_shape(out, x, what="model")


#: diffusers' ``prediction_type`` → what the network predicts.
DIFFUSERS_PREDICTIONS = ("epsilon", "v_prediction", "sample")


def from_diffusers(unet: Callable, scheduler, cond: Optional[Tensor] = None):
    """A diffusers model as ``(sde, score)``: the scheduler's ᾱ table as a `scoresde.DiscreteVPSDE`, and the
    network as its score.

    The network is called like diffusers does, ``unet(x, timestep, class_labels=cond)`` (its ``.sample`` is used
    when it returns an output object), at the fractional timestep n = N t − 1 of our time t (timestep n sits at
    t_n = (n + 1)/N), in x's dtype. Its output is read by ``scheduler.config.prediction_type``: "epsilon"
    (score = −ε/σ), "v_prediction" (v = √ᾱ ε − √(1 − ᾱ) x_0, the "v" of `scoresde.conversions` on VP) or "sample"
    (x_0). Nothing of diffusers is imported here: any callable with that signature and any object with
    ``alphas_cumprod`` and ``config.prediction_type`` work. The score is a `DiffusersScore` module holding the
    network, so it also trains with `scoresde.Trainer` (an ``nn.Module`` network).

    To run a diffusers sampler's steps, sample on the times ``(scheduler.timesteps + 1) / N``; see
    docs/migration.md for which of our samplers reproduces which scheduler.
    """

    if not callable(unet):
        raise TypeError(f"unet must be a callable unet(x, timestep, class_labels=...); got {type(unet).__name__}")
    table = getattr(scheduler, "alphas_cumprod", None)
    config = getattr(scheduler, "config", None)
    prediction = getattr(config, "prediction_type", None) if config is not None else None
    if table is None or prediction is None:
        raise TypeError(f"scheduler must be a diffusers DDPM-family scheduler with alphas_cumprod and "
                        f"config.prediction_type; got {type(scheduler).__name__}")
    if prediction not in DIFFUSERS_PREDICTIONS:
        raise ValueError(f"unsupported prediction_type {prediction!r}; supported: "
                         f"{', '.join(repr(p) for p in DIFFUSERS_PREDICTIONS)}")
    sde = DiscreteVPSDE(alphas_cumprod=torch.as_tensor(table).detach().to("cpu", torch.float64))
    return sde, DiffusersScore(unet, sde, prediction, cond)


class DiffusersScore(nn.Module):
    """The score of a diffusers network on a `scoresde.DiscreteVPSDE` (see `from_diffusers`); an ``nn.Module``
    holding the network, so `scoresde.Trainer` and `scoresde.dsm_loss` can train it like a `scoresde.ScoreModel`."""

    def __init__(self, unet: Callable, sde, prediction: str, cond: Optional[Tensor] = None):
        super().__init__()
        self.unet, self.sde, self.prediction, self.cond = unet, sde, prediction, cond

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = as_time(t, x)
        timestep = self.sde.time_to_timestep(t.to(torch.float64)).to(x.dtype)
        cond = self.cond
        out = self.unet(x, timestep) if cond is None else self.unet(x, timestep, class_labels=cond)
        out = check_same_shape(getattr(out, "sample", out[0] if isinstance(out, tuple) else out), x, what="unet")
        s, sigma = conversions.scale_std(self.sde, t, x)
        if self.prediction == "epsilon":
            return conversions.eps_to_score(out, sigma)
        if self.prediction == "v_prediction":
            return conversions.v_to_score(x, out, s, sigma)
        return conversions.x0_to_score(x, out, s, sigma)


def from_denoiser(denoiser: Callable, sde, cond: Optional[Tensor] = None) -> Score:
    """The score on ``sde`` of an EDM-style denoiser ``denoiser(x̃, σ̃)`` (x̃ of x's shape, σ̃ of shape (B,)).

    ``denoiser`` is called at x̃ = x/s(t), σ̃ = σ(t)/s(t), in x's dtype; on `scoresde.EDMSDE` (s = 1, σ = t) that is
    D(x, t) itself. ``cond``: labels passed as a third argument (a conditional denoiser).
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be a callable D(x, sigma); got {type(denoiser).__name__}")
    require_linear(sde, "from_denoiser")

    def score(x: Tensor, t: Tensor) -> Tensor:
        t = as_time(t, x)
        s, sigma = conversions.scale_std(sde, t, x)
        level = (sigma / s).reshape(-1)
        return conversions.x0_to_score(x, _call(denoiser, x / s, level, cond), s, sigma)

    return as_score(denoiser).wrap(score)


def as_denoiser(sde, score: Callable) -> Callable[[Tensor, Tensor], Tensor]:
    """The EDM denoiser ``D(x̃, σ̃)`` ≈ E[x_0 | x_0 + σ̃ n = x̃] of a score on ``sde``: the inverse of `from_denoiser`.

    At the time t(σ̃) where σ/s = σ̃ (`scoresde.sde.times_at_noise_levels`), x = s x̃ and D = (x + σ² score(x, t))/s
    (Tweedie). x̃: (B, *D); σ̃: (B,) (or a number), in (0, σ(T)/s(T)]. So a scoresde model runs in EDM's or
    k-diffusion's samplers, and ``from_denoiser(as_denoiser(sde, score), sde)`` is ``score`` again.
    """
    if not callable(score):
        raise TypeError(f"score must be a callable score(x, t); got {type(score).__name__}")
    require_linear(sde, "as_denoiser")

    def denoiser(x_tilde: Tensor, level) -> Tensor:
        level = as_time(level, x_tilde, name="sigma")
        t = times_at_noise_levels(sde, level).to(x_tilde.dtype)
        s, sigma = conversions.scale_std(sde, t, x_tilde)
        x = s * x_tilde
        return conversions.score_to_x0(x, check_same_shape(score(x, t), x, what="score"), s, sigma)

    return denoiser


def from_velocity(velocity: Callable, sde, cond: Optional[Tensor] = None) -> Score:
    """The score on ``sde`` of a flow-matching velocity field ``velocity(x, t)`` ≈ E[ṡ x_0 + σ̇ z | x_t] of the
    same path (s, σ) — on `scoresde.RectifiedFlowSDE` the usual target z − x_0 (flow_matching's and rectified
    flow's convention with noise at t = 1). ``cond``: labels passed as a third argument.
    """
    if not callable(velocity):
        raise TypeError(f"velocity must be a callable u(x, t); got {type(velocity).__name__}")
    require_linear(sde, "from_velocity")

    def score(x: Tensor, t: Tensor) -> Tensor:
        t = as_time(t, x)
        f, g2 = conversions.rates(sde, t, x)
        return conversions.velocity_to_score(x, _call(velocity, x, t, cond), f, g2)

    return as_score(velocity).wrap(score)
