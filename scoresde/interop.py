"""Models from other libraries as scores of any linear SDE: EDM / k-diffusion denoisers and flow-matching velocities.

    sde, score = sd.from_diffusers(unet, scheduler)   # a diffusers UNet2DModel with its DDPM β table
    score = sd.from_denoiser(denoiser, sde)    # D(x̃, σ̃) ≈ E[x_0 | x_0 + σ̃ n = x̃] (EDM, k-diffusion)
    score = sd.from_velocity(velocity, sde)    # u(x, t) ≈ E[ṡ x_0 + σ̇ z | x_t] (flow matching on this path)

Any linear SDE is EDM's process in its own variables: with x_t = s x_0 + σ z, the rescaled state x̃ = x_t/s is
x_0 + σ̃ z with σ̃ = σ/s. So an EDM denoiser D(x̃, σ̃) = E[x_0 | x̃] gives Tweedie's score on this SDE,

    score(x, t) = (s D(x/s, σ/s) − x) / σ²,

and a velocity field of the same path (s, σ) gives score = 2 (f x − u)/g² (`scoresde.conversions`). The returned
scores are plain ``score(x, t)``: every sampler and the likelihood take them. Conditions pass through
(`scoresde.guidance.condition`): bind one with ``cond=`` (labels or a tensor: ``model(..., cond)``; a dict:
``model(..., **cond)``), or leave it unbound and give it per call, ``score(x, t, cond)`` — which is what
`scoresde.conditional_score` and `scoresde.classifier_free_guidance` do.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from . import conversions
from ._utils import as_time, check_same_shape
from .guidance.condition import call_model, check_cond, label_count
from .score import Score, as_score
from .sde import DiscreteVPSDE, require_linear, times_at_noise_levels

Tensor = torch.Tensor


def _call(model: Callable, x: Tensor, level: Tensor, bound, cond, named) -> Tensor:
    """``model(x, level, ...)`` with the per-call condition (``cond`` and keywords ``named``), else the bound one."""
    if cond is None and not named:
        cond = bound
    elif isinstance(cond, Mapping):
        cond, named = None, {**cond, **named}
    if named:
        cond = {**named, **({} if cond is None else {"cond": cond})}
    if cond is not None:
        cond = check_cond(cond, x.shape[0], model=model, num_classes=label_count(model), device=x.device)
    return check_same_shape(call_model(model, x, level, cond), x, what="model")


#: diffusers' ``prediction_type`` → what the network predicts.
DIFFUSERS_PREDICTIONS = ("epsilon", "v_prediction", "sample")


def from_diffusers(unet: Callable, scheduler, cond=None):
    """A diffusers model as ``(sde, score)``: the scheduler's ᾱ table as a `scoresde.DiscreteVPSDE`, and the
    network as its score.

    The network is called like diffusers does (its ``.sample`` is used when it returns an output object): a long
    tensor cond as ``unet(x, timestep, class_labels=cond)``, a floating one as the third argument
    ``unet(x, timestep, cond)`` (a ``UNet2DConditionModel``'s ``encoder_hidden_states``), a dict as keywords
    ``unet(x, timestep, encoder_hidden_states=..., added_cond_kwargs={...})``. ``cond`` given here is bound;
    without it the score takes one per call, ``score(x, t, cond)`` / ``score(x, t, **cond)``, so that
    `scoresde.classifier_free_guidance` runs the conditional and null rows in one call. The network is called at the fractional timestep n = N t − 1 of our time t (timestep n sits at
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

    def __init__(self, unet: Callable, sde, prediction: str, cond=None):
        super().__init__()
        self.unet, self.sde, self.prediction, self.cond = unet, sde, prediction, cond

    def forward(self, x: Tensor, t: Tensor, cond=None, **named) -> Tensor:
        """The score at x (B, *D), t (B,); ``cond`` / keyword conditions as in `from_diffusers` (the bound cond
        when none is given)."""
        t = as_time(t, x)
        timestep = self.sde.time_to_timestep(t.to(torch.float64)).to(x.dtype)
        if cond is None and not named:
            cond = self.cond
        if isinstance(cond, Mapping):
            cond, named = None, {**cond, **named}
        if cond is not None:
            cond = check_cond(cond, x.shape[0], device=x.device)
            if not cond.is_floating_point():
                cond, named = None, {**named, "class_labels": cond}
        if named:
            named = check_cond(named, x.shape[0], model=self.unet, device=x.device)
        out = self.unet(x, timestep, **named) if cond is None else self.unet(x, timestep, cond, **named)
        out = check_same_shape(getattr(out, "sample", out[0] if isinstance(out, tuple) else out), x, what="unet")
        s, sigma = conversions.scale_std(self.sde, t, x)
        if self.prediction == "epsilon":
            return conversions.eps_to_score(out, sigma)
        if self.prediction == "v_prediction":
            return conversions.v_to_score(x, out, s, sigma)
        return conversions.x0_to_score(x, out, s, sigma)


def from_denoiser(denoiser: Callable, sde, cond=None) -> Score:
    """The score on ``sde`` of an EDM-style denoiser ``denoiser(x̃, σ̃)`` (x̃ of x's shape, σ̃ of shape (B,)).

    ``denoiser`` is called at x̃ = x/s(t), σ̃ = σ(t)/s(t), in x's dtype; on `scoresde.EDMSDE` (s = 1, σ = t) that is
    D(x, t) itself. ``cond``: a condition bound for every call (labels or a tensor as the third argument, a dict
    as keywords); without it the score takes one per call, ``score(x, t, cond)``.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be a callable D(x, sigma); got {type(denoiser).__name__}")
    require_linear(sde, "from_denoiser")

    def score(x: Tensor, t: Tensor, cond_=None, **named) -> Tensor:
        t = as_time(t, x)
        s, sigma = conversions.scale_std(sde, t, x)
        level = (sigma / s).reshape(-1)
        return conversions.x0_to_score(x, _call(denoiser, x / s, level, cond, cond_, named), s, sigma)

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


def from_velocity(velocity: Callable, sde, cond=None) -> Score:
    """The score on ``sde`` of a flow-matching velocity field ``velocity(x, t)`` ≈ E[ṡ x_0 + σ̇ z | x_t] of the
    same path (s, σ) — on `scoresde.RectifiedFlowSDE` the target z − x_0 (rectified flow's convention, noise at
    t = 1). facebookresearch/flow_matching runs the other way (its t = 1 is the data, its velocity points from noise
    to data): call its model at 1 − t and flip the sign, ``lambda x, t, **e: -model(x=x, t=1 - t, **e)``
    (docs/migration.md). ``cond``: as in `from_denoiser` (flow_matching's ``**model_extras`` are a dict cond).
    """
    if not callable(velocity):
        raise TypeError(f"velocity must be a callable u(x, t); got {type(velocity).__name__}")
    require_linear(sde, "from_velocity")

    def score(x: Tensor, t: Tensor, cond_=None, **named) -> Tensor:
        t = as_time(t, x)
        f, g2 = conversions.rates(sde, t, x)
        return conversions.velocity_to_score(x, _call(velocity, x, t, cond, cond_, named), f, g2)

    return as_score(velocity).wrap(score)
