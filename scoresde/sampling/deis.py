"""DEIS (Zhang & Chen 2023): exponential Adams–Bashforth on the probability-flow ODE, for any linear SDE.

In EDM's variables x̃ = x/s, σ̃ = σ/s the ODE is dx̃/dσ̃ = ε̂ (`scoresde.sde.NoiseLevelFlow`), so a step is
x̃_{i+1} = x̃_i + ∫_{σ̃_i}^{σ̃_{i+1}} ε̂ dσ̃ with the linear part already exact. DEIS replaces ε̂ by the Lagrange
polynomial through the last k evaluations in a chosen variable u and integrates it exactly against dσ̃:

    x̃_{i+1} = x̃_i + Σ_{j<k} c_{ij} ε̂_{i−j},    c_{ij} = ∫_{λ_i}^{λ_{i+1}} ℓ_j(u(λ)) (−e^{−λ}) dλ,

with λ = −log σ̃ and ℓ_j the Lagrange basis on the nodes u_i, u_{i−1}, …; ``basis="t"`` is the paper's tAB-DEIS
(polynomial in time), ``"log_rho"`` its polynomial in log σ̃ (= −λ; then the step is DPM-Solver's ε form with
Lagrange weights, `DPMSolver(prediction="eps", solver_type="taylor")` at orders 2 and 3) and ``"rho"`` its ρAB
(polynomial in σ̃, the plain Adams–Bashforth of `LMSSampler`). The c_{ij} are computed once per grid by
Gauss–Legendre quadrature in λ (``quadrature`` nodes per step; 16 integrate these smooth integrands to about
1e-13 on the default grids). One evaluation per step, NFE = N.
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch

from .._utils import check_choice
from ..sde import coefficients as grid_coefficients
from ._base import SAMPLERS, Sampler
from .threshold import check_threshold
from .dpm_solver import multistep_order
from .grids import TimeGrid, check_steps
from .lms import adams_run

Tensor = torch.Tensor

#: The variable the polynomial is fitted in (see the module docstring).
BASES = ("t", "log_rho", "rho")


@SAMPLERS.register("deis")
class DEISSampler(Sampler):
    """Exponential Adams–Bashforth (DEIS) of order 1–4 on dx̃/dσ̃ = ε̂, NFE = N (+ 1 with ``denoise``).

    Order 1 is DDIM whatever the basis. The first k − 1 steps warm up with the orders available.

    Args:
        steps: N, the number of grid intervals.
        order: 1, 2, 3 or 4.
        basis: ``"t"`` (tAB, default), ``"log_rho"`` or ``"rho"``.
        grid: ``"log_snr"`` (default), ``"uniform"``, ``"edm"``, ``"quadratic"`` or ``"trailing"``.
        eps: the final time, 0 < eps < T.
        denoise: finish with Tweedie's E[x_0 | x_eps].
        rho: EDM's ρ, only for ``grid="edm"``.
        lower_order_final: diffusers' rule: below 15 steps the last step is order 1 and the one before at most 2.
        quadrature: Gauss–Legendre nodes per step for the coefficients.
        threshold: `ClipThreshold` or `DynamicThreshold` applied to the data prediction x̂_0 at every score
            evaluation (see `scoresde.sampling.threshold`); None (default) leaves the score as it is.
    """

    EXAMPLE = dict(steps=6)

    takes_threshold = True
    label = "deis"

    def __init__(self, steps: int = 20, order: int = 3, basis: str = "t", grid: str = "log_snr", eps: float = 1e-3,
                 denoise: bool = False, rho: float = 7.0, lower_order_final: bool = False, quadrature: int = 16,
                 threshold=None):
        self.threshold = check_threshold(threshold, type(self).__name__)
        self.schedule = TimeGrid(check_steps(steps), grid, eps, rho)
        if isinstance(order, bool):
            raise ValueError(f"unknown order {order!r}; valid choices: 1, 2, 3, 4")
        check_choice(order, (1, 2, 3, 4), "order")
        check_choice(basis, BASES, "basis")
        if isinstance(quadrature, bool) or not isinstance(quadrature, int) or quadrature < 2:
            raise ValueError(f"quadrature must be an integer >= 2 (Gauss–Legendre nodes per step); got {quadrature!r}")
        self.order, self.basis, self.denoise = int(order), basis, bool(denoise)
        self.lower_order_final, self.quadrature = bool(lower_order_final), quadrature

    def _variable(self, t: Tensor, lam: Tensor) -> Tensor:
        if self.basis == "t":
            return t
        if self.basis == "log_rho":
            return -lam
        return torch.exp(-lam)

    def coefficients(self, sde, t: Tensor) -> List[List[float]]:
        """c_{ij} (newest node first) for every step of the grid t (float64, decreasing)."""
        return self._weights(sde, grid_coefficients(sde, t))

    def _weights(self, sde, grid) -> List[List[float]]:
        t, lam = grid.t, grid.lam
        n = len(t) - 1
        nodes, weights = np.polynomial.legendre.leggauss(self.quadrature)
        nodes = torch.as_tensor(nodes, dtype=torch.float64, device=t.device)
        weights = torch.as_tensor(weights, dtype=torch.float64, device=t.device)
        half = (lam[1:] - lam[:-1]) / 2                                           # (N,)
        lam_q = (lam[:-1] + half)[:, None] + half[:, None] * nodes[None, :]       # (N, Q)
        t_q = sde.time_from_log_snr((2 * lam_q).reshape(-1)).to(torch.float64).reshape(lam_q.shape)
        u_q = self._variable(t_q, lam_q)
        measure = (half[:, None] * weights[None, :]) * -torch.exp(-lam_q)       # dσ̃ at each node
        u = self._variable(t.to(torch.float64), lam)
        out = []
        for i in range(n):
            k = multistep_order(i, n, self.order, self.lower_order_final, self.denoise)
            past = u[i - k + 1: i + 1].flip(0)                                   # u_i, u_{i−1}, …
            row = []
            for j in range(k):
                basis = torch.ones_like(u_q[i])
                for m in range(k):
                    if m != j:
                        basis = basis * (u_q[i] - past[m]) / (past[j] - past[m])
                row.append(float((basis * measure[i]).sum()))
            out.append(row)
        return out

    def _cannot_invert(self):
        return None

    def _run(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        return adams_run(score, x, grid, self._weights(sde, grid), report)
