"""Adapters to torchsde and torchdiffeq. Users never see these.

torchsde wants a 2-D state (batch, d) and strictly increasing time; our SDEs live on (B, *D) with time
running either way. We integrate in ``s = sign * t`` (sign = -1 for reverse time), flatten the state, and
cast the solver's time to the state's dtype before calling user code (torchsde hands it a float64 time).

torchdiffeq accepts any shape and decreasing time, but adaptive solvers probe times outside the
integration interval and fixed-step solvers silently take one step per output time unless given a step
size. ``integrate_ode`` clamps time to the interval, counts evaluations and always passes a step size.
"""
from __future__ import annotations

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
    """Wrap ``fn(x, t)`` for torchdiffeq: (B,) time on the state's dtype, clamped to [lo, hi], counted."""

    def __init__(self, fn, lo: float, hi: float):
        super().__init__()
        self.fn, self.lo, self.hi = fn, lo, hi
        self.nfe = 0

    def forward(self, t: Tensor, state):
        self.nfe += 1
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
):
    """Integrate d state/dt = fn(state, t) through torchdiffeq over monotone ``times``.

    ``state`` is a tensor (B, *D) or a tuple of tensors with leading batch dimension; ``fn`` receives
    ``t`` of shape (B,) clamped to the interval. Fixed-step methods need ``step_size`` (a positive number) or
    ``grid``, the times of their steps (one step per interval, from ``times[0]`` to ``times[-1]``).

    Returns:
        (states at ``times``, nfe).
    """
    from torchdiffeq import odeint

    info = ODE_SOLVERS.get(method)[0]
    times = [float(t) for t in times]
    lo, hi = min(times), max(times)
    opts = dict(options or {})
    if not info.adaptive:
        if grid is not None:
            opts.setdefault("grid_constructor", lambda func, y0, t: grid)
        elif step_size is None or step_size <= 0:
            raise ValueError(f"fixed-step method {method!r} needs a positive step_size; got {step_size}")
        else:
            opts.setdefault("step_size", float(step_size))
            opts.setdefault("perturb", False)
    first = state[0] if isinstance(state, tuple) else state
    t_out = torch.tensor(times, dtype=first.dtype if first.is_floating_point() else torch.float64,
                         device=first.device)
    if info.adaptive and method != "adaptive_heun":
        # Never step past the end: dopri5 otherwise evaluates beyond it and interpolates back.
        opts.setdefault("step_t", t_out[-1:])
    wrapped = _TorchdiffeqFunction(fn, lo, hi)
    out = odeint(wrapped, state, t_out, method=method, rtol=rtol, atol=atol, options=opts)
    return out, wrapped.nfe
