"""Score-matching objectives: denoising (continuous time), sliced (Hutchinson) and explicit (Hyvärinen).

Denoising score matching (Vincent 2011; Song et al. 2021) for a linear SDE, x_t = s(t) x_0 + σ(t) z:

    L(θ) = E_{t ~ U(eps, T)} E_{x_0} E_z [ λ(t) ‖ score_θ(x_t, t) + z / σ(t) ‖² ]

whose minimiser at every t is the true score of p_t, because E[−z/σ | x_t] = ∇ log p_t(x_t).
"""
from __future__ import annotations

import math
import weakref
from typing import Callable, Optional, Tuple, Union

import torch

from ._registry import Registry
from ._utils import (ScoreFn, as_time, check_choice, check_finite, check_same_shape, check_time_range, expand_like,
                     require_float64, validated_times)
from .guidance.condition import call_model, check_cond, index_rows, label_count
from .guidance.labels import check_labels
from .sde import diffusion_values

Tensor = torch.Tensor

#: Loss weightings λ(t) by name: ``weighting(sde, t) -> λ(t)``, each (B,). ``WEIGHTINGS.register("mine", fn)``
#: adds one; `dsm_loss` also takes such a function directly.
WEIGHTINGS = Registry("weighting")


@WEIGHTINGS.register("sigma2")
def sigma2_weighting(sde, t: Tensor) -> Tensor:
    """λ(t) = σ(t)²: the ε-prediction MSE ‖σ score + z‖²."""
    return sde.std(t) ** 2


@WEIGHTINGS.register("likelihood")
def likelihood_weighting(sde, t: Tensor) -> Tensor:
    """λ(t) = g(t)²: the likelihood weighting of Song et al. 2021 (a bound on the NLL)."""
    return diffusion_values(sde, t) ** 2


@WEIGHTINGS.register("flow_matching")
def flow_matching_weighting(sde, t: Tensor) -> Tensor:
    """λ(t) = g(t)⁴/4: the flow-matching MSE ‖û − (ṡ x_0 + σ̇ z)‖² of the velocity û = f x − ½ g² score, since
    û − u = −½ g² (score + z/σ) (on `scoresde.RectifiedFlowSDE`, the regression of z − x_0)."""
    return diffusion_values(sde, t) ** 4 / 4


@WEIGHTINGS.register("none")
def unit_weighting(sde, t: Tensor) -> Tensor:
    """λ(t) = 1: the plain score error ‖score + z/σ‖²."""
    return torch.ones_like(t)


# Weightings stated on the data prediction: x̂₀ − x₀ = (σ²/s)(score + z/σ), so a weight w(t) on the x̂₀-MSE
# ‖x̂₀ − x₀‖² is λ(t) = w(t) σ⁴/s² here; on the ε-MSE ‖ε̂ − z‖² it is λ = w σ² (w = 1: "sigma2").
@WEIGHTINGS.register("x0")
def x0_weighting(sde, t: Tensor) -> Tensor:
    """λ(t) = σ⁴/s²: the plain data-prediction MSE ‖x̂₀ − x₀‖² (equal to the ε-MSE divided by SNR = s²/σ²)."""
    s, sigma = sde.scale(t), sde.std(t)
    return sigma ** 4 / (s * s)


@WEIGHTINGS.register("snr")
def snr_weighting(sde, t: Tensor) -> Tensor:
    """λ(t) = SNR σ⁴/s² = σ²: the x̂₀-MSE weighted by SNR(t), which is the ε-MSE ("sigma2") itself."""
    return sde.std(t) ** 2


@WEIGHTINGS.register("min_snr")
def min_snr_weighting(sde, t: Tensor, gamma: float = 5.0) -> Tensor:
    """λ(t) = min(SNR, γ) σ⁴/s²: Min-SNR-γ (Hang et al. 2023), the x̂₀-MSE weighted by min(SNR, γ) (γ = 5; on the
    ε-MSE the weight min(SNR, γ)/SNR). Another γ: ``functools.partial(min_snr_weighting, gamma=...)``."""
    s, sigma = sde.scale(t), sde.std(t)
    return torch.clamp(s * s / (sigma * sigma), max=float(gamma)) * sigma ** 4 / (s * s)


