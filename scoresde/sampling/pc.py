"""Predictor–corrector sampling (Song et al. 2021, Algorithms 1–3) for any linear SDE.

On a decreasing grid T = t_0 > t_1 > … > t_N = eps, step i runs ``corrector_steps`` corrector moves at t_i
(MCMC that keeps p_{t_i} invariant), then one predictor move from t_i to t_{i+1} (a step of the reverse
process). Everything is derived from the exact one-step kernel of the forward linear SDE,

    x_{t} = a x_{t'} + b z,   a = s(t)/s(t'),   b² = σ(t)² − a² σ(t')²,   t' < t      (``sde.transition``)

so VE, VP, sub-VP and user linear SDEs need no special cases.

Predictors (x at t = t_i, x' at t' = t_{i+1}, h = t − t', z ~ N(0, I), S = score(x, t)):

- ``"euler_maruyama"``: x' = x − [f(x, t) − g(t)² S] h + g(t) √h z.
- ``"reverse_diffusion"``: reverse the discretized forward step x_t = x_{t'} + (a − 1) x_{t'} + b z:
  x' = x − (a − 1) x + b² S + b z.  (VP: DDPM's β_i = b², VE: σ_i² − σ_{i−1}²; Song et al. eq. 47.)
- ``"ancestral"``: draw x' from q(x_{t'} | x_t, x_0 = x̂_0), the exact Gaussian posterior of the two linear
  kernels with x_0 replaced by Tweedie's x̂_0 = (x + σ² S)/s:
      mean = (x + b² S) / a,    var = b² σ(t')² / σ(t)².
  For VP (a² = α_i = 1 − β_i, σ² = 1 − ᾱ) this is DDPM's ancestral step (Ho et al. 2020, eq. 11) with the
  posterior variance β̃_i = β_i (1 − ᾱ_{i−1})/(1 − ᾱ_i); for VE (a = 1, b² = σ_i² − σ_{i−1}²) it is
  NCSN's ancestral step x' = x + (σ_i² − σ_{i−1}²) S + √(σ_{i−1}²(σ_i² − σ_{i−1}²)/σ_i²) z.

Correctors (at time t, K = ``corrector_steps`` moves, x ← x + ε S + √(2ε) z):

- ``"langevin"``: ε = 2 α (snr ‖z‖ / ‖S‖)² (Song et al., Algorithm 4), with α = a² of the kernel from the
  next-lower grid time to t (α = 1 for VE, α_i = 1 − β_i for VP; for sub-VP and user SDEs the same formula,
  where score_sde_pytorch's corrector fails). With ``langevin_norm="batch"`` (default) the norms are batch
  means, as in score_sde_pytorch; ``"sample"`` uses per-sample norms, so a sample never depends on the rest
  of its batch. Per-sample steps are correlated with their own noise z (the noise term scales as
  ‖z‖ z) and with x (ε ∝ 1/‖S(x)‖², which is heavy-tailed in low dimension: ‖S‖ ≈ 0 at a mode), which
  biases the samples (docs/benchmarks.md, lab notes); use ``"sample"`` only when batch independence matters,
  with a lower snr.
- ``"annealed_langevin"``: NCSN's schedule (Song & Ermon 2019, Algorithm 1) α_i = δ σ_i²/σ_L², written as
  ε_i = r σ(t_i)² with r = ``step_ratio`` = δ/σ_L² (NCSN: δ = 2e-5, σ_L = 0.01, so r = 0.2). The ratio is
  the meaningful knob here: our σ(eps) depends on eps and on the SDE (the exact VE law has σ(1e-3) ≈ 1.3e-3,
  not σ_min), so a fixed δ would not transfer. For a scaled SDE, Langevin with step ε̂ = r σ̃² on x/s
  (σ̃ = σ/s) is Langevin with step s² ε̂ = r σ² on x, so the same formula holds for every linear SDE.

Classic samplers as configurations:

- DDPM ancestral sampling: ``PCSampler(predictor="ancestral", corrector=None, steps=1000)`` on a ``VPSDE``
  (uniform grid; its N-step chain is ``VPSDE.discretize``).
- NCSN annealed Langevin dynamics: ``PCSampler(predictor=None, corrector="annealed_langevin", steps=L,
  corrector_steps=K, step_ratio=δ/σ_L²)`` on a ``VESDE``: L noise levels from σ_max down to σ_min on the time grid,
  K Langevin steps each.

NFE: with a predictor, steps × (1 + corrector_steps); without, steps × corrector_steps; plus 1 for
``denoise`` (Tweedie's E[x_0 | x_eps] at the end).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional

import torch

from .. import conversions
from .._registry import Registry, signature_parameters
from .._utils import check_choice, expand_like
from ..sde import diffusion_values
from ._base import SAMPLERS, Sampler, randn_like
from .grids import TimeGrid, check_steps

Tensor = torch.Tensor


def _norm(v: Tensor) -> Tensor:
    """Per-sample Euclidean norm, shape (B,)."""
    return v.reshape(v.shape[0], -1).norm(dim=1)


@dataclass(frozen=True)
class Level:
    """What a predictor or a corrector knows at grid time t_i: t (a (B,) tensor of t_i), h = t_i − t_{i+1}, the
    forward kernel x_{t_i} = a x_{t_{i+1}} + b z from the next-lower grid time, σ(t_i), and the std of the ancestral
    posterior b σ(t_{i+1})/σ(t_i) (None where there is no next level)."""

    t: Tensor
    h: float
    a: float
    b: float
    sigma: float
    posterior_std: Optional[float] = None


# -- predictors: one move from t_i down to t_{i+1} ------------------------------------------------------------
#: Predictors by name (`PCSampler(predictor=...)`); a new one is a `Predictor` subclass and one register line.
PREDICTORS = Registry("predictor")


class Predictor:
    """One move of the reverse process from t_i to t_{i+1}: ``predictor(sde, score, x, level, generator)``, one score
    evaluation; noise is drawn after the score."""

    def __call__(self, sde, score, x: Tensor, level: Level, generator) -> Tensor:
        raise NotImplementedError


@PREDICTORS.register("reverse_diffusion")
class ReverseDiffusion(Predictor):
    """x' = x − (a − 1) x + b² S + b z: the reversed discrete forward step (Song et al. eq. 47)."""

    def __call__(self, sde, score, x, level, generator):
        s = score(x, level.t)
        z = randn_like(x, generator)
        return x - (level.a - 1) * x + level.b * level.b * s + level.b * z


