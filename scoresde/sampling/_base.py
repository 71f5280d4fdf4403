"""The one interface every sampler shares, and the plumbing it owns.

    res = sampler.sample(sde, score, shape, generator=None, x_T=None, times=None)
    res.x      # samples at the last time (after the optional final denoising), shape == shape
    res.nfe    # exact number of score evaluations (``sampler.nfe()`` says it before running)
    res.network_evaluations   # network passes they cost (2 per call for guided scores, see scoresde.guidance)

A *score* is any callable ``score(x, t)`` with x of shape (B, *D) and t of shape (B,), returning x's shape.
Samplers use only the SDE's public contract ([`scoresde.sde.LinearSDEProtocol`][scoresde.sde.LinearSDEProtocol]); they never check the
concrete SDE class.

A subclass sets its time grid (a [`scoresde.sampling.grids.TimeGrid`][scoresde.sampling.grids.TimeGrid]) in ``__init__`` and implements
`Sampler._run` over the decreasing tensor of times it is given, calling ``report(step, t, x)`` after each
step; the base draws the prior, counts evaluations, records trajectories, drives the progress bar and the
callback, and applies the final Tweedie denoising. It also validates the start (a finite floating-point x_T) and
the grid once per call (so the per-step calls of ``scale``/``std`` and score models skip their range checks,
see `scoresde._utils.validated_times`), and watches every score evaluation and reported state for NaN or
inf without a host sync per step: a `scoresde._utils.NonFiniteError` names the first evaluation (and
its time) or step where one appeared.
"""
from __future__ import annotations

import abc
import functools
import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence

import torch

from .. import conversions
from .._registry import Registry
from .._utils import (FiniteWatch, ScoreFn, SummaryRepr, check_finite, check_same_shape, require_float64,
                      validated_times)
from ..score import Score, as_score
from ..sde import Coefficients, check_prior, coefficients, require_linear
from .grids import TimeGrid, check_times
from .threshold import thresholded_score

Tensor = torch.Tensor
#: ``callback(step, t, x)`` is called after every solver step with the step index, the time reached
#: (a float) and the current state.
Callback = Callable[[int, float, Tensor], None]

#: Samplers by name, for configs and the command line: ``SAMPLERS.build("heun", steps=18)``.
SAMPLERS = Registry("sampler")


@dataclass(repr=False)
class SampleResult(SummaryRepr):
    """What a sampler returns.

    Attributes:
        x: the samples, shape (B, *D).
        nfe: exact number of score evaluations (calls of ``score(x, t)``).
        network_evaluations: the network evaluations those calls cost: ``nfe`` times the score's
            ``network_evaluations`` attribute (1 when it has none; 2 for classifier-free guidance, which runs one
            doubled batch, and for classifier guidance).
        times: times of the recorded trajectory (decreasing), or None.
        trajectory: states at ``times``, shape (len(times), B, *D), or None.
    """

    x: Tensor
    nfe: int
    times: Optional[Tensor] = None
    trajectory: Optional[Tensor] = None
    network_evaluations: Optional[int] = None

    def __post_init__(self):
        if self.network_evaluations is None:
            self.network_evaluations = self.nfe


class CountedScore(Score):
    """A `Score` that counts its calls, checks that it returns x's shape and (with a ``watch``) that it is finite;
    it keeps what the wrapped score says about itself."""

    def __init__(self, score: ScoreFn, watch: Optional[FiniteWatch] = None):
        inner = as_score(score)          # called as itself: a Score subclass (another counter) keeps counting
        super().__init__(inner, network_evaluations=inner.network_evaluations, closed_form=inner.closed_form,
                         network=inner.network, round_noise_level=inner.round_noise_level)
        self.watch, self.nfe = watch, 0

    @property
    def total_network_evaluations(self) -> int:
        """Network evaluations of the calls so far (``nfe`` times the score's ``network_evaluations``)."""
        return self.nfe * self.network_evaluations

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        out = check_same_shape(self.fn(x, t), x)
        if self.watch is not None:
            self.watch.score(out, self.nfe, t)
        return out


