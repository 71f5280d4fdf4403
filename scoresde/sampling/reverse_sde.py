"""Sampling by integrating the reverse-time SDE, through torchsde or a lean native Euler–Maruyama loop.

The reverse SDE of dx = f(x, t) dt + g(t) dw is

    dx = [f(x, t) − g(t)² ∇ log p_t(x)] dt + g(t) dw̄,      run from t = T down to t = eps,

(Anderson 1982; Song et al. 2021, eq. 6). Its Euler–Maruyama step of size h > 0 going down is

    x ← x − [f(x, t) − g(t)² score(x, t)] h + g(t) √h z,    z ~ N(0, I).

``backend="torchsde"`` runs any torchsde method valid for our diagonal noise (``"euler"``, ``"milstein"``,
``"srk"``; and the Stratonovich ``"heun"``, ``"midpoint"``, ``"reversible_heun"``, ``"euler_heun"``, which
are valid because g depends on t only, so the Itô and Stratonovich forms coincide), on fixed or adaptive
steps, with a Brownian motion seeded from the generator. ``backend="native"`` is a hand-written
Euler–Maruyama loop with the same update, for low per-step overhead (torchsde's Brownian machinery costs
about a third of a small network's forward pass per step; see docs/benchmarks.md), and it follows any time
grid. For the same Brownian increments both backends give the same samples (tested).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .._adapters import TORCHSDE_METHODS
from .._utils import check_choice
from ..sde import diffusion_values
from ._base import SAMPLERS, Sampler, randn_like
from .grids import TimeGrid, check_steps

Tensor = torch.Tensor

BACKENDS = ("torchsde", "native")


@SAMPLERS.register("reverse_sde")
class ReverseSDESampler(Sampler):
    """Integrate the reverse-time SDE from T to eps, then (optionally) denoise with Tweedie's formula.

    Args:
        solver: a torchsde method valid for diagonal noise: ``"euler"``, ``"milstein"``, ``"srk"``,
            ``"heun"``, ``"midpoint"``, ``"reversible_heun"``, ``"euler_heun"``. Score evaluations per step:
            euler, milstein, reversible_heun 1; heun, midpoint, euler_heun 2; srk 10 (diagonal noise).
        steps: number of steps on the time grid ``grid`` (the initial step when ``adaptive``).
        eps: final time, 0 < eps < T.
        adaptive: let torchsde adapt the step size (Itô methods euler, milstein, srk) to ``rtol``/``atol``.
        rtol: tolerances of the adaptive step-size controller.
        atol: as ``rtol``.
        denoise: finish with Tweedie's estimate E[x_0 | x_eps] = (x + σ(eps)² score(x, eps)) / s(eps)
            (1 extra score evaluation; needs a LinearSDE).
        backend: ``"torchsde"`` or ``"native"`` (Euler–Maruyama only, fixed steps, any grid).
        grid: the time grid, ``"uniform"`` (h = (T − eps)/steps), ``"log_snr"`` or ``"edm"``; torchsde takes
            equal steps only, so the other grids (and explicit ``times``) need ``backend="native"``.
        rho: EDM's ρ, only for ``grid="edm"``.

    NFE: steps × (evaluations per step) + denoise on the native backend; torchsde adds 1 evaluation to
    check shapes before it starts (and reversible_heun 1 more to initialise). ``res.nfe`` is always the exact
    count. Adaptive runs take about 3 solver steps per accepted step (step doubling); torchsde warns that
    adaptive Euler–Maruyama is not guaranteed to converge for non-additive noise (ours is additive).
    ``"reversible_heun"`` has a small linear-stability region: on sharply concentrated data it can diverge
    where Euler–Maruyama does not (docs/benchmarks.md).

    With ``trajectory``/``callback``/``progress`` on the torchsde backend, the states are reported on the
    uniform grid of ``steps`` intervals after the solve (torchsde interpolates between its own steps); the
    native backend reports every step as it happens. The denoising step is not part of the trajectory.
    """

    EXAMPLE = dict(steps=12)

    label = "reverse SDE"
    #: Euler–Maruyama needs only drift and diffusion; the final denoising needs scale and std.
    needs_linear_sde = False

    def __init__(self, solver: str = "euler", steps: int = 1000, eps: float = 1e-3, adaptive: bool = False,
                 rtol: float = 1e-3, atol: float = 1e-3, denoise: bool = True, backend: str = "torchsde",
                 grid: str = "uniform", rho: float = 7.0):
        check_choice(solver, tuple(TORCHSDE_METHODS), "torchsde solver")
        check_choice(backend, BACKENDS, "backend")
        self.schedule = TimeGrid(check_steps(steps), grid, eps, rho)
        if backend == "native" and (solver != "euler" or adaptive):
            raise ValueError(f"backend='native' runs fixed-step Euler–Maruyama only; got solver={solver!r}, "
                             f"adaptive={adaptive!r} (use backend='torchsde' for these)")
        if backend == "torchsde" and grid != "uniform":
            raise ValueError(f"backend='torchsde' takes equal steps only; grid={grid!r} needs backend='native'")
        if adaptive and TORCHSDE_METHODS[solver] != "ito":
            valid = ", ".join(repr(m) for m, kind in TORCHSDE_METHODS.items() if kind == "ito")
            raise ValueError(f"adaptive stepping needs an Itô solver; valid choices: {valid}; got {solver!r}")
        self.solver, self.adaptive, self.rtol, self.atol = solver, bool(adaptive), float(rtol), float(atol)
        self.denoise, self.backend = bool(denoise), backend

    def _evaluations_per_step(self):
        if self.adaptive:
            return None
        return _TORCHSDE_EVALUATIONS.get(self.solver) if self.backend == "torchsde" else 1

    def _reports_live(self) -> bool:
        return self.backend == "native"

    def _extra_evaluations(self) -> int:
        if self.backend == "native":
            return 0
        return 1 + int(self.solver == "reversible_heun")

    def _run(self, sde, score, x, grid, generator, report):
        times = grid.t
        if self.backend == "native":
            h = (times[:-1] - times[1:]).sqrt().tolist()

            def noise(k: int, state: Tensor) -> Tensor:
                return randn_like(state, generator).mul_(h[k])

            return euler_maruyama(sde, score, x, times, noise, report)
        return self._torchsde(sde, score, x, times, generator, report)

    def _torchsde(self, sde, score, x, times, generator, report):
        if isinstance(generator, tuple):
            raise ValueError("backend='torchsde' seeds one Brownian motion for the batch: per-sample generators "
                             "need backend='native'")
        steps = len(times) - 1
        h = (times[:-1] - times[1:])
        if not bool(torch.allclose(h, h[0].expand_as(h), rtol=1e-9, atol=0)):
            raise ValueError("backend='torchsde' takes equal steps only; these times are not equally spaced "
                             "(use backend='native' for any grid)")
        t_end = float(times[-1])
        out_times = times.tolist() if report.active else [float(times[0]), t_end]
        dt = _torchsde_dt(float(times[0]), t_end, steps, x.dtype)
        reverse = sde.reverse(score)
        xs, _ = reverse.solve(x, t_end, method=self.solver, dt=dt, adaptive=self.adaptive, rtol=self.rtol,
                              atol=self.atol, times=out_times, generator=generator)
        if report.active:
            for k in range(1, len(out_times)):
                report(k, out_times[k], xs[k])
        return xs[-1]


#: Score evaluations per fixed torchsde step for diagonal noise (drift calls; g depends on t only).
_TORCHSDE_EVALUATIONS = {"euler": 1, "milstein": 1, "srk": None, "heun": 2, "midpoint": 2,
                         "reversible_heun": 1, "euler_heun": 2}


def _torchsde_dt(t_start: float, t_end: float, steps: int, dtype: torch.dtype) -> float:
    """The step torchsde is given for ``steps`` uniform steps from ``t_start`` down to ``t_end``.

    torchsde steps s ← s + dt in the state's dtype and adds a tiny extra step when rounding leaves the sum
    short of the end. Widening h = (T − eps)/N by δ = N·(machine eps) ≥ the worst accumulated rounding
    (N additions of ≤ ½ ulp(T), relative to h = T/N) makes exactly N steps, the last one shorter by at most
    N²·eps·h (2e-10 h in float64 at N = 1000; 0.12 h in float32).
    """
    h = (t_start - t_end) / steps
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
    g = diffusion_values(sde, times[:-1].to(x.dtype)).tolist()
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
