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
globally second order (measured slope 2.07 at N = 64–128 on the Gaussian flow, against 3.98 with the full term);
``kdiffusion_3m=True`` reproduces theirs (to 1e-15, benchmarks/kdiffusion_crosscheck.py's loader).
Back in x = s x̃ the first term is (σ'/σ) e^{−ηh} x and the noise term σ' √(1 − e^{−2ηh}) z. η = 1 is the
reverse SDE's exact variation-of-constants solution with a piecewise-constant D; η = 0 is DPM-Solver++(2M) (the
probability-flow ODE), which `DPMSolver` is.
"""
from __future__ import annotations

import math

import torch

from .. import conversions
from .._utils import check_choice
from ._base import SAMPLERS, Sampler, batch_time, randn_like
from .grids import TimeGrid, check_steps

Tensor = torch.Tensor


@SAMPLERS.register("dpm_solver_sde")
class DPMSolverSDE(Sampler):
    """SDE-DPM-Solver++ of order 1 or 2 (multistep), NFE = N (+ 1 with ``denoise``).

    Each step with η > 0 draws one standard normal of x's shape from the generator. At η = 0 it equals
    ``DPMSolver(order, prediction="x0", solver_type="midpoint")`` to rounding.

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
    """

    label = "dpm-solver-sde"

    def __init__(self, steps: int = 50, order: int = 2, eta: float = 1.0, s_noise: float = 1.0,
                 grid: str = "log_snr", eps: float = 1e-3, denoise: bool = True, rho: float = 7.0,
                 kdiffusion_3m: bool = False):
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

    def _run(self, sde, score, x: Tensor, t: Tensor, generator, report) -> Tensor:
        s, sigma = sde.scale(t), sde.std(t)
        lam = (torch.log(s) - torch.log(sigma)).tolist()
        s, sigma, t_l = s.tolist(), sigma.tolist(), t.tolist()
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