@PREDICTORS.register("euler_maruyama")
class EulerMaruyama(Predictor):
    """x' = x − [f(x, t) − g² S] h + g √h z."""

    def __call__(self, sde, score, x, level, generator):
        s = score(x, level.t)
        z = randn_like(x, generator)
        g = expand_like(diffusion_values(sde, level.t), x)
        return x - level.h * (sde.drift(x, level.t) - g * g * s) + g * level.h ** 0.5 * z


@PREDICTORS.register("ancestral")
class Ancestral(Predictor):
    """A draw of q(x_{t'} | x_t, x_0 = x̂_0): mean (x + b² S)/a = E[X_{t'} | X_t], the posterior's std."""

    def __call__(self, sde, score, x, level, generator):
        s = score(x, level.t)
        z = randn_like(x, generator)
        return conversions.to_intermediate(x, s, level.a, level.b) + level.posterior_std * z


# -- correctors: MCMC moves that keep p_{t_i} invariant -------------------------------------------------------
#: Correctors by name (`PCSampler(corrector=...)`); a new one is a `Corrector` subclass and one register line.
CORRECTORS = Registry("corrector")


class Corrector:
    """One move at t_i, x ← x + ε S + √(2ε) z: ``corrector(score, x, level, generator)``, one score evaluation;
    noise is drawn before the score."""

    def step_size(self, score: Tensor, z: Tensor, level: Level):
        """ε: a number or a tensor broadcastable against x."""
        raise NotImplementedError

    def __call__(self, score, x: Tensor, level: Level, generator) -> Tensor:
        z = randn_like(x, generator)
        s = score(x, level.t)
        step = self.step_size(s, z, level)
        return x + step * s + (2 * step) ** 0.5 * z


