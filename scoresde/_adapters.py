"""Adapters to torchsde and torchdiffeq. Users never see these.

torchsde wants a 2-D state (batch, d) and strictly increasing time; our SDEs live on (B, *D) with time
running either way. We integrate in ``s = sign * t`` (sign = -1 for reverse time), flatten the state, and
cast the solver's time to the state's dtype before calling user code (torchsde hands it a float64 time).

torchdiffeq accepts any shape and decreasing time, but adaptive solvers probe times outside the
integration interval and fixed-step solvers silently take one step per output time unless given a step
size. ``integrate_ode`` clamps time to the interval, counts evaluations and always passes a step size; for
adaptive methods it refuses tolerances the state's dtype cannot reach and stops after ``max_nfe`` evaluations
(torchdiffeq would otherwise shrink the step until "underflow in dt", or run for hours at rtol = 1e-12 in
float32).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ._registry import Registry

Tensor = torch.Tensor

#: torchsde methods valid for our diagonal noise, keyed by the SDE type they need. g depends on t only, so
#: the Ito and Stratonovich forms coincide and Stratonovich methods are valid too.
TORCHSDE_METHODS = {
    "euler": "ito",
    "milstein": "ito",
    "srk": "ito",
    "heun": "stratonovich",
    "midpoint": "stratonovich",
    "reversible_heun": "stratonovich",
    "euler_heun": "stratonovich",
}



@dataclass(frozen=True)
class ODEMethod:
    """A torchdiffeq method: whether it adapts its step, and its score evaluations per fixed step (None when
    that is not a fixed number, e.g. the Adams methods' start-up and corrector iterations)."""

    adaptive: bool
    evaluations_per_step: Optional[int] = None


#: torchdiffeq methods by name (the probability-flow sampler and the likelihood accept these).
ODE_SOLVERS = Registry("torchdiffeq solver")
for _name in ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"):
    ODE_SOLVERS.register(_name, ODEMethod(adaptive=True))
for _name, _evaluations in (("euler", 1), ("midpoint", 2), ("heun3", 3), ("rk4", 4), ("explicit_adams", None),
                            ("implicit_adams", None)):
    ODE_SOLVERS.register(_name, ODEMethod(adaptive=False, evaluations_per_step=_evaluations))


#: The default evaluation budget of an adaptive ODE solve (a dopri5 solve of a trained model takes 100–1000).
DEFAULT_MAX_NFE = 100_000


def check_max_nfe(max_nfe) -> int:
    """``max_nfe`` as an int: a positive integer."""
    if isinstance(max_nfe, bool) or not isinstance(max_nfe, numbers.Integral) or max_nfe < 1:
        raise ValueError(f"max_nfe must be a positive integer; got {max_nfe!r}")
    return int(max_nfe)


def check_tolerances(rtol, atol, dtype: torch.dtype) -> None:
    """Adaptive solves need finite rtol, atol > 0, and rtol ≥ 10 machine epsilons of the state's dtype.

    Below that the error estimate is rounding noise (10 ε: float32 1.19e-6, float16 9.77e-3, bfloat16 7.81e-2,
    float64 2.2e-15), so the solver shrinks its steps without end.
    """
    def positive(v) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    if not (positive(rtol) and positive(atol)):
        raise ValueError(f"rtol and atol must be positive finite numbers; got rtol={rtol!r}, atol={atol!r}")
    floor = 10 * torch.finfo(dtype).eps
    if rtol < floor:
        wider = "" if dtype == torch.float64 else ", or solve in a wider dtype (float64)"
        raise ValueError(f"rtol={rtol!r} is below what {dtype} can reach ({floor:.3g}, 10 machine epsilons): "
                         f"use rtol >= {floor:.3g}{wider}")


def entropy_from(generator: Optional[torch.Generator]) -> int:
    """Draw a 62-bit seed for torchsde's Brownian motion from ``generator`` (or torch's global RNG)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())


class _TorchsdeFunction(torch.nn.Module):
    """dx = drift(x, t) dt + diffusion(t) dW on a flat state, in the increasing time s = sign * t."""

    noise_type = "diagonal"

    def __init__(self, drift, diffusion, shape, sign: int, sde_type: str):
        super().__init__()
        self.drift_fn, self.diffusion_fn = drift, diffusion
        self.shape, self.sign, self.sde_type = tuple(shape), sign, sde_type
        self.nfe = 0

    def _time(self, s: Tensor, y: Tensor) -> Tensor:
        return (self.sign * s).to(y.dtype).expand(y.shape[0])

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        self.nfe += 1
        out = self.drift_fn(y.reshape(self.shape), self._time(s, y))
        return (self.sign * out).reshape(y.shape)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        return self.diffusion_fn(self._time(s, y)).to(y.dtype)[:, None].expand_as(y)


def integrate_sde(
    drift: Callable[[Tensor, Tensor], Tensor],
    diffusion: Callable[[Tensor], Tensor],
    x: Tensor,
    times: Sequence[float],
    *,
    method: str = "euler",
    dt: float = 1e-3,
    adaptive: bool = False,
    rtol: float = 1e-3,
    atol: float = 1e-3,
    generator: Optional[torch.Generator] = None,
):
    """Integrate dx = drift dt + diffusion dW through torchsde over monotone ``times``.

    Args:
        drift: ``(x, t) -> (B, *D)``, in the direction of the physical time ``t``.
        diffusion: ``t -> (B,)``.
        x: state at ``times[0]``, shape (B, *D).
        times: monotone (increasing or decreasing) output times, at least two.
    Returns:
        (xs, nfe): states at ``times`` with shape (len(times), B, *D), and the number of drift calls.
    """
    import torchsde

    if method not in TORCHSDE_METHODS:
        valid = ", ".join(repr(m) for m in TORCHSDE_METHODS)
        raise ValueError(f"unknown torchsde method {method!r}; valid choices: {valid}")
    times = [float(t) for t in times]
    sign = 1 if times[-1] > times[0] else -1
    s = torch.tensor([sign * t for t in times], dtype=torch.float64, device=x.device)
    if not bool((s[1:] > s[:-1]).all()):
        raise ValueError(f"times must be strictly monotone; got {times}")
    batch = x.shape[0]
    y0 = x.reshape(batch, -1)
    fn = _TorchsdeFunction(drift, diffusion, x.shape, sign, TORCHSDE_METHODS[method])
    levy = "space-time" if method == "srk" else "none"
    bm = torchsde.BrownianInterval(
        t0=float(s[0]), t1=float(s[-1]), size=y0.shape, dtype=y0.dtype, device=y0.device,
        entropy=entropy_from(generator), dt=dt, levy_area_approximation=levy,
    )
    ys = torchsde.sdeint(fn, y0, s.to(y0.dtype), bm=bm, method=method, dt=dt, adaptive=adaptive,
                         rtol=rtol, atol=atol)
    return ys.reshape((len(times),) + tuple(x.shape)), fn.nfe


class _TorchdiffeqFunction(torch.nn.Module):
    """Wrap ``fn(x, t)`` for torchdiffeq: (B,) time on the state's dtype, clamped to [lo, hi], counted, and
    stopped with a RuntimeError (``budget`` says the message) after ``max_nfe`` evaluations."""

    def __init__(self, fn, lo: float, hi: float, max_nfe: Optional[int] = None, budget: str = ""):
        super().__init__()
        self.fn, self.lo, self.hi = fn, lo, hi
        self.max_nfe, self.budget = max_nfe, budget
        self.nfe, self.t_last = 0, None

    def forward(self, t: Tensor, state):
        if self.max_nfe is not None and self.nfe >= self.max_nfe:
            raise RuntimeError(f"the adaptive solve reached max_nfe={self.max_nfe} evaluations at t = {float(t):.6g} "
                               f"{self.budget}: the dynamics are too stiff for these tolerances (or the score too "
                               f"rough); loosen rtol/atol or pass a larger max_nfe")
        self.nfe += 1
        self.t_last = t
        first = state[0] if isinstance(state, tuple) else state
        tb = t.clamp(self.lo, self.hi).to(first.dtype).expand(first.shape[0])
        return self.fn(state, tb)


def integrate_ode(
    fn: Callable,
    state,
    times: Sequence[float],
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    step_size: Optional[float] = None,
    grid: Optional[Tensor] = None,
    options: Optional[dict] = None,
    max_nfe: int = DEFAULT_MAX_NFE,
):
    """Integrate d state/dt = fn(state, t) through torchdiffeq over monotone ``times``.

    ``state`` is a tensor (B, *D) or a tuple of tensors with leading batch dimension; ``fn`` receives
    ``t`` of shape (B,) clamped to the interval. Fixed-step methods need ``step_size`` (a positive number) or
    ``grid``, the times of their steps (one step per interval, from ``times[0]`` to ``times[-1]``). Adaptive
    methods need ``rtol``/``atol`` the state's dtype can reach (`check_tolerances`) and stop with a
    RuntimeError after ``max_nfe`` evaluations of ``fn``.

    Returns:
        (states at ``times``, nfe).
    """
    from torchdiffeq import odeint

    info = ODE_SOLVERS.get(method)[0]
    times = [float(t) for t in times]
    lo, hi = min(times), max(times)
    opts = dict(options or {})
    first = state[0] if isinstance(state, tuple) else state
    if info.adaptive:
        check_tolerances(rtol, atol, first.dtype if first.is_floating_point() else torch.float64)
        max_nfe = check_max_nfe(max_nfe)
    else:
        if grid is not None:
            opts.setdefault("grid_constructor", lambda func, y0, t: grid)
        elif step_size is None or step_size <= 0:
            raise ValueError(f"fixed-step method {method!r} needs a positive step_size; got {step_size}")
        else:
            opts.setdefault("step_size", float(step_size))
            opts.setdefault("perturb", False)
    t_out = torch.tensor(times, dtype=first.dtype if first.is_floating_point() else torch.float64,
                         device=first.device)
    if info.adaptive and method != "adaptive_heun":
        # Never step past the end: dopri5 otherwise evaluates beyond it and interpolates back.
        opts.setdefault("step_t", t_out[-1:])
    budget = f"on its way from t = {times[0]:.6g} to {times[-1]:.6g} ({method}, rtol={rtol!r}, atol={atol!r})"
    wrapped = _TorchdiffeqFunction(fn, lo, hi, max_nfe if info.adaptive else None, budget)
    try:
        out = odeint(wrapped, state, t_out, method=method, rtol=rtol, atol=atol, options=opts)
    except AssertionError as err:
        if "underflow in dt" not in str(err):
            raise
        t = float(wrapped.t_last) if wrapped.t_last is not None else times[0]
        raise RuntimeError(f"the adaptive solve's step size underflowed to 0 at t = {t:.6g} {budget}: the "
                           f"tolerances are too tight for {first.dtype} (an atol far below the solution's scale) or "
                           f"the dynamics are not finite there; loosen rtol/atol") from err
    return out, wrapped.nfe