class Recorder:
    """``report(step, t, x)``: collects (t, x) when a trajectory is asked for, calls the callback, drives tqdm.

    ``active`` is False when nothing listens, so a solver can skip producing intermediate states.
    """

    def __init__(self, record: bool, callback: Optional[Callback], progress: bool, total: Optional[int],
                 desc: str, watch: Optional[FiniteWatch] = None):
        self.record, self.callback, self.watch = bool(record), callback, watch
        self.times: List[float] = []
        self.states: List[Tensor] = []
        self.bar = None
        if progress:
            from .._progress import progress_bar       # tqdm on a terminal, lines into a file

            self.bar = progress_bar(total=total, desc=desc, leave=False)

    @property
    def active(self) -> bool:
        return self.record or self.callback is not None or self.bar is not None

    def __call__(self, step: int, t: float, x: Tensor) -> None:
        if self.watch is not None:
            self.watch.state(x, step, t)
        if self.record:
            self.times.append(float(t))
            self.states.append(x.detach().clone())
        if self.callback is not None:
            self.callback(step, float(t), x)
        if self.bar is not None:
            self.bar.update(1)

    def result(self, x: Tensor, nfe: int, network_evaluations: Optional[int] = None) -> SampleResult:
        self.close()
        if not self.record:
            return SampleResult(x=x, nfe=nfe, network_evaluations=network_evaluations)
        times = torch.tensor(self.times, dtype=torch.float64)
        return SampleResult(x=x, nfe=nfe, times=times, trajectory=torch.stack(self.states),
                            network_evaluations=network_evaluations)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Sampler(abc.ABC):
    """Base class of all samplers: subclasses set ``self.schedule`` and implement `_run`.

    Attributes:
        schedule: the `TimeGrid` (steps, grid kind, eps, ρ) the sampler runs on unless explicit times
            are passed to `sample`.
        denoise: finish with Tweedie's E[x_0 | x_t] at the last time (one more score evaluation).
    """

    #: Shown on the progress bar.
    label = "sampler"
    #: A small, fast configuration for data of shape (B, 2): `example` builds it (the registry-driven contract tests
    #: build one of every registered sampler).
    EXAMPLE: ClassVar[Dict[str, Any]] = {}
    #: Whether `_run` uses more of the SDE than drift and diffusion (scale, std, log_snr, transition).
    needs_linear_sde = True
    schedule: TimeGrid
    denoise: bool = False
    #: Whether the sampler forms a data prediction x̂_0 at its score evaluations and takes ``threshold=``
    #: (`scoresde.sampling.threshold`); the others refuse it.
    takes_threshold: ClassVar[bool] = False
    threshold = None

    def __new__(cls, *args, **kwargs):
        if kwargs.get("threshold") is not None and not cls.takes_threshold:
            takers = sorted({c.__name__ for c in _subclasses(Sampler) if c.takes_threshold})
            raise TypeError(f"{cls.__name__} forms no x0 prediction to threshold; the samplers that take "
                            f"threshold= are {', '.join(takers)}")
        return super().__new__(cls)

    @classmethod
    def example(cls, **fixed) -> "Sampler":
        """The sampler in its small `EXAMPLE` configuration for (B, 2) data; ``fixed`` (a registry entry's fixed
        arguments) override it."""
        return cls(**{**cls.EXAMPLE, **fixed})

    # -- the grid settings, validated once by TimeGrid -----------------------------------------------
    @property
    def steps(self) -> Optional[int]:
        return self.schedule.steps

    @property
    def grid(self) -> str:
        return self.schedule.kind

    @property
    def eps(self) -> float:
        return self.schedule.eps

    @property
    def rho(self) -> float:
        return self.schedule.rho

    def times(self, sde, device=None) -> Tensor:
        """The decreasing float64 times T = t_0 > … > t_N = eps the sampler runs on by default."""
        return self.schedule.times(sde, device=device)

    def nfe(self, times: Optional[Tensor] = None) -> Optional[int]:
        """Score evaluations one call of `sample` makes (with ``times``: on those times); None if the
        count is only known after the run (adaptive solvers)."""
        intervals = self.schedule.steps if times is None else len(times) - 1
        per_step = self._evaluations_per_step()
        if intervals is None or per_step is None:
            return None
        return per_step * intervals + self._extra_evaluations() + int(self.denoise)

    def _evaluations_per_step(self) -> Optional[int]:
        return 1

    def _extra_evaluations(self) -> int:
        return 0

    def _reports(self, times: Tensor) -> int:
        """How many times `_run` calls ``report`` (the progress bar's total)."""
        return len(times) - 1

    def _reports_live(self) -> bool:
        """Whether `_run` calls ``report`` after each step as it happens (not after a library's solve)."""
        return True

    def _check_std(self, sde, grid: Coefficients) -> None:
        """The samplers that use σ(t) (PC, Heun, DPM-Solver) divide by it: it must be positive on the grid."""
        std, grid = grid.sigma, grid.t
        zero = ~(std > 0)
        if bool(zero.any()):
            raise ValueError(f"{type(self).__name__} needs std(t) > 0 at every time of its grid; "
                             f"{type(sde).__name__} has std(t) = {float(std[zero][0]):.3g} at "
                             f"t = {float(grid[zero][0]):.6g} (it adds no noise before then): end the grid later "
                             f"(eps, or explicit times)")

    # -- the one entry point ---------------------------------------------------------------------------
    def sample(self, sde, score: ScoreFn, shape: Sequence[int], generator: Optional[torch.Generator] = None,
               x_T: Optional[Tensor] = None, *, times: Optional[Tensor] = None, trajectory: bool = False,
               callback: Optional[Callback] = None, progress: bool = False, device=None,
               dtype=None) -> SampleResult:
        """Draw samples by running from the prior at t = T down to the last time.

        Args:
            sde: the forward SDE (any LinearSDE, or any SDE the sampler supports).
            score: ``score(x, t)``, e.g. a trained model or ``GaussianMixture.score(sde)``.
            shape: (B, *D) of the samples.
            generator: seeds the prior draw and every noise draw; the same generator state gives the same
                samples. A list of one generator per sample (as diffusers takes) draws row i from generator i
                alone (on its device), so each sample is the same whatever batch it is drawn in — unless the
                sampler couples the batch by design (`PCSampler`'s batch-mean Langevin norms, the adaptive
                solvers' shared step size).
            x_T: start here instead of drawing from the prior (shape ``shape``).
            times: run on these decreasing times in (0, T] (a 1-D tensor, as k-diffusion passes ``sigmas``)
                instead of the sampler's own grid; ``x_T`` should then be a sample of p at ``times[0]``.
            trajectory: record the state after every step in ``res.times`` / ``res.trajectory``.
            callback: ``callback(step, t, x)`` after every step. It is meant for watching; an in-place change
                of x steers the run only where x is the sampler's own state as it runs:
                ``ReverseSDESampler(backend="native")``, `PCSampler` and `DPMSolver`. Heun
                reports s·x̂ (a copy), and the torchsde backend and `ProbabilityFlowSampler` report
                after their solve, so changes there have no effect.
            progress: show a tqdm progress bar.
            device: of the prior draw when ``x_T`` is not given (default: the generator's device,
                torch's default dtype).
            dtype: as ``device``.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) < 1 or any(s <= 0 for s in shape):
            raise ValueError(f"shape must be (B, *D) with positive sizes; got {shape}")
        if self.needs_linear_sde or self.denoise:
            require_linear(sde, type(self).__name__)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point dtype; got {dtype}")
        generator = as_generator(generator, shape[0])
        if x_T is None:
            check_prior(sde, f"{type(self).__name__}.sample")
            if isinstance(generator, RowGenerators):       # row i of the prior draw from generator i
                x_T = torch.cat([sde.prior_sample((1,) + shape[1:], generator=g, dtype=dtype) for g in generator])
                x_T = x_T.to(device if device is not None else x_T.device)
            else:
                x_T = sde.prior_sample(shape, generator=generator, device=device, dtype=dtype)
        elif not torch.is_tensor(x_T) or not x_T.is_floating_point():
            got = f"dtype {x_T.dtype}" if torch.is_tensor(x_T) else type(x_T).__name__
            raise TypeError(f"x_T must be a floating-point tensor; got {got} (cast it, e.g. x_T.float())")
        elif tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}; got {tuple(x_T.shape)}")
        check_finite(x_T, "x_T")
        require_float64(x_T.device, type(self).__name__)
        grid = self.times(sde, device=x_T.device) if times is None else check_times(times, sde, x_T.device)
        coefs = coefficients(sde, grid)                 # s, σ, λ, σ̃ on the grid, once
        if self.needs_linear_sde:
            self._check_std(sde, coefs)
        watch = FiniteWatch(type(self).__name__, live_steps=self._reports_live())
        counted = CountedScore(self._thresholded(sde, score), watch)
        recorder = Recorder(trajectory, callback, progress, self._reports(grid), self.label, watch)
        try:
            with torch.no_grad(), validated_times():
                x = self._run(sde, counted, x_T, coefs if _takes_coefficients(type(self)) else grid, generator,
                              recorder)
                if self.denoise:
                    x = conversions.denoise(sde, counted, x, float(grid[-1]))
            watch.result(x, float(grid[-1]))
        except Exception as err:
            watch.flush(cause=err)          # a NaN or inf before the failure explains it better
            raise
        finally:
            recorder.close()
        return recorder.result(x, counted.nfe, counted.total_network_evaluations)

    def _thresholded(self, sde, score: ScoreFn) -> ScoreFn:
        """The score the steps see: the given one, or the one whose x̂_0 is thresholded (the one place it is)."""
        return score if self.threshold is None else thresholded_score(sde, score, self.threshold)

    # -- inversion -------------------------------------------------------------------------------------
    def _cannot_invert(self) -> Optional[str]:
        """Why this sampler's steps cannot be run backwards (None when they can: deterministic steps)."""
        return f"{type(self).__name__} has no deterministic steps to reverse"

    def invert(self, sde, score: ScoreFn, x0: Tensor, *, times: Optional[Tensor] = None,
               trajectory: bool = False) -> SampleResult:
        """Encode x (at the grid's last time, eps) to x_T by the sampler's own steps run up its own grid.

        The same update formulas as `sample`, on the grid reversed (eps = t_N < … < t_0 = T): the DDIM inversion
        (diffusers' ``DDIMInverseScheduler``) for order 1 and its multistep analogues otherwise. Sampling from the
        result on the same grid returns x to the solver's accuracy (each step is the reverse of the matching step
        up to its local error). No final denoising is applied.

        Args:
            sde: the forward SDE.
            score: ``score(x, t)``.
            x0: the data to encode, (B, *D), taken as the state at the grid's last time.
            times: the decreasing grid to reverse (default: the sampler's own).
            trajectory: record the states, as in `sample`.
        """
        reason = self._cannot_invert()
        if reason is not None:
            raise ValueError(f"{reason}; invert takes DDIMSampler(eta=0), DPMSolver, UniPCSampler, DEISSampler and "
                             f"HeunSampler(churn=0) (ProbabilityFlowSampler has encode)")
        if not torch.is_tensor(x0) or not x0.is_floating_point() or x0.dim() < 1:
            got = f"dtype {x0.dtype}" if torch.is_tensor(x0) else type(x0).__name__
            raise TypeError(f"x0 must be a floating-point tensor of shape (B, *D); got {got}")
        require_linear(sde, type(self).__name__)
        check_finite(x0, "x0")
        grid = self.times(sde, device=x0.device) if times is None else check_times(times, sde, x0.device)
        coefs = coefficients(sde, grid.flip(0))
        self._check_std(sde, coefs)
        watch = FiniteWatch(type(self).__name__, live_steps=self._reports_live())
        counted = CountedScore(self._thresholded(sde, score), watch)
        recorder = Recorder(trajectory, None, False, self._reports(grid), self.label, watch)
        try:
            with torch.no_grad(), validated_times():
                x = self._run(sde, counted, x0, coefs, None, recorder)
            watch.result(x, float(grid[0]))
        except Exception as err:
            watch.flush(cause=err)
            raise
        finally:
            recorder.close()
        return recorder.result(x, counted.nfe, counted.total_network_evaluations)

    @abc.abstractmethod
    def _run(self, sde, score: CountedScore, x: Tensor, grid: Coefficients, generator: Optional[torch.Generator],
             report: Recorder) -> Tensor:
        """Run from x = x_T at grid.t[0] down to grid.t[-1] (float64, decreasing) with the grid's coefficients
        (s, σ, λ, σ̃, computed once by `sample`); return the final state."""


