"""Forward SDEs as objects: the general SDE, linear SDEs with derived marginals, and VE / VP / sub-VP.

Conventions: data at t = 0, noise at t = T. ``x`` has shape (B, *D) and ``t`` shape (B,).

A linear SDE dx = f(t) x dt + g(t) dw is fully described by two scalars of time:

    s(t) = exp(∫_0^t f(u) du)                        (``scale``)
    σ(t)² = s(t)² ∫_0^t g(u)² / s(u)² du             (``std``)

so that x_t | x_0 ~ N(s(t) x_0, σ(t)² I). A subclass of `LinearSDE` implements only ``drift_coef``
(f) and ``diffusion`` (g); everything else (``scale``, ``std``, ``marginal``, the prior, the reverse SDE,
the probability-flow ODE and every sampler) is derived from them. f and g may return a number (or a 0-dim
tensor) for a constant coefficient; it is broadcast to t's shape.

Times live in [0, T]: ``scale``, ``std`` and what is derived from them raise a ValueError for a t outside
(or NaN) rather than extrapolate. Samplers and the likelihood check their times once per call and skip the
per-step checks (`scoresde._utils.validated_times`).
"""
from __future__ import annotations

import abc
import math
import warnings
import weakref
from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np
import torch

from ._adapters import integrate_ode, integrate_sde
from ._registry import Registry
from ._utils import (ScoreFn, as_time, check_choice, check_same_shape, check_steps, check_time_range,
                     check_time_vector, expand_like, validated_times)
from .discrete import ddpm_betas
from .score import as_score

Tensor = torch.Tensor

#: Forward SDEs by name, for configs and the command line: ``SDES.build("vp", beta_max=20.0)``.
#: ``SDES.register("mine", MySDE)`` adds a user's class; ``"mypkg.module:MySDE"`` works without registering.
SDES = Registry("SDE")

#: SNR(T) = s(T)²/σ(T)² above which samplers and the likelihood warn that the prior N(0, σ(T)² I) is far from the
#: true p_T: data of unit scale keep more than a tenth of their standard deviation at T (VP: 4e-5, VE with
#: σ_max = 50: 4e-4).
PRIOR_SNR_THRESHOLD = 1e-2


class PriorMismatchWarning(UserWarning):
    """The SDE's prior is far from its p_T (SNR(T) > `PRIOR_SNR_THRESHOLD`): sampling from the prior and the
    likelihood's prior term are biased. Filter it with ``warnings.filterwarnings("ignore",
    category=sd.PriorMismatchWarning)`` where that is meant (e.g. a short T on purpose)."""


_PRIOR_CHECKED: "weakref.WeakSet" = weakref.WeakSet()


def check_prior(sde, where: str, stacklevel: int = 3) -> None:
    """Warn (`PriorMismatchWarning`, once per SDE object) when SNR(T) exceeds `PRIOR_SNR_THRESHOLD`; SDEs without
    ``snr`` are not checked."""
    try:
        if sde in _PRIOR_CHECKED:
            return
        _PRIOR_CHECKED.add(sde)
    except TypeError:                      # not weak-referenceable or not hashable: checked every time
        pass
    if not callable(getattr(sde, "snr", None)):
        return
    try:
        snr = float(sde.snr(torch.tensor([float(sde.T)], dtype=torch.float64))[0])
    except Exception:                      # noqa: BLE001 — a check, never the cause of a failure
        return
    if snr > PRIOR_SNR_THRESHOLD:
        warnings.warn(f"{where}: {type(sde).__name__} does not reach noise: SNR(T) = s(T)²/σ(T)² = {snr:.3g} at "
                      f"T = {sde.T:g} (threshold {PRIOR_SNR_THRESHOLD:g}), so its prior N(0, σ(T)² I) is far from "
                      f"p_T and results started from it are biased; use a schedule whose SNR(T) ≈ 0 (e.g. a larger "
                      f"∫β) or pass x_T", PriorMismatchWarning, stacklevel=stacklevel)


