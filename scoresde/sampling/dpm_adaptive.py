"""Adaptive DPM-Solver (Lu et al. 2022, §4.2; k-diffusion's ``dpm_adaptive``): embedded DPM-Solver pairs with a
PID step-size controller in λ = log(s/σ), the adaptive alternative to dopri5 on the probability-flow ODE.

Each attempted step from λ to λ + h evaluates the stages of a pair that share them: order 2 pairs DPM-Solver-1 with
DPM-Solver-2 (stages at 0 and h/2: 2 evaluations), order 3 pairs DPM-Solver-2 (r = 1/3) with DPM-Solver-3 (stages
at 0, h/3, 2h/3: 3 evaluations). The error of the lower-order result against the higher, in EDM's scaled state
x̃ = x/s,

    E = ‖(x̃_low − x̃_high) / δ‖ / √(numel),    δ = max(atol, rtol · max(|x̃_low|, |x̃_prev|)),

drives an elementary PID controller on 1/E with exponents (β₁, β₂, β₃) = ((p + i + d), −(p + 2d), d)/order and the
limiter 1 + atan(f − 1); a step is accepted when its factor f ≥ ``accept_safety``, and h ← f h either way. The
accepted state is the higher-order result (local extrapolation). One step size serves the whole batch.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .._adapters import DEFAULT_MAX_NFE, check_max_nfe
from .._utils import check_choice
from ._base import SAMPLERS, Sampler
from .dpm_solver import DPMSolver, lambda_points
from .grids import TimeGrid

Tensor = torch.Tensor


class PIDController:
    """h ← h · f with f = 1 + atan(F − 1), F = e₀^{β₁} e₁^{β₂} e₂^{β₃} over the inverse errors e of the current and
    the last two accepted steps; accept when f ≥ ``accept_safety``."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float,
                 accept_safety: float = 0.81, tiny: float = 1e-8):
        self.h = h
        self.b1, self.b2, self.b3 = (pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order
        self.accept_safety, self.tiny = accept_safety, tiny
        self.inverse = None

    def propose(self, error: float) -> bool:
        e0 = 1.0 / (error + self.tiny)
        if self.inverse is None:
            self.inverse = [e0, e0, e0]
        self.inverse[0] = e0
        factor = e0 ** self.b1 * self.inverse[1] ** self.b2 * self.inverse[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inverse[2], self.inverse[1] = self.inverse[1], e0
        self.h *= factor
        return accept


@SAMPLERS.register("dpm_adaptive")
class AdaptiveDPMSolver(Sampler):
    """Adaptive DPM-Solver-12 (``order=2``) or -23 (``order=3``) from T to eps; ``res.nfe`` is the exact count.

    Args:
        order: 2 or 3, the higher order of the embedded pair.
        rtol: relative tolerance on x̃ = x/s (k-diffusion's default 0.05).
        atol: absolute tolerance on x̃ (default 0.0078, about 1/128 of the data range [−1, 1]).
        h_init: the first step in λ.
        pcoeff: the controller's proportional coefficient.
        icoeff: its integral coefficient (with p = d = 0 the classic elementary controller).
        dcoeff: its derivative coefficient.
        accept_safety: accept a step when the controller's factor is at least this.
        prediction: ``"eps"`` (DPM-Solver, k-diffusion's form) or ``"x0"`` (DPM-Solver++).
        eps: the final time.
        denoise: finish with Tweedie's E[x_0 | x_eps].
        max_nfe: stop with a RuntimeError after this many evaluations.
    """

    EXAMPLE = dict(rtol=0.1, atol=0.05)

    label = "dpm-adaptive"

    def __init__(self, order: int = 3, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,
                 pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0, accept_safety: float = 0.81,
                 prediction: str = "eps", eps: float = 1e-3, denoise: bool = False, max_nfe: int = DEFAULT_MAX_NFE):
        if isinstance(order, bool):
            raise ValueError(f"unknown order {order!r}; valid choices: 2, 3")
        check_choice(order, (2, 3), "order")
        for name, value in (("rtol", rtol), ("atol", atol), ("h_init", h_init)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number; got {value!r}")
        self.schedule = TimeGrid(None, "uniform", eps)
        self.order, self.rtol, self.atol, self.h_init = int(order), float(rtol), float(atol), float(h_init)
        self.coefficients = (float(pcoeff), float(icoeff), float(dcoeff))
        self.accept_safety, self.denoise = float(accept_safety), bool(denoise)
        self.max_nfe = check_max_nfe(max_nfe)
        self._solver = DPMSolver(steps=1, order=order, multistep=False, prediction=prediction)
        self.accepted = self.rejected = 0

    def _evaluations_per_step(self) -> Optional[int]:
        return None

    def _reports(self, times: Tensor) -> Optional[int]:
        return None

    def _point(self, sde, lam: float):
        t = sde.time_from_log_snr(torch.tensor([2 * lam], dtype=torch.float64)).clamp(0, sde.T)
        (point,) = lambda_points(sde, t)
        return float(t), point

    def _pair(self, sde, score, x: Tensor, start, t_start: float, end):
        """(low, high) results of the embedded pair from ``start`` to ``end`` (each (λ, s, σ))."""
        solver = self._solver
        m0 = solver._model(score, x, t_start, start[1], start[2])
        h = end[0] - start[0]
        if self.order == 2:
            low = solver._step(x, start, end, m0)
            t_mid, mid = self._point(sde, start[0] + h / 2)
            m_mid = solver._model(score, solver._step(x, start, mid, m0), t_mid, mid[1], mid[2])
            a, _ = solver._derivatives(m0, [(mid[0] - start[0], m_mid)])
            return low, solver._step(x, start, end, m0, a)
        t_1, p1 = self._point(sde, start[0] + h / 3)
        m_1 = solver._model(score, solver._step(x, start, p1, m0), t_1, p1[1], p1[2])
        a1, _ = solver._derivatives(m0, [(p1[0] - start[0], m_1)])
        low = solver._step(x, start, end, m0, a1)                        # DPM-Solver-2 with r = 1/3
        t_2, p2 = self._point(sde, start[0] + 2 * h / 3)
        m_2 = solver._model(score, solver._step(x, start, p2, m0, a1, taylor=True), t_2, p2[1], p2[2])
        a2, _ = solver._derivatives(m0, [(p2[0] - start[0], m_2)])
        return low, solver._step(x, start, end, m0, a2, taylor=True)    # DPM-Solver-3

    def _run(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        times = grid.t
        t_now, t_end = float(times[0]), float(times[-1])
        here = lambda_points(sde, times[:1])[0]
        lam_end = lambda_points(sde, times[-1:])[0][0]
        pid = PIDController(self.h_init, *self.coefficients, order=self.order, accept_safety=self.accept_safety)
        previous = x / here[1]
        self.accepted = self.rejected = 0
        step = 0
        while here[0] < lam_end - 1e-9:
            if score.nfe >= self.max_nfe:
                raise RuntimeError(f"AdaptiveDPMSolver reached max_nfe = {self.max_nfe} before eps (at t = "
                                   f"{t_now:.4g}); loosen rtol/atol or raise max_nfe")
            lam_next = min(lam_end, here[0] + pid.h)
            if lam_next >= lam_end:
                t_next, there = t_end, lambda_points(sde, times[-1:])[0]
            else:
                t_next, there = self._point(sde, lam_next)
            low, high = self._pair(sde, score, x, here, t_now, there)
            low_tilde, high_tilde = low / there[1], high / there[1]
            delta = torch.maximum(torch.full_like(low_tilde, self.atol),
                                  self.rtol * torch.maximum(low_tilde.abs(), previous.abs()))
            error = float(((low_tilde - high_tilde) / delta).norm() / math.sqrt(low.numel()))
            if pid.propose(error if math.isfinite(error) else math.inf):
                x, previous, here, t_now = high, low_tilde, there, t_next
                self.accepted += 1
                step += 1
                report(step, t_now, x)
            else:
                self.rejected += 1
        return x
