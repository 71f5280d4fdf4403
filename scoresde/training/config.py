"""The settings of a training run: :class:`TrainConfig` (plain values only, so they fit in a checkpoint)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..losses import WEIGHTINGS


@dataclass
class TrainConfig:
    """Settings of a training run (plain values only, so they fit in a checkpoint).

    Attributes:
        steps: total number of optimizer steps.
        batch_size: samples per step.
        lr: peak learning rate (of the default Adam optimizer and warm-up schedule).
        warmup_steps: linear learning-rate warm-up: lr · min(1, (n + 1)/warmup_steps) at step n (0: none); the
            default schedule of :class:`scoresde.Trainer` (``lr_schedule=`` replaces it).
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        weight_decay: Adam's (L2) weight decay.
        adam_betas: Adam's (β₁, β₂).
        ema_decay: decay of the weight EMA; ema_warmup uses min(decay, (1 + n)/(10 + n)).
        weighting: a name in :data:`scoresde.WEIGHTINGS` ("sigma2", "likelihood", "none") or an import path
            (see :func:`scoresde.dsm_loss`).
        importance_sampling: sample t ∝ g²/σ² (with likelihood weighting).
        eps: smallest training time; also the time of the evaluated density p_eps.
        seed: seeds the data order and the loss's times and noise (global RNG: seed it yourself).
        log_every: record the mean loss every this many steps.
        sample_every: save a PNG of samples every this many steps (0: never).
        num_samples: number of samples in that figure.
        eval_every: evaluate NLL / bits per dim every this many steps (0: never).
        num_eval: number of held-out points evaluated.
        eval_rtol, eval_atol: tolerances of the likelihood's adaptive ODE solver (dopri5).
        checkpoint_every: write ``out_dir/checkpoint.pt`` every this many steps (0: only at the end).
        out_dir: folder for checkpoints, figures and ``metrics.jsonl`` (None: write nothing).
        device: where to train (None: where the model's parameters are).
        progress: show a tqdm progress bar (loss and steps/s).
    """

    steps: int = 10_000
    batch_size: int = 128
    lr: float = 2e-4
    warmup_steps: int = 0
    grad_clip: Optional[float] = 1.0
    weight_decay: float = 0.0
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    ema_decay: float = 0.999
    ema_warmup: bool = True
    weighting: str = "sigma2"
    importance_sampling: bool = False
    eps: float = 1e-5
    seed: int = 0
    log_every: int = 100
    sample_every: int = 0
    num_samples: int = 64
    eval_every: int = 0
    num_eval: int = 256
    eval_rtol: float = 1e-5
    eval_atol: float = 1e-5
    checkpoint_every: int = 0
    out_dir: Optional[str] = None
    device: Optional[str] = None
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "num_samples", "num_eval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in ("warmup_steps", "sample_every", "eval_every", "checkpoint_every", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive; got {self.lr!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None; got {self.grad_clip!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay!r}")
        if not (isinstance(self.weighting, str) and (self.weighting in WEIGHTINGS or ":" in self.weighting)):
            raise ValueError(f"unknown weighting {self.weighting!r}; valid choices: "
                             f"{', '.join(repr(w) for w in WEIGHTINGS)} (or an import path 'package.module:fn')")
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        if self.out_dir is not None:
            self.out_dir = os.fspath(self.out_dir)

    def to_dict(self) -> Dict[str, Any]:
        """A plain dict (tuples become lists) that ``torch.load(weights_only=True)`` reads back."""
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise a TypeError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TypeError(f"unknown TrainConfig fields {unknown}; valid: {sorted(known)}")
        return cls(**d)