@WEIGHTINGS.register("edm")
def edm_weighting(sde, t: Tensor, sigma_data: float = 0.5) -> Tensor:
    """λ(t) = σ² (1 + σ̃²/σ_d²): EDM's weight (σ̃² + σ_d²)/(σ̃ σ_d)² on the denoiser MSE ‖D − x₀‖² (Karras et al.
    2022), at the equivalent VE noise level σ̃ = σ/s (σ_d = 0.5)."""
    s, sigma = sde.scale(t), sde.std(t)
    return sigma ** 2 * (1 + (sigma / s) ** 2 / float(sigma_data) ** 2)


REDUCTIONS = ("mean", "sum", "none")
PROJECTIONS = ("rademacher", "gaussian")

_IS_GRID = 4096
_is_tables: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _reduce(per_sample: Tensor, reduce: str) -> Tensor:
    check_choice(reduce, REDUCTIONS, "reduce")
    if reduce == "mean":
        return per_sample.mean()
    if reduce == "sum":
        return per_sample.sum()
    return per_sample


def _check_data(sde, x0: Tensor, eps: float) -> None:
    """x0 a floating-point batch (B, *D) and 0 < eps < T, or a ValueError saying which."""
    if not torch.is_tensor(x0) or x0.dim() < 2 or not x0.is_floating_point():
        got = f"shape {tuple(x0.shape)}, dtype {x0.dtype}" if torch.is_tensor(x0) else type(x0).__name__
        raise ValueError(f"x0 must be a floating-point tensor of shape (B, *D); got {got}")
    if x0.shape[0] == 0 or x0[0].numel() == 0:
        raise ValueError(f"x0 must hold at least one sample with data, shape (B, *D) with B >= 1; got shape "
                         f"{tuple(x0.shape)}")
    if not (isinstance(eps, (int, float)) and 0 < eps < sde.T):
        raise ValueError(f"eps must satisfy 0 < eps < T = {sde.T}; got {eps!r}")
    require_float64(x0.device, "dsm_loss")
    check_finite(x0, "x0")


def _check_noise(sigma: Tensor, weight: Tensor, t: Tensor, weighting) -> None:
    """σ(t) > 0 and a finite weight λ(t)/σ(t)² for every row (one host sync), or a ValueError naming the first
    row that is not: the loss divides by σ(t)², which is 0 where the SDE has added no noise yet (g = 0 on [0, t])."""
    bad = ~(sigma > 0) | ~torch.isfinite(weight)
    if not bool(bad.any()):
        return
    row = int(bad.nonzero()[0, 0])
    at = f"at t = {float(t[row]):.6g} (row {row}; {int(bad.sum())} of {bad.numel()} rows)"
    if not sigma[row] > 0:
        raise ValueError(f"dsm_loss: std(t) = {float(sigma[row]):.6g} {at}: the SDE has added no noise by that time "
                         f"(g = 0 on [0, t]?), and the loss divides by std(t)²; draw times where std(t) > 0 (a larger "
                         f"eps, or fixed times t)")
    name = weighting if isinstance(weighting, str) else getattr(weighting, "__name__", "the weighting")
    raise ValueError(f"dsm_loss: the weight λ(t)/std(t)² of {name!r} is {float(weight[row])!r} {at}; a weighting must "
                     f"be finite where the times are drawn")


def _shard(shard: Tuple[int, int], batch: int, *tensors):
    """Rows ``rank::world_size`` of each tensor (None stays None): DistributedSampler's strided rule."""
    rank, world = (int(v) for v in shard)
    if not 0 <= rank < world or batch % world:
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size dividing the batch "
                         f"size {batch}; got {shard!r}")
    return tuple(index_rows(v, slice(rank, None, world)) for v in tensors)


