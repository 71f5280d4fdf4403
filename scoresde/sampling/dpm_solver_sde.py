"""SDE-DPM-Solver++ (Lu et al. 2022b, §4): the stochastic DPM-Solver++ of orders 1, 2 and 3 (k-diffusion's
``sample_dpmpp_2m_sde`` and ``sample_dpmpp_3m_sde``, diffusers' ``sde-dpmsolver++``) for any linear SDE.

In EDM's variables x̃ = x/s, σ̃ = σ/s, λ = −log σ̃ = log(s/σ), a step from t to t' (h = λ' − λ > 0) with the data
prediction D = x̂_0 and the stochasticity η ∈ [0, 1] is

    x̃' = (σ̃'/σ̃) e^{−ηh} x̃ + (1 − e^{−(1+η)h}) (D + (1/(2r)) (D − D_prev)) + σ̃' √(1 − e^{−2ηh}) z,

with r = h_prev/h (the bracket's second term, the midpoint correction, only at order 2 from the second step on).
Order 3 (``3M``) replaces the bracket's correction by the Taylor terms of a quadratic through the last three D,
with the η-stretched step h_η = (1 + η) h: φ₂ d₁ − 2 φ₃ d₂, φ₂ = 1 − (1 − e^{−h_η})/h_η, φ₃ = φ₂/h_η − ½, where
d₁ ≈ h D′ and d₂ ≈ h² D″/2 are divided differences of D in λ. The exact integral of the quadratic's u²/2 term is
−2 φ₃ d₂: k-diffusion's ``sample_dpmpp_3m_sde`` (and diffusers' 3M) use −φ₃ d₂, half of it, which makes them
globally second order (the fitted slopes are in docs/benchmarks.md, lab notes);
``kdiffusion_3m=True`` reproduces theirs (to 1e-15, benchmarks/kdiffusion_crosscheck.py's loader).
Back in x = s x̃ the first term is (σ'/σ) e^{−ηh} x and the noise term σ' √(1 − e^{−2ηh}) z. η = 1 is the
reverse SDE's exact variation-of-constants solution with a piecewise-constant D; η = 0 is DPM-Solver++(2M) (the
probability-flow ODE), which `DPMSolver` is.

Singlestep (``multistep=False``, order 2: SDE-DPM-Solver++(2S), k-diffusion's ``sample_dpmpp_sde``) first takes the
order-1 step above to the intermediate λ_r = λ + r h (h₁ = r h, noise ξ₁), evaluates D_r there, and then steps
from the start over the whole h with D + (1/(2r)) (D_r − D) and noise ξ₂. Both noises come from one Brownian path:
the transition above is the exact solution of dx = −(1 + η)(x − s D) dλ + s √(2η) e^{−λ} dB(λ) in λ-time
(variance ∫ 2η e^{−2u} e^{−2(1+η)(λ'−u)} du = σ̃'² (1 − e^{−2ηh})), so the two stochastic integrals over [λ, λ_r] ⊂
[λ, λ'] have the correlation

    ρ = e^{−η h₂} √((1 − e^{−2η h₁}) / (1 − e^{−2η h})),    h₂ = h − h₁      (``coupling="path"``, the default),

and ξ₂ = ρ ξ₁ + √(1 − ρ²) ξ with a fresh ξ: two draws per step, no Brownian tree. k-diffusion's tree is a Brownian
motion in σ̃ instead, ρ = √((σ̃ − σ̃_r)/(σ̃ − σ̃')) (``coupling="sigma"``, its law exactly); ``"independent"`` is ρ = 0.
"""
from __future__ import annotations

import math

import torch

from .. import conversions
from .._utils import batch_time, check_choice
from ._base import SAMPLERS, Sampler, randn_like
from .threshold import check_threshold
from .dpm_solver import intermediate_points
from .grids import TimeGrid, check_steps

#: How the two noises of a singlestep step are correlated (see the module docstring).
COUPLINGS = ("path", "sigma", "independent")

Tensor = torch.Tensor


