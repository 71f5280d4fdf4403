"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b) for any linear SDE.

With x_t = s(t) x_0 + σ(t) z and the half log-SNR λ(t) = log(s/σ) = log_snr(t)/2 (increasing as t goes down),
the probability-flow ODE has the exact variation-of-constants solutions, for a step from t to t' (h = λ' − λ):

    x0 form (DPM-Solver++):  x_{t'} = (σ'/σ) x_t + s' ∫_0^h e^{u − h} x̂_0(λ + u) du
    ε form  (DPM-Solver):    x_{t'} = (s'/s) x_t − σ' ∫_0^h e^{h − u} ε̂(λ + u) du

where x̂_0 = E[x_0 | x_t] = (x + σ² score)/s (Tweedie) and ε̂ = −σ score. The linear part is integrated
exactly; the model m(λ + u) ≈ m + a u + b u²/2 is a Taylor polynomial whose derivatives a, b are estimated
from earlier evaluations (multistep) or from extra evaluations inside the step (singlestep). The integrals of
the monomials u^k/k! are, with e = 1 − e^{−h} (x0 form) or e = e^h − 1 (ε form):

    x0 form:  φ_0 = e,  φ_1 = h − φ_0,        φ_2 = h²/2 − φ_1
    ε form:   ψ_0 = e,  ψ_1 = ψ_0 − h,        ψ_2 = ψ_1 − h²/2

so one step is x_{t'} = (σ'/σ) x_t + s' (φ_0 m + φ_1 a + φ_2 b) or x_{t'} = (s'/s) x_t − σ' (ψ_0 m + ψ_1 a + ψ_2 b).
Order 1 (a = b = 0) is DDIM: x_{t'} = s' x̂_0 + σ' ε̂ in both forms.

Second-order steps (a from two points, b = 0) weight a either by the Taylor integral φ_1 = h − (1 − e^{−h})
(``solver_type="taylor"``) or, as the published DPM-Solver-2 / DPM-Solver++(2M) algorithms and k-diffusion's and
diffusers' defaults do, by φ_0 h/2 = (1 − e^{−h}) h/2 (``solver_type="midpoint"``, the default: the model is
taken at the midpoint of the step in λ, m + a h/2, and integrated exactly as a constant). The two agree to
O(h³) per step, so both are second order; with few steps the midpoint weight is the more accurate
(docs/benchmarks.md). Third-order steps use the Taylor weights φ_1, φ_2, as DPM-Solver++(3M) and DPM-Solver-3 do.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

from .. import conversions
from .._utils import batch_time, check_choice
from ..sde import coefficients
from ._base import SAMPLERS, Sampler
from .threshold import check_threshold
from .grids import TimeGrid, check_steps

Tensor = torch.Tensor

PREDICTIONS = ("x0", "eps")
ORDERS = (1, 2, 3)
SOLVER_TYPES = ("midpoint", "taylor")

# Singlestep positions of the intermediate evaluations, as fractions r of the step in λ. Order 2: the
# midpoint. Order 3: r = 1/3 and 2/3; the last stage uses only m(0) and m(2h/3), which is third order because
# φ_1 · (2h/3)/2 = h³/6 + O(h⁴) = φ_2 + O(h⁴) (Lu et al. 2022, DPM-Solver-3).
_SINGLESTEP_R = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}


