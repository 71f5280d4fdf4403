"""Small shared helpers: broadcasting per-sample scalars, validating (x, t), and watching for non-finite values."""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import numbers
import os
import re
import tempfile
from typing import IO, Callable, List, Optional, Tuple, Union

import torch

Number = Union[float, int]
#: A score function ``score(x, t)``: x of shape (B, *D), t of shape (B,), returns x's shape.
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def expand_like(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector ``v`` of shape (B,) to (B, 1, ..., 1) so it broadcasts against ``x`` (B, *D)."""
    return v.reshape(v.shape + (1,) * (x.dim() - v.dim()))


def batch_time(t: float, x: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor filled with ``t`` on x's device and dtype."""
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)


def as_time(t, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    """Return ``t`` as a (B,) tensor on x's device and dtype.

    A Python number or a 0-dim tensor is broadcast to the batch; anything else must have shape (B,)
    with B = x.shape[0], otherwise a ValueError states the expected and received shapes.
    """
    if x.dim() == 0:
        raise ValueError("x must have a batch dimension, shape (B, *D); got a 0-dim tensor")
    batch = x.shape[0]
    if not torch.is_tensor(t):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(
            f"{name} must have shape (B,) = ({batch},) to match x of shape {tuple(x.shape)}; "
            f"got {name} of shape {tuple(t.shape)}"
        )
    return t.to(device=x.device, dtype=x.dtype) if x.is_floating_point() else t


def check_time_vector(t: torch.Tensor, name: str = "t") -> torch.Tensor:
    """Check that ``t`` is a 1-D tensor (B,) and return it."""
    if not torch.is_tensor(t):
        t = torch.as_tensor(t, dtype=torch.get_default_dtype())
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ValueError(f"{name} must have shape (B,); got shape {tuple(t.shape)}")
    return t


# -- the range of times ------------------------------------------------------------------------------------
_TIMES_VALIDATED = contextvars.ContextVar("scoresde_times_validated", default=False)


@contextlib.contextmanager
def validated_times():
    """Inside this context the times reaching ``scale``, ``std`` and score models were validated once by the caller.

    Samplers check their whole time grid once per call, and the likelihood and the losses build their times inside
    [eps, T]; their inner loops run in this context, so `check_time_range` costs nothing there (it would
    otherwise reduce over t, a host sync per step on a GPU).
    """
    token = _TIMES_VALIDATED.set(True)
    try:
        yield
    finally:
        _TIMES_VALIDATED.reset(token)


def check_time_range(t: torch.Tensor, T: float, who: str, name: str = "t", positive: bool = False) -> torch.Tensor:
    """Raise a ValueError unless every element of ``t`` lies in [0, T] ((0, T] with ``positive``); return ``t``.

    NaN is outside. T is compared with a slack of 4 machine epsilons of t's dtype (T rounded to float32 is
    inside). One reduction over t; nothing inside `validated_times`.
    """
    if _TIMES_VALIDATED.get():
        return t
    hi = T * (1 + 4 * torch.finfo(t.dtype).eps) if t.is_floating_point() else T
    inside = ((t > 0) if positive else (t >= 0)) & (t <= hi)
    if not bool(inside.all()):
        outside = t[~inside]
        interval = f"(0, T={T}]" if positive else f"[0, T={T}]"
        zero = " (std(0) = 0 there, and the conversions divide by it)" if positive else ""
        raise ValueError(f"{name} must lie in {interval} for {who}{zero}; got {name} = {float(outside[0])!r} "
                         f"({outside.numel()} of {t.numel()} values outside)")
    return t


# -- devices -------------------------------------------------------------------------------------------------
def available_devices() -> List[str]:
    """The devices this machine has: "cpu", each "cuda:i", and "mps" when present."""
    available = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        available.append("mps")
    return available


def has_float64(device) -> bool:
    """Whether tensors on ``device`` can be float64 (Apple's MPS cannot). The one capability check that every
    refusal below goes through."""
    return torch.device(device).type != "mps"


def require_float64(device, who: str) -> None:
    """Raise a ValueError when ``device`` has no float64: scoresde computes time grids, the tabulated marginals of
    a user SDE, log-SNR inversions and the likelihood's ODE state in float64 on the data's device."""
    if not has_float64(device):
        raise ValueError(f"{who} cannot run on {torch.device(device)}: that device has no float64, which scoresde "
                         f"uses for its time grids, SDE tables and ODE states; use 'cpu' or 'cuda'")


def parse_device(name, who: str = "device") -> torch.device:
    """``name`` as a torch.device (whether or not this machine has it), or a ValueError naming the devices
    available here."""
    try:
        return torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"unknown {who} {name!r}; available here: {', '.join(available_devices())}") from None


def check_device(name, who: str = "device") -> torch.device:
    """``name`` (a string or torch.device) as a torch.device this machine has and scoresde can use, or a
    ValueError naming the devices available here."""
    available = available_devices()
    device = parse_device(name, who)
    missing = (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
               if device.type == "cuda" else device.type != "cpu" and str(device) not in available)
    if missing:
        raise ValueError(f"{who} {name!r} is not available here; available: {', '.join(available)}")
    require_float64(device, f"{who} {name!r}")
    return device