@SAMPLERS.register("dpm_solver_sde")
class DPMSolverSDE(Sampler):
    """SDE-DPM-Solver++ of order 1, 2 or 3 (multistep), NFE = N, or 2S (singlestep), NFE = 2N (+ 1 with ``denoise``).

    Each multistep step with η > 0 draws one standard normal of x's shape from the generator, each singlestep step
    two. At η = 0 it equals ``DPMSolver(order, multistep, prediction="x0", solver_type="midpoint")`` to rounding.

    Args:
        steps: N, the number of grid intervals.
        order: 1, 2 or 3 (3M: the first two steps warm up with orders 1 and 2).
        eta: η ∈ [0, 1]: 1 the reverse SDE, 0 the probability-flow ODE.
        s_noise: multiplier of the injected noise (k-diffusion's ``s_noise``; 1 samples the SDE).
        grid: ``"log_snr"`` (default), ``"uniform"`` or ``"edm"`` (see `time_grid`).
        eps: the final time, 0 < eps < T.
        denoise: finish with Tweedie's E[x_0 | x_eps] (k-diffusion's last step to σ = 0).
        rho: EDM's ρ, only for ``grid="edm"``.
        kdiffusion_3m: order 3 only: k-diffusion's halved second-derivative term (second order; see the module
            docstring) instead of the exact one.
        multistep: False for the singlestep SDE-DPM-Solver++(2S) (order 2 only).
        r: singlestep only: the intermediate point's fraction of the step in λ, 0 < r ≤ 1 (k-diffusion's 1/2).
        coupling: singlestep only: ``"path"`` (one Brownian path in λ, exact for the SDE), ``"sigma"``
            (k-diffusion's Brownian tree in σ̃) or ``"independent"``.
        threshold: `ClipThreshold` or `DynamicThreshold` applied to the data prediction x̂_0 at every score
            evaluation (see `scoresde.sampling.threshold`); None (default) leaves the score as it is.
    """

    EXAMPLE = dict(steps=6)

    takes_threshold = True
    label = "dpm-solver-sde"

    def __init__(self, steps: int = 50, order: int = 2, eta: float = 1.0, s_noise: float = 1.0,
                 grid: str = "log_snr", eps: float = 1e-3, denoise: bool = True, rho: float = 7.0,
                 kdiffusion_3m: bool = False, multistep: bool = True, r: float = 0.5, coupling: str = "path",
                 threshold=None):
        self.threshold = check_threshold(threshold, type(self).__name__)
        self.schedule = TimeGrid(check_steps(steps), grid, eps, rho)
        if isinstance(order, bool):
            raise ValueError(f"unknown order {order!r}; valid choices: 1, 2, 3")
        check_choice(order, (1, 2, 3), "order")
        for name, value in (("eta", eta), ("s_noise", s_noise)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if eta > 1:
            raise ValueError(f"eta must be in [0, 1] (1: the reverse SDE); got {eta!r}")
        self.order, self.eta, self.s_noise, self.denoise = int(order), float(eta), float(s_noise), bool(denoise)
        self._second = 1.0 if kdiffusion_3m else 2.0
        self.multistep = bool(multistep)
        check_choice(coupling, COUPLINGS, "coupling")
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise ValueError(f"r must be a number in (0, 1] (the intermediate point's fraction of the step); got {r!r}")
        if not self.multistep and self.order != 2:
            raise ValueError(f"DPMSolverSDE(multistep=False) is SDE-DPM-Solver++(2S), order 2; got order={order!r}")
        self.r, self.coupling = float(r), coupling

    def _evaluations_per_step(self) -> int:
        return 1 if self.multistep else 2

    def _correlation(self, h_1: float, h: float, level: float, level_mid: float, level_to: float) -> float:
        """ρ between the noises over [λ, λ + h₁] and [λ, λ + h] (``level`` = σ̃ at the three points)."""
        if self.coupling == "independent":
            return 0.0
        if self.coupling == "sigma":
            return math.sqrt((level - level_mid) / (level - level_to))
        eta = self.eta
        return math.exp(-eta * (h - h_1)) * math.sqrt(math.expm1(-2 * eta * h_1) / math.expm1(-2 * eta * h))

    def _run(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        if not self.multistep:
            return self._run_singlestep(sde, score, x, grid, generator, report)
        lam, s, sigma, t_l = grid.lam.tolist(), grid.s.tolist(), grid.sigma.tolist(), grid.t.tolist()
        previous, h_previous = None, None
        older, h_older = None, None
        for i in range(len(t_l) - 1):
            sc = score(x, batch_time(t_l[i], x))
            d = conversions.score_to_x0(x, sc, s[i], sigma[i])
            h = lam[i + 1] - lam[i]
            eta_h = self.eta * h
            weight = -math.expm1(-h - eta_h)                            # 1 − e^{−(1+η)h}
            update = d
            if self.order == 2 and previous is not None:
                update = d + (h / (2 * h_previous)) * (d - previous)      # D + (1/(2r)) (D − D_prev)
            x = (sigma[i + 1] / sigma[i]) * math.exp(-eta_h) * x + s[i + 1] * weight * update
            if self.order == 3 and previous is not None:
                h_eta = h + eta_h
                phi_2 = 1 - weight / h_eta
                if older is None:                                           # the second step: order 2
                    x = x + (s[i + 1] * phi_2 * h / h_previous) * (d - previous)
                else:
                    r0, r1 = h_previous / h, h_older / h
                    d1_0, d1_1 = (d - previous) / r0, (previous - older) / r1
                    d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                    d2 = (d1_0 - d1_1) / (r0 + r1)
                    phi_3 = phi_2 / h_eta - 0.5
                    x = x + s[i + 1] * (phi_2 * d1 - self._second * phi_3 * d2)
            if eta_h > 0:
                x = x + (self.s_noise * sigma[i + 1] * math.sqrt(-math.expm1(-2 * eta_h))) * randn_like(x, generator)
            older, h_older = previous, h_previous
            previous, h_previous = d, h
            report(i + 1, t_l[i + 1], x)
        return x

    def _order_one(self, x: Tensor, ratio: float, h: float, s_to: float, sigma_to: float, d: Tensor,
                   noise) -> Tensor:
        """(σ'/σ) e^{−ηh} x + s' (1 − e^{−(1+η)h}) d (+ s_noise σ' √(1 − e^{−2ηh}) noise): the module docstring's step."""
        out = ratio * math.exp(-self.eta * h) * x - s_to * math.expm1(-(1 + self.eta) * h) * d
        if noise is not None:
            out = out + (self.s_noise * sigma_to * math.sqrt(-math.expm1(-2 * self.eta * h))) * noise
        return out

    def _run_singlestep(self, sde, score, x: Tensor, grid, generator, report) -> Tensor:
        t, points = grid.t, grid.points()
        stages = intermediate_points(sde, points, (self.r,), x.device)
        t_l = t.tolist()
        fac = 1.0 / (2.0 * self.r)
        for i in range(len(t_l) - 1):
            (lam, s, sigma), (lam_to, s_to, sigma_to) = points[i], points[i + 1]
            (t_mid, (lam_mid, s_mid, sigma_mid)), = stages[i]
            d = conversions.score_to_x0(x, score(x, batch_time(t_l[i], x)), s, sigma)
            h, h_1 = lam_to - lam, lam_mid - lam
            noise_mid = randn_like(x, generator) if self.eta > 0 else None
            x_mid = self._order_one(x, sigma_mid / sigma, h_1, s_mid, sigma_mid, d, noise_mid)
            d_mid = conversions.score_to_x0(x_mid, score(x_mid, batch_time(t_mid, x_mid)), s_mid, sigma_mid)
            update = d + fac * (d_mid - d)
            noise = None
            if noise_mid is not None:
                rho = self._correlation(h_1, h, sigma / s, sigma_mid / s_mid, sigma_to / s_to)
                noise = rho * noise_mid + math.sqrt(max(0.0, 1 - rho * rho)) * randn_like(x, generator)
            x = self._order_one(x, sigma_to / sigma, h, s_to, sigma_to, update, noise)
            report(i + 1, t_l[i + 1], x)
        return x
