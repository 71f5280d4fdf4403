"""UniPC (Zhao et al. 2023): a unified predictor–corrector of orders 1–3 for the probability-flow ODE of any
linear SDE, with the data prediction x̂₀ (as diffusers' ``UniPCMultistepScheduler`` with ``predict_x0=True``).

In λ = log(s/σ), a step from t_i to t_{i+1} (h = λ_{i+1} − λ_i) is the exponential integrator of DPM-Solver++,

    x_{i+1} = (σ_{i+1}/σ_i) x_i + s_{i+1} (1 − e^{−h}) m_i − s_{i+1} B(h) Σ_k ρ_k D_k,    D_k = (m_{i−k} − m_i)/r_k,

with r_k = (λ_{i−k} − λ_i)/h and B(h) = −h (``"bh1"``) or e^{−h} − 1 (``"bh2"``). The weights ρ solve the
order conditions R ρ = b, R_{pk} = r_k^{p−1}, b_p = p! φ_{p+1}(−h)/B(h), with φ_1(z) = (e^z − 1)/z and
φ_{p+1}(z) = (φ_p(z) − 1/p!)/z (written with h_phi_k below). The predictor (UniP) uses the earlier
evaluations; the corrector (UniC) redoes the step that reached x_{i+1} once m_{i+1} = x̂₀(x_{i+1}) is known,
adding D = m_{i+1} − m_i with r = 1 — one order higher at no extra evaluation: m_{i+1} is the evaluation the
next step needs anyway (and is kept at the uncorrected point, as the paper does). NFE = N.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch

from .. import conversions
from .._utils import batch_time, check_choice
from ._base import SAMPLERS, Sampler
from .threshold import check_threshold
from .grids import TimeGrid, check_steps

Tensor = torch.Tensor

VARIANTS = ("bh1", "bh2")


def _weights(rks: List[float], h: float, variant: str, solve_last: bool) -> Tuple[List[float], float, float]:
    """(ρ, B(h), φ-term) for the nodes ``rks`` (the last is the new point r = 1 for the corrector, or a
    placeholder 1 for the predictor), following the order conditions of the module docstring."""
    hh = -h
    h_phi_1 = math.expm1(hh)                     # e^{−h} − 1
    h_phi_k = h_phi_1 / hh - 1
    B_h = hh if variant == "bh1" else math.expm1(hh)
    factorial = 1
    rows, b = [], []
    for p in range(1, len(rks) + 1):
        rows.append([r ** (p - 1) for r in rks])
        b.append(h_phi_k * factorial / B_h)
        factorial *= p + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    k = len(rks)
    if solve_last:                               # corrector: all k nodes
        if k == 1:
            return [0.5], B_h, h_phi_1
        R = torch.tensor(rows, dtype=torch.float64)
        return torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist(), B_h, h_phi_1
    if k == 1:                                   # predictor of order 1: no correction term
        return [], B_h, h_phi_1
    if k == 2:
        return [0.5], B_h, h_phi_1
    R = torch.tensor([row[:-1] for row in rows[:-1]], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(b[:-1], dtype=torch.float64)).tolist(), B_h, h_phi_1


@SAMPLERS.register("unipc")
class UniPCSampler(Sampler):
    """UniPC multistep predictor–corrector with the data prediction, NFE = N (+ 1 with ``denoise``).

    Args:
        steps: N, the number of grid intervals.
        order: the predictor's order 1, 2 or 3 (the corrector adds one); the first steps warm up with lower
            orders as DPM-Solver's multistep does.
        variant: B(h), ``"bh2"`` (e^{−h} − 1, diffusers' default) or ``"bh1"`` (−h, recommended by the paper for
            unconditional sampling with very few steps).
        corrector: apply UniC after each step except the last (UniP alone when False).
        lower_order_final: diffusers' rule: step i of N (the final denoising counted as a step) has order at most
            N − i, so the last steps are first and second order. Off by default (the fitted orders hold without
            it), but use it at small budgets on grids whose last steps are long in λ: on the uniform-t grid at 5
            steps in 16-D, order 3 gave an ODE error of 17.9 without it and 1.04 with it
            (benchmarks/sampler_peers.py).
        grid: ``"log_snr"`` (default), ``"uniform"`` or ``"edm"``.
        eps: the final time, 0 < eps < T.
        denoise: finish with Tweedie's E[x_0 | x_eps] (diffusers' last step to σ = 0).
        rho: EDM's ρ, only for ``grid="edm"``.
        threshold: `ClipThreshold` or `DynamicThreshold` applied to the data prediction x̂_0 at every score
            evaluation (see `scoresde.sampling.threshold`); None (default) leaves the score as it is.
    """

    EXAMPLE = dict(steps=6)

    takes_threshold = True
    label = "unipc"

    def __init__(self, steps: int = 20, order: int = 2, variant: str = "bh2", corrector: bool = True,
                 lower_order_final: bool = False, grid: str = "log_snr", eps: float = 1e-3, denoise: bool = False,
                 rho: float = 7.0,
                 threshold=None):
        self.threshold = check_threshold(threshold, type(self).__name__)
        self.schedule = TimeGrid(check_steps(steps), grid, eps, rho)
        if isinstance(order, bool):
            raise ValueError(f"unknown order {order!r}; valid choices: 1, 2, 3")
        check_choice(order, (1, 2, 3), "order")
        check_choice(variant, VARIANTS, "UniPC variant")
        self.order, self.variant = int(order), variant
        self.corrector, self.lower_order_final, self.denoise = bool(corrector), bool(lower_order_final), bool(denoise)

    def _step_order(self, i: int, n: int) -> int:
        k = min(self.order, i + 1)
        if self.lower_order_final:
            k = min(k, n + int(self.denoise) - i)
        return max(k, 1)

    def _update(self, x: Tensor, i: int, j: int, points, history: List[Tuple[float, Tensor]], k: int,
                new: Tensor = None) -> Tensor:
        """The step from point i to j with k nodes: the earlier evaluations history[1:k] (newest first, history[0]
        is m_i) and, for the corrector, the new evaluation ``new`` = m_j."""
        lam, _, sigma = points[i]
        lam_to, s_to, sigma_to = points[j]
        h = lam_to - lam
        m0 = history[0][1]
        earlier = history[1:k]
        rks = [(l_k - lam) / h for l_k, _ in earlier] + [1.0]
        rhos, B_h, h_phi_1 = _weights(rks, h, self.variant, solve_last=new is not None)
        out = (sigma_to / sigma) * x - (s_to * h_phi_1) * m0
        terms = [(m_k - m0) / r for (_, m_k), r in zip(earlier, rks)]
        if new is not None:
            terms.append(new - m0)
        if terms and rhos:
            total = sum(rho * d for rho, d in zip(rhos, terms))
            out = out - (s_to * B_h) * total
        return out

    def _cannot_invert(self):
        return None

    def _run(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        points, t_l = grid.points(), grid.t.tolist()
        n = len(t_l) - 1
        history: List[Tuple[float, Tensor]] = []          # (λ_j, m_j), newest first
        previous = None                                     # (x_{i−1}, its step order)
        for i in range(n):
            sc = score(x, batch_time(t_l[i], x))
            m = conversions.score_to_x0(x, sc, points[i][1], points[i][2])
            if self.corrector and previous is not None:
                x_last, k_last = previous
                x = self._update(x_last, i - 1, i, points, history, k_last, new=m)
            history = [(points[i][0], m)] + history[: self.order]
            k = self._step_order(i, n)
            previous = (x, k)
            x = self._update(x, i, i + 1, points, history, k)
            report(i + 1, t_l[i + 1], x)
        return x