def _subclasses(cls) -> List[type]:
    return [c for sub in cls.__subclasses__() for c in [sub, *_subclasses(sub)]]


@functools.lru_cache(maxsize=None)
def _takes_coefficients(cls) -> bool:
    """Whether ``cls._run`` takes the grid's `Coefficients` (its fourth parameter not named ``times``); a sampler
    written before them gets the tensor of times, with a DeprecationWarning (once per class)."""
    names = list(inspect.signature(cls._run).parameters)
    if len(names) > 4 and names[4] == "times":
        warnings.warn(f"{cls.__name__}._run(sde, score, x, times, generator, report) is deprecated: take grid, the "
                      f"scoresde.sde.Coefficients of the times (grid.t), instead of times", DeprecationWarning,
                      stacklevel=3)
        return False
    return True


class RowGenerators(tuple):
    """One ``torch.Generator`` per sample (diffusers' list of generators): row i of every draw comes from generator
    i alone, on that generator's device, so a sample does not depend on the batch it is drawn in (the batch size,
    a shard of an evaluation, the other rows). `Sampler.sample` makes one from a list or tuple of generators."""

    def randn(self, shape: Sequence[int], device=None, dtype=None) -> Tensor:
        """(B, *D) standard normals, row i from generator i (drawn on its device, moved to ``device``)."""
        return torch.cat([torch.randn((1,) + tuple(shape[1:]), generator=g, device=g.device, dtype=dtype)
                          for g in self]).to(device)


def as_generator(generator, batch: int):
    """``generator`` as a sampler takes it: None, one ``torch.Generator``, or a sequence of ``batch`` of them (a
    `RowGenerators`), checked."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)):
        bad = next((i for i, g in enumerate(generator) if not isinstance(g, torch.Generator)), None)
        if bad is not None:
            raise TypeError(f"generator list entry {bad} is a {type(generator[bad]).__name__}, not a torch.Generator")
        if len(generator) != batch:
            raise ValueError(f"generator must be a torch.Generator or a list of torch.Generators, one per sample "
                             f"({batch} here); got a list of {len(generator)}")
        return generator if isinstance(generator, RowGenerators) else RowGenerators(generator)
    raise TypeError(f"generator must be a torch.Generator, a list of one per sample, or None; got "
                    f"{type(generator).__name__}")


def randn_like(x: Tensor, generator) -> Tensor:
    """Standard normal noise shaped like x, drawn from ``generator`` (which must live on x's device), or row by row
    from a `RowGenerators`."""
    if isinstance(generator, RowGenerators):
        return generator.randn(x.shape, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