# -- non-finite values --------------------------------------------------------------------------------------
class NonFiniteError(ValueError, FloatingPointError):
    """A NaN or inf where a finite value is needed: in an input, or produced by a score or a solver step."""


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise a `NonFiniteError` naming the first row of ``x`` (N, *D) that holds a NaN or an inf.

    One reduction (min and max, through which NaN propagates) when x is finite.
    """
    if not x.is_floating_point() or x.numel() == 0 or bool(torch.isfinite(torch.stack(torch.aminmax(x))).all()):
        return x
    rows = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero()[:, 0]
    raise NonFiniteError(f"{name} has non-finite values (NaN or inf) in row {int(rows[0])} "
                         f"({rows.numel()} of {x.shape[0]} rows)")


class FiniteWatch:
    """Notes whether scores and states stay finite, without a host sync per check; raises at the first that did not.

    `score` and `state` queue ``aminmax(value)`` (one reduction, no sync; NaN propagates through min
    and max, and an inf is one of them); every ``FLUSH_EVERY`` checks, and in `flush`, one sync reads the
    queue and raises a `NonFiniteError` naming the first failing check: the score evaluation and its
    time, or the solver step.

    Args:
        who: named in the message (the sampler, "log_likelihood").
        live_steps: whether `state` is called after each step as it happens, so that a score evaluation
            can be placed in the step it belongs to.
    """

    FLUSH_EVERY = 32

    def __init__(self, who: str, live_steps: bool = True):
        self.who, self.live_steps = who, live_steps
        self.steps = 0
        self._queue: List[Tuple[torch.Tensor, str, int, int, object]] = []

    def score(self, value: torch.Tensor, evaluation: int, t) -> None:
        """Check the output of score evaluation number ``evaluation`` (1-based) at times t (B,)."""
        self._queue.append((torch.aminmax(value), "score", evaluation, self.steps, t))
        if len(self._queue) >= self.FLUSH_EVERY:
            self.flush()

    def state(self, value: torch.Tensor, step: int, t) -> None:
        """Check the state after solver step ``step`` (1-based), reached at time t."""
        self.steps = step
        self._queue.append((torch.aminmax(value), "state", step, step, t))
        if len(self._queue) >= self.FLUSH_EVERY:
            self.flush()

    def result(self, value: torch.Tensor, t) -> None:
        """Check the final result, at time t, then `flush`."""
        self._queue.append((torch.aminmax(value), "result", 0, self.steps, t))
        self.flush()

    def flush(self, cause: Optional[BaseException] = None) -> None:
        """Raise a `NonFiniteError` for the first queued check that failed (``from cause`` if given)."""
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        finite = torch.isfinite(torch.stack([v for entry in queue for v in entry[0]])).reshape(-1, 2).all(1)
        if bool(finite.all()):
            return
        _, kind, index, steps, t = queue[int((~finite).nonzero()[0, 0])]
        t = float(t.reshape(-1)[0]) if torch.is_tensor(t) else float(t)
        if kind == "score":
            step = f", in step {steps + 1}" if self.live_steps else ""
            message = (f"{self.who}: the score returned non-finite values (NaN or inf) at evaluation {index} "
                       f"(t = {t:.6g}{step}). Check the score (the model and its inputs) at that time")
        else:
            what = f"the state became non-finite after step {index}" if kind == "state" else "the result is non-finite"
            message = (f"{self.who}: {what} (t = {t:.6g}) although every score evaluation before it was finite: "
                       f"the solver diverged (take more or smaller steps)")
        raise NonFiniteError(message) from cause


def check_steps(steps, low: int = 1, note: str = "") -> int:
    """The number of steps as an int: an integer (not a bool, a float or None) of at least ``low``.

    Every sampler, time grid and discretization validates ``steps`` here, so each gives the same message;
    ``note`` explains a ``low`` above 1 and is appended to "a positive integer".
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < low:
        raise ValueError(f"steps must be a positive integer{note}; got {steps!r}")
    return int(steps)


def check_choice(value: str, choices, what: str) -> str:
    """Raise a ValueError naming the valid choices when ``value`` is not one of them."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {what} {value!r}; valid choices: {valid}")
    return value


def check_same_shape(out: torch.Tensor, x: torch.Tensor, what: str = "score") -> torch.Tensor:
    """Raise a ValueError if a callable's output does not have x's shape."""
    if not torch.is_tensor(out) or out.shape != x.shape:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"{what}(x, t) must return a tensor of x's shape {tuple(x.shape)}; got {got}")
    return out


class SummaryRepr:
    """A dataclass mixin whose repr summarises tensors (shape, dtype, mean) instead of printing them."""

    def __repr__(self) -> str:

        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if torch.is_tensor(value):
                mean = f", mean={float(value.double().mean()):.6g}" if value.numel() and value.is_floating_point() else ""
                value = f"tensor(shape={tuple(value.shape)}, dtype={value.dtype}{mean})"
            elif isinstance(value, float):
                value = f"{value:.6g}"
            else:
                value = repr(value)
            parts.append(f"{field.name}={value}")
        return f"{type(self).__name__}({', '.join(parts)})"


def write_atomically(path, write: Callable[[IO], None], binary: bool = True, fsync: bool = False) -> str:
    """Write a file by ``write(handle)`` into a temporary file in the same folder, then ``os.replace`` it to
    ``path``: a crash mid-write leaves the previous file intact, and temporary files such a crash left behind are
    removed by the next write (one writer per path: a second one writing the same path at the same time could
    lose its temporary file). ``fsync`` flushes to disk before the rename (checkpoints). The file gets the mode
    the umask gives any new file. Returns ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prefix = os.path.basename(path) + "."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    leftover = re.compile(re.escape(prefix) + r"[A-Za-z0-9_]+\.tmp")     # this path's, not "ref.npz…" of "ref"
    for name in os.listdir(folder):               # leftovers of writes that were killed
        if leftover.fullmatch(name):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