def _importance_table(sde, eps: float, device) -> Tuple[Tensor, Tensor, Tensor]:
    """Tabulate the proposal q(t) ∝ g(t)²/σ(t)² on [eps, T] in u = log t (float64).

    q has a 1/t singularity at t → 0 for VE, VP and sub-VP, so the grid is uniform in u, where the density
    h(u) = q(e^u) e^u is smooth. Returns (u grid (N+1,), cell masses (N,), CDF at the cell edges (N+1,)), with
    the masses given by the trapezoid rule; the sampled law is exactly piecewise uniform in u on these cells.
    """
    key = (float(eps), str(device))
    try:
        tables = _is_tables.setdefault(sde, {})
    except TypeError:  # an SDE object that cannot be weakly referenced or hashed: no caching
        tables = {}
    if key not in tables:
        u = torch.linspace(math.log(eps), math.log(sde.T), _IS_GRID + 1, dtype=torch.float64, device=device)
        t = torch.exp(u).clamp(eps, sde.T)
        g = diffusion_values(sde, t).to(torch.float64)
        sigma = sde.std(t).to(torch.float64)
        h = g * g / (sigma * sigma) * t
        if not bool(torch.isfinite(h).all()) or bool((h < 0).any()):
            raise ValueError(f"importance sampling needs finite g(t)²/σ(t)² on [eps={eps}, T={sde.T}]; "
                             f"{type(sde).__name__} gives a non-finite value (σ(t) = 0 somewhere?)")
        masses = 0.5 * (h[1:] + h[:-1]) * (u[1:] - u[:-1])
        if not float(masses.sum()) > 0:
            raise ValueError(f"importance sampling needs g(t) > 0 somewhere on [eps={eps}, T={sde.T}]")
        cdf = torch.cat([masses.new_zeros(1), torch.cumsum(masses, 0)])
        tables[key] = (u, masses, cdf)
    return tables[key]


def _sample_importance(sde, eps: float, batch: int, generator, device, dtype) -> Tuple[Tensor, Tensor]:
    """Draw t from the tabulated proposal p(t) ∝ g²/σ² on [eps, T]; returns (t, p(t)), each (B,), in dtype.

    Inverse-CDF sampling: a uniform r picks the cell k with CDF_k ≤ r·Z < CDF_{k+1} and u is uniform inside it,
    so the density of t = e^u is exactly p(t) = m_k / (Z Δu_k t).
    """
    u, masses, cdf = _importance_table(sde, eps, device)
    total = cdf[-1]
    r = torch.rand(batch, generator=generator, device=device, dtype=torch.float64) * total
    k = torch.searchsorted(cdf, r, right=True).sub(1).clamp(0, masses.shape[0] - 1)
    width = u[k + 1] - u[k]
    frac = ((r - cdf[k]) / masses[k]).clamp(0, 1)
    t = torch.exp(u[k] + frac * width).clamp(eps, sde.T)
    density = masses[k] / (total * width * t)
    return t.to(dtype), density.to(dtype)


# -- distributions of the training time ----------------------------------------------------------------------
#: Distributions q(t) of the training time on [eps, T]: ``q.sample(sde, eps, batch, generator, device, dtype)``
#: returns (t, q(t)). As importance samplers of the uniform-t objective they carry the weight 1/((T − eps) q(t)).
TIME_DISTRIBUTIONS = Registry("time distribution")


@TIME_DISTRIBUTIONS.register("uniform")
class UniformTimes:
    """t ~ U(eps, T), q = 1/(T − eps)."""

    def sample(self, sde, eps, batch, generator, device, dtype):
        t = eps + (sde.T - eps) * torch.rand(batch, generator=generator, device=device, dtype=dtype)
        return t, torch.full_like(t, 1 / (sde.T - eps))


@TIME_DISTRIBUTIONS.register("importance")
class ImportanceTimes:
    """q(t) ∝ g(t)²/σ(t)² on [eps, T] (Song et al. 2021's proposal for the likelihood weighting), tabulated in log t
    (4096 cells) and drawn by inverse CDF; q is the exact density of that tabulated law."""

    def sample(self, sde, eps, batch, generator, device, dtype):
        return _sample_importance(sde, eps, batch, generator, device, dtype)


@TIME_DISTRIBUTIONS.register("log_snr")
class LogSNRTimes:
    """log SNR uniform on [λ(T), λ(eps)], mapped back by ``time_from_log_snr``. Since dλ/dt = −g²/σ², its density
    q(t) = (g²/σ²)/(λ(eps) − λ(T)) is the "importance" proposal's, in closed form."""

    def sample(self, sde, eps, batch, generator, device, dtype):
        ends = torch.tensor([sde.T, eps], dtype=torch.float64, device=device)
        lam_T, lam_eps = sde.log_snr(ends).tolist()
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        t = sde.time_from_log_snr(lam_T + u * (lam_eps - lam_T)).clamp(eps, sde.T)
        g2 = diffusion_values(sde, t).to(torch.float64) ** 2
        return t.to(dtype), (g2 / sde.std(t).to(torch.float64) ** 2 / (lam_eps - lam_T)).to(dtype)


