"""Training a score model by denoising score matching: one step, hooks for the rest, exact resume.

    model = sd.ScoreModel(sd.nets.MLP(2), sde)
    trainer = sd.Trainer(model, sde, sd.data.load("eight_gaussians"),
                         sd.TrainConfig(steps=20_000, out_dir="runs/8g", sample_every=5_000),
                         eval_data=sd.data.load("eight_gaussians", split="test"))
    trainer.train()                       # or sd.Trainer(..., resume=True) to continue from out_dir
    metrics = trainer.step(x0)            # or drive it yourself, one batch at a time ((x0, cond) if conditional)

A class-conditional model (``model(x, t, cond)``, e.g. a ScoreModel over ``sd.nets.MLP(2, num_classes=8)``)
trains on a labelled data set: each label is replaced by ∅ with probability ``config.cond_dropout`` (0.1 by
default), so one network learns p(x | c) and p(x) for classifier-free guidance. A loss with a required ``cond``
(such as [`scoresde.classifier_loss`][scoresde.classifier_loss]) trains a noise-conditional classifier with the same Trainer.

`Trainer.step`: loss = loss_fn(sde, model, x0, ...); the learning rate of the schedule at step n; the
gradient norm clipped to ``grad_clip``; an optimizer step; the EMA update. Everything periodic (logging,
sample figures, evaluation, checkpoints) is a hook ([`scoresde.training.hooks`][scoresde.training.hooks]). Samples and evaluations use
the EMA weights. All randomness is seeded and checkpointed: the data iterator's generator, the loss's generator
(times and noise) and torch's global RNG (e.g. dropout), so a resumed run repeats the uninterrupted one bit for
bit on the same device.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import signal
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .._progress import progress_bar
from .._registry import accepts_any_keyword, signature_parameters
from .._utils import check_device, require_float64
from ..data import Batches, Dataset
from ..guidance.condition import check_cond, cond_to, drop_cond, index_rows, model_null
from ..guidance.labels import model_classes
from ..losses import DSMLoss
from ..sampling import DPMSolver, ReverseSDESampler
from ..score import Score
from ..sde import is_linear
from . import monitor
from .checkpoint import (check_trainer_state, load_checkpoint, load_trainer_state, save_checkpoint, trainer_state,
                         truncate_metrics)
from .config import RESUMABLE_FIELDS, TrainConfig
from .ema import EMA, SNAPSHOT_FOLDER, drop_snapshots_after, save_ema_snapshot, snapshot_path
from .hooks import EMASnapshotHook, Hook, default_hooks
from .signals import StopOnSignal

Tensor = torch.Tensor

CHECKPOINT_NAME = "checkpoint.pt"


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss (or the gradient norm) is NaN or infinite; ``step`` is the failing step (1-based)."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class TrainingInterrupted(Exception):
    """Raised by `Trainer.train` after SIGTERM or SIGINT: the current step was finished and a checkpoint
    written (with an out_dir). ``signal`` is the signal number, ``step`` the last step, ``checkpoint`` its path."""

    def __init__(self, message: str, signal: int, step: int, checkpoint: Optional[str]):
        super().__init__(message)
        self.signal, self.step, self.checkpoint = signal, step, checkpoint


def default_sampler(sde):
    """DPM-Solver++ (2nd order, 50 steps, Tweedie denoising) for linear SDEs; for other SDEs 500 steps of the
    native Euler–Maruyama reverse-SDE loop (it needs only drift and diffusion)."""

    if is_linear(sde):
        return DPMSolver(steps=50, order=2, denoise=True)
    return ReverseSDESampler(steps=500, backend="native", denoise=False)


LR_DECAYS = ("constant", "cosine", "inverse_sqrt")


def warmup_schedule(lr: float, warmup_steps: int, decay: str = "constant",
                    total_steps: Optional[int] = None) -> Callable[[int], float]:
    """The learning rate of the update after n completed steps: linear warm-up lr · (n + 1)/w over the first w =
    ``warmup_steps`` updates, then ``decay``:

    - ``"constant"``: lr;
    - ``"cosine"``: lr · ½ (1 + cos(π (n + 1 − w)/(N − w))), reaching 0 at the last of N = ``total_steps`` updates;
    - ``"inverse_sqrt"``: lr · √(w / (n + 1)) (EDM2's decay; w ≥ 1 is taken as its reference step).

    A function of n alone, so a resumed run continues on it exactly.
    """
    if decay not in LR_DECAYS:
        raise ValueError(f"unknown lr_decay {decay!r}; valid choices: {', '.join(map(repr, LR_DECAYS))}")
    if decay == "cosine" and not total_steps:
        raise ValueError("the cosine decay needs total_steps")

    def schedule(step: int) -> float:
        n = step + 1
        if warmup_steps > 0 and n < warmup_steps:
            return lr * n / warmup_steps
        if decay == "cosine":
            span = max(int(total_steps) - warmup_steps, 1)
            return lr * 0.5 * (1 + math.cos(math.pi * min(max(n - warmup_steps, 0) / span, 1.0)))
        if decay == "inverse_sqrt":
            return lr * math.sqrt(max(warmup_steps, 1) / max(n, warmup_steps, 1))
        return lr

    return schedule


def _changes(before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, List[Any]]:
    """{key: [old, new]} of the `RESUMABLE_FIELDS` that differ between two ``TrainConfig.to_dict()``."""
    def plain(value):
        return list(value) if isinstance(value, (list, tuple)) else value
    return {k: [plain(before[k]), plain(after[k])] for k in RESUMABLE_FIELDS
            if k in before and plain(before[k]) != plain(after[k])}


def _as_dataset(data, name: str) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if torch.is_tensor(data):
        return Dataset(data, name="tensor")
    raise TypeError(f"{name} must be a scoresde.data.Dataset, a tensor (N, *D) or (for data) a "
                    f"scoresde.data.Batches; got {type(data).__name__}")


class Trainer:
    """Train a score model by denoising score matching, with EMA, periodic hooks and checkpoints.

    Args:
        model: the score model (e.g. [`scoresde.ScoreModel`][scoresde.ScoreModel]), an ``nn.Module`` score(x, t).
        sde: the forward SDE.
        data: a [`scoresde.data.Dataset`][scoresde.data.Dataset], a tensor (N, *D), or a [`scoresde.data.Batches`][scoresde.data.Batches] iterator
            (its state is checkpointed); batches are drawn from a generator seeded by ``config.seed``.
        config: a `TrainConfig`.
        eval_data: held-out data for the default evaluation (a Dataset or a tensor). For a quantized Dataset
            (``levels`` set) the evaluation reports bits/dim with uniform dequantization and bin width Δ.
        sampler: any sampler (``sample(sde, score, shape, generator)`` returning a
            [`scoresde.SampleResult`][scoresde.SampleResult]; default: `default_sampler`).
        eval_fn: ``eval_fn(model, sde) -> dict`` replacing the default evaluation (called with EMA weights).
        loss_fn: the objective: a loss object that carries its own settings, called ``loss_fn(sde, model, x0,
            generator=, shard=, cond=)`` (default: `scoresde.DSMLoss.from_config(config)`, from the config's
            ``weighting``, ``time_distribution`` and ``eps``); or a plain function ``loss_fn(sde, model, x0,
            weighting=, importance_sampling=, eps=, generator=)`` returning a scalar, which gets only the keywords
            it declares. ``cond=`` (the batch's labels) is passed when the model is conditional or the loss
            requires it (e.g. [`scoresde.classifier_loss`][scoresde.classifier_loss]).
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters, or a function ``params ->
            Optimizer`` (default: Adam with ``lr``, ``adam_betas`` and ``weight_decay`` of the config).
        lr_schedule: ``lr_schedule(n) -> learning rate`` of the update after n completed steps (default:
            `warmup_schedule` with the config's ``lr`` and ``warmup_steps``).
        hooks: the periodic actions (default: [`scoresde.training.hooks.default_hooks`][scoresde.training.hooks.default_hooks] of the config:
            log, sample figure, evaluate, with ``ema_snapshot_every`` an `scoresde.training.EMASnapshotHook`,
            checkpoint); a list replaces them.
        resume: True to continue from ``out_dir/checkpoint.pt`` when it exists (else start afresh), or the path
            of a checkpoint (which must exist).
        distributed: a `scoresde.training.DistributedContext` for data-parallel training under torchrun
            (DistributedDataParallel). ``config.batch_size`` is then the global batch: every rank draws the same
            seeded global batch. A loss with a ``shard`` argument (like [`scoresde.dsm_loss`][scoresde.dsm_loss]) gets the
            global batch and ``shard=(rank, world_size)``, draws the times and noise for all of it and evaluates
            rows ``rank::world_size`` (DistributedSampler's rule), so the loss matches a single-process run of
            the same seed. Any other loss gets those rows and a loss generator seeded per rank. Only rank 0
            writes checkpoints, figures and logs, and evaluates. Model randomness such as dropout uses each
            rank's global RNG.

    Attributes:
        global_step: number of optimizer steps done.
        history: the logged records (dicts with "step" and "loss", "nll", "bpd", ...).
        ema: the `EMA` of the weights.
        snapshot_emas: the power EMAs snapshot for a post-hoc EMA (``config.ema_snapshot_powers``; ``ema``
            itself where its power is one of them), empty unless ``config.ema_snapshot_every`` > 0.
        last_checkpoint: path of the last checkpoint written or loaded, or None.
        checkpoint_step: the step that checkpoint holds, or None.
        resume_changes: the optimisation settings the last `resume` changed, {key: [old, new]} (logged with
            the step as ``{"step": n, "changed": ...}``; see `scoresde.training.config.RESUMABLE_FIELDS`).
    """

    def __init__(self, model: nn.Module, sde, data, config: Optional[TrainConfig] = None, *,
                 eval_data=None, sampler=None, eval_fn: Optional[Callable] = None,
                 loss_fn: Optional[Callable] = None, optimizer=None,
                 lr_schedule: Optional[Callable[[int], float]] = None, hooks: Optional[Sequence[Hook]] = None,
                 resume: Union[bool, str] = False, distributed=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module score model; got {type(model).__name__}")
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        self.config, self.sde = config, sde
        self.distributed = distributed if distributed is not None and distributed.enabled else None
        if self.distributed is not None and config.batch_size % self.distributed.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes "
                             f"{self.distributed.world_size} (it is the global batch)")
        self.device = (check_device(config.device, "TrainConfig.device") if config.device is not None
                       else params[0].device)
        require_float64(self.device, "Trainer")
        self.model = model.to(self.device)
        self.train_model = self.model
        if self.distributed is not None:

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.dtype = params[0].dtype
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError(f"precision='fp16' needs a CUDA device (float16 autocast with a gradient scaler); on "
                             f"{self.device.type} use precision='bf16'")
        self._autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self._eager_model, self._compile_checked = self.train_model, False
        if config.compile:
            self.train_model = torch.compile(self.train_model)
        if loss_fn is None:
            loss_fn = DSMLoss.from_config(config)
        self.loss_fn = loss_fn
        self._loss_keywords = None if accepts_any_keyword(loss_fn) else set(signature_parameters(loss_fn))
        self._loss_shards = "shard" in signature_parameters(loss_fn)
        self._setup_labels(model, loss_fn, config)
        if isinstance(data, Batches):
            self.batches = data
        else:
            dataset = _as_dataset(data, "data")
            labels = self.uses_labels and (dataset.labels is not None or dataset.cond is not None)
            self.batches = dataset.batches(config.batch_size, seed=config.seed, labels=labels)
        self.dataset = self.batches.dataset
        self._check_labelled_data()
        self.eval_data = None if eval_data is None else _as_dataset(eval_data, "eval_data")
        self.sampler = default_sampler(sde) if sampler is None else sampler
        self.eval_fn = eval_fn
        self.optimizer = self._build_optimizer(optimizer, params)
        self.lr_schedule = (warmup_schedule(config.lr, config.warmup_steps, config.lr_decay, config.steps)
                            if lr_schedule is None else lr_schedule)
        self.hooks: List[Hook] = default_hooks(config) if hooks is None else list(hooks)
        self.ema = EMA(model, decay=config.ema_decay, warmup=config.ema_warmup, half_life=config.ema_half_life,
                       rampup=config.ema_rampup, batch_size=config.batch_size, power=config.ema_power)
        self.snapshot_emas: List[EMA] = [self.ema if gamma == config.ema_power else EMA(model, power=gamma)
                                         for gamma in config.snapshot_powers()]
        if self.snapshot_emas:
            if config.out_dir is None:
                raise ValueError("ema_snapshot_every needs an out_dir (the snapshots are files beside the checkpoint)")
            if not any(isinstance(h, EMASnapshotHook) for h in self.hooks):
                warnings.warn("ema_snapshot_every is set but the hooks have no EMASnapshotHook, so no snapshot is "
                              "written unless you call save_ema_snapshot(); start from default_hooks(config)",
                              stacklevel=2)
        # Seed offset keeps the loss's stream distinct from the data stream seeded by ``seed``; a loss that
        # cannot shard the global batch draws per rank.
        offset = 0 if self.distributed is None or self._loss_shards else 1_000_003 * self.distributed.rank
        self.loss_generator = torch.Generator(device=self.device).manual_seed(config.seed + 7919 + offset)
        self.global_step = 0
        self.history: List[Dict[str, float]] = []
        self.last_checkpoint: Optional[str] = None
        self.checkpoint_step: Optional[int] = None
        self.resume_changes: Dict[str, List[Any]] = {}
        self.bar = None
        self._stop = StopOnSignal()
        self.stop_requested = self.checkpoint_clock_due = self.out_of_time = False
        self._deadline: Optional[float] = None
        self._checkpoint_time = time.monotonic()
        if isinstance(resume, (str, os.PathLike)):
            self.resume(resume)                       # an explicit path must exist
        elif resume:
            if self.checkpoint_path is None:
                raise ValueError("resume=True needs config.out_dir (or pass a checkpoint path)")
            if os.path.isfile(self.checkpoint_path):
                self.resume()

    def _setup_labels(self, model, loss_fn, config: TrainConfig) -> None:
        """Whether batches carry conditions (a conditional model — one with a null condition, ``null_cond`` or
        ``num_classes`` — or a loss that requires ``cond``) and the condition dropout probability."""

        self.num_classes = model_classes(model)
        self.conditional = model_null(model) is not None
        try:
            param = inspect.signature(loss_fn).parameters.get("cond")
        except (TypeError, ValueError):
            param = None
        loss_requires = param is not None and param.default is inspect.Parameter.empty
        self.uses_labels = self.conditional or loss_requires
        if self.uses_labels and param is None and not accepts_any_keyword(loss_fn):
            raise ValueError(f"the model is conditional but the loss {getattr(loss_fn, '__name__', loss_fn)!r} "
                             f"takes no cond argument")
        if not self.conditional and config.cond_dropout not in (None, 0, 0.0):
            raise ValueError(f"cond_dropout={config.cond_dropout} needs a conditional model (one built with "
                             f"num_classes, cond_dim or cond_channels, or with a null_cond); this model is "
                             f"unconditional")
        default = 0.1 if self.conditional else 0.0
        self.cond_dropout = default if config.cond_dropout is None else float(config.cond_dropout)

    def _check_labelled_data(self) -> None:
        if not self.uses_labels:
            return
        ds = self.dataset
        what = ("a conditional model" + (f" (num_classes={self.num_classes})" if self.num_classes else "")
                if self.conditional else "this loss (it requires cond)")
        if (ds.labels is None and ds.cond is None) or not self.batches.labels:
            raise ValueError(f"{what} trains on labelled data; data set {ds.name!r} has no labels or cond "
                             f"(labelled sets: eight_gaussians, rings, moons, digits, an .npz with label_key or "
                             f"cond_key, an image folder of class sub-folders; or a Dataset(x, cond=...))")
        null = model_null(self.model)
        if self.conditional and ds.cond is None and torch.is_tensor(null) and null.is_floating_point():
            raise ValueError(f"the model takes a vector condition (its null is a {tuple(null.shape)} tensor) but data "
                             f"set {ds.name!r} has class labels only: give each sample its condition "
                             f"(sd.data.Dataset(x, cond=...), an .npz with cond_key=), or build the net with "
                             f"num_classes")
        if self.num_classes is not None and ds.labels is not None and ds.num_classes > self.num_classes:
            raise ValueError(f"data set {ds.name!r} has {ds.num_classes} classes but the model was built with "
                             f"num_classes={self.num_classes}")

    def _build_optimizer(self, optimizer, params) -> torch.optim.Optimizer:
        c = self.config
        self._default_optimizer = optimizer is None
        if optimizer is None:
            return torch.optim.Adam(params, lr=c.lr, betas=c.adam_betas, weight_decay=c.weight_decay)
        if isinstance(optimizer, torch.optim.Optimizer):
            return optimizer
        if callable(optimizer):
            built = optimizer(params)
            if not isinstance(built, torch.optim.Optimizer):
                raise TypeError(f"optimizer(params) must return a torch.optim.Optimizer; got {type(built).__name__}")
            return built
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or a function params -> Optimizer; "
                        f"got {type(optimizer).__name__}")

    # -- the schedule ---------------------------------------------------------------------------------------
    def learning_rate(self, step: int) -> float:
        """The learning rate of the update after ``step`` completed steps (``lr_schedule(step)``)."""
        return float(self.lr_schedule(step))

    @property
    def checkpoint_path(self) -> Optional[str]:
        """``out_dir/checkpoint.pt``, or None without an out_dir."""
        out = self.config.out_dir
        return None if out is None else os.path.join(out, CHECKPOINT_NAME)

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (always, unless it is a rank > 0 of a distributed run)."""
        return self.distributed is None or self.distributed.is_main

    # -- one step -------------------------------------------------------------------------------------------
    def loss(self, x0: Tensor, cond: Optional[Tensor] = None, micro: Tuple[int, int] = (0, 1)) -> Tensor:
        """The training loss of a global batch x0 (B, *D) (and its condition cond — labels (B,), a tensor (B, ...)
        or a dict — for a conditional model, with condition dropout to the model's null applied here) with the
        configured weighting (this rank's part; with ``micro`` = (j, k), the
        j-th of k micro-batches of it, drawn from the same times and noise as the whole)."""
        c = self.config
        extra = {}
        if self.uses_labels:
            if cond is None:
                raise ValueError("this model is trained on conditions: pass the batch as (x0, cond)")
            cond = check_cond(cond, x0.shape[0], model=self.model, num_classes=self.num_classes, device=x0.device,
                              null_allowed=False)
            if self.cond_dropout > 0:       # the model's null: a learned null embedding gets its gradient here
                cond = drop_cond(cond, self.cond_dropout, model_null(self.model), generator=self.loss_generator)
        rank, world = (0, 1) if self.distributed is None else (self.distributed.rank, self.distributed.world_size)
        j, k = micro
        if k > 1:
            extra["shard"] = (rank + world * j, world * k)      # rows rank::world, then j::k of those
        elif self.distributed is not None:
            if self._loss_shards:
                extra["shard"] = (rank, world)
            else:
                x0 = x0[rank::world]
                cond = index_rows(cond, slice(rank, None, world))
        if cond is not None:
            extra["cond"] = cond
        # The config's settings, of which a loss gets those it declares (a loss object such as DSMLoss declares
        # none: it carries its own).
        options = {"generator": self.loss_generator, "weighting": c.weighting, "eps": c.eps,
                   "importance_sampling": c.time_distribution == "importance"}
        if c.time_distribution not in ("uniform", "importance"):
            options.update(importance_sampling=False, time_distribution=c.time_distribution,
                           importance_weight=c.importance_weight)
        if self._loss_keywords is not None:
            options = {k: v for k, v in options.items() if k in self._loss_keywords}
        if self._autocast is None:
            return self.loss_fn(self.sde, self.train_model, x0, **options, **extra)
        with torch.autocast(device_type=self.device.type, dtype=self._autocast):
            return self.loss_fn(self.sde, self.train_model, x0, **options, **extra).float()

    def _first_compiled_loss(self, x0: Tensor, cond: Optional[Tensor]) -> Tensor:
        """The loss through the compiled model; if compiling fails, fall back to the eager model with a warning."""
        state = self.loss_generator.get_state()
        try:
            return self.loss(x0, cond)
        except Exception as err:                      # the backend's failure (no compiler, unsupported op, …)
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                          f"); training continues without compile", RuntimeWarning)
            self.train_model = self._eager_model
            self.loss_generator.set_state(state)
            return self.loss(x0, cond)

    def _synchronize(self, loss: Tensor) -> Tuple[float, bool, bool, bool]:
        """(mean loss over the ranks, whether any rank was signalled to stop, whether any rank's checkpoint clock
        has run out, whether any rank's time budget has): one all-reduce per step, so that every rank takes the
        same decisions."""
        c = self.config
        now = time.monotonic()
        stop = self._stop.requested
        clock = c.out_dir is not None and c.checkpoint_seconds > 0 and now - self._checkpoint_time >= c.checkpoint_seconds
        late = self._deadline is not None and now >= self._deadline
        if self.distributed is None:
            return float(loss), stop, clock, late

        values = torch.tensor([float(loss), stop, clock, late], device=loss.device, dtype=torch.float64)
        dist.all_reduce(values)
        return (float(values[0]) / self.distributed.world_size, bool(values[1] > 0), bool(values[2] > 0),
                bool(values[3] > 0))

    def step(self, batch) -> Dict[str, float]:
        """One optimizer step on a batch x0 (B, *D), or (x0, cond) with labels (B,), a tensor (B, ...) or a dict;
        returns {"step", "loss",
        "lr", "grad_norm"}.

        Raises:
            NonFiniteLossError: the loss or gradient norm is NaN/inf; the message names the step. No update is
                applied for that step.
        """
        c = self.config
        x0, cond = batch if isinstance(batch, (tuple, list)) else (batch, None)
        x0 = x0.to(device=self.device, dtype=self.dtype)
        cond = None if cond is None or not self.uses_labels else cond_to(cond, self.device, self.dtype)
        lr = self.learning_rate(self.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        compiled_first = self.train_model is not self._eager_model and not self._compile_checked
        self._compile_checked = True
        if c.accumulate == 1:
            loss = self._first_compiled_loss(x0, cond) if compiled_first else self.loss(x0, cond)
            reported, self.stop_requested, self.checkpoint_clock_due, self.out_of_time = self._synchronize(
                loss.detach())
            if not math.isfinite(reported):
                raise self._nonfinite("loss", reported)
            self.optimizer.zero_grad(set_to_none=True)
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        else:
            reported = self._accumulate(x0, cond)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        max_norm = c.grad_clip if c.grad_clip is not None else float("inf")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if self.scaler is not None:                  # fp16: an overflow skips the step and lowers the scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if not math.isfinite(grad_norm):
                raise self._nonfinite("gradient norm", grad_norm)
            self.optimizer.step()
        self.ema.update()
        for ema in self._extra_emas():
            ema.update()
        self.global_step += 1
        return {"step": self.global_step, "loss": reported, "lr": lr, "grad_norm": grad_norm}

    def _accumulate(self, x0: Tensor, cond: Optional[Tensor]) -> float:
        """Gradients of the global batch in ``accumulate`` micro-batches: each replays the loss generator from the
        same state, so that the times, noise and label dropout are those of one whole-batch call, and evaluates its
        strided rows; the k gradients of (micro-batch mean)/k sum to the gradient of the batch mean."""

        k = self.config.accumulate
        if not self._loss_shards:
            raise ValueError(f"accumulate = {k} needs a loss that takes shard= (as dsm_loss does), so that the "
                             f"micro-batches share the whole batch's draws; {getattr(self.loss_fn, '__name__', 'it')} "
                             f"does not")
        state = self.loss_generator.get_state()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for j in range(k):
            self.loss_generator.set_state(state)
            quiet = j < k - 1 and hasattr(self.train_model, "no_sync")
            with self.train_model.no_sync() if quiet else contextlib.nullcontext():
                part = self.loss(x0, cond, micro=(j, k)) / k
                (part if self.scaler is None else self.scaler.scale(part)).backward()
            total = total + part.detach()
        reported, self.stop_requested, self.checkpoint_clock_due, self.out_of_time = self._synchronize(total)
        if not math.isfinite(reported):
            raise self._nonfinite("loss", reported)
        return reported

    def _extra_emas(self) -> List[EMA]:
        """The snapshot EMAs other than `ema` (updated and checkpointed beside it)."""
        return [ema for ema in self.snapshot_emas if ema is not self.ema]

    def train(self, num_steps: Optional[int] = None, max_seconds: Optional[float] = None) -> List[Dict[str, float]]:
        """Run ``num_steps`` more steps (default: until ``config.steps``) with the hooks; returns `history`.

        With ``max_seconds``, training also ends (normally, hooks' ends included) after the step during which
        that much wall time has passed since the call (agreed by all ranks).

        SIGTERM and SIGINT (SLURM preemption, ``scancel``, Ctrl-C) are caught while training: the current step is
        finished, a checkpoint is written (every rank stops at the same step; rank 0 writes), and
        `TrainingInterrupted` is raised with a message saying how to resume. A second signal interrupts
        at once.

        Raises:
            NonFiniteLossError: see `step`. Nothing is written for the failing step, so the last
                checkpoint on disk stays the last good one.
            TrainingInterrupted: after a signal, as above.
        """
        c = self.config
        target = c.steps if num_steps is None else self.global_step + int(num_steps)
        if c.progress and self.is_main:

            self.bar = progress_bar(total=target, initial=self.global_step, unit="step", desc="train",
                                    dynamic_ncols=True)       # tqdm on a terminal, lines into a log file
        self.model.train()
        for hook in self.hooks:
            hook.start(self)
        self._deadline = None if max_seconds is None else time.monotonic() + float(max_seconds)
        try:
            with self._stop:
                while self.global_step < target:
                    metrics = self.step(next(self.batches))
                    if self.bar is not None:
                        self.bar.update(1)
                    for hook in self.hooks:
                        hook.after_step(self, metrics, last=self.global_step == target or self.out_of_time)
                    if self.stop_requested:
                        for hook in self.hooks:
                            hook.stop(self)
                        raise self._interrupted()
                    if self.out_of_time:
                        break
        finally:
            self._deadline = None
            if self.bar is not None:
                self.bar.close()
                self.bar = None
        for hook in self.hooks:
            hook.end(self)
        return self.history

    def _interrupted(self) -> "TrainingInterrupted":
        signum, name = self._stop.signum if self._stop.requested else signal.SIGTERM, self._stop.name
        path = None
        if self.config.out_dir is not None:
            path = self.checkpoint_path if self.checkpoint_step == self.global_step else self.save_checkpoint()
            how = (f"checkpoint written to {path}; continue with `scoresde train --out {self.config.out_dir} "
                   f"--resume` (or Trainer(..., resume=True))")
        else:
            how = "no out_dir, so no checkpoint was written"
        return TrainingInterrupted(f"stopped by {name} after step {self.global_step}; {how}", signal=signum,
                                   step=self.global_step, checkpoint=path)

    def _nonfinite(self, what: str, value: float) -> NonFiniteLossError:
        failing = self.global_step + 1
        if self.last_checkpoint is not None:
            kept = f"the last good checkpoint (step {self.checkpoint_step}) is kept at {self.last_checkpoint}"
        else:
            kept = "no checkpoint was written before it"
        return NonFiniteLossError(f"non-finite {what} ({value}) at step {failing}; training stopped, {kept}",
                                  step=failing)

    def log(self, record: Dict[str, float]) -> None:
        """Append a record to `history` and (on the main process, with an out_dir) to ``metrics.jsonl``."""
        self.history.append(record)
        if self.config.out_dir is not None and self.is_main:
            os.makedirs(self.config.out_dir, exist_ok=True)
            with open(os.path.join(self.config.out_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    # -- sampling and evaluation (EMA weights; scoresde.training.monitor) ----------------------------------
    def _score(self, cond=None) -> Score:
        """The model as a score function in any floating dtype; a conditional model's score given ``cond``."""
        return monitor.model_score(self, cond)

    def sample(self, n: Optional[int] = None, seed: Optional[int] = None) -> Tensor:
        """Draw ``n`` samples (default ``num_samples``: 1000 points, or 64 images) with the EMA weights: (n, *D).

        The sampler's generator is seeded by ``seed`` (default ``config.seed``), so figures at different steps
        start from the same noise, and training's random streams are untouched. A conditional model draws
        sample i from class i mod K (unguided: the conditional score).
        """
        return monitor.sample(self, n, seed)

    def save_samples(self, path: Optional[str] = None) -> str:
        """Sample with the EMA weights and save the figure (default ``out_dir/samples_<step>.png``)."""
        return monitor.save_figure(self, path)

    def evaluate(self) -> Dict[str, float]:
        """Evaluate with the EMA weights: ``eval_fn`` if given, else NLL (and bits/dim) on ``eval_data``.

        Default: [`scoresde.evaluate_likelihood`][scoresde.evaluate_likelihood] on the first ``num_eval``
        held-out points (exact divergence for d ≤ 16, else Hutchinson with 1 Rademacher probe; quantized data
        dequantized with a fixed seed) gives "nll" and "nll_stderr" in nats, plus "bpd" and "bpd_stderr" for
        quantized data; for a conditional model with labelled eval_data they are −log p(x | c) with each point's
        label. A classifier gets "accuracy" and "class_nll" on the noised held-out points (one t ~ U(eps, T)
        each, fixed seed). Returns {} when there is no eval_data.
        """
        return monitor.evaluate(self)

    # -- checkpoints ----------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue exactly: model, EMA, optimizer, step, RNG and data states, config
        (`scoresde.training.checkpoint.trainer_state`)."""
        return trainer_state(self)

    @property
    def snapshot_folder(self) -> Optional[str]:
        """``out_dir/ema_snapshots``, or None without an out_dir."""
        out = self.config.out_dir
        return None if out is None else os.path.join(out, SNAPSHOT_FOLDER)

    def save_ema_snapshot(self) -> Optional[str]:
        """Write the snapshot EMAs' averages at this step atomically to ``out_dir/ema_snapshots/ema_<step>.pt``
        (rank 0; other ranks return None), for [`scoresde.post_hoc_ema`][scoresde.post_hoc_ema]; returns the path."""
        if not self.snapshot_emas:
            raise ValueError("no snapshot EMAs: set ema_snapshot_every (and ema_snapshot_powers or ema_power)")
        if self.snapshot_folder is None:
            raise ValueError("config.out_dir is None: nowhere to write EMA snapshots")
        if not self.is_main:
            return None
        return save_ema_snapshot(self.snapshot_emas, snapshot_path(self.snapshot_folder, self.global_step))

    def save_checkpoint(self, path: Optional[str] = None) -> str:
        """Write `state_dict` atomically (default ``out_dir/checkpoint.pt``); returns the path."""
        path = self.checkpoint_path if path is None else os.fspath(path)
        if path is None:
            raise ValueError("no path given and config.out_dir is None")
        if self.is_main:
            save_checkpoint(self.state_dict(), path)
        if self.distributed is not None:

            dist.barrier()  # every rank may read the checkpoint once rank 0 has written it
        self.last_checkpoint, self.checkpoint_step = path, self.global_step
        self._checkpoint_time = time.monotonic()
        return path

    def check_state_dict(self, state: Dict[str, Any]) -> None:
        """Raise a ValueError if ``state`` cannot be loaded (architecture, EMA, optimizer, batch iterator), so
        that `load_state_dict` changes nothing unless everything fits."""
        check_trainer_state(self, state)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore from `state_dict` after `check_state_dict`: nothing is loaded unless all of it fits."""
        load_trainer_state(self, state)

    def resume(self, path: Optional[str] = None) -> int:
        """Load a checkpoint (default ``out_dir/checkpoint.pt``) and continue from its step; returns the step.

        The checkpoint is read with ``torch.load(weights_only=True)``. The current config is kept (e.g. a larger
        ``steps``, or another of `scoresde.training.config.RESUMABLE_FIELDS`: lr, batch_size, … , logged as a
        change with the step it takes effect); the checkpoint's config is in ``load_checkpoint(path)["config"]``. Records of
        ``out_dir/metrics.jsonl`` after the checkpoint's step (written by the interrupted run) are dropped, and
        so are EMA snapshots taken after it, so the resumed run does not repeat them.
        """
        path = self.checkpoint_path if path is None else os.fspath(path)
        if path is None:
            raise ValueError("no path given and config.out_dir is None")
        state = load_checkpoint(path, map_location="cpu")
        self.load_state_dict(state)
        self._apply_settings()
        self.last_checkpoint, self.checkpoint_step = path, self.global_step
        self._checkpoint_time = time.monotonic()
        if self.config.out_dir is not None and self.is_main:
            truncate_metrics(os.path.join(self.config.out_dir, "metrics.jsonl"), self.global_step)
            drop_snapshots_after(self.snapshot_folder, self.global_step)
        self.resume_changes = _changes(state.get("config") or {}, self.config.to_dict())
        if self.resume_changes:
            self.log({"step": self.global_step, "changed": self.resume_changes})
        return self.global_step

    def _apply_settings(self) -> None:
        """After loading a checkpoint, the config's optimisation settings replace the stored ones (a resumed run
        may change them, `scoresde.training.config.RESUMABLE_FIELDS`): the default Adam's weight decay and betas,
        the EMA's decay profile and batch size. The learning rate is the schedule's at every step anyway."""
        c = self.config
        if self._default_optimizer:
            for group in self.optimizer.param_groups:
                group["weight_decay"], group["betas"] = c.weight_decay, tuple(c.adam_betas)
        if self.ema.power is None:
            self.ema.decay, self.ema.warmup = float(c.ema_decay), bool(c.ema_warmup)
            self.ema.half_life, self.ema.rampup = c.ema_half_life, float(c.ema_rampup)
        self.ema.batch_size = int(c.batch_size)
