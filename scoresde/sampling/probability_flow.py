"""Sampling and encoding with the probability-flow ODE, through torchdiffeq.

The probability-flow ODE (Song et al. 2021, eq. 13)

    dx/dt = f(x, t) − ½ g(t)² ∇ log p_t(x)

is deterministic and has the same marginals p_t as the forward SDE. Integrating it from T down to eps turns
prior samples into data samples; integrating it from eps up to T maps data to latents (``encode``), and
decoding the latents returns the data up to the solver's tolerance.

Adaptive torchdiffeq solvers probe times outside the integration interval (dopri5 evaluated at t < 0 going
down to eps, see ``shared/LIBRARIES.md``); the adapter clamps every time to [eps, T] and forbids steps past
the end, so the score is never evaluated outside [eps, T] (tested).
"""
from __future__ import annotations

from typing import Optional

import torch

from .._adapters import TORCHDIFFEQ_ADAPTIVE, TORCHDIFFEQ_FIXED, _TorchdiffeqFunction, integrate_ode
from .._utils import check_choice
from ._base import CountedScore, Recorder, SampleResult, Sampler, batch_time, tweedie_denoise
from .grids import GRIDS, time_grid

Tensor = torch.Tensor

SOLVERS = TORCHDIFFEQ_ADAPTIVE + TORCHDIFFEQ_FIXED


class ProbabilityFlowSampler(Sampler):
    """Integrate the probability-flow ODE from T to eps with any torchdiffeq method.

    Args:
        solver: a torchdiffeq method. Adaptive: ``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``,
            ``"adaptive_heun"``; fixed-step (need ``steps``): ``"euler"``, ``"midpoint"``, ``"heun3"``,
            ``"rk4"``, ``"explicit_adams"``, ``"implicit_adams"``.
        rtol, atol: tolerances of the adaptive solvers.
        steps: None for an adaptive solver; for a fixed-step solver, the number of steps on the time grid
            ``grid`` (score evaluations per step: euler 1, midpoint 2, heun3 3, rk4 4).
        eps: final time, 0 < eps < T.
        grid: the fixed-step time grid, ``"uniform"``, ``"log_snr"`` or ``"edm"`` (see ``time_grid``).
        denoise: finish with Tweedie's estimate E[x_0 | x_eps] (1 extra score evaluation). Off by default,
            which keeps the map x_T → x_eps invertible (``encode``).

    With ``trajectory``/``callback``/``progress``, states are reported at the grid times (fixed steps) or at
    ``steps or 100`` uniform times (adaptive; torchdiffeq interpolates), after the solve.
    """

    def __init__(self, solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                 steps: Optional[int] = None, eps: float = 1e-3, grid: str = "uniform", denoise: bool = False):
        check_choice(solver, SOLVERS, "torchdiffeq solver")
        check_choice(grid, GRIDS, "time grid")
        if solver in TORCHDIFFEQ_FIXED and steps is None:
            raise ValueError(f"fixed-step solver {solver!r} needs steps (a positive integer); got None")
        if steps is not None and (int(steps) != steps or int(steps) < 1):
            raise ValueError(f"steps must be None or a positive integer; got {steps!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive; got {eps!r}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive; got rtol={rtol}, atol={atol}")
        self.solver, self.rtol, self.atol = solver, float(rtol), float(atol)
        self.steps = None if steps is None else int(steps)
        self.eps, self.grid, self.denoise = float(eps), grid, bool(denoise)

    @property
    def adaptive(self) -> bool:
        """True when the solver picks its own steps (``steps`` is then ignored for stepping)."""
        return self.solver in TORCHDIFFEQ_ADAPTIVE

    def _sample(self, sde, score, x, generator, trajectory, callback, progress):
        recorder = Recorder(trajectory, callback, progress, self.steps or 100, "probability flow")
        report = recorder.record or recorder.callback is not None or recorder.bar is not None
        x = self._integrate(sde, score, x, reverse=True, report=report, recorder=recorder)
        if self.denoise:
            x = tweedie_denoise(sde, score, x, batch_time(self.eps, x))
        return x, recorder

    def encode(self, sde, score, x0: Tensor) -> SampleResult:
        """Map data to latents: integrate the ODE from eps up to T starting at ``x0`` (B, *D).

        Returns a SampleResult with ``x`` the latent at T and ``nfe`` the number of score evaluations.
        ``sample(sde, score, x.shape, x_T=latent)`` with ``denoise=False`` maps it back to x0.
        """
        if not torch.is_tensor(x0) or x0.dim() < 1:
            raise ValueError(f"x0 must be a tensor of shape (B, *D); got {getattr(x0, 'shape', type(x0).__name__)}")
        counted = CountedScore(score)
        with torch.no_grad():
            z = self._integrate(sde, counted, x0, reverse=False, report=False, recorder=None)
        return SampleResult(x=z, nfe=counted.nfe)

    # -- internals -----------------------------------------------------------------------------------
    def _grid(self, sde, device) -> Tensor:
        """Decreasing float64 grid T → eps for fixed-step solvers."""
        return time_grid(sde, self.steps, self.grid, self.eps, device=device)

    def _integrate(self, sde, score, x: Tensor, reverse: bool, report: bool, recorder) -> Tensor:
        if not 0 < self.eps < sde.T:
            raise ValueError(f"eps must lie in (0, T={sde.T}); got {self.eps}")
        flow = sde.probability_flow(score)
        if self.adaptive:
            n_out = (self.steps or 100) if report else 1
            out = torch.linspace(sde.T, self.eps, n_out + 1, dtype=torch.float64).tolist()
            if not reverse:
                out = out[::-1]
            xs, _ = integrate_ode(flow.drift, x, out, method=self.solver, rtol=self.rtol, atol=self.atol)
        else:
            grid = self._grid(sde, x.device)
            if not reverse:
                grid = grid.flip(0)
            grid = grid.to(x.dtype)
            out = grid if report else grid[[0, -1]]
            # One solver step per grid interval; torchdiffeq negates the grid itself for decreasing time.
            wrapped = _TorchdiffeqFunction(flow.drift, self.eps, sde.T)
            from torchdiffeq import odeint

            xs = odeint(wrapped, x, out, method=self.solver,
                        options=dict(grid_constructor=lambda func, y0, t: grid))
            out = out.tolist()
        if report:
            for k in range(1, len(out)):
                recorder(k, out[k], xs[k])
        return xs[-1]