@CORRECTORS.register("langevin")
class Langevin(Corrector):
    """ε = 2 α (snr ‖z‖/‖S‖)², α = a² (Song et al., Algorithm 4); ``norm="batch"`` uses batch-mean norms."""

    def __init__(self, snr: float = 0.16, langevin_norm: str = "batch"):
        self.snr, self.norm = float(snr), check_choice(langevin_norm, ("sample", "batch"), "langevin_norm")

    def step_size(self, score, z, level):
        z_norm, s_norm = _norm(z), _norm(score)
        if self.norm == "batch":
            z_norm, s_norm = z_norm.mean(), s_norm.mean().expand_as(s_norm)
        ratio = self.snr * z_norm / s_norm.clamp_min(torch.finfo(score.dtype).tiny)
        return expand_like(2 * level.a ** 2 * ratio ** 2, score)


@CORRECTORS.register("annealed_langevin")
class AnnealedLangevin(Corrector):
    """NCSN's schedule ε_i = r σ(t_i)², r = ``step_ratio`` = δ/σ_L² (Song & Ermon 2019, Algorithm 1)."""

    def __init__(self, step_ratio: float = 0.2):
        self.step_ratio = float(step_ratio)

    def step_size(self, score, z, level):
        return self.step_ratio * level.sigma ** 2


