"""Wrap a network into a score model: ε / score / x0 / v parameterizations with EDM-style preconditioning.

For a linear SDE, x_t = s x_0 + σ z with s = scale(t), σ = std(t). A network may predict the score, ε, x0 or v;
the conversions to the score are those of [`scoresde.conversions`][scoresde.conversions]. A parameterization is a small object
in the `PARAMETERIZATIONS` registry: its ``c_out(s, σ, σ_d)`` scales the raw network output F into the
prediction, and ``to_score(prediction, x, s, σ)`` converts the prediction. A new one (EDM's F-prediction, a
flow-matching velocity) is one subclass of `Parameterization` and one registry line.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Union

import torch
from torch import nn

from . import conversions
from ._registry import Registry
from ._utils import ScoreFn, as_time, check_same_shape, check_time_range, expand_like, validated_times
from .guidance.condition import model_null
from .guidance.labels import model_classes
from .sde import require_linear

Tensor = torch.Tensor

#: Parameterizations by name: ``PARAMETERIZATIONS.build("v")``.
PARAMETERIZATIONS = Registry("parameterization")


class Parameterization:
    """What a network predicts. Subclasses set ``name`` and implement `c_out` and `to_score`.

    All arguments are tensors that broadcast against each other ((B,) for ``c_out``; shaped like x or
    (B, 1, …, 1) for ``to_score``). A subclass with ``uses_rates = True`` also receives ``rates=(f, g²)``, the
    SDE's drift coefficient and squared diffusion at t, in both methods.
    """

    name = "parameterization"
    #: Whether `c_out` and `to_score` take ``rates=(f(t), g(t)²)`` as well.
    uses_rates = False

    def c_out(self, s: Tensor, sigma: Tensor, sigma_data: float) -> Tensor:
        """Scale of the prediction, chosen so that prediction / c_out has unit variance (the net's target)."""
        raise NotImplementedError

    def to_score(self, prediction: Tensor, x: Tensor, s: Tensor, sigma: Tensor) -> Tensor:
        """The score at x implied by the prediction."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@PARAMETERIZATIONS.register("eps")
class EpsPrediction(Parameterization):
    """ε = E[z | x_t]; c_out = 1 (the target z has unit variance)."""

    name = "eps"

    def c_out(self, s, sigma, sigma_data):
        return torch.ones_like(s)

    def to_score(self, prediction, x, s, sigma):
        return conversions.eps_to_score(prediction, sigma)


@PARAMETERIZATIONS.register("score")
class ScorePrediction(Parameterization):
    """The score itself; c_out = 1/σ (the DSM target −z/σ has variance 1/σ²)."""

    name = "score"

    def c_out(self, s, sigma, sigma_data):
        return 1 / sigma

    def to_score(self, prediction, x, s, sigma):
        return prediction


@PARAMETERIZATIONS.register("x0")
class DataPrediction(Parameterization):
    """x0 = E[x_0 | x_t]; c_out = σ_d (the target x_0 has variance σ_d²)."""

    name = "x0"

    def c_out(self, s, sigma, sigma_data):
        return torch.full_like(s, sigma_data)

    def to_score(self, prediction, x, s, sigma):
        return conversions.x0_to_score(x, prediction, s, sigma)


@PARAMETERIZATIONS.register("v")
class VelocityPrediction(Parameterization):
    """v = ᾱ ε − σ̄ x0; c_out = √((s² + σ_d² σ²)/(s² + σ²)) since Var(ᾱ z − σ̄ x_0) = ᾱ² + σ̄² σ_d²."""

    name = "v"

    def c_out(self, s, sigma, sigma_data):
        return torch.sqrt((s * s + sigma_data ** 2 * sigma * sigma) / (s * s + sigma * sigma))

    def to_score(self, prediction, x, s, sigma):
        return conversions.v_to_score(x, prediction, s, sigma)


@PARAMETERIZATIONS.register("velocity")
class FlowVelocityPrediction(Parameterization):
    """The flow-matching velocity u = E[ṡ x_0 + σ̇ z | x_t] = f x_t − ½ g² score (z − x_0 for rectified flow);
    c_out = √(ṡ² σ_d² + σ̇²) with ṡ = f s and σ̇ = f σ + g²/(2σ) (the target's variance per element)."""

    name = "velocity"
    uses_rates = True

    def c_out(self, s, sigma, sigma_data, rates=None):
        f, g2 = (r.reshape(-1) for r in rates)
        s_dot, sigma_dot = f * s, f * sigma + 0.5 * g2 / sigma
        return torch.sqrt(s_dot * s_dot * sigma_data ** 2 + sigma_dot * sigma_dot)

    def to_score(self, prediction, x, s, sigma, rates=None):
        f, g2 = rates
        return conversions.velocity_to_score(x, prediction, f, g2)


class Preconditioning(NamedTuple):
    """Per-sample coefficients, each of shape (B,): the net computes F(c_in x, c_noise) and the
    parameterization's prediction is c_out F."""

    c_in: Tensor
    c_out: Tensor
    c_noise: Tensor


class ScoreModel(nn.Module):
    """A network turned into a score function ``model(x, t) = ∇_x log p_t(x)`` for any LinearSDE.

    The network ``net(x, t)`` predicts one of ε, score, x0 or v (see the module docstring for the
    conversions). With ``preconditioning=True`` (the c_in / c_out / c_noise idea of EDM, Karras et al. 2022,
    Table 1, applied to the (s, σ) of any linear SDE; σ_d = ``sigma_data`` is the per-element standard deviation
    of the data) the network is called as F = net(c_in x_t, c_noise) and its output scaled by c_out:

        c_in    = 1 / √(s² σ_d² + σ²)                 so that Var(c_in x_t) = 1 for data of variance σ_d²
        c_noise = ¼ log(σ / s) = −log_snr(t) / 8       (EDM's ¼ ln σ for the equivalent VE noise level σ/s)
        c_out   = 1                                   for ε    (the target z already has unit variance)
                = 1 / σ                               for score (the DSM target −z/σ has variance 1/σ²)
                = σ_d                                 for x0   (the target x_0 has variance σ_d²)
                = √((s² + σ_d² σ²) / (s² + σ²))       for v    (Var(ᾱ z − σ̄ x_0) = ᾱ² + σ̄² σ_d²)

    so the network's own regression target (prediction / c_out) has unit variance at every noise level.
    For σ_d = 1 the v model reproduces EDM's full preconditioning, skip connection included:
    x0 = ᾱ x̄ − σ̄ v = c_skip x_t/s + (−c_out^EDM) F with c_skip = 1/(1 + σ²/s²), c_out^EDM = (σ/s)/√(1 + σ²/s²).
    With ``preconditioning=False`` the network sees (x_t, t) and its output is the prediction itself.

    Choosing: "eps" and "v" train well across noise levels. "x0" has no skip connection here, so at small σ the
    net must reproduce x_t/s to within σ² and the score error is amplified by s/σ² (EDM's reason for c_skip;
    "v" is that well-conditioned variant). c_noise spans roughly [−3.5, 1.5] for the default SDEs on
    [1e-5, 1]; a Fourier time embedding with ``fourier_scale`` around 1 suits it better than the 16 used for
    raw t ∈ [0, 1] (see docs/benchmarks.md).

    The conversions divide by σ(t): t must be in (0, T] (σ(0) = 0); other times raise a ValueError (checked
    once per call with one reduction over t, and not at all inside a sampler, which checks its grid once). x must
    have the dtype of the network's parameters (a TypeError says how to cast one or the other).

    Args:
        net: module (or callable) with ``forward(x, t)`` returning x's shape; a conditional net (called
            ``net(x, t, cond)``, or with keyword conditions ``net(x, t, cond, image=...)``) makes the model
            conditional, ``model(x, t, cond)`` / ``model(x, t, **cond)``; its ``null_cond`` (or ``num_classes``) is
            the model's null condition.
        sde: a linear SDE, used only through ``scale(t)`` and ``std(t)``.
        parameterization: a name in `PARAMETERIZATIONS` ("eps", "score", "x0", "v") or a
            `Parameterization` object; "velocity" is flow matching's u = f x − ½ g² score (z − x_0 on
            `scoresde.RectifiedFlowSDE`).
        preconditioning: apply c_in, c_noise and c_out as above.
        sigma_data: σ_d, the data's per-element standard deviation assumed by the preconditioning.
    """

    def __init__(self, net: ScoreFn, sde,
                 parameterization: Union[str, Parameterization] = "eps", preconditioning: bool = True,
                 sigma_data: float = 1.0):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be a callable net(x, t), e.g. an nn.Module; got {type(net).__name__}")
        require_linear(sde, "ScoreModel")
        if isinstance(parameterization, Parameterization):
            self.prediction = parameterization
        else:
            self.prediction = PARAMETERIZATIONS.build(parameterization)
        if self.prediction.uses_rates and not hasattr(sde, "drift_coef"):
            raise TypeError(f"parameterization {self.prediction.name!r} needs the SDE's drift_coef(t) (f of "
                            f"dx = f x dt + g dw); {type(sde).__name__} has none: subclass scoresde.LinearSDE")
        if not isinstance(sigma_data, (int, float)) or not sigma_data > 0:
            raise ValueError(f"sigma_data must be a positive number; got {sigma_data!r}")
        self.net, self.sde = net, sde
        self.preconditioning = bool(preconditioning)
        self.sigma_data = float(sigma_data)

    @property
    def num_classes(self) -> Optional[int]:
        """K of a class-conditional network (called ``model(x, t, cond)``, see `scoresde.guidance`), else None."""
        return model_classes(self.net)

    @property
    def null_cond(self):
        """The network's null condition ∅ (its ``null_cond``: an index, a learned null embedding, a dict), else its
        ``num_classes`` for labels, else None (unconditional, or the caller names one)."""
        return model_null(self.net)

    @property
    def parameterization(self) -> str:
        """The name of what the network predicts ("eps", "score", "x0", "v", ...)."""
        return self.prediction.name

    def extra_repr(self) -> str:
        return (f"parameterization={self.parameterization!r}, preconditioning={self.preconditioning}, "
                f"sigma_data={self.sigma_data}")

    def _inputs(self, x: Tensor, t) -> Tensor:
        """Check x's dtype against the network's parameters and t ∈ (0, T]; return t as (B,) in x's dtype."""
        if not torch.is_tensor(x) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if torch.is_tensor(x) else type(x).__name__
            raise TypeError(f"x must be a floating-point tensor of shape (B, *D); got {got}")
        params = self.net.parameters() if isinstance(self.net, nn.Module) else ()
        p = next((p for p in params if p.is_floating_point()), None)
        if p is not None and p.dtype != x.dtype:
            casts = {torch.float32: ("x.float()", "model.float()"), torch.float64: ("x.double()", "model.double()"),
                     torch.float16: ("x.half()", "model.half()"), torch.bfloat16: ("x.bfloat16()", "model.bfloat16()")}
            cast_x = casts.get(p.dtype, (f"x.to({p.dtype})",))[0]
            cast_model = casts.get(x.dtype, (None, f"model.to({x.dtype})"))[1]
            raise TypeError(f"ScoreModel: x has dtype {x.dtype} but the network's parameters are {p.dtype}: cast x "
                            f"with {cast_x} or the model with {cast_model}")
        return check_time_range(as_time(t, x), self.sde.T, "ScoreModel", positive=True)

    # -- coefficients -------------------------------------------------------------------------------
    def coefficients(self, x: Tensor, t: Tensor) -> Preconditioning:
        """(c_in, c_out, c_noise), each (B,), for x (B, *D) and t (B,) in (0, T]; identity (1, 1, t) without
        preconditioning."""
        return self._coefficients(x, self._inputs(x, t))

    def _coefficients(self, x: Tensor, t: Tensor) -> Preconditioning:
        if not self.preconditioning:
            one = torch.ones_like(t)
            return Preconditioning(one, one, t)
        with validated_times():
            s, sigma = (v.reshape(-1) for v in conversions.scale_std(self.sde, t, x))
        c_in = torch.rsqrt(s * s * self.sigma_data ** 2 + sigma * sigma)
        c_noise = 0.25 * (torch.log(sigma) - torch.log(s))
        extra = {"rates": conversions.rates(self.sde, t, x)} if self.prediction.uses_rates else {}
        return Preconditioning(c_in, self.prediction.c_out(s, sigma, self.sigma_data, **extra), c_noise)

    # -- the network and the conversions ---------------------------------------------------------------
    def net_output(self, x: Tensor, t: Tensor, cond=None, **named) -> Tensor:
        """The raw network output F = net(c_in x, c_noise, cond, **named) (without what is not given), shape of x."""
        return self._net_output(x, self.coefficients(x, t), cond, named)

    def _net_output(self, x: Tensor, c: Preconditioning, cond=None, named=None) -> Tensor:
        x_in = expand_like(c.c_in, x) * x
        named = dict(named or {})
        if isinstance(cond, Mapping):                  # model(x, t, {"cond": ..., "image": ...}) as keywords
            named, cond = {**cond, **named}, None
        out = self.net(x_in, c.c_noise, **named) if cond is None else self.net(x_in, c.c_noise, cond, **named)
        return check_same_shape(out, x, what="net")

    def net_output_to_score(self, output: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """Convert a raw network output F (as returned by `net_output`) at (x, t) to the score, x's shape."""
        t = self._inputs(x, t)
        return self._to_score(output, x, t, self._coefficients(x, t))

    def _to_score(self, output: Tensor, x: Tensor, t: Tensor, c: Preconditioning) -> Tensor:
        check_same_shape(output, x, what="net")
        prediction = expand_like(c.c_out, x) * output
        with validated_times():
            s, sigma = conversions.scale_std(self.sde, t, x)
            extra = {"rates": conversions.rates(self.sde, t, x)} if self.prediction.uses_rates else {}
        return self.prediction.to_score(prediction, x, s, sigma, **extra)

    def forward(self, x: Tensor, t: Tensor, cond=None, **named) -> Tensor:
        """The score ∇_x log p_t(x), shape of x (B, *D), for t (B,) in (0, T]; for a conditional network
        ∇_x log p_t(x | c): cond (B,) long in 0 … K for labels (K = ``num_classes``: no label, the unconditional
        score), a tensor (B, ...), and any keyword conditions the network takes (a dict cond is spread)."""
        t = self._inputs(x, t)
        c = self._coefficients(x, t)
        return self._to_score(self._net_output(x, c, cond, named), x, t, c)

    def eps(self, x: Tensor, t: Tensor, cond=None, **named) -> Tensor:
        """The noise prediction E[z | x_t = x] = −σ(t) score(x, t), shape of x."""
        t = self._inputs(x, t)
        with validated_times():
            _, sigma = conversions.scale_std(self.sde, t, x)
            return conversions.score_to_eps(self(x, t, cond, **named), sigma)

    def denoise(self, x: Tensor, t: Tensor, cond=None, **named) -> Tensor:
        """Tweedie's denoiser E[x_0 | x_t = x] = (x + σ(t)² score(x, t)) / s(t), shape of x."""
        t = self._inputs(x, t)
        with validated_times():
            return conversions.denoise(self.sde, lambda x, t: self(x, t, cond, **named), x, t)
