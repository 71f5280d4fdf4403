"""The one interface every sampler shares.

    res = sampler.sample(sde, score, shape, generator=None, x_T=None)
    res.x      # samples at t = eps (after the optional final denoising), shape == shape
    res.nfe    # exact number of score evaluations

A *score* is any callable ``score(x, t)`` with x of shape (B, *D) and t of shape (B,), returning x's shape.
Samplers use only the SDE's public contract (drift, diffusion, scale, std, prior); they never check the
concrete SDE class.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from .._utils import check_same_shape, expand_like

Tensor = torch.Tensor
ScoreFn = Callable[[Tensor, Tensor], Tensor]
#: ``callback(step, t, x)`` is called after every solver step with the step index, the time reached
#: (a float) and the current state.
Callback = Callable[[int, float, Tensor], None]


@dataclass
class SampleResult:
    """What a sampler returns.

    Attributes:
        x: the samples, shape (B, *D).
        nfe: exact number of score evaluations.
        times: times of the recorded trajectory (decreasing), or None.
        trajectory: states at ``times``, shape (len(times), B, *D), or None.
    """

    x: Tensor
    nfe: int
    times: Optional[Tensor] = None
    trajectory: Optional[Tensor] = None


class CountedScore:
    """Wrap a score function: count its calls and check that it returns x's shape."""

    def __init__(self, score: ScoreFn):
        if not callable(score):
            raise TypeError(f"score must be a callable score(x, t); got {type(score).__name__}")
        self.score = score
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        return check_same_shape(self.score(x, t), x)


class Recorder:
    """Collects (t, x) pairs when a trajectory is asked for, forwards to a callback, and drives tqdm."""

    def __init__(self, record: bool, callback: Optional[Callback], progress: bool, total: Optional[int],
                 desc: str):
        self.record, self.callback = record, callback
        self.times: List[float] = []
        self.states: List[Tensor] = []
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False)

    def __call__(self, step: int, t: float, x: Tensor) -> None:
        if self.record:
            self.times.append(float(t))
            self.states.append(x.detach().clone())
        if self.callback is not None:
            self.callback(step, float(t), x)
        if self.bar is not None:
            self.bar.update(1)

    def result(self, x: Tensor, nfe: int) -> SampleResult:
        if self.bar is not None:
            self.bar.close()
        if not self.record:
            return SampleResult(x=x, nfe=nfe)
        times = torch.tensor(self.times, dtype=torch.float64)
        return SampleResult(x=x, nfe=nfe, times=times, trajectory=torch.stack(self.states))


class Sampler(abc.ABC):
    """Base class: subclasses implement :meth:`_sample` on a prepared initial state."""

    def sample(self, sde, score: ScoreFn, shape: Sequence[int], generator: Optional[torch.Generator] = None,
               x_T: Optional[Tensor] = None, *, trajectory: bool = False, callback: Optional[Callback] = None,
               progress: bool = False, device=None, dtype=None) -> SampleResult:
        """Draw samples by running from the prior at t = T down to t = eps.

        Args:
            sde: the forward SDE (any LinearSDE, or any SDE the sampler supports).
            score: ``score(x, t)``, e.g. a trained model or ``GaussianMixture.score(sde)``.
            shape: (B, *D) of the samples.
            generator: seeds the prior draw and every noise draw; the same generator state gives the same
                samples.
            x_T: start here instead of drawing from the prior (shape ``shape``).
            trajectory: record the state after every step in ``res.times`` / ``res.trajectory``.
            callback: ``callback(step, t, x)`` after every step.
            progress: show a tqdm progress bar.
            device, dtype: of the prior draw when ``x_T`` is not given (default: the generator's device,
                torch's default dtype).
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) < 1 or any(s <= 0 for s in shape):
            raise ValueError(f"shape must be (B, *D) with positive sizes; got {shape}")
        if x_T is None:
            x_T = sde.prior_sample(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}; got {tuple(x_T.shape)}")
        counted = CountedScore(score)
        with torch.no_grad():
            x, recorder = self._sample(sde, counted, x_T, generator, trajectory, callback, progress)
        return recorder.result(x, counted.nfe)

    @abc.abstractmethod
    def _sample(self, sde, score: CountedScore, x: Tensor, generator, trajectory: bool,
                callback: Optional[Callback], progress: bool):
        """Run the sampler from x = x_T; return (x at the end, Recorder)."""


def tweedie_denoise(sde, score: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """Tweedie's estimate E[x_0 | x_t = x] = (x + σ(t)² score(x, t)) / s(t) for a linear SDE."""
    s, sigma = expand_like(sde.scale(t), x), expand_like(sde.std(t), x)
    return (x + sigma * sigma * score(x, t)) / s


def batch_time(t: float, x: Tensor) -> Tensor:
    """A (B,) tensor filled with ``t`` on x's device and dtype."""
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)


def randn_like(x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Standard normal noise shaped like x, drawn from ``generator`` (which must live on x's device)."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