@SAMPLERS.register("pc")
class PCSampler(Sampler):
    """Predictor–corrector sampler for any LinearSDE (see the module docstring for the math).

    Args:
        predictor: ``"reverse_diffusion"``, ``"euler_maruyama"``, ``"ancestral"`` or None.
        corrector: ``"langevin"``, ``"annealed_langevin"`` or None.
        steps: number of predictor steps (grid intervals); with ``predictor=None``, the number of noise
            levels (grid points, ≥ 2) at which the corrector runs.
        snr: the signal-to-noise ratio r of the Langevin corrector (0.16 for CIFAR-10 VE, Song et al.).
        corrector_steps: corrector moves per time step.
        eps: final time, 0 < eps < T.
        grid: the time grid, ``"uniform"``, ``"log_snr"`` or ``"edm"``.
        denoise: finish with Tweedie's estimate E[x_0 | x_eps] (1 extra score evaluation).
        step_ratio: r of the annealed Langevin corrector, ε_i = r σ(t_i)² (NCSN's δ/σ_L² = 0.2).
        langevin_norm: ``"batch"`` (batch-mean norms, score_sde_pytorch; the default) or ``"sample"``
            (per-sample norms, biased in low dimension) in the step size of the ``"langevin"`` corrector.
        rho: EDM's ρ, only for ``grid="edm"``.

    The Langevin corrector is unadjusted, so it biases what it corrects. On a Gaussian N(0, v I) its step is
    ε = 2 r² ‖z‖²/‖score‖² ≈ 2 r² v, and the chain x ← x + ε score + √(2ε) z has stationary variance
    v/(1 − ε/(2v)) = v/(1 − r²) in every dimension. That inflation, independent of D, costs −(D/2) log(1/(1 − r²))
    ≈ −D r²/2 nats of mean log-density. At the default r = 0.16 this is −0.026 nats in 2-D and −0.20 in 16-D
    (the measured gaps are in docs/benchmarks.md, lab notes). So choose r ≤ √(2δ/D) for a gap below δ nats. The
    default stays at score_sde_pytorch's 0.16, which suits images, whose corrector mainly repairs the predictor's discretisation
    error.
    """

    EXAMPLE = dict(steps=6, corrector_steps=1)

    label = "predictor-corrector"

    def __init__(self, predictor: Optional[str] = "reverse_diffusion", corrector: Optional[str] = "langevin",
                 steps: int = 1000, snr: float = 0.16, corrector_steps: int = 1, eps: float = 1e-3,
                 grid: str = "uniform", denoise: bool = True, step_ratio: float = 0.2,
                 langevin_norm: str = "batch", rho: float = 7.0):
        check_choice(predictor, PREDICTORS.names() + [None], "predictor")
        check_choice(corrector, CORRECTORS.names() + [None], "corrector")
        check_choice(langevin_norm, ("sample", "batch"), "langevin_norm")
        if predictor is None and corrector is None:
            raise ValueError("predictor and corrector cannot both be None")
        check_steps(steps, low=1 if predictor is not None else 2, note=" (>= 2 without a predictor)")
        if (isinstance(corrector_steps, bool) or not isinstance(corrector_steps, numbers.Integral)
                or corrector_steps < (1 if predictor is None else 0)):
            raise ValueError(f"corrector_steps must be a non-negative integer (>= 1 without a predictor); "
                             f"got {corrector_steps!r}")
        if not (snr > 0 and step_ratio > 0):
            raise ValueError(f"snr and step_ratio must be positive; got snr={snr}, step_ratio={step_ratio}")
        # With a predictor, ``steps`` intervals; without, ``steps`` levels (``steps`` − 1 intervals).
        self._steps = int(steps)
        self.schedule = TimeGrid(self._steps if predictor is not None else self._steps - 1, grid, eps, rho)
        self.predictor, self.corrector = predictor, corrector
        self.snr, self.step_ratio = float(snr), float(step_ratio)
        self.corrector_steps = int(corrector_steps) if corrector is not None else 0
        self.denoise, self.langevin_norm = bool(denoise), langevin_norm
        self._predictor = None if predictor is None else PREDICTORS.build(predictor)
        options = dict(snr=self.snr, langevin_norm=langevin_norm, step_ratio=self.step_ratio)
        self._corrector = None if corrector is None else CORRECTORS.build(
            corrector, **{k: v for k, v in options.items() if k in signature_parameters(CORRECTORS.get(corrector)[0])})

    @property
    def steps(self) -> int:
        """Predictor steps (grid intervals), or the number of noise levels without a predictor."""
        return self._steps

    def _levels(self, n_times: int) -> int:
        return n_times - 1 if self.predictor is not None else n_times

    def _reports(self, times) -> int:
        return self._levels(len(times))

    def nfe(self, times=None) -> int:
        """steps × (1 + corrector_steps) with a predictor, levels × corrector_steps without (+1 with denoise)."""
        n_times = self.schedule.steps + 1 if times is None else len(times)
        per_level = self.corrector_steps + (1 if self.predictor is not None else 0)
        return self._levels(n_times) * per_level + int(self.denoise)

    def _run(self, sde, score, x, grid, generator, report):
        times = grid.t
        levels = self._levels(len(times))
        tb = times.to(x.dtype)[:, None].expand(len(times), x.shape[0])
        t_list = times.tolist()
        # The one-step kernel into each grid time from the next-lower one (the last level mirrors the spacing
        # of the level above): a_i, b_i with x_{t_i} = a_i x_{t_{i+1}} + b_i z. Used for α and the predictors.
        lower = torch.cat([times[1:], (2 * times[-1] - times[-2]).clamp_min(0).reshape(1)])
        a_all, b_all = sde.transition(lower, times)
        a_list, b_list, std_list = a_all.tolist(), b_all.tolist(), grid.sigma.tolist()
        for i in range(levels):
            has_next = i + 1 < len(t_list)
            level = Level(t=tb[i], h=t_list[i] - t_list[i + 1] if has_next else 0.0, a=a_list[i], b=b_list[i],
                          sigma=std_list[i],
                          posterior_std=b_list[i] * std_list[i + 1] / std_list[i] if has_next else None)
            for _ in range(self.corrector_steps):
                x = self._corrector(score, x, level, generator)
            if self._predictor is not None:
                x = self._predictor(sde, score, x, level, generator)
            report(i + 1, t_list[i + 1] if self.predictor is not None else t_list[i], x)
        return x
