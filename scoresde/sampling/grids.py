"""Time grids for fixed-step samplers, each decreasing from T to eps.

- ``"uniform"``: uniform in t.
- ``"log_snr"``: uniform in log SNR(t) = 2 log(s(t)/σ(t)) (the DPM-Solver choice).
- ``"edm"``: EDM's ρ-spacing (Karras et al. 2022, eq. 5) in the noise level σ̃(t) = σ(t)/s(t):
  σ̃_i = (σ̃_max^{1/ρ} + i/N (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ, mapped back to t by inverting log SNR.
Every grid works for any LinearSDE: only ``scale``/``std``/``log_snr`` are used.
"""
from __future__ import annotations

import math

import torch

from .._utils import check_choice

GRIDS = ("uniform", "log_snr", "edm")


def time_grid(sde, steps: int, kind: str = "uniform", eps: float = 1e-3, rho: float = 7.0,
              device=None) -> torch.Tensor:
    """Times t_0 = T > t_1 > … > t_N = eps (float64, shape (steps + 1,)).

    Args:
        sde: a LinearSDE (``log_snr`` and ``time_from_log_snr`` are used by the non-uniform grids).
        steps: N, the number of intervals.
        kind: one of ``"uniform"``, ``"log_snr"``, ``"edm"``.
        eps: the final time, 0 < eps < T.
        rho: EDM's ρ (only for ``"edm"``).
    """
    check_choice(kind, GRIDS, "time grid")
    if int(steps) < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if not (0 < eps < sde.T):
        raise ValueError(f"eps must lie in (0, T={sde.T}); got {eps}")
    n = int(steps)
    i = torch.linspace(0, 1, n + 1, dtype=torch.float64, device=device)
    if kind == "uniform":
        t = sde.T + i * (eps - sde.T)
        t[-1] = eps
        return t
    ends = torch.tensor([sde.T, eps], dtype=torch.float64, device=device)
    lam_T, lam_eps = sde.log_snr(ends).tolist()
    if kind == "log_snr":
        lam = lam_T + i * (lam_eps - lam_T)
    else:
        # σ̃ = exp(−log_snr / 2); ρ-spacing in σ̃.
        s_max, s_min = math.exp(-lam_T / 2), math.exp(-lam_eps / 2)
        sig = (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        lam = -2 * torch.log(sig)
    t = sde.time_from_log_snr(lam)
    t[0], t[-1] = sde.T, eps
    return t
