"""Linear multistep (Adams–Bashforth) sampling of the probability-flow ODE in EDM's variables, for any linear SDE
(k-diffusion's ``sample_lms``, diffusers' ``LMSDiscreteScheduler``).

With x̃ = x/s and σ̃ = σ/s the ODE is dx̃/dσ̃ = ε̂ (`scoresde.sde.NoiseLevelFlow`). On the grid σ̃_0 > … > σ̃_N a
step of order k integrates the Lagrange polynomial through the last k derivatives exactly,

    x̃_{i+1} = x̃_i + Σ_{j<k} c_{ij} ε̂_{i−j},    c_{ij} = ∫_{σ̃_i}^{σ̃_{i+1}} Π_{l≠j} (τ − σ̃_{i−l})/(σ̃_{i−j} − σ̃_{i−l}) dτ,

the variable-step Adams–Bashforth method of order k (the first k − 1 steps warm up with the orders available).
One evaluation per step, NFE = N.
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch

from .._utils import batch_time, check_choice
from ._base import SAMPLERS, Sampler
from .threshold import check_threshold
from .grids import TimeGrid, check_steps

Tensor = torch.Tensor


def adams_coefficients(nodes: List[float], start: float, end: float) -> List[float]:
    """∫_start^end ℓ_j(τ) dτ for the Lagrange basis ℓ_j of ``nodes`` (nodes[0] = start, then earlier nodes).

    In the scaled variable u = (τ − start)/(end − start) the weights c integrate every polynomial of degree < k
    exactly, Σ_j c_j u_j^p = h/(p + 1) for p < k (h = end − start): a k × k Vandermonde solve (k ≤ 4)."""
    h = end - start
    u = np.array([(node - start) / h for node in nodes])
    k = len(u)
    vandermonde = u[None, :] ** np.arange(k)[:, None]
    moments = h / (np.arange(k) + 1.0)
    return np.linalg.solve(vandermonde, moments).tolist()


@SAMPLERS.register("lms")
class LMSSampler(Sampler):
    """Variable-step Adams–Bashforth of order 1–4 on dx̃/dσ̃ = ε̂, NFE = N (+ 1 with ``denoise``).

    Order 1 is Euler in σ̃ (EDM's first-order sampler, `HeunSampler(order=1)`). In 16-D at 50 evaluations order 4
    on the uniform-t grid was the most accurate peer sampler (the samplers issue's measurement).

    Args:
        steps: N, the number of grid intervals.
        order: 1, 2, 3 or 4.
        grid: ``"log_snr"`` (default), ``"uniform"`` or ``"edm"``.
        eps: the final time, 0 < eps < T.
        denoise: finish with Tweedie's E[x_0 | x_eps].
        rho: EDM's ρ, only for ``grid="edm"``.
        threshold: `ClipThreshold` or `DynamicThreshold` applied to the data prediction x̂_0 at every score
            evaluation (see `scoresde.sampling.threshold`); None (default) leaves the score as it is.
    """

    EXAMPLE = dict(steps=6)

    takes_threshold = True
    label = "lms"

    def __init__(self, steps: int = 20, order: int = 4, grid: str = "log_snr", eps: float = 1e-3,
                 denoise: bool = False, rho: float = 7.0,
                 threshold=None):
        self.threshold = check_threshold(threshold, type(self).__name__)
        self.schedule = TimeGrid(check_steps(steps), grid, eps, rho)
        if isinstance(order, bool):
            raise ValueError(f"unknown order {order!r}; valid choices: 1, 2, 3, 4")
        check_choice(order, (1, 2, 3, 4), "order")
        self.order, self.denoise = int(order), bool(denoise)

    def _run(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        level = grid.noise_level.tolist()
        coefficients = [adams_coefficients(level[i::-1][: min(self.order, i + 1)], level[i], level[i + 1])
                        for i in range(len(level) - 1)]
        return adams_run(score, x, grid, coefficients, report)


def adams_run(score, x: Tensor, grid, coefficients: List[List[float]], report) -> Tensor:
    """x̃_{i+1} = x̃_i + Σ_j c_{ij} ε̂_{i−j} on the grid (its times and `scoresde.sde.Coefficients`), with
    ``coefficients[i]`` newest first (x̃ = x/s); one score evaluation per step."""
    s, sigma, t_l = grid.s.tolist(), grid.sigma.tolist(), grid.t.tolist()
    x_tilde = x / s[0]
    derivatives: List[Tensor] = []                 # ε̂_i, ε̂_{i−1}, …
    for i in range(len(t_l) - 1):
        state = s[i] * x_tilde
        eps_hat = -sigma[i] * score(state, batch_time(t_l[i], state))
        derivatives = [eps_hat] + derivatives[: len(coefficients[i]) - 1]
        x_tilde = x_tilde + sum(c * d for c, d in zip(coefficients[i], derivatives))
        report(i + 1, t_l[i + 1], s[i + 1] * x_tilde)
    return s[-1] * x_tilde
