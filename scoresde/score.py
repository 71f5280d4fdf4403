"""`Score`: a score function s(x, t) ≈ ∇_x log p_t(x) together with what samplers and the likelihood read about it.

Every function that makes a score returns one: the oracle's exact scores, the guided and posterior scores, the
adapters of denoisers and velocities, the Trainer's model. A wrapper passes on what it wraps (`Score.wrap`): the
cost of one call in network evaluations, and whether the field is a closed form.

    score = sd.Score(fn)                                   # any callable fn(x, t): a network or a closure around one
    score = sd.Score(fn, closed_form=True)                 # an exact analytic score (the oracle's are)
    score.network_evaluations                              # network passes per call (2 for guided scores)
    score.time_variable                                    # "sigma" unless closed_form: what "auto" integrates in

**The time variable.** The probability-flow ODE of a linear SDE can be integrated in t or in EDM's noise level
σ̃ = σ/s (`scoresde.sde.NoiseLevelFlow`). For a learned score, ε̂ = −σ s(x, t) is bounded, so the field in σ̃ is
smooth and adaptive solvers take far fewer steps; an exact mixture score is smooth in t and takes fewer steps
there (docs/benchmarks.md, lab notes).
So "auto" means σ̃ for every score on a linear SDE unless it declares ``closed_form=True``: a plain closure around
a network (score_sde_pytorch's ``get_score_fn`` is one) gets the fast variable without saying anything.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

Tensor = torch.Tensor


class Score:
    """A score function with its metadata; calling it calls ``fn``.

    Args:
        fn: ``fn(x, t)`` ≈ ∇_x log p_t(x): x (B, *D), t (B,), returns x's shape.
        network_evaluations: network passes one call costs (``res.network_evaluations`` of a sampler sums them):
            1 for a plain model, 2 for classifier-free guidance on a doubled batch, more for posterior scores.
        closed_form: an exact analytic score (no network): integrated in t by default, where it is smoother.
        network: whether ``fn`` is or wraps a network (an ``nn.Module``); for information.
        round_noise_level: for a model trained on a discrete set of noise levels (EDM's iDDPM), ``f(σ̃) -> σ̃`` giving
            the nearest supported level σ̃ = σ/s; samplers that pick a level of their own (Heun's churn) round it
            with this, as EDM's ``round_sigma``. None: every level is supported.
    """

    def __init__(self, fn: Callable, *, network_evaluations: int = 1, closed_form: bool = False,
                 network: Optional[bool] = None, round_noise_level: Optional[Callable] = None):
        if not callable(fn):
            raise TypeError(f"a score must be a callable score(x, t); got {type(fn).__name__}")
        if isinstance(network_evaluations, bool) or not isinstance(network_evaluations, int) or network_evaluations < 0:
            raise ValueError(f"network_evaluations must be a non-negative integer; got {network_evaluations!r}")
        self.fn = fn
        self.network_evaluations = network_evaluations
        self.closed_form = bool(closed_form)
        self.network = isinstance(fn, torch.nn.Module) if network is None else bool(network)
        if round_noise_level is not None and not callable(round_noise_level):
            raise TypeError(f"round_noise_level must be a callable f(level) -> level; got "
                            f"{type(round_noise_level).__name__}")
        self.round_noise_level = round_noise_level

    def __call__(self, x: Tensor, t: Tensor, *args, **kwargs) -> Tensor:
        return self.fn(x, t, *args, **kwargs)

    @property
    def time_variable(self) -> str:
        """The time variable of the probability-flow ODE that "auto" picks on a linear SDE: "t" for a closed form,
        "sigma" otherwise."""
        return "t" if self.closed_form else "sigma"

    def wrap(self, fn: Callable, *, network_evaluations: Optional[int] = None) -> "Score":
        """A score ``fn`` built around this one: the same closed-form flag and network, and this score's cost per
        call unless ``network_evaluations`` says otherwise (e.g. twice it for a doubled batch)."""
        per_call = self.network_evaluations if network_evaluations is None else network_evaluations
        return Score(fn, network_evaluations=per_call, closed_form=self.closed_form, network=self.network,
                     round_noise_level=self.round_noise_level)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        flags = ", closed_form=True" if self.closed_form else ""
        return f"Score({name}, network_evaluations={self.network_evaluations}{flags})"


def as_score(score) -> Score:
    """``score`` as a `Score`: itself when it is one; an ``nn.Module`` or any callable otherwise (a function may still
    say ``network_evaluations`` / ``closed_form`` as attributes)."""
    if isinstance(score, Score):
        return score
    if not callable(score):
        raise TypeError(f"score must be a callable score(x, t); got {type(score).__name__}")
    return Score(score, network_evaluations=int(getattr(score, "network_evaluations", 1)),
                 closed_form=bool(getattr(score, "closed_form", False)), network=getattr(score, "network", None),
                 round_noise_level=getattr(score, "round_noise_level", None))