class SDE(abc.ABC):
    """Abstract forward SDE dx = f(x, t) dt + g(t) dw on [0, T].

    Subclasses implement `drift` and `diffusion`; to sample from the reverse process they also
    provide a prior through `prior_sample` and `prior_log_prob`.

    Args:
        T: end time of the forward process (noise lives at t = T).
    """

    @classmethod
    def example(cls, **fixed) -> "SDE":
        """An instance for tests and docs: the defaults (``fixed``, a registry entry's fixed arguments, on top)."""
        return cls(**fixed)

    def __init__(self, T: float = 1.0):
        if not (isinstance(T, (int, float)) and T > 0 and math.isfinite(T)):
            raise ValueError(f"T must be a positive finite number; got {T!r}")
        self.T = float(T)

    @abc.abstractmethod
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(x, t): shape of ``x`` (B, *D) for ``t`` of shape (B,)."""

    @abc.abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        """g(t): shape (B,) for ``t`` of shape (B,)."""

    # -- prior ---------------------------------------------------------------------------------------
    def prior_sample(self, shape: Sequence[int], generator: Optional[torch.Generator] = None,
                     device=None, dtype=None) -> Tensor:
        """Draw x_T from the prior; ``shape`` is (B, *D)."""
        raise NotImplementedError(f"{type(self).__name__} defines no prior; implement prior_sample")

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p_T(z) of the prior, summed over the data dimensions: shape (B,)."""
        raise NotImplementedError(f"{type(self).__name__} defines no prior; implement prior_log_prob")

    # -- reverse time --------------------------------------------------------------------------------
    def reverse(self, score: ScoreFn) -> "ReverseSDE":
        """The reverse-time SDE dx = [f(x, t) − g(t)² score(x, t)] dt + g(t) dw̄, run from T down to 0."""
        return ReverseSDE(self, score)

    def probability_flow(self, score: ScoreFn) -> "ProbabilityFlowODE":
        """The probability-flow ODE dx/dt = f(x, t) − ½ g(t)² score(x, t), with the same marginals p_t."""
        return ProbabilityFlowODE(self, score)

    def simulate(self, x0: Tensor, times: Sequence[float], *, method: str = "euler", dt: float = 1e-3,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        """Simulate the forward SDE from x0 at ``times[0]`` through torchsde.

        Returns the states at ``times``, shape (len(times), B, *D).
        """
        xs, _ = integrate_sde(self._drift_checked, self._diffusion_checked, x0, times, method=method,
                              dt=dt, generator=generator)
        return xs

    # -- checked calls used by solvers ----------------------------------------------------------------
    def _drift_checked(self, x: Tensor, t: Tensor) -> Tensor:
        return check_same_shape(self.drift(x, t), x, what=f"{type(self).__name__}.drift")

    def _diffusion_checked(self, t: Tensor) -> Tensor:
        return diffusion_values(self, t)


@runtime_checkable
class LinearSDEProtocol(Protocol):
    """The contract that samplers, losses, parameterizations and the likelihood rely on, written once.

    Every `LinearSDE` satisfies it (x_t | x_0 ~ N(s(t) x_0, σ(t)² I)); an object that does not subclass
    LinearSDE may still be used wherever it provides these members. All time arguments and results are (B,).
    """

    T: float

    def drift(self, x: Tensor, t: Tensor) -> Tensor: ...
    def diffusion(self, t: Tensor) -> Tensor: ...
    def scale(self, t: Tensor) -> Tensor: ...
    def std(self, t: Tensor) -> Tensor: ...
    def log_snr(self, t: Tensor) -> Tensor: ...
    def time_from_log_snr(self, log_snr: Tensor) -> Tensor: ...
    def transition(self, t_from: Tensor, t_to: Tensor) -> Tuple[Tensor, Tensor]: ...
    def prior_sample(self, shape: Sequence[int], generator: Optional[torch.Generator] = None, device=None,
                     dtype=None) -> Tensor: ...
    def prior_log_prob(self, z: Tensor) -> Tensor: ...


_LINEAR_MEMBERS = ("T", "drift", "diffusion", "scale", "std", "log_snr", "time_from_log_snr", "transition",
                   "prior_sample", "prior_log_prob")


def require_linear(sde, user: str) -> None:
    """Raise a TypeError naming what ``sde`` lacks of `LinearSDEProtocol` (``user`` is who needs it)."""
    missing = [name for name in _LINEAR_MEMBERS if not hasattr(sde, name)]
    if missing:
        raise TypeError(f"{user} needs a linear SDE (a scoresde.LinearSDE, with scale(t) and std(t)); "
                        f"{type(sde).__name__} lacks {', '.join(missing)}")


def is_linear(sde) -> bool:
    """Whether ``sde`` provides all of `LinearSDEProtocol`."""
    return all(hasattr(sde, name) for name in _LINEAR_MEMBERS)


def _as_time_values(fn, t: Tensor, what: str) -> Tensor:
    """Evaluate a user coefficient f(t) or g(t) on a (n,) tensor and return (n,) (constants are broadcast)."""
    out = fn(t)
    out = torch.as_tensor(out, dtype=t.dtype, device=t.device)
    if out.dim() == 0:
        out = out.expand(t.shape)
    if out.shape != t.shape:
        raise ValueError(f"{what}(t) must return shape {tuple(t.shape)} for t of shape {tuple(t.shape)}; "
                         f"got {tuple(out.shape)}")
    return out


def diffusion_values(sde, t: Tensor) -> Tensor:
    """g(t) of any SDE as a (B,) tensor on t's device and dtype; a constant (a number) is broadcast to t's shape."""
    return _as_time_values(sde.diffusion, t, f"{type(sde).__name__}.diffusion")


@dataclass(frozen=True)
class Coefficients:
    """The per-time coefficients of an SDE on a grid of times, computed once (`coefficients`); every field is a
    float64 tensor of the times' shape (N,), on their device.

    Attributes:
        t: the times.
        s: s(t), the scale of x_t = s x_0 + σ z (None for an SDE that is not linear).
        sigma: σ(t), the standard deviation of that kernel (None likewise).
        lam: λ(t) = log s − log σ, half the log-SNR, from the realised s and σ (None likewise).
        noise_level: EDM's noise level σ̃ = σ/s (None likewise).
    """

    t: Tensor
    s: Optional[Tensor] = None
    sigma: Optional[Tensor] = None
    lam: Optional[Tensor] = None
    noise_level: Optional[Tensor] = None

    def points(self) -> List[Tuple[float, float, float]]:
        """(λ, s, σ) at each time as Python floats: what the exponential integrators step between."""
        return list(zip(self.lam.tolist(), self.s.tolist(), self.sigma.tolist()))


def times_at_noise_levels(sde, noise_level: Tensor) -> Tensor:
    """The times t(σ̃) in [0, T] (float64, the shape of ``noise_level``) where σ(t)/s(t) = σ̃: the inverse log-SNR
    at −2 log σ̃, the one σ̃ → t lookup of the samplers and flows that step in EDM's noise level (for one number,
    with its range checked, `scoresde.conversions.time_at_noise_level`)."""
    return sde.time_from_log_snr(-2 * torch.log(noise_level.to(torch.float64))).clamp(0, sde.T)


def coefficients(sde, t: Tensor) -> Coefficients:
    """`Coefficients` of ``sde`` at the times ``t`` (float64, (N,)): s, σ, λ and σ̃ for a linear SDE (through its
    public ``scale`` and ``std``), the times alone for any other. Samplers get them once per grid from their base
    class instead of recomputing them at the top of every solver."""
    if not is_linear(sde):
        return Coefficients(t=t)
    s, sigma = sde.scale(t), sde.std(t)
    return Coefficients(t=t, s=s, sigma=sigma, lam=torch.log(s) - torch.log(sigma), noise_level=sigma / s)


class LinearSDE(SDE):
    """Linear SDE dx = f(t) x dt + g(t) dw. Subclasses implement ``drift_coef`` (f) and ``diffusion`` (g).

    ``scale`` s(t) = exp ∫_0^t f and ``std`` σ(t) = s(t) (∫_0^t g²/s²)^{1/2} are derived numerically: the
    integrals are tabulated once per device on ``grid`` panels of [0, T] (graded quadratically towards t = 0,
    where σ(t) is small and relative accuracy is hardest) with 8-point Gauss–Legendre quadrature in float64,
    and read back by cubic Hermite interpolation, whose end-point derivatives are f and g²/s² themselves. For
    smooth coefficients the relative error is far below 1e-6 (tested against the closed forms of VE, VP and
    sub-VP). Subclasses with closed forms override ``scale`` and ``std``.

    The default prior is N(0, std(T)² I); override `prior_std` (or the prior methods) to change it.

    Args:
        T: end time.
        grid: number of quadrature panels of [0, T] for the derived marginals.
    """

    _QUADRATURE_NODES = 8

    def __init__(self, T: float = 1.0, grid: int = 1024):
        super().__init__(T)
        if int(grid) < 2:
            raise ValueError(f"grid must be an integer >= 2; got {grid!r}")
        self.grid = int(grid)
        self._tables = {}

    # -- what a subclass writes ----------------------------------------------------------------------
    @abc.abstractmethod
    def drift_coef(self, t: Tensor) -> Tensor:
        """f(t), shape (B,)."""

    @abc.abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        """g(t), shape (B,)."""

    # -- derived -------------------------------------------------------------------------------------
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(t) x, shape (B, *D)."""
        t = as_time(t, x)
        return expand_like(_as_time_values(self.drift_coef, t, "drift_coef"), x) * x

    def scale(self, t: Tensor) -> Tensor:
        """s(t) = exp ∫_0^t f(u) du, shape (B,), for t in [0, T]."""
        log_scale, _ = self._integrals(t)
        return torch.exp(log_scale).to(t.dtype)

    def std(self, t: Tensor) -> Tensor:
        """σ(t) = s(t) (∫_0^t g(u)²/s(u)² du)^{1/2}, shape (B,), for t in [0, T]."""
        log_scale, v = self._integrals(t)
        return (torch.exp(log_scale) * v.clamp_min(0).sqrt()).to(t.dtype)

    def marginal(self, x0: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """The law of x_t given x_0: N(mean, std² I) with mean = s(t) x0 of shape (B, *D) and std of shape (B,)."""
        t = as_time(t, x0)
        return expand_like(self.scale(t), x0) * x0, self.std(t)

    def sample_marginal(self, x0: Tensor, t: Tensor, generator: Optional[torch.Generator] = None
                        ) -> Tuple[Tensor, Tensor]:
        """Draw x_t = s(t) x0 + σ(t) z; returns (x_t, z), both shaped like x0."""
        if not torch.is_tensor(x0) or not x0.is_floating_point():
            got = f"dtype {x0.dtype}" if torch.is_tensor(x0) else type(x0).__name__
            raise TypeError(f"x0 must be a floating-point tensor of shape (B, *D); got {got} (cast it, e.g. x0.float())")
        mean, std = self.marginal(x0, t)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return mean + expand_like(std, x0) * z, z

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio s(t)² / σ(t)², shape (B,)."""
        return (self.scale(t) / self.std(t)) ** 2

    def log_snr(self, t: Tensor) -> Tensor:
        """log SNR(t) = 2 log(s(t)/σ(t)), shape (B,); decreasing in t for every SDE that adds noise."""
        return 2 * (torch.log(self.scale(t)) - torch.log(self.std(t)))

    def time_from_log_snr(self, log_snr: Tensor, iterations: int = 80) -> Tensor:
        """Invert `log_snr` on (0, T] by bisection (it must be monotone decreasing there): shape (B,)."""
        log_snr = check_time_vector(log_snr, "log_snr").to(torch.float64)
        lo = torch.zeros_like(log_snr)
        hi = torch.full_like(log_snr, self.T)
        with validated_times():                    # every midpoint lies in [0, T]
            for _ in range(iterations):
                mid = (lo + hi) / 2
                above = self.log_snr(mid.clamp_min(1e-300)) > log_snr
                lo = torch.where(above, mid, lo)
                hi = torch.where(above, hi, mid)
        return (lo + hi) / 2

    def transition(self, t_from: Tensor, t_to: Tensor) -> Tuple[Tensor, Tensor]:
        """One forward step x_{t_to} = a x_{t_from} + b z for t_to ≥ t_from; returns (a, b), each (B,).

        a = s(t_to)/s(t_from) and b² = σ(t_to)² − a² σ(t_from)² (the exact kernel of the linear SDE).
        """
        a = self.scale(t_to) / self.scale(t_from)
        b2 = self.std(t_to) ** 2 - (a * self.std(t_from)) ** 2
        return a, b2.clamp_min(0).sqrt()

    def discretize(self, steps: int, eps: float = 0.0) -> Tuple[Tensor, Tensor, Tensor]:
        """The N-step Markov chain of this SDE on the uniform grid t_i = eps + i (T − eps)/N, i = 0..N.

        Returns (times (N+1,), a (N,), b (N,)) with x_{i+1} = a_i x_i + b_i z (float64). For VP this is DDPM
        with √α_i = a_i and β_i = b_i² (α_i + β_i = 1); for VE it is SMLD/NCSN with a_i = 1 and
        b_i² = σ_{i+1}² − σ_i².
        """
        times = torch.linspace(eps, self.T, check_steps(steps) + 1, dtype=torch.float64)
        a, b = self.transition(times[:-1], times[1:])
        return times, a, b

    # -- prior ---------------------------------------------------------------------------------------
    def prior_std(self) -> float:
        """Standard deviation of the default prior N(0, std(T)² I)."""
        return float(self.std(torch.tensor([self.T], dtype=torch.float64))[0])

    def prior_sample(self, shape: Sequence[int], generator: Optional[torch.Generator] = None,
                     device=None, dtype=None) -> Tensor:
        """Draw x_T ~ N(0, prior_std² I) of ``shape`` (B, *D); the device defaults to the generator's."""
        if device is None and generator is not None:
            device = generator.device
        z = torch.randn(tuple(shape), generator=generator, device=device,
                        dtype=dtype or torch.get_default_dtype())
        return self.prior_std() * z

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std² I) summed over all but the batch dimension: shape (B,)."""
        sigma = self.prior_std()
        d = z[0].numel()
        sq = z.reshape(z.shape[0], -1).pow(2).sum(-1)
        return -0.5 * sq / sigma**2 - d * (math.log(sigma) + 0.5 * math.log(2 * math.pi))

    # -- the numerical derivation --------------------------------------------------------------------
    def _integrals(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        """(∫_0^t f, ∫_0^t g²/s²) at t (B,) in [0, T], float64, by Hermite interpolation of the tabulated
        integrals."""
        t = self._check_time(t)
        table = self._table(t.device)
        edges, F, dF, V, dV = table
        tt = t.to(torch.float64)
        # Panels are graded quadratically, edges_i = T (i/K)^2, so the panel of t is floor(K sqrt(t/T)).
        k = torch.clamp(torch.floor(self.grid * torch.sqrt(tt.clamp_min(0) / self.T)), 0, self.grid - 1).long()
        h = edges[k + 1] - edges[k]
        u = (tt - edges[k]) / h
        u2, u3 = u * u, u * u * u
        h00, h10 = 2 * u3 - 3 * u2 + 1, u3 - 2 * u2 + u
        h01, h11 = -2 * u3 + 3 * u2, u3 - u2
        log_scale = h00 * F[k] + h10 * h * dF[k] + h01 * F[k + 1] + h11 * h * dF[k + 1]
        v = h00 * V[k] + h10 * h * dV[k] + h01 * V[k + 1] + h11 * h * dV[k + 1]
        return log_scale, v

    def _check_time(self, t) -> Tensor:
        """t as a (B,) tensor, checked to lie in [0, T] (where the marginals are defined and tabulated)."""
        return check_time_range(check_time_vector(t), self.T, type(self).__name__)

    def _table(self, device):
        key = str(device)
        if key not in self._tables:
            with torch.no_grad():
                self._tables[key] = self._build_table(device)
        return self._tables[key]

    def _build_table(self, device):
        nodes, weights = np.polynomial.legendre.leggauss(self._QUADRATURE_NODES)
        nodes = torch.tensor(nodes, dtype=torch.float64, device=device)
        weights = torch.tensor(weights, dtype=torch.float64, device=device)
        edges = self.T * torch.linspace(0.0, 1.0, self.grid + 1, dtype=torch.float64, device=device) ** 2

        def f(u):
            return _as_time_values(self.drift_coef, u.reshape(-1), "drift_coef").reshape(u.shape).to(torch.float64)

        def g2(u):
            g = _as_time_values(self.diffusion, u.reshape(-1), "diffusion").reshape(u.shape).to(torch.float64)
            if not bool(torch.isfinite(g).all()) or bool((g < 0).any()):
                bad = u.reshape(-1)[(~torch.isfinite(g.reshape(-1))) | (g.reshape(-1) < 0)][0]
                raise ValueError(f"{type(self).__name__}.diffusion(t) must be finite and non-negative on "
                                 f"[0, T={self.T}]; got g({float(bad):.6g}) = "
                                 f"{float(self.diffusion(bad.reshape(1))[0]):.6g}")
            return g * g

        def gauss(fn, a, b):
            """∫_a^b fn elementwise for a, b of the same shape."""
            half, mid = (b - a) / 2, (b + a) / 2
            u = mid[..., None] + half[..., None] * nodes
            return half * (fn(u) * weights).sum(-1)

        lo, hi = edges[:-1], edges[1:]
        F = torch.cat([edges.new_zeros(1), torch.cumsum(gauss(f, lo, hi), 0)])

        def g2_over_s2(u):
            # u: (K, n) nodes inside panel k; exp(-2 F(u)) with F(u) = F_k + ∫_{edge_k}^u f.
            start = lo[:, None].expand_as(u)
            F_u = F[:-1, None] + gauss(f, start, u)
            return g2(u) * torch.exp(-2 * F_u)

        V = torch.cat([edges.new_zeros(1), torch.cumsum(gauss(g2_over_s2, lo, hi), 0)])
        if not bool(torch.isfinite(F).all() & torch.isfinite(V).all()):
            raise ValueError(f"{type(self).__name__}.drift_coef(t) and diffusion(t) must be finite on [0, T={self.T}] "
                             f"with finite integrals; the derived scale or std is not finite")
        if not bool(V[-1] > 0):
            raise ValueError(f"{type(self).__name__}.diffusion(t) is zero on all of [0, T]: the SDE adds no noise")
        dF = f(edges)
        dV = g2(edges) * torch.exp(-2 * F)
        return edges, F, dF, V, dV


@SDES.register("ve")
class VESDE(LinearSDE):
    """Variance-exploding SDE (SMLD/NCSN limit): f = 0, g(t)² = d σ(t)²/dt with σ(t) = σ_min (σ_max/σ_min)^t.

    s(t) = 1 and std(t)² = σ(t)² − σ_min², the exact law of the declared SDE started at the data.
    score_sde_pytorch instead uses std(t) = σ(t), i.e. it treats the data as already noised by σ_min; the two
    differ by at most σ_min (relative difference σ_min²/σ(t)²/2, largest near t = 0).
    The prior is N(0, std(T)² I) ≈ N(0, σ_max² I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0, grid: int = 1024):
        if not (0 < sigma_min < sigma_max < math.inf):
            raise ValueError(f"need finite 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        super().__init__(T, grid)

    def sigma(self, t: Tensor) -> Tensor:
        """σ(t) = σ_min (σ_max/σ_min)^(t/T), the noise level of score_sde_pytorch's parameterization."""
        return self.sigma_min * torch.exp(self._log_ratio * t / self.T)

    def drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def diffusion(self, t: Tensor) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * self._log_ratio / self.T)

    def scale(self, t: Tensor) -> Tensor:
        return torch.ones_like(self._check_time(t))

    def std(self, t: Tensor) -> Tensor:
        t = self._check_time(t)
        return self.sigma_min * torch.expm1(2 * self._log_ratio * t / self.T).clamp_min(0).sqrt()

    def time_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Closed form: σ_min² (e^{2 r t/T} − 1) = e^{−λ}, r = log(σ_max/σ_min)."""
        lam = check_time_vector(log_snr, "log_snr").to(torch.float64)
        return torch.log1p(torch.exp(-lam) / self.sigma_min ** 2) * (self.T / (2 * self._log_ratio))


@SDES.register("vp")
class VPSDE(LinearSDE):
    """Variance-preserving SDE (DDPM limit): f = −β(t)/2, g = √β(t), β(t) = β_min + (t/T)(β_max − β_min).

    With B(t) = ∫_0^t β: s(t) = exp(−B/2) and std(t)² = 1 − exp(−B).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, grid: int = 1024):
        if not (0 <= beta_min <= beta_max < math.inf and beta_max > 0):
            raise ValueError(f"need finite 0 <= beta_min <= beta_max, beta_max > 0; got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        super().__init__(T, grid)

    def beta(self, t: Tensor) -> Tensor:
        """β(t), shape (B,)."""
        return self.beta_min + (t / self.T) * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: Tensor) -> Tensor:
        """B(t) = ∫_0^t β = β_min t + (β_max − β_min) t² / (2T), shape (B,)."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t / self.T

    def drift_coef(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def diffusion(self, t: Tensor) -> Tensor:
        return self.beta(t).sqrt()

    def scale(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self.integrated_beta(self._check_time(t)))

    def std(self, t: Tensor) -> Tensor:
        return (-torch.expm1(-self.integrated_beta(self._check_time(t)))).clamp_min(0).sqrt()

    def time_from_integrated_beta(self, integrated: Tensor) -> Tensor:
        """The t with B(t) = ``integrated``: the positive root of β_min t + (β_max − β_min) t²/(2T) = B."""
        delta = self.beta_max - self.beta_min
        if delta == 0:
            return integrated / self.beta_min
        # t = 2B / (β_min + √(β_min² + 2ΔB/T)), the root written without cancellation
        return 2 * integrated / (self.beta_min + torch.sqrt(self.beta_min ** 2 + 2 * delta * integrated / self.T))

    def time_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Closed form: SNR = 1/(e^B − 1), so B = log(1 + e^{−λ}) = softplus(−λ)."""
        lam = check_time_vector(log_snr, "log_snr").to(torch.float64)
        return self.time_from_integrated_beta(torch.nn.functional.softplus(-lam))


