"""Sampling and encoding with the probability-flow ODE, through torchdiffeq.

The probability-flow ODE (Song et al. 2021, eq. 13)

    dx/dt = f(x, t) − ½ g(t)² ∇ log p_t(x)

is deterministic and has the same marginals p_t as the forward SDE. Integrating it from T down to eps turns
prior samples into data samples; integrating it from eps up to T maps data to latents (``encode``), and
decoding the latents returns the data up to the solver's tolerance.

Adaptive torchdiffeq solvers probe times outside the integration interval (dopri5 evaluates at t < 0 on the
way down to eps); the adapter clamps every time to [eps, T] and forbids steps past the end, so the score is
never evaluated outside [eps, T] (tested).
"""
from __future__ import annotations

from typing import Optional

import torch

from .._adapters import DEFAULT_MAX_NFE, ODE_SOLVERS, check_max_nfe, integrate_ode
from .._utils import FiniteWatch, check_choice, check_finite, validated_times
from ..sde import TIME_VARIABLES, NoiseLevelFlow, choose_time_variable
from ._base import SAMPLERS, CountedScore, SampleResult, Sampler
from .grids import TimeGrid, check_steps

Tensor = torch.Tensor


@SAMPLERS.register("probability_flow")
class ProbabilityFlowSampler(Sampler):
    """Integrate the probability-flow ODE from T to eps with any torchdiffeq method.

    Args:
        solver: a torchdiffeq method. Adaptive: ``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``,
            ``"adaptive_heun"``; fixed-step (need ``steps``): ``"euler"``, ``"midpoint"``, ``"heun3"``,
            ``"rk4"``, ``"explicit_adams"``, ``"implicit_adams"``.
        rtol: tolerances of the adaptive solvers: positive, and rtol at least 10 machine epsilons of the
            state's dtype (checked when sampling).
        atol: as ``rtol``.
        steps: None for an adaptive solver; for a fixed-step solver, the number of steps on the time grid
            ``grid`` (score evaluations per step: euler 1, midpoint 2, heun3 3, rk4 4).
        eps: final time, 0 < eps < T.
        grid: the fixed-step time grid, ``"uniform"``, ``"log_snr"`` or ``"edm"`` (see ``time_grid``).
        denoise: finish with Tweedie's estimate E[x_0 | x_eps] (1 extra score evaluation). Off by default,
            which keeps the map x_T → x_eps invertible (``encode``).
        rho: EDM's ρ, only for ``grid="edm"``.
        max_nfe: an adaptive solve that needs more score evaluations stops with a RuntimeError.
        time_variable: ``"t"``, ``"sigma"`` (the same ODE in x̃ = x/s against σ̃ = σ/s, `scoresde.sde.NoiseLevelFlow`;
            a fixed-step solver then steps between the noise levels of its time grid) or ``"auto"`` (default:
            σ̃ on a linear SDE unless the score is a closed form, `scoresde.Score.time_variable`; t otherwise).

    With ``trajectory``/``callback``/``progress``, states are reported at the grid times (fixed steps) or at
    ``steps or 100`` uniform times (adaptive; torchdiffeq interpolates), after the solve.
    """

    EXAMPLE = dict(rtol=1e-3, atol=1e-3)

    label = "probability flow"
    #: The ODE needs only drift and diffusion (the "log_snr" and "edm" grids and denoising need scale and std).
    needs_linear_sde = False

    def __init__(self, solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                 steps: Optional[int] = None, eps: float = 1e-3, grid: str = "uniform", denoise: bool = False,
                 rho: float = 7.0, max_nfe: int = DEFAULT_MAX_NFE, time_variable: str = "auto"):
        check_choice(solver, ODE_SOLVERS.names(), "torchdiffeq solver")
        check_choice(time_variable, TIME_VARIABLES, "time variable")
        self.time_variable = time_variable
        self.solver = solver
        if not self.adaptive and steps is None:
            raise ValueError(f"steps must be a positive integer (fixed-step solver {solver!r} needs steps); got None")
        self.schedule = TimeGrid(None if steps is None else check_steps(steps), grid, eps, rho)
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive; got rtol={rtol}, atol={atol}")
        self.rtol, self.atol = float(rtol), float(atol)
        self.max_nfe = check_max_nfe(max_nfe)
        self.denoise = bool(denoise)

    @property
    def adaptive(self) -> bool:
        """True when the solver picks its own steps (``steps`` then only sets how often states are reported)."""
        return ODE_SOLVERS.get(self.solver)[0].adaptive

    def _evaluations_per_step(self) -> Optional[int]:
        return ODE_SOLVERS.get(self.solver)[0].evaluations_per_step

    def _reports_live(self) -> bool:
        return False

    def times(self, sde, device=None) -> Tensor:
        """The fixed-step grid, or for adaptive solvers the ``steps or 100`` uniform times states are reported at."""
        if self.adaptive:
            return TimeGrid(self.steps or 100, "uniform", self.eps).times(sde, device=device)
        return super().times(sde, device=device)

    def _run(self, sde, score, x, grid, generator, report):
        return self._integrate(sde, score, x, grid.t, report)

    def encode(self, sde, score, x0: Tensor) -> SampleResult:
        """Map data to latents: integrate the ODE from eps up to T starting at ``x0`` (B, *D).

        Returns a SampleResult with ``x`` the latent at T and ``nfe`` the number of score evaluations.
        ``sample(sde, score, x.shape, x_T=latent)`` with ``denoise=False`` maps it back to x0.
        """
        if not torch.is_tensor(x0) or x0.dim() < 1:
            raise ValueError(f"x0 must be a tensor of shape (B, *D); got {getattr(x0, 'shape', type(x0).__name__)}")
        if not x0.is_floating_point():
            raise TypeError(f"x0 must be a floating-point tensor; got dtype {x0.dtype} (cast it, e.g. x0.float())")
        check_finite(x0, "x0")
        times = self.times(sde, device=x0.device).flip(0)
        watch = FiniteWatch(f"{type(self).__name__}.encode", live_steps=False)
        counted = CountedScore(score, watch)
        try:
            with torch.no_grad(), validated_times():
                z = self._integrate(sde, counted, x0, times, None)
            watch.result(z, float(times[-1]))
        except Exception as err:
            watch.flush(cause=err)
            raise
        return SampleResult(x=z, nfe=counted.nfe, network_evaluations=counted.total_network_evaluations)

    def _integrate(self, sde, score, x: Tensor, times: Tensor, report) -> Tensor:
        """Integrate the PF ODE over ``times`` (monotone, either direction), reporting at every time."""
        listening = report is not None and report.active
        variable = choose_time_variable(self.time_variable, sde, score)
        if variable == "sigma":             # x̃ = x/s against σ̃ = σ/s
            flow = NoiseLevelFlow(sde, score)
            scales = sde.scale(times)
            axis = sde.std(times) / scales
            x = x / float(scales[0])
        else:
            flow, axis = sde.probability_flow(score), times
        if self.adaptive:
            out = axis if listening else axis[[0, -1]]
            xs, _ = integrate_ode(flow.drift, x, out.tolist(), method=self.solver, rtol=self.rtol, atol=self.atol,
                                  max_nfe=self.max_nfe)
        else:
            # One solver step per grid interval.
            grid = axis.to(x.dtype)
            xs, _ = integrate_ode(flow.drift, x, grid.tolist() if listening else grid[[0, -1]].tolist(),
                                  method=self.solver, grid=grid)
        if variable == "sigma":
            picked = scales if listening else scales[[0, -1]]
            xs = [state * float(scale) for state, scale in zip(xs, picked.tolist())]
        if listening:
            for k in range(1, len(times)):
                report(k, float(times[k]), xs[k])
        return xs[-1]