@TIME_DISTRIBUTIONS.register("log_normal")
class LogNormalTimes:
    """EDM's noise distribution: ln σ̃ ~ N(mean, std²) for σ̃ = σ/s (Karras et al. 2022: −1.2, 1.2), truncated to
    [σ̃(eps), σ̃(T)] and mapped back to t; q(t) = N(ln σ̃(t))/Z · g²/(2σ²) (d ln σ̃/dt = g²/(2σ²)),
    Z the normal mass of the truncation."""

    def __init__(self, mean: float = -1.2, std: float = 1.2):
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(f"log_normal needs a finite mean and std > 0; got {mean!r}, {std!r}")
        self.mean, self.std = float(mean), float(std)

    def sample(self, sde, eps, batch, generator, device, dtype):
        normal = torch.distributions.Normal(torch.tensor(self.mean, dtype=torch.float64),
                                            torch.tensor(self.std, dtype=torch.float64))
        ends = torch.tensor([eps, sde.T], dtype=torch.float64, device=device)
        log_levels = (torch.log(sde.std(ends)) - torch.log(sde.scale(ends))).cpu()
        lo, hi = normal.cdf(log_levels).tolist()
        if not hi - lo > 1e-12:
            raise ValueError(f"log_normal({self.mean}, {self.std}) puts no mass on ln σ/s in "
                             f"[{float(log_levels[0]):.3g}, {float(log_levels[1]):.3g}] (the SDE's range)")
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        log_level = normal.icdf((lo + u * (hi - lo)).cpu().clamp(1e-300, 1 - 1e-16)).to(device)
        t = sde.time_from_log_snr(-2 * log_level).clamp(eps, sde.T)
        g2 = diffusion_values(sde, t).to(torch.float64) ** 2
        log_level = torch.log(sde.std(t).to(torch.float64)) - torch.log(sde.scale(t).to(torch.float64))
        density = torch.exp(normal.log_prob(log_level.cpu())).to(device) / (hi - lo) * g2 / (
            2 * sde.std(t).to(torch.float64) ** 2)
        return t.to(dtype), density.to(dtype)


def _time_distribution(value):
    if isinstance(value, str):
        return TIME_DISTRIBUTIONS.build(value)
    if not hasattr(value, "sample"):
        raise TypeError(f"time_distribution must be a name in {TIME_DISTRIBUTIONS.names()} or an object with "
                        f"sample(sde, eps, batch, generator, device, dtype); got {type(value).__name__}")
    return value