@SDES.register("subvp")
class SubVPSDE(VPSDE):
    """sub-VP SDE: f = −β(t)/2, g(t)² = β(t)(1 − exp(−2B(t))); s(t) = exp(−B/2), std(t) = 1 − exp(−B).

    Its variance is below the VP one at every t, which gives better likelihoods (Song et al. 2021).
    """

    def diffusion(self, t: Tensor) -> Tensor:
        return (self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t))).clamp_min(0).sqrt()

    def std(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.integrated_beta(self._check_time(t)))

    def time_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Closed form: σ/s = (1 − e^{−B}) e^{B/2} = 2 sinh(B/2) = e^{−λ/2}, so B = 2 asinh(e^{−λ/2}/2)."""
        lam = check_time_vector(log_snr, "log_snr").to(torch.float64)
        return self.time_from_integrated_beta(2 * torch.asinh(torch.exp(-lam / 2) / 2))


@SDES.register("edm")
class EDMSDE(LinearSDE):
    """EDM's noise process (Karras et al. 2022): s(t) = 1, σ(t) = t, so f = 0 and g(t) = √(2t); T = σ_max.

    Time *is* the noise level, so EDM's σ grids (``grid="edm"``) are grids in t, and an EDM / k-diffusion
    denoiser D(x, σ) is called at σ = t. ``sigma_min`` is EDM's smallest noise level: end samplers there
    (``eps=sde.sigma_min``). The prior is N(0, σ_max² I).
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, grid: int = 1024):
        if not (0 < sigma_min < sigma_max < math.inf):
            raise ValueError(f"need finite 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        super().__init__(T=self.sigma_max, grid=grid)

    def drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def diffusion(self, t: Tensor) -> Tensor:
        return (2 * t).clamp_min(0).sqrt()

    def scale(self, t: Tensor) -> Tensor:
        return torch.ones_like(self._check_time(t))

    def std(self, t: Tensor) -> Tensor:
        return self._check_time(t).clone()

    def time_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Closed form: t = σ = e^{−λ/2}."""
        return torch.exp(-check_time_vector(log_snr, "log_snr").to(torch.float64) / 2)


@SDES.register("rectified_flow")
class RectifiedFlowSDE(LinearSDE):
    """The linear interpolation path of flow matching / rectified flow: x_t = (1 − t) x_0 + t z.

    s(t) = 1 − t, σ(t) = t, hence f = −1/(1 − t) and g(t)² = dσ²/dt − 2 f σ² = 2t/(1 − t). The path reaches pure
    noise at t = 1, where f and g diverge, so T stops just below it (default 0.999, s(T) = 10⁻³). The prior is
    N(0, σ(T)² I). The flow-matching target z − x_0 is the conditional velocity d x_t/dt of this path.
    """

    def __init__(self, T: float = 0.999, grid: int = 1024):
        if not 0 < T < 1:
            raise ValueError(f"T must be in (0, 1) (the path ends in pure noise at t = 1); got {T!r}")
        super().__init__(T=T, grid=grid)

    def drift_coef(self, t: Tensor) -> Tensor:
        return -1 / (1 - t)

    def diffusion(self, t: Tensor) -> Tensor:
        return (2 * t / (1 - t)).clamp_min(0).sqrt()

    def scale(self, t: Tensor) -> Tensor:
        return 1 - self._check_time(t)

    def std(self, t: Tensor) -> Tensor:
        return self._check_time(t).clone()

    def time_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Closed form: σ/s = t/(1 − t) = e^{−λ/2}, so t = sigmoid(−λ/2)."""
        return torch.sigmoid(-check_time_vector(log_snr, "log_snr").to(torch.float64) / 2)


@SDES.register("cosine_vp")
class CosineVPSDE(LinearSDE):
    """Nichol & Dhariwal's cosine schedule as a continuous VP SDE: ᾱ(t) = cos²(u(t)) / cos²(u(0)) with
    u(t) = (t + s_0)/(1 + s_0) · π/2 (s_0 = ``s``, 0.008).

    s(t) = √ᾱ, σ(t)² = 1 − ᾱ, f = ½ d log ᾱ/dt = −(π/2) tan(u)/(1 + s_0) and g² = −2f. ᾱ reaches 0 at t = 1, so T
    is cut where β(t) = g(t)² reaches ``beta_max`` (default 999, so T ≈ 0.998), keeping σ/s finite.
    The discrete cosine table is ``DiscreteVPSDE(alphas_cumprod=...)`` of the same ᾱ.
    """

    def __init__(self, s: float = 0.008, beta_max: float = 999.0, T: Optional[float] = None, grid: int = 1024):
        if not (0 < s < math.inf and beta_max > 0):
            raise ValueError(f"need s > 0 and beta_max > 0; got s={s!r}, beta_max={beta_max!r}")
        self.s = float(s)
        if T is None:
            T = math.atan(beta_max * (1 + self.s) / math.pi) * 2 * (1 + self.s) / math.pi - self.s
        if not 0 < T < 1:
            raise ValueError(f"T must be in (0, 1) (ᾱ = 0 at t = 1); got {T!r}")
        self._log_cos0 = math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))
        super().__init__(T=float(T), grid=grid)

    def _u(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        """log ᾱ(t) = 2 (log cos u(t) − log cos u(0)), shape (B,)."""
        return 2 * (torch.log(torch.cos(self._u(t))) - self._log_cos0)

    def drift_coef(self, t: Tensor) -> Tensor:
        return -(math.pi / 2) / (1 + self.s) * torch.tan(self._u(t))

    def diffusion(self, t: Tensor) -> Tensor:
        return (-2 * self.drift_coef(t)).clamp_min(0).sqrt()

    def scale(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self.log_alpha_bar(self._check_time(t)))

    def std(self, t: Tensor) -> Tensor:
        return (-torch.expm1(self.log_alpha_bar(self._check_time(t)))).clamp_min(0).sqrt()

    def time_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Closed form: ᾱ = sigmoid(λ), cos u = √ᾱ cos u(0), t = u (1 + s_0) 2/π − s_0."""
        lam = check_time_vector(log_snr, "log_snr").to(torch.float64)
        root = torch.exp(0.5 * torch.nn.functional.logsigmoid(lam) + self._log_cos0)
        return torch.arccos(root.clamp(max=1.0)) * (2 * (1 + self.s) / math.pi) - self.s


@SDES.register("discrete_vp")
class DiscreteVPSDE(LinearSDE):
    """A discrete N-step VP schedule (DDPM's β table, or its ᾱ) as a continuous-time linear SDE.

    Timestep n = 0 … N − 1 sits at t_n = (n + 1)/N (DPM-Solver's ``NoiseScheduleVP("discrete")`` convention), and
    log s(t) is piecewise linear in t through (0, 0) and (t_n, ½ log ᾱ_n), so s(t_n)² = ᾱ_n exactly; σ² = 1 − s²,
    f = d log s/dt (constant between knots) and g² = −2f. T = t_{N−1} = 1. A discrete model is called at its own
    fractional timestep ``time_to_timestep(t)`` = N t − 1.

    Args:
        alphas_cumprod: ᾱ_0 … ᾱ_{N−1}, decreasing in (0, 1) (give this or ``betas``).
        betas: β_0 … β_{N−1} in (0, 1); ᾱ_n = Π_{k ≤ n} (1 − β_k).
        grid: quadrature panels of the derived marginals (the closed forms above are used).
    """

    @classmethod
    def example(cls, **fixed) -> "DiscreteVPSDE":
        """DDPM's linear β table of 1000 steps (`scoresde.ddpm_betas`)."""
        return cls(**{"betas": ddpm_betas(1000), **fixed})

    def __init__(self, alphas_cumprod=None, betas=None, grid: int = 1024):
        if (alphas_cumprod is None) == (betas is None):
            raise ValueError("give exactly one of alphas_cumprod= and betas=")
        if betas is not None:
            betas = torch.as_tensor(betas, dtype=torch.float64).reshape(-1)
            if betas.numel() < 1 or not bool(((betas > 0) & (betas < 1)).all()):
                raise ValueError("betas must be a non-empty sequence of numbers in (0, 1)")
            alphas_cumprod = torch.cumprod(1 - betas, 0)
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
        if abar.numel() < 1 or not bool(((abar > 0) & (abar < 1)).all()) or bool((abar[1:] >= abar[:-1]).any()):
            raise ValueError("alphas_cumprod must be strictly decreasing numbers in (0, 1)")
        self.num_timesteps = abar.numel()
        self.alphas_cumprod = abar
        n = self.num_timesteps
        self._knots = torch.cat([torch.zeros(1, dtype=torch.float64), torch.arange(1, n + 1, dtype=torch.float64) / n])
        self._log_scale = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * torch.log(abar)])
        self._slopes = (self._log_scale[1:] - self._log_scale[:-1]) * n
        self._cache = {}
        super().__init__(T=1.0, grid=grid)

    def _on(self, device):
        key = str(device)
        if key not in self._cache:
            self._cache[key] = (self._log_scale.to(device), self._slopes.to(device))
        return self._cache[key]

    def _segment(self, t: Tensor) -> Tensor:
        return torch.clamp(torch.floor(t.to(torch.float64) * self.num_timesteps), 0, self.num_timesteps - 1).long()

    def time_to_timestep(self, t: Tensor) -> Tensor:
        """The fractional discrete timestep n = N t − 1 of time t (t_n = (n + 1)/N)."""
        return t * self.num_timesteps - 1

    def timestep_to_time(self, n: Tensor) -> Tensor:
        """t_n = (n + 1)/N, for integer or fractional timesteps n."""
        return (n + 1) / self.num_timesteps

    def drift_coef(self, t: Tensor) -> Tensor:
        _, slopes = self._on(t.device)
        return slopes[self._segment(t)].to(t.dtype)

    def diffusion(self, t: Tensor) -> Tensor:
        return (-2 * self.drift_coef(t)).clamp_min(0).sqrt()

    def _log_s(self, t: Tensor) -> Tensor:
        log_scale, slopes = self._on(t.device)
        k = self._segment(t)
        return log_scale[k] + slopes[k] * (t.to(torch.float64) - k.to(torch.float64) / self.num_timesteps)

    def scale(self, t: Tensor) -> Tensor:
        t = self._check_time(t)
        return torch.exp(self._log_s(t)).to(t.dtype)

    def std(self, t: Tensor) -> Tensor:
        t = self._check_time(t)
        return (-torch.expm1(2 * self._log_s(t))).clamp_min(0).sqrt().to(t.dtype)


@SDES.register("ve_score_sde")
class ScoreSDEVESDE(VESDE):
    """The VE SDE with score_sde_pytorch's marginals: std(t) = σ(t) = σ_min (σ_max/σ_min)^(t/T), s(t) = 1.

    The same f = 0 and g(t)² = dσ(t)²/dt as `VESDE`, started from the data already perturbed by N(0, σ_min² I)
    (SMLD's smallest noise level), so std(0) = σ_min instead of 0. score_sde_pytorch (Song et al. 2021), NCSN and
    NCSNv2 train and sample with these marginals; their networks are scores of p_data ∗ N(0, σ(t)²), so their
    checkpoints (`scoresde.from_score_sde_pytorch`) come with this SDE. The prior is N(0, σ_max² I).
    """

    def std(self, t: Tensor) -> Tensor:
        return self.sigma(self._check_time(t))

    def time_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Closed form: σ(t)² = e^{−λ}, so t = T (−λ/2 − log σ_min) / log(σ_max/σ_min), clamped to [0, T]."""
        lam = check_time_vector(log_snr, "log_snr").to(torch.float64)
        t = (-lam / 2 - math.log(self.sigma_min)) * (self.T / self._log_ratio)
        return t.clamp(0.0, self.T)


class ReverseSDE:
    """Reverse-time SDE dx = [f(x, t) − g(t)² score(x, t)] dt + g(t) dw̄, integrated from T down to ~0.

    ``drift`` is written in the physical time t: a step of size h > 0 going down is
    x ← x − drift(x, t) h + g(t) √h z.
    """

    def __init__(self, sde: SDE, score: ScoreFn):
        self.sde, self.score, self.T = sde, score, sde.T

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(x, t) − g(t)² score(x, t), shape (B, *D)."""
        g = diffusion_values(self.sde, t)
        s = check_same_shape(self.score(x, t), x)
        return self.sde.drift(x, t) - expand_like(g * g, x) * s

    def diffusion(self, t: Tensor) -> Tensor:
        """g(t), shape (B,)."""
        return diffusion_values(self.sde, t)

    def solve(self, x_T: Tensor, t_end: float, *, method: str = "euler", dt: float = 1e-3,
              adaptive: bool = False, rtol: float = 1e-3, atol: float = 1e-3,
              times: Optional[Sequence[float]] = None, generator: Optional[torch.Generator] = None):
        """Integrate from T down to ``t_end`` with torchsde. Returns (states at the times, nfe).

        ``times`` (decreasing from T to t_end, in [0, T]) defaults to [T, t_end]; the result has shape
        (len(times), B, *D).
        """
        times = [self.T, t_end] if times is None else list(times)
        _check_solve_times(times, self.T, "ReverseSDE.solve")
        with validated_times():
            return integrate_sde(self.drift, self.diffusion, x_T, times, method=method, dt=dt,
                                 adaptive=adaptive, rtol=rtol, atol=atol, generator=generator)


class ProbabilityFlowODE:
    """Probability-flow ODE dx/dt = f(x, t) − ½ g(t)² score(x, t); it shares the marginals p_t of the SDE."""

    def __init__(self, sde: SDE, score: ScoreFn):
        self.sde, self.score, self.T = sde, score, sde.T

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(x, t) − ½ g(t)² score(x, t), shape (B, *D)."""
        g = diffusion_values(self.sde, t)
        s = check_same_shape(self.score(x, t), x)
        return self.sde.drift(x, t) - 0.5 * expand_like(g * g, x) * s

    def solve(self, x: Tensor, times: Sequence[float], *, method: str = "dopri5", rtol: float = 1e-5,
              atol: float = 1e-5, step_size: Optional[float] = None):
        """Integrate through torchdiffeq over monotone ``times`` in [0, T] (either direction). Returns (states, nfe)."""
        _check_solve_times(times, self.T, "ProbabilityFlowODE.solve")
        with validated_times():
            return integrate_ode(lambda y, t: self.drift(y, t), x, times, method=method, rtol=rtol, atol=atol,
                                 step_size=step_size)


class NoiseLevelFlow:
    """The probability-flow ODE of a linear SDE in EDM's variables x̃ = x/s(t) and σ̃ = σ(t)/s(t):

        dx̃/dσ̃ = −σ̃ s(t) score(s(t) x̃, t) = ε̂(x, t),      t = t(σ̃) (``time_from_log_snr(−2 log σ̃)``),

    (from d(x/s)/dt = −½ (g²/s) score and dσ̃/dt = g²/(2 s σ)). An ε-network's field is bounded here, so adaptive
    solvers take far fewer steps than in t (Karras et al. 2022, §3). A density changes by the Jacobian of
    x = s x̃: log p_t(x) = log p̃_σ̃(x̃) − D log s(t), where p̃ evolves with the divergence of this field.
    """

    def __init__(self, sde, score: ScoreFn):
        self.sde, self.score = sde, score

    def time(self, noise_level: Tensor) -> Tensor:
        """t(σ̃) in [0, T], shape (B,), in σ̃'s dtype."""
        return times_at_noise_levels(self.sde, noise_level).to(noise_level.dtype)

    def drift(self, x: Tensor, noise_level: Tensor) -> Tensor:
        """dx̃/dσ̃ at x̃ = ``x`` (B, *D) and σ̃ = ``noise_level`` (B,)."""
        t = self.time(noise_level)
        s = expand_like(self.sde.scale(t).to(x.dtype), x)
        out = check_same_shape(self.score(s * x, t), x)
        return -expand_like(noise_level.to(x.dtype), x) * s * out


#: The time variables of the probability-flow ODE: t itself, or EDM's noise level σ̃ = σ/s (`NoiseLevelFlow`).
TIME_VARIABLES = ("auto", "t", "sigma")


def choose_time_variable(time_variable: str, sde, score) -> str:
    """Resolve ``"auto"``: on a linear SDE the score's own preference (`scoresde.Score.time_variable`: "sigma",
    where a learned score's field is bounded, unless the score is a closed form such as the oracle's), "t" on any
    other SDE (the measured evaluations of each are in docs/benchmarks.md, lab notes)."""
    check_choice(time_variable, TIME_VARIABLES, "time variable")
    if time_variable == "auto":
        return as_score(score).time_variable if is_linear(sde) else "t"
    if time_variable == "sigma":
        require_linear(sde, "the probability-flow ODE in sigma (time_variable='sigma')")
    return time_variable


def _check_solve_times(times: Sequence[float], T: float, who: str) -> None:
    """Check the output times of a solve once (the solver stays between them), so its steps need no checks."""
    check_time_range(torch.tensor([float(t) for t in times], dtype=torch.float64), T, who, name="times")
