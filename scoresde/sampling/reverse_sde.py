"""Sampling by integrating the reverse-time SDE, through torchsde or a lean native Euler–Maruyama loop.

The reverse SDE of dx = f(x, t) dt + g(t) dw is

    dx = [f(x, t) − g(t)² ∇ log p_t(x)] dt + g(t) dw̄,      run from t = T down to t = eps,

(Anderson 1982; Song et al. 2021, eq. 6). Its Euler–Maruyama step of size h > 0 going down is

    x ← x − [f(x, t) − g(t)² score(x, t)] h + g(t) √h z,    z ~ N(0, I).

``backend="torchsde"`` runs any torchsde method valid for our diagonal noise (``"euler"``, ``"milstein"``,
``"srk"``; and the Stratonovich ``"heun"``, ``"midpoint"``, ``"reversible_heun"``, ``"euler_heun"``, which
are valid because g depends on t only, so the Itô and Stratonovich forms coincide), on fixed or adaptive
steps, with a Brownian motion seeded from the generator. ``backend="native"`` is a hand-written
Euler–Maruyama loop with the same update, for low per-step overhead: torchsde's Brownian machinery costs
about 0.3× of a small network's forward pass per step (``shared/LIBRARIES.md``). For the same Brownian
increments both backends give the same samples (tested).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .._adapters import TORCHSDE_METHODS
from .._utils import check_choice
from ._base import Recorder, Sampler, batch_time, randn_like, tweedie_denoise
from .grids import time_grid

Tensor = torch.Tensor

BACKENDS = ("torchsde", "native")


class ReverseSDESampler(Sampler):
    """Integrate the reverse-time SDE from T to eps, then (optionally) denoise with Tweedie's formula.

    Args:
        solver: a torchsde method valid for diagonal noise: ``"euler"``, ``"milstein"``, ``"srk"``,
            ``"heun"``, ``"midpoint"``, ``"reversible_heun"``, ``"euler_heun"``. Score evaluations per step:
            euler, milstein, reversible_heun 1; heun, midpoint, euler_heun 2; srk 10 (diagonal noise).
        steps: number of uniform steps of size h = (T − eps)/steps (the initial step when ``adaptive``).
        eps: final time, 0 < eps < T.
        adaptive: let torchsde adapt the step size (Itô methods euler, milstein, srk) to ``rtol``/``atol``.
        rtol, atol: tolerances of the adaptive step-size controller.
        denoise: finish with Tweedie's estimate E[x_0 | x_eps] = (x + σ(eps)² score(x, eps)) / s(eps)
            (1 extra score evaluation; needs a LinearSDE).
        backend: ``"torchsde"`` or ``"native"`` (Euler–Maruyama only, fixed steps).

    NFE: steps × (evaluations per step) + denoise on the native backend; torchsde adds 1 evaluation to
    check shapes before it starts (and reversible_heun 1 more to initialise). ``res.nfe`` is always the exact
    count. Adaptive runs take about 3 solver steps per accepted step (step doubling); torchsde warns that
    adaptive Euler–Maruyama is not guaranteed to converge for non-additive noise (ours is additive).
    ``"reversible_heun"`` has a small linear-stability region: on sharply concentrated data (the 8-Gaussian
    mixture, component std 0.1) it diverged at 500 steps, while it is accurate on N(0, 0.5² I).

    With ``trajectory``/``callback``/``progress`` on the
    torchsde backend, the states are reported on the uniform grid of ``steps`` intervals after the solve
    (torchsde interpolates between its own steps); the native backend reports every step as it happens.
    The denoising step is not part of the trajectory.
    """

    def __init__(self, solver: str = "euler", steps: int = 1000, eps: float = 1e-3, adaptive: bool = False,
                 rtol: float = 1e-3, atol: float = 1e-3, denoise: bool = True, backend: str = "torchsde"):
        check_choice(solver, tuple(TORCHSDE_METHODS), "torchsde solver")
        check_choice(backend, BACKENDS, "backend")
        if int(steps) != steps or int(steps) < 1:
            raise ValueError(f"steps must be a positive integer; got {steps!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive; got {eps!r}")
        if backend == "native" and (solver != "euler" or adaptive):
            raise ValueError(f"backend='native' runs fixed-step Euler–Maruyama only; got solver={solver!r}, "
                             f"adaptive={adaptive!r} (use backend='torchsde' for these)")
        if adaptive and TORCHSDE_METHODS[solver] != "ito":
            valid = ", ".join(repr(m) for m, kind in TORCHSDE_METHODS.items() if kind == "ito")
            raise ValueError(f"adaptive stepping needs an Itô solver; valid choices: {valid}; got {solver!r}")
        self.solver, self.steps, self.eps = solver, int(steps), float(eps)
        self.adaptive, self.rtol, self.atol = bool(adaptive), float(rtol), float(atol)
        self.denoise, self.backend = bool(denoise), backend

    def _sample(self, sde, score, x, generator, trajectory, callback, progress):
        if not 0 < self.eps < sde.T:
            raise ValueError(f"eps must lie in (0, T={sde.T}); got {self.eps}")
        recorder = Recorder(trajectory, callback, progress, self.steps, "reverse SDE")
        times = time_grid(sde, self.steps, "uniform", self.eps, device=x.device)
        if self.backend == "native":
            h = (sde.T - self.eps) / self.steps

            sqrt_h = math.sqrt(h)

            def noise(k: int, state: Tensor) -> Tensor:
                return randn_like(state, generator).mul_(sqrt_h)

            x = euler_maruyama(sde, score, x, times, noise, recorder)
        else:
            x = self._torchsde(sde, score, x, times, generator, recorder)
        if self.denoise:
            x = tweedie_denoise(sde, score, x, batch_time(self.eps, x))
        return x, recorder

    def _torchsde(self, sde, score, x, times, generator, recorder):
        report = recorder.record or recorder.callback is not None or recorder.bar is not None
        out_times = times.tolist() if report else [sde.T, self.eps]
        dt = _torchsde_dt(sde, self.steps, self.eps, x.dtype)
        xs, _ = sde.reverse(score).solve(x, self.eps, method=self.solver, dt=dt, adaptive=self.adaptive,
                                         rtol=self.rtol, atol=self.atol, times=out_times, generator=generator)
        if report:
            for k in range(1, len(out_times)):
                recorder(k, out_times[k], xs[k])
        return xs[-1]


def _torchsde_dt(sde, steps: int, eps: float, dtype: torch.dtype) -> float:
    """The step torchsde is given for ``steps`` uniform steps from T to eps.

    torchsde steps s ← s + dt in the state's dtype and adds a tiny extra step when rounding leaves the sum
    short of the end. Widening h = (T − eps)/N by δ = N·(machine eps) ≥ the worst accumulated rounding
    (N additions of ≤ ½ ulp(T), relative to h = T/N) makes exactly N steps, the last one shorter by at most
    N²·eps·h (2e-10 h in float64 at N = 1000; 0.12 h in float32).
    """
    h = (sde.T - eps) / steps
    return h * (1 + steps * torch.finfo(dtype).eps)


def euler_maruyama(sde, score, x: Tensor, times: Tensor, noise: Callable[[int, Tensor], Tensor],
                   recorder: Optional[Callable[[int, float, Tensor], None]] = None) -> Tensor:
    """Euler–Maruyama on the reverse SDE over the decreasing grid ``times`` (float64, (N+1,)).

    Step k (h_k = t_k − t_{k+1} > 0):  x ← x − [f(x, t_k) − g(t_k)² score(x, t_k)] h_k + g(t_k) ΔW_k,
    where ``noise(k, x)`` returns the Brownian increment ΔW_k ~ N(0, h_k I) shaped like x. Only ``drift``
    and ``diffusion`` of ``sde`` are used, so any SDE with additive noise works.
    """
    steps = times.shape[0] - 1
    tb = times.to(x.dtype)[:, None].expand(steps + 1, x.shape[0])
    # One batch shares each time, so g(t_k) and h_k are Python scalars: fewer kernels per step.
    g = sde.diffusion(times[:-1].to(x.dtype)).tolist()
    h = (times[:-1] - times[1:]).tolist()
    t_list = times.tolist()
    for k in range(steps):
        t = tb[k]
        drift = sde.drift(x, t)
        score_k = score(x, t)
        x = x.add(drift, alpha=-h[k])
        x.add_(score_k, alpha=h[k] * g[k] ** 2)
        x.add_(noise(k, x), alpha=g[k])
        if recorder is not None:
            recorder(k + 1, t_list[k + 1], x)
    return x
