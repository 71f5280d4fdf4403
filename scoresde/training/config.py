"""The settings of a training run: `TrainConfig` (plain values only, so they fit in a checkpoint)."""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .._utils import parse_device
from ..losses import TIME_DISTRIBUTIONS, check_weighting


#: The settings that may change when a run is resumed (fine-tuning with a lower lr, a larger batch, …): how the run
#: is optimised from the step it resumes at, not what is trained. [`scoresde.Trainer.resume`][scoresde.Trainer.resume]
#: applies them (the optimizer's and the EMA's stored settings are replaced by the config's) and logs a change as
#: ``{"step": n, "changed": {key: [old, new]}}``. ``ema_power`` and the snapshot settings are not among them: a
#: power EMA's average is only that profile's when γ is the same at every step.
RESUMABLE_FIELDS = ("lr", "batch_size", "warmup_steps", "lr_decay", "accumulate", "grad_clip", "weight_decay",
                    "adam_betas", "ema_decay", "ema_warmup", "ema_half_life", "ema_rampup")


@dataclass
class TrainConfig:
    """Settings of a training run (plain values only, so they fit in a checkpoint).

    The defaults train the built-in 2-D sets well: ``MLP(2)`` on eight_gaussians reaches a held-out NLL within
    0.1 nats of the data's entropy in 5000 steps (``benchmarks/train_readme.py``): batch 512, lr 2e-3 with 100
    warm-up steps, likelihood weighting with importance sampling.

    Attributes:
        steps: total number of optimizer steps.
        batch_size: samples per step.
        lr: peak learning rate (of the default Adam optimizer and warm-up schedule).
        warmup_steps: linear learning-rate warm-up: lr · min(1, (n + 1)/warmup_steps) at step n (0: none); the
            default schedule of [`scoresde.Trainer`][scoresde.Trainer] (``lr_schedule=`` replaces it).
        lr_decay: after the warm-up, ``"constant"``, ``"cosine"`` (to 0 at the last step) or ``"inverse_sqrt"``
            (lr · √(warmup_steps / n)); see `scoresde.training.trainer.warmup_schedule`.
        accumulate: split each batch of ``batch_size`` (the global batch) into this many micro-batches, one
            backward pass each, with the same times and noise as the whole batch: the same update, less memory.
        precision: ``"fp32"``, ``"bf16"`` (autocast of the loss's forward pass to bfloat16, on CPU or GPU) or
            ``"fp16"`` (autocast to float16 with a dynamic gradient scaler; CUDA only). Parameters, optimizer state
            and EMA stay in the model's dtype.
        compile: run the training forward pass through ``torch.compile`` (the default inductor backend needs a C++
            compiler; if compiling fails, training continues uncompiled with a warning naming the error).
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        weight_decay: Adam's (L2) weight decay.
        adam_betas: Adam's (β₁, β₂).
        ema_decay: decay of the weight EMA; ema_warmup uses min(decay, (1 + n)/(10 + n)).
        ema_half_life: instead, EDM's half-life of the average in samples, with the ramp-up ``ema_rampup``.
        ema_rampup: EDM's ramp-up ratio (the half-life is at most this fraction of the samples seen).
        ema_power: instead, EDM2's power-function profile with exponent γ (see `scoresde.EMA`).
        ema_snapshot_every: write snapshots of power EMAs to ``out_dir/ema_snapshots/ema_<step>.pt`` every this
            many steps (0: never), for a post-hoc EMA of any profile ([`scoresde.post_hoc_ema`][scoresde.post_hoc_ema]).
        ema_snapshot_powers: the exponents γ > −1/2 of the profiles snapshot, each tracked by its own EMA (EDM2:
            [16.97, 6.94], σ_rel = 0.05 and 0.10); null: ``ema_power`` alone (the trainer's EMA).
        weighting: a name in `scoresde.WEIGHTINGS` ("sigma2", "likelihood", "none", "x0", "snr", "min_snr",
            "edm", …) or an import path (see [`scoresde.dsm_loss`][scoresde.dsm_loss]).
        importance_sampling: deprecated: ``time_distribution="importance"`` (True) or ``"uniform"`` (False);
            set, it is translated into ``time_distribution`` with a DeprecationWarning and then reads null.
        time_distribution: the law of the training time, a name in `scoresde.losses.TIME_DISTRIBUTIONS`:
            "importance" (the default: t ∝ g²/σ², Song et al.'s proposal for the likelihood weighting),
            "uniform", "log_snr" or "log_normal"; the one way to ask for importance sampling.
        importance_weight: weight each term by 1/((T − eps) q(t)) so the objective stays the uniform-t one
            (True), or train on E_q (False, EDM's practice).
        eps: smallest training time; also the time of the evaluated density p_eps.
        cond_dropout: for a class-conditional model, the probability that a label is replaced by ∅ (index
            ``num_classes``) in training, so that one network learns p(x | c) and p(x) for classifier-free
            guidance (None: 0.1 for a conditional model; only conditional models take one).
        seed: seeds the data order and the loss's times and noise (global RNG: seed it yourself).
        log_every: record the mean loss every this many steps.
        sample_every: save a PNG of samples every this many steps (0: never).
        num_samples: number of samples in that figure (None: 1000 points for flat data, 64 images otherwise).
        eval_every: evaluate NLL / bits per dim every this many steps (0: never).
        num_eval: number of held-out points evaluated.
        eval_rtol: tolerances of the likelihood's adaptive ODE solver (dopri5).
        eval_atol: as ``eval_rtol``.
        checkpoint_every: write ``out_dir/checkpoint.pt`` every this many steps (0: not by steps).
        checkpoint_seconds: also write it when this much wall time has passed since the last one (0: not by
            time). A checkpoint is always written at the end of training and when SIGTERM/SIGINT stops it.
        out_dir: folder for checkpoints, figures and ``metrics.jsonl`` (None: write nothing).
        device: where to train (None: where the model's parameters are).
        progress: show a tqdm progress bar (loss and steps/s).
    """

    steps: int = 10_000
    batch_size: int = 512
    lr: float = 2e-3
    warmup_steps: int = 100
    lr_decay: str = "constant"
    accumulate: int = 1
    precision: str = "fp32"
    compile: bool = False
    grad_clip: Optional[float] = 1.0
    weight_decay: float = 0.0
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    ema_decay: float = 0.999
    ema_warmup: bool = True
    ema_half_life: Optional[float] = None
    ema_rampup: float = 0.05
    ema_power: Optional[float] = None
    ema_snapshot_every: int = 0
    ema_snapshot_powers: Optional[Tuple[float, ...]] = None
    weighting: str = "likelihood"
    importance_sampling: Optional[bool] = None
    time_distribution: Optional[str] = "importance"
    importance_weight: bool = True
    eps: float = 1e-5
    cond_dropout: Optional[float] = None
    seed: int = 0
    log_every: int = 100
    sample_every: int = 0
    num_samples: Optional[int] = None
    eval_every: int = 0
    num_eval: int = 256
    eval_rtol: float = 1e-5
    eval_atol: float = 1e-5
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 600.0
    out_dir: Optional[str] = None
    device: Optional[str] = None
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "num_eval", "accumulate"):
            _integer(name, getattr(self, name), low=1)
        if self.num_samples is not None:
            _integer("num_samples", self.num_samples, low=1)
        for name in ("warmup_steps", "sample_every", "eval_every", "checkpoint_every", "seed", "ema_snapshot_every"):
            _integer(name, getattr(self, name), low=0)
        for name in ("lr", "eval_rtol", "eval_atol", "eps"):
            _number(name, getattr(self, name), positive=True)
        _number("checkpoint_seconds", self.checkpoint_seconds, positive=False)
        if self.cond_dropout is not None and not (_is_number(self.cond_dropout) and 0 <= self.cond_dropout <= 1):
            raise ValueError(f"cond_dropout must be a probability in [0, 1] (or null for the default 0.1 of a "
                             f"conditional model); got {self.cond_dropout!r}")
        if self.lr_decay not in ("constant", "cosine", "inverse_sqrt"):
            raise ValueError(f"unknown lr_decay {self.lr_decay!r}; valid choices: 'constant', 'cosine', 'inverse_sqrt'")
        if self.batch_size % self.accumulate:
            raise ValueError(f"accumulate ({self.accumulate}) must divide batch_size ({self.batch_size})")
        _number("weight_decay", self.weight_decay, positive=False)
        if self.grad_clip is not None:
            _number("grad_clip", self.grad_clip, positive=True, extra=" or null (None) for no clipping")
        _number("ema_decay", self.ema_decay, positive=False)
        if not self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay!r}")
        if self.ema_half_life is not None:
            _number("ema_half_life", self.ema_half_life, positive=True, extra=" of samples (or null)")
        _number("ema_rampup", self.ema_rampup, positive=False)
        if self.ema_power is not None and not (_is_number(self.ema_power) and self.ema_power > -1):
            raise ValueError(f"ema_power (EDM2's γ) must be a number > -1 (or null); got {self.ema_power!r}")
        if self.ema_half_life is not None and self.ema_power is not None:
            raise ValueError("give ema_half_life or ema_power, not both")
        self._check_snapshots()
        betas = self.adam_betas
        if (not isinstance(betas, (list, tuple)) or len(betas) != 2
                or not all(_is_number(b) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"adam_betas must be a pair [beta1, beta2] of numbers in [0, 1); got {betas!r}")
        self.adam_betas = tuple(float(b) for b in betas)
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {self.precision!r}; valid choices: 'fp32', 'bf16', 'fp16'")
        self._merge_importance_sampling()
        if self.time_distribution not in TIME_DISTRIBUTIONS:
            raise ValueError(f"unknown time_distribution {self.time_distribution!r}; valid choices: "
                             f"{', '.join(repr(n) for n in TIME_DISTRIBUTIONS)}")
        for name in ("ema_warmup", "progress", "compile", "importance_weight"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false; got {getattr(self, name)!r}")
        check_weighting(self.weighting)
        for name in ("out_dir", "device"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ValueError(f"{name} must be a string (or null); got {value!r}")
        if self.device is not None:
            parse_device(self.device)
        if self.out_dir is not None:
            self.out_dir = os.fspath(self.out_dir)

    def _merge_importance_sampling(self) -> None:
        """``importance_sampling`` (deprecated; also what a run written before ``time_distribution`` holds) folded
        into ``time_distribution``: True is "importance", False is "uniform"."""
        flag = self.importance_sampling
        if flag is None:
            if self.time_distribution is None:          # a run of the time before either: its default
                self.time_distribution = "importance"
            return
        if not isinstance(flag, bool):
            raise ValueError(f"importance_sampling must be true or false (or null); got {flag!r}")
        wanted = "importance" if flag else "uniform"
        if self.time_distribution not in (None, "importance", wanted):
            raise ValueError(f"give time_distribution={self.time_distribution!r} or importance_sampling={flag}, not "
                             f"both (time_distribution is the one to use)")
        if self.time_distribution in (None, "importance"):
            warnings.warn(f"TrainConfig(importance_sampling={flag}) is deprecated: use time_distribution="
                          f"{wanted!r}", DeprecationWarning, stacklevel=4)
            self.time_distribution = wanted
        self.importance_sampling = None

    def _check_snapshots(self) -> None:
        """The post-hoc EMA settings: the snapshot profiles are power EMAs with γ > −1/2 (distinct), and
        snapshots are taken when (and only when) profiles are given, by ema_snapshot_powers or ema_power."""
        powers = self.ema_snapshot_powers
        if powers is not None:
            if (not isinstance(powers, (list, tuple)) or not powers
                    or not all(_is_number(g) and g > -0.5 for g in powers) or len(set(powers)) != len(powers)):
                raise ValueError(f"ema_snapshot_powers must be a non-empty list of distinct numbers > -1/2 (EDM2's "
                                 f"γ, e.g. [16.97, 6.94]), or null for ema_power alone; got {powers!r}")
            self.ema_snapshot_powers = tuple(float(g) for g in powers)
            if self.ema_snapshot_every == 0:
                raise ValueError("ema_snapshot_powers needs ema_snapshot_every > 0 (the steps between snapshots)")
        elif self.ema_snapshot_every > 0:
            if self.ema_power is None:
                raise ValueError("ema_snapshot_every needs power EMAs: set ema_snapshot_powers (e.g. [16.97, 6.94]) "
                                 "or ema_power")
            if not self.ema_power > -0.5:
                raise ValueError(f"a post-hoc EMA needs snapshot powers > -1/2; ema_power is {self.ema_power!r} "
                                 f"(set ema_snapshot_powers)")

    def snapshot_powers(self) -> Tuple[float, ...]:
        """The γ of the profiles that are snapshot (empty when ``ema_snapshot_every`` is 0)."""
        if self.ema_snapshot_every == 0:
            return ()
        return self.ema_snapshot_powers if self.ema_snapshot_powers is not None else (float(self.ema_power),)

    def to_dict(self) -> Dict[str, Any]:
        """A plain dict (tuples become lists) that ``torch.load(weights_only=True)`` reads back."""
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        if self.ema_snapshot_powers is not None:
            d["ema_snapshot_powers"] = list(self.ema_snapshot_powers)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys raise a TypeError naming them. A run's file written before
        ``time_distribution`` (``importance_sampling: true/false``) is read silently into it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TypeError(f"unknown TrainConfig fields {unknown}; valid: {sorted(known)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return cls(**d)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(name: str, value, positive: bool, extra: str = "") -> None:
    """Raise a ValueError naming ``name`` unless value is a finite number (> 0 or ≥ 0)."""
    if not _is_number(value) or (value <= 0 if positive else value < 0):
        what = "a positive number" if positive else "a number >= 0"
        raise ValueError(f"{name} must be {what}{extra}; got {value!r} ({type(value).__name__})")


def _integer(name: str, value, low: int) -> None:
    """Raise a ValueError naming ``name`` unless value is an integer ≥ low."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "a positive integer" if low == 1 else "a non-negative integer"
        raise ValueError(f"{name} must be {what}; got {value!r} ({type(value).__name__})")