def dsm_loss(sde, model: ScoreFn, x0: Tensor, weighting: Union[str, Callable] = "sigma2",
             importance_sampling: bool = False,
             eps: float = 1e-5, generator: Optional[torch.Generator] = None, reduce: str = "mean",
             t: Optional[Tensor] = None, shard: Optional[Tuple[int, int]] = None,
             cond: Optional[Tensor] = None, time_distribution=None, importance_weight: bool = True) -> Tensor:
    """Continuous-time denoising score matching for a linear SDE.

    For each sample: t ~ U(eps, T), z ~ N(0, I), x_t = s(t) x0 + σ(t) z and

        ℓ = λ(t) ‖ model(x_t, t) + z/σ(t) ‖²   (summed over the data dimensions)

    computed as (λ/σ²) ‖σ model + z‖² for numerical stability at small σ, with

        λ(t) = σ(t)²   "sigma2"      (the classic choice: ‖σ score + z‖², i.e. the ε-prediction MSE)
        λ(t) = g(t)²   "likelihood"  (Song et al. 2021, "Maximum likelihood training of score-based diffusion
                                     models", Thm. 1: ½ (T − eps) E[ℓ] plus a constant independent of the model
                                     bounds the negative log-likelihood −E log p_θ(x0) of the SDE model; the
                                     constant collects the prior term E[−log π(x_T)], E[∇·f] and the
                                     model-free part ‖z/σ‖² of the kernel score)
        λ(t) = 1       "none"

    With ``importance_sampling=True``, t is drawn instead from p(t) ∝ g(t)²/σ(t)² on [eps, T] (inverse CDF on a
    table of 4096 cells uniform in log t) and ℓ is multiplied by 1/((T − eps) p(t)), with p the exact density
    of the tabulated sampler. The estimator is then unbiased for the same quantity E_{t~U(eps,T)}[ℓ] for every
    weighting; for "likelihood" the factor λ/(σ² (T − eps) p(t)) is the constant Z/(T − eps) (Z = ∫ g²/σ²), which
    removes the 1/t variance blow-up near t = 0.

    Args:
        sde: a linear SDE, used through ``scale``, ``std``, ``diffusion`` and ``T``.
        model: score function model(x, t) returning x's shape, e.g. [`scoresde.ScoreModel`][scoresde.ScoreModel] or
            ``GaussianMixture.score(sde)``.
        x0: data batch (B, *D).
        weighting: a name in `WEIGHTINGS` ("sigma2", "likelihood", "flow_matching", "none", "x0", "snr",
            "min_snr", "edm") or a function ``weighting(sde, t) -> λ(t)`` of shape (B,).
        importance_sampling: sample t ∝ g²/σ² with the matching weights (any weighting); the same as
            ``time_distribution="importance"``.
        time_distribution: draw t from a distribution q in `TIME_DISTRIBUTIONS` ("uniform", "importance",
            "log_snr", "log_normal") or an object with its ``sample`` method (e.g. ``LogNormalTimes(-1.2, 1.2)``).
        importance_weight: with a time distribution, multiply ℓ by 1/((T − eps) q(t)), so that the estimate is
            unbiased for the uniform-t objective (lower variance, same minimiser); False trains on E_q[ℓ]
            instead (EDM's practice: the distribution becomes part of the weighting).
        eps: smallest training time, 0 < eps < T.
        generator: torch.Generator for t and z (t is drawn before z).
        reduce: "mean" (over the batch), "sum", or "none" (per-sample losses, shape (B,)).
        t: optional fixed times (B,) (or a scalar) in (0, T] instead of sampling them, e.g. to evaluate one
            noise level; not allowed together with importance sampling.
        shard: ``(rank, world_size)`` for data-parallel training: ``x0`` is the *global* batch, the times and
            noise are drawn for all of it exactly as in a single process, and only rows ``rank::world_size``
            (DistributedSampler's strided rule) are evaluated. The mean over the shards then equals the
            single-process loss of the same global batch and generator.
        cond: the condition of a conditional model (`scoresde.guidance.condition`): class labels (B,) long (the
            index ``num_classes`` is ∅), a tensor (B, ...) called ``model(x_t, t, cond)``, or a dict spread as
            ``model(x_t, t, **cond)``; condition dropout is the caller's (`scoresde.guidance.drop_cond`). Sharded
            like x0.

    Returns:
        The loss: a scalar, or shape (B,) when reduce="none".
    """
    weight_fn = weighting if callable(weighting) else WEIGHTINGS.get(weighting)[0]
    check_choice(reduce, REDUCTIONS, "reduce")
    _check_data(sde, x0, eps)
    batch = x0.shape[0]
    if cond is not None:
        cond = check_cond(cond, batch, model=model, num_classes=label_count(model), device=x0.device)
    weight = torch.ones(batch, device=x0.device, dtype=x0.dtype)
    if t is not None:
        if importance_sampling:
            raise ValueError("give either fixed times t or importance_sampling=True, not both")
        t = check_time_range(as_time(t, x0), sde.T, "dsm_loss", positive=True)
    elif importance_sampling or time_distribution is not None:
        if importance_sampling and time_distribution not in (None, "importance"):
            raise ValueError("give importance_sampling=True or a time_distribution, not both")
        sampler = _time_distribution("importance" if time_distribution is None else time_distribution)
        t, density = sampler.sample(sde, eps, batch, generator, x0.device, x0.dtype)
        if importance_weight:
            weight = 1 / ((sde.T - eps) * density)
    else:
        t = eps + (sde.T - eps) * torch.rand(batch, generator=generator, device=x0.device, dtype=x0.dtype)
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    with validated_times():                      # t was drawn in [eps, T] or checked above: no check per call
        s, sigma = sde.scale(t).to(x0.dtype), sde.std(t).to(x0.dtype)
        weight = weight * weight_fn(sde, t).to(x0.dtype) / (sigma * sigma)
    _check_noise(sigma, weight, t, weighting)      # on the whole batch, so that every rank agrees
    if shard is not None:
        x0, t, z, s, sigma, weight, cond = _shard(shard, batch, x0, t, z, s, sigma, weight, cond)
        batch = x0.shape[0]
    with validated_times():
        x_t = expand_like(s, x0) * x0 + expand_like(sigma, x0) * z
        score = check_same_shape(call_model(model, x_t, t, cond), x_t, what="model")
    residual = expand_like(sigma, x0) * score + z                         # σ (score + z/σ)
    per_sample = residual.reshape(batch, -1).pow(2).sum(-1)
    return _reduce(weight * per_sample, reduce)


