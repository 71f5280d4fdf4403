"""Time grids for fixed-step samplers, each decreasing from T to eps.

- ``"uniform"``: uniform in t.
- ``"log_snr"``: uniform in log SNR(t) = 2 log(s(t)/σ(t)) (the DPM-Solver choice).
- ``"trailing"``: diffusers' "trailing" spacing: t_i = T (1 − i/N) for i < N, then eps (the last step is the
  long one, from T/N).
- ``"quadratic"``: quadratic in t, t_i = eps + (T − eps)(1 − i/N)², dense near the data (DDIM's "quad" timesteps).
- ``"edm"``: EDM's ρ-spacing (Karras et al. 2022, eq. 5) in the noise level σ̃(t) = σ(t)/s(t):
  σ̃_i = (σ̃_max^{1/ρ} + i/N (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ, mapped back to t by inverting log SNR.
Every grid works for any LinearSDE: only ``scale``/``std``/``log_snr`` are used.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional

import torch

from .._utils import check_choice, check_steps

GRIDS = ("uniform", "log_snr", "edm", "quadratic", "trailing")


def time_grid(sde, steps: int, kind: str = "uniform", eps: float = 1e-3, rho: float = 7.0,
              device=None, start: Optional[float] = None) -> torch.Tensor:
    """Times t_0 = T > t_1 > … > t_N = eps (float64, shape (steps + 1,)).

    Args:
        sde: a LinearSDE (``log_snr`` and ``time_from_log_snr`` are used by the non-uniform grids).
        steps: N, the number of intervals.
        kind: one of ``"uniform"``, ``"log_snr"``, ``"edm"``, ``"quadratic"``, ``"trailing"``.
        eps: the final time, 0 < eps < T.
        rho: EDM's ρ (only for ``"edm"``).
        start: the first time instead of T (eps < start ≤ T), for runs that start part-way, as the prior step of
            split Gibbs does.
    """
    check_choice(kind, GRIDS, "time grid")
    check_steps(steps)
    first = sde.T if start is None else float(start)
    if not (0 < eps < sde.T):
        raise ValueError(f"eps must lie in (0, T={sde.T}); got {eps}")
    if not (eps < first <= sde.T):
        raise ValueError(f"start must lie in (eps={eps}, T={sde.T}]; got {first}")
    n = int(steps)
    i = torch.linspace(0, 1, n + 1, dtype=torch.float64, device=device)
    if kind == "trailing":
        t = first * (1 - i)
        if not first / n > eps:
            raise ValueError(f"the trailing grid needs start/steps > eps; got {first}/{n} <= {eps}")
        t[0], t[-1] = first, eps
        return t
    if kind in ("uniform", "quadratic"):
        u = i if kind == "uniform" else 1 - (1 - i) ** 2
        t = first + u * (eps - first)
        t[0], t[-1] = first, eps
        return t
    ends = torch.tensor([first, eps], dtype=torch.float64, device=device)
    lam_T, lam_eps = sde.log_snr(ends).tolist()
    if kind == "log_snr":
        lam = lam_T + i * (lam_eps - lam_T)
    else:
        # σ̃ = exp(−log_snr / 2); ρ-spacing in σ̃.
        s_max, s_min = math.exp(-lam_T / 2), math.exp(-lam_eps / 2)
        sig = (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        lam = -2 * torch.log(sig)
    t = sde.time_from_log_snr(lam)
    t[0], t[-1] = first, eps
    return t


def _positive_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TimeGrid:
    """A validated grid setting: ``steps`` intervals of kind ``kind`` from T down to ``eps`` (ρ for "edm").

    ``steps=None`` (adaptive solvers) has no grid: `times` then gives just (T, eps). ``min_steps`` is the
    smallest number of intervals allowed.
    """

    steps: Optional[int]
    kind: str = "uniform"
    eps: float = 1e-3
    rho: float = 7.0
    min_steps: int = 1

    def __post_init__(self):
        if self.steps is not None:
            object.__setattr__(self, "steps", _positive_int(self.steps, "steps", self.min_steps))
        check_choice(self.kind, GRIDS, "time grid")
        if not (isinstance(self.eps, numbers.Real) and self.eps > 0):
            raise ValueError(f"eps must be positive; got {self.eps!r}")
        if not (isinstance(self.rho, numbers.Real) and self.rho > 0):
            raise ValueError(f"rho must be positive; got {self.rho!r}")
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "rho", float(self.rho))

    def times(self, sde, device=None, start: Optional[float] = None) -> torch.Tensor:
        """The decreasing float64 times (see `time_grid`) from ``start`` (default T); (start, eps) when ``steps``
        is None."""
        if self.steps is None:
            first = sde.T if start is None else float(start)
            if not 0 < self.eps < first <= sde.T:
                raise ValueError(f"eps must lie in (0, start={first}) and start in (0, T={sde.T}]; got eps={self.eps}")
            return torch.tensor([first, self.eps], dtype=torch.float64, device=device)
        return time_grid(sde, self.steps, self.kind, self.eps, self.rho, device=device, start=start)


def check_times(times, sde, device=None) -> torch.Tensor:
    """Validate explicit sampler times: a 1-D strictly decreasing sequence of at least 2 values in (0, T].

    Returns them as a float64 tensor on ``device``.
    """
    t = torch.as_tensor(times, dtype=torch.float64).to(device)
    if t.dim() != 1 or t.shape[0] < 2:
        raise ValueError(f"times must be a 1-D tensor of at least 2 decreasing times; got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or not bool((t[1:] < t[:-1]).all()):
        raise ValueError(f"times must be finite and strictly decreasing; got {t.tolist()}")
    if not (float(t[-1]) > 0 and float(t[0]) <= sde.T * (1 + 1e-12)):
        raise ValueError(f"times must lie in (0, T={sde.T}]; got [{float(t[-1])}, {float(t[0])}]")
    return t