@SAMPLERS.register("dpm_solver")
class DPMSolver(Sampler):
    """DPM-Solver / DPM-Solver++ of order 1, 2 or 3, multistep or singlestep, for any LinearSDE.

    Uses only ``scale``, ``std``, ``log_snr`` and ``time_from_log_snr`` of the SDE. The model is the data
    prediction x̂_0 = (x + σ² score)/s (``prediction="x0"``, DPM-Solver++) or the noise prediction
    ε̂ = −σ score (``prediction="eps"``, DPM-Solver); see the module docstring for the step formula.

    - **multistep** (default): one score evaluation per grid point t_0 … t_{N−1}, so NFE = N. The step from
      t_i uses the Taylor polynomial through m(t_i), …, m(t_{i−k+1}) with k = min(order, i + 1): the first
      order − 1 steps use the lower orders available (for order 3: orders 1, 2, then 3). The local error
      of a step is O(h^{order+1}); the order-1 first step's O(h²) error is proportional to the model's slope
      dm/dλ at t = T, which is tiny when the prior dominates p_T (VE, VP, sub-VP), so order 3 behaves as
      third order in practice although its formal global order is 2.
    - **singlestep** (``multistep=False``): each of the N steps evaluates the model at its start and at
      order − 1 intermediate points (r = 1/2 for order 2; r = 1/3, 2/3 for order 3, in λ, with the
      intermediate times from ``time_from_log_snr``), so NFE = order · N.

    ``denoise=True`` adds one evaluation at t = eps and returns Tweedie's E[x_0 | x_eps].

    On unguided mixtures at about 10 evaluations the ε form is the more accurate (docs/benchmarks.md).

    Args:
        steps: N, the number of grid intervals.
        order: 1 (DDIM), 2 or 3.
        multistep: reuse earlier evaluations (True) or take intermediate stages (False).
        prediction: ``"x0"`` (DPM-Solver++) or ``"eps"`` (DPM-Solver).
        solver_type: the weight of the slope in second-order steps, ``"midpoint"`` (φ_0 h/2, the published
            DPM-Solver++(2M) and k-diffusion's ``sample_dpmpp_2m``) or ``"taylor"`` (φ_1; see the module
            docstring). Third-order steps are the same for both.
        lower_order_final: multistep only, diffusers' default rule: with fewer than 15 steps in all (the final
            denoising counted as one, as diffusers' last step to σ = 0), the last step is first order and the one
            before it at most second order. Off by default.
        grid: ``"log_snr"`` (uniform in λ, the default), ``"uniform"`` or ``"edm"`` (see `time_grid`).
        eps: the final time, 0 < eps < T.
        denoise: finish with Tweedie's denoising step at t = eps.
        rho: EDM's ρ, only for ``grid="edm"``.
        threshold: `ClipThreshold` or `DynamicThreshold` applied to the data prediction x̂_0 at every score
            evaluation (see `scoresde.sampling.threshold`); None (default) leaves the score as it is.
    """

    EXAMPLE = dict(steps=6, order=3)

    takes_threshold = True
    label = "dpm-solver"

    def __init__(self, steps: int = 20, order: int = 2, multistep: bool = True, prediction: str = "x0",
                 grid: str = "log_snr", eps: float = 1e-3, denoise: bool = False, rho: float = 7.0,
                 solver_type: str = "midpoint", lower_order_final: bool = False,
                 threshold=None):
        self.threshold = check_threshold(threshold, type(self).__name__)
        self.schedule = TimeGrid(check_steps(steps), grid, eps, rho)
        if isinstance(order, bool):
            raise ValueError(f"unknown order {order!r}; valid choices: 1, 2, 3")
        check_choice(order, ORDERS, "order")
        check_choice(prediction, PREDICTIONS, "prediction")
        check_choice(solver_type, SOLVER_TYPES, "solver_type")
        self.solver_type = solver_type
        self.lower_order_final = bool(lower_order_final)
        self.order, self.multistep = int(order), bool(multistep)
        self.prediction, self.denoise = prediction, bool(denoise)

    def _evaluations_per_step(self) -> int:
        return 1 if self.multistep else self.order

    # -- the pieces -------------------------------------------------------------------------------------
    def _model(self, score, x: Tensor, t: float, s: float, sigma: float) -> Tensor:
        """x̂_0 = (x + σ² score)/s or ε̂ = −σ score at time t."""
        sc = score(x, batch_time(t, x))
        if self.prediction == "x0":
            return conversions.score_to_x0(x, sc, s, sigma)
        return conversions.score_to_eps(sc, sigma)

    def _step(self, x: Tensor, frm: Tuple[float, float, float], to: Tuple[float, float, float], m: Tensor,
              a: Optional[Tensor] = None, b: Optional[Tensor] = None, taylor: Optional[bool] = None) -> Tensor:
        """One exponential-integrator step from (λ, s, σ) = ``frm`` to ``to`` with m + a u + b u²/2.

        Without b the slope's weight is the solver type's (``taylor`` overrides it): φ_1 (Taylor) or φ_0 h/2
        (midpoint); with b, the Taylor weights φ_1, φ_2."""
        lam, s, sigma = frm
        lam_to, s_to, sigma_to = to
        h = lam_to - lam
        if self.prediction == "x0":
            w0 = -math.expm1(-h)
            w1 = h - w0
            w2 = 0.5 * h * h - w1
            lin, coef = sigma_to / sigma, s_to
        else:
            w0 = math.expm1(h)
            w1 = w0 - h
            w2 = w1 - 0.5 * h * h
            lin, coef = s_to / s, -sigma_to
        if b is None and not (self.solver_type == "taylor" if taylor is None else taylor):
            w1 = 0.5 * h * w0                       # midpoint: the model at u = h/2, integrated exactly
        out = lin * x + (coef * w0) * m
        if a is not None:
            out = out + (coef * w1) * a
        if b is not None:
            out = out + (coef * w2) * b
        return out

    def _step_order(self, i: int, n: int) -> int:
        return multistep_order(i, n, self.order, self.lower_order_final, self.denoise)

    @staticmethod
    def _derivatives(m0: Tensor, others: List[Tuple[float, Tensor]]):
        """Fit m(u) = m0 + a u + b u²/2 through (δ_j, m_j); returns (a, b) (None where not fitted)."""
        if not others:
            return None, None
        d1, m1 = others[0]
        slope1 = (m1 - m0) / d1                         # = a + b δ_1/2 for the quadratic
        if len(others) == 1:
            return slope1, None
        d2, m2 = others[1]
        slope2 = (m2 - m0) / d2                         # = a + b δ_2/2
        half_b = (slope1 - slope2) / (d1 - d2)
        return slope1 - half_b * d1, 2 * half_b

    #: The longest step in λ a singlestep ε-form step of order ≥ 2 may take: its stages extrapolate ε̂ by e^h, and on
    #: the 2-D mixture h = 4.8 already gave 1.4–3.3 RMS error (DDIM: 0.8) and h = 9.6 (one step) 127–156.
    MAX_SINGLESTEP_EPS_H = 4.0

    def _cannot_invert(self):
        return None

    def _run(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        t, points = grid.t, grid.points()
        n = len(t) - 1
        if self.prediction == "eps" and not self.multistep and self.order >= 2:
            widest = max(b[0] - a[0] for a, b in zip(points, points[1:]))
            if widest > self.MAX_SINGLESTEP_EPS_H:
                span = points[-1][0] - points[0][0]
                raise ValueError(
                    f"DPMSolver(order={self.order}, multistep=False, prediction='eps') on this grid takes a step of "
                    f"h = {widest:.2f} in λ; its stages extrapolate the noise prediction by e^h and blow up "
                    f"beyond h = {self.MAX_SINGLESTEP_EPS_H:g}: use prediction='x0' (bounded at any h), multistep, or "
                    f"at least {math.ceil(span / self.MAX_SINGLESTEP_EPS_H)} steps")
        t_l = t.tolist()
        if self.multistep:
            history: List[Tuple[float, Tensor]] = []      # (λ_j, m_j), newest first
            for i in range(n):
                lam = points[i][0]
                m = self._model(score, x, t_l[i], points[i][1], points[i][2])
                history = [(lam, m)] + history[: self.order - 1]
                k = self._step_order(i, n)
                a, b = self._derivatives(m, [(l_j - lam, m_j) for l_j, m_j in history[1:k]])
                x = self._step(x, points[i], points[i + 1], m, a, b)
                report(i + 1, t_l[i + 1], x)
        else:
            r = _SINGLESTEP_R[self.order]
            stages = intermediate_points(sde, points, r, x.device) if r else None
            for i in range(n):
                start, end = points[i], points[i + 1]
                m0 = self._model(score, x, t_l[i], start[1], start[2])
                if self.order == 1:
                    x = self._step(x, start, end, m0)
                elif self.order == 2:
                    (t_mid, mid), = stages[i]
                    x_mid = self._step(x, start, mid, m0)
                    m_mid = self._model(score, x_mid, t_mid, mid[1], mid[2])
                    a, _ = self._derivatives(m0, [(mid[0] - start[0], m_mid)])
                    x = self._step(x, start, end, m0, a)
                else:
                    (t_1, p1), (t_2, p2) = stages[i]
                    x_1 = self._step(x, start, p1, m0)
                    m_1 = self._model(score, x_1, t_1, p1[1], p1[2])
                    a, _ = self._derivatives(m0, [(p1[0] - start[0], m_1)])
                    x_2 = self._step(x, start, p2, m0, a, taylor=True)
                    m_2 = self._model(score, x_2, t_2, p2[1], p2[2])
                    a, _ = self._derivatives(m0, [(p2[0] - start[0], m_2)])
                    x = self._step(x, start, end, m0, a, taylor=True)    # DPM-Solver-3's last stage: φ_1
                report(i + 1, t_l[i + 1], x)
        return x


def lambda_points(sde, t: Tensor) -> List[Tuple[float, float, float]]:
    """(λ, s, σ) at the times t (float64), with λ = log(s/σ) computed from the realised s and σ."""
    return coefficients(sde, t).points()


def intermediate_points(sde, points, r, device):
    """Times and (λ, s, σ) of the singlestep intermediate points λ_i + r (λ_{i+1} − λ_i), per step."""
    lam = torch.tensor([p[0] for p in points], dtype=torch.float64, device=device)
    targets = torch.stack([lam[:-1] + rk * (lam[1:] - lam[:-1]) for rk in r], dim=1)   # (N, stages)
    times = sde.time_from_log_snr((2 * targets).reshape(-1)).to(torch.float64)
    pts = lambda_points(sde, times)
    k = len(r)
    return [[(float(times[i * k + j]), pts[i * k + j]) for j in range(k)] for i in range(len(points) - 1)]


def multistep_order(i: int, n: int, order: int, lower_order_final: bool, denoise: bool) -> int:
    """The order of multistep step i of n: the warm-up min(order, i + 1), lowered at the end by
    ``lower_order_final`` (diffusers' rule for DPM-Solver and DEIS, below 15 steps; the final denoising, when on,
    is diffusers' last step)."""
    k = min(order, i + 1)
    if lower_order_final and n + int(denoise) < 15:
        from_end = n - 1 - i + int(denoise)         # 0: diffusers' last step, 1: the one before
        if from_end == 0:
            k = 1
        elif from_end == 1:
            k = min(k, 2)
    return k