def _call(model, x: Tensor, t: Optional[Tensor], cond: Optional[Tensor] = None) -> Tensor:
    if cond is not None:
        if t is None:
            raise ValueError("a conditional model is called model(x, t, cond): pass t together with cond")
        out = call_model(model, x, t, check_cond(cond, x.shape[0], model=model, num_classes=label_count(model),
                                                 device=x.device))
    else:
        out = model(x) if t is None else model(x, t)
    return check_same_shape(out, x, what="model")


def _grad(output: Tensor, x: Tensor) -> Tensor:
    """∇_x output with the graph kept; zeros where the model does not depend on x."""
    if not output.requires_grad:
        raise ValueError("the model's output does not depend on x through autograd (was it computed under "
                         "torch.no_grad or detached?)")
    (grad,) = torch.autograd.grad(output, x, create_graph=True, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def _prepare(x: Tensor, t):
    if not torch.is_tensor(x) or x.dim() < 2 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x must be a floating-point tensor of shape (B, *D); got {got}")
    if t is not None:
        t = as_time(t, x)
    return x.detach().requires_grad_(True), t


def check_weighting(weighting) -> str:
    """A weighting's name: one in `WEIGHTINGS` or an import path ``"package.module:fn"``, or a ValueError listing them."""
    if not (isinstance(weighting, str) and (weighting in WEIGHTINGS or ":" in weighting)):
        raise ValueError(f"unknown weighting {weighting!r}; valid choices: "
                         f"{', '.join(repr(w) for w in WEIGHTINGS)} (or an import path 'package.module:fn')")
    return weighting


#: Training objectives as objects that carry their own settings (the Trainer calls ``loss(sde, model, x0,
#: generator=, shard=, cond=)``): ``LOSSES.build("dsm", weighting="sigma2")``.
LOSSES = Registry("loss")


@LOSSES.register("dsm")
class DSMLoss:
    """Denoising score matching (`dsm_loss`) with its settings: ``loss(sde, model, x0, cond=None, generator=None,
    shard=None)`` → the batch mean.

    Args:
        weighting: λ(t), a name in `WEIGHTINGS`, an import path ``"package.module:fn"`` or ``fn(sde, t) -> (B,)``.
        time_distribution: the law of the training time, the one way to ask for importance sampling: a name in
            `TIME_DISTRIBUTIONS` ("importance", the default: q(t) ∝ g²/σ², Song et al. 2021's proposal for the
            likelihood weighting; "uniform"; "log_snr"; "log_normal") or an object with ``sample``.
        importance_weight: multiply ℓ by 1/((T − eps) q(t)), so that the estimate is unbiased for the uniform-t
            objective; False trains on E_q[ℓ] (EDM's practice). Ignored for "uniform".
        eps: the smallest training time, 0 < eps < T.
    """

    def __init__(self, weighting: Union[str, Callable] = "likelihood", time_distribution="importance",
                 importance_weight: bool = True, eps: float = 1e-5):
        if not callable(weighting):
            check_weighting(weighting)
        if isinstance(time_distribution, str):
            check_choice(time_distribution, TIME_DISTRIBUTIONS.names(), "time_distribution")
        elif not hasattr(time_distribution, "sample"):
            raise TypeError(f"time_distribution must be a name or an object with a sample method; got "
                            f"{type(time_distribution).__name__}")
        if not isinstance(importance_weight, bool):
            raise ValueError(f"importance_weight must be true or false; got {importance_weight!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a number > 0; got {eps!r}")
        self.weighting, self.time_distribution = weighting, time_distribution
        self.importance_weight, self.eps = importance_weight, float(eps)

    @classmethod
    def from_config(cls, config) -> "DSMLoss":
        """The loss a `scoresde.TrainConfig` describes (its ``weighting``, ``time_distribution``,
        ``importance_weight`` and ``eps``)."""
        return cls(config.weighting, config.time_distribution, config.importance_weight, config.eps)

    def __call__(self, sde, model: ScoreFn, x0: Tensor, cond: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None, shard: Optional[Tuple[int, int]] = None) -> Tensor:
        uniform = self.time_distribution == "uniform"          # dsm_loss's own uniform draw, with no weight
        return dsm_loss(sde, model, x0, weighting=self.weighting, eps=self.eps, generator=generator, shard=shard,
                        cond=cond, time_distribution=None if uniform else self.time_distribution,
                        importance_weight=self.importance_weight)

    def __repr__(self) -> str:
        return (f"DSMLoss(weighting={self.weighting!r}, time_distribution={self.time_distribution!r}, "
                f"importance_weight={self.importance_weight}, eps={self.eps:g})")


def sliced_score_matching_loss(model: Callable, x: Tensor, t: Optional[Tensor] = None, n_projections: int = 1,
                               generator: Optional[torch.Generator] = None, reduce: str = "mean",
                               projection: str = "rademacher", cond: Optional[Tensor] = None) -> Tensor:
    """Sliced score matching (Song et al. 2019) with Hutchinson projections.

        ℓ(x) = (1/M) Σ_m [ ½ (vₘᵀ s(x))² + vₘᵀ ∇_x (vₘᵀ s(x)) ],   vₘ with E[v vᵀ] = I

    which equals the explicit objective ½‖s‖² + tr ∇_x s in expectation over v, using one vector–Jacobian product
    per projection instead of d. Differentiable in the model's parameters (the graph is kept).

    Args:
        model: a score callable: ``model(x, t)`` when ``t`` is given (one noise level, or conditioned on t),
            ``model(x)`` when ``t`` is None.
        x: samples (B, *D) (no gradient needed; a detached copy is differentiated).
        t: optional times (B,) or a scalar passed to the model.
        n_projections: number M of projections per sample.
        generator: torch.Generator for the projections.
        reduce: "mean", "sum" or "none" (per-sample, shape (B,)).
        projection: "rademacher" (±1 entries, lower variance of the trace term) or "gaussian".
        cond: labels (B,) of a conditional model, called ``model(x, t, cond)``.
    """
    check_choice(reduce, REDUCTIONS, "reduce")
    check_choice(projection, PROJECTIONS, "projection")
    if not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections must be a positive integer; got {n_projections!r}")
    x, t = _prepare(x, t)
    batch = x.shape[0]
    with torch.enable_grad():
        score = _call(model, x, t, cond)
        total = x.new_zeros(batch)
        for _ in range(n_projections):
            v = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            if projection == "rademacher":
                v = torch.sign(v)
                v[v == 0] = 1
            projected = (v * score).reshape(batch, -1).sum(-1)                           # vᵀ s, (B,)
            grad = _grad(projected.sum(), x)                                             # ∇_x (vᵀ s)
            total = total + 0.5 * projected ** 2 + (v * grad).reshape(batch, -1).sum(-1)
    return _reduce(total / n_projections, reduce)


def score_matching_loss(model: Callable, x: Tensor, t: Optional[Tensor] = None, reduce: str = "mean",
                        max_dim: int = 1024, cond: Optional[Tensor] = None) -> Tensor:
    """Hyvärinen's explicit score matching with the exact Jacobian trace (low dimension only).

        ℓ(x) = ½ ‖s(x)‖² + tr ∇_x s(x),   E_p[ℓ] = ½ E_p‖s − ∇ log p‖² − ½ E_p‖∇ log p‖²

    The trace takes d backward passes (d = elements per sample), so d is capped by ``max_dim``.
    Differentiable in the model's parameters.

    Args:
        model: ``model(x, t)`` when ``t`` is given, ``model(x)`` when ``t`` is None.
        x: samples (B, *D).
        t: optional times (B,) or a scalar passed to the model.
        reduce: "mean", "sum" or "none" (per-sample, shape (B,)).
        max_dim: refuse larger d (use `sliced_score_matching_loss` there).
        cond: labels (B,) of a conditional model, called ``model(x, t, cond)``.
    """
    check_choice(reduce, REDUCTIONS, "reduce")
    x, t = _prepare(x, t)
    batch, d = x.shape[0], x[0].numel()
    if d > max_dim:
        raise ValueError(f"exact score matching needs d backward passes; d = {d} exceeds max_dim = {max_dim} "
                         f"(use sliced_score_matching_loss)")
    with torch.enable_grad():
        score = _call(model, x, t, cond)
        flat = score.reshape(batch, d)
        trace = x.new_zeros(batch)
        for i in range(d):
            grad = _grad(flat[:, i].sum(), x)
            trace = trace + grad.reshape(batch, d)[:, i]
        total = 0.5 * flat.pow(2).sum(-1) + trace
    return _reduce(total, reduce)


def classifier_loss(sde, classifier: Callable, x0: Tensor, cond: Tensor, eps: float = 1e-5,
                    generator: Optional[torch.Generator] = None, reduce: str = "mean",
                    shard: Optional[Tuple[int, int]] = None) -> Tensor:
    """Cross-entropy of a noise-conditional classifier on noised data: the loss of classifier guidance.

        ℓ = −log p_θ(c | x_t, t),   t ~ U(eps, T),  x_t = s(t) x0 + σ(t) z,  z ~ N(0, I)

    whose minimiser at every t is the exact noisy classifier p_t(c | x_t) (for a labelled mixture:
    ``GaussianMixture.classifier(sde)``). Trainable with `scoresde.Trainer` (pass ``loss_fn=classifier_loss`` and
    a labelled data set).

    Args:
        sde: a linear SDE (``scale``, ``std``, ``T``).
        classifier: ``classifier(x, t)`` → log-probabilities (or logits) of shape (B, C), e.g.
            `scoresde.nets.Classifier`.
        x0: data (B, *D).
        cond: their classes (B,) long in 0 … C − 1.
        eps: smallest time.
        generator: draws t, then z.
        reduce: "mean", "sum" or "none" (shape (B,)).
        shard: ``(rank, world_size)``: draw for the global batch, evaluate rows ``rank::world_size`` (as `dsm_loss`).
    """
    check_choice(reduce, REDUCTIONS, "reduce")
    log_probs, cond = noised_class_log_probs(sde, classifier, x0, cond, eps, generator, shard)
    return _reduce(-log_probs.gather(1, cond[:, None])[:, 0], reduce)


def noised_class_log_probs(sde, classifier: Callable, x0: Tensor, cond: Tensor, eps: float = 1e-5,
                           generator: Optional[torch.Generator] = None,
                           shard: Optional[Tuple[int, int]] = None) -> Tuple[Tensor, Tensor]:
    """The classifier's normalised log p_θ(· | x_t, t), (B, C), at t ~ U(eps, T), x_t = s x0 + σ z, and the
    labels (B,) (this shard's rows): what `classifier_loss` and the trainer's classifier evaluation use."""
    _check_data(sde, x0, eps)
    batch = x0.shape[0]
    cond = check_labels(cond, batch, getattr(classifier, "num_classes", None), device=x0.device,
                        null_allowed=False)
    t = eps + (sde.T - eps) * torch.rand(batch, generator=generator, device=x0.device, dtype=x0.dtype)
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    if shard is not None:
        x0, t, z, cond = _shard(shard, batch, x0, t, z, cond)
    with validated_times():
        x_t = expand_like(sde.scale(t).to(x0.dtype), x0) * x0 + expand_like(sde.std(t).to(x0.dtype), x0) * z
        log_probs = classifier(x_t, t)
    if not torch.is_tensor(log_probs) or log_probs.dim() != 2 or log_probs.shape[0] != x0.shape[0]:
        got = tuple(log_probs.shape) if torch.is_tensor(log_probs) else type(log_probs).__name__
        raise ValueError(f"classifier(x, t) must return log-probabilities of shape (B, C); got {got}")
    check_labels(cond, cond.shape[0], log_probs.shape[1], null_allowed=False)
    return torch.log_softmax(log_probs, dim=1), cond
