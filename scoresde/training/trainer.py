"""Training a score model by denoising score matching: Adam, warm-up, clipping, EMA, checkpoints, exact resume.

    model = sd.ScoreModel(sd.nets.MLP(2), sde)
    trainer = sd.Trainer(model, sde, sd.data.load("eight_gaussians"),
                         sd.TrainConfig(steps=20_000, out_dir="runs/8g", sample_every=5_000),
                         eval_data=sd.data.load("eight_gaussians", split="test"))
    trainer.train()                       # or sd.Trainer(..., resume=True) to continue from out_dir

Every step: x_0 ← next batch; loss = dsm_loss(sde, model, x_0, ...); Adam step with the learning rate
lr · min(1, (n + 1)/warmup_steps) at step n and the gradient norm clipped to ``grad_clip``; EMA update.
Samples and evaluations use the EMA weights. All randomness is seeded and checkpointed: the data iterator's
generator, the loss's generator (times and noise) and torch's global RNG (e.g. dropout), so a resumed run
repeats the uninterrupted one bit for bit on the same device.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from .._utils import check_choice
from ..data import Batches, Dataset, dequantize
from .checkpoint import (CHECKPOINT_FORMAT, check_state_dict, load_checkpoint, rng_state, save_checkpoint,
                         set_rng_state)
from .ema import EMA

Tensor = torch.Tensor

WEIGHTINGS = ("sigma2", "likelihood", "none")
CHECKPOINT_NAME = "checkpoint.pt"


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss (or the gradient norm) is NaN or infinite; ``step`` is the failing step (1-based)."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclass
class TrainConfig:
    """Settings of a training run (plain values only, so they fit in a checkpoint).

    Attributes:
        steps: total number of optimizer steps.
        batch_size: samples per step.
        lr: peak learning rate of Adam.
        warmup_steps: linear learning-rate warm-up: lr · min(1, (n + 1)/warmup_steps) at step n (0: none).
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        weight_decay: Adam's (L2) weight decay.
        adam_betas: Adam's (β₁, β₂).
        ema_decay: decay of the weight EMA; ema_warmup uses min(decay, (1 + n)/(10 + n)).
        weighting: "sigma2", "likelihood" or "none" (see :func:`scoresde.dsm_loss`).
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
        check_choice(self.weighting, WEIGHTINGS, "weighting")
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


# -- defaults ----------------------------------------------------------------------------------------------
def default_sampler(sde):
    """DPM-Solver++ (2nd order, 50 steps, Tweedie denoising) for linear SDEs; for other SDEs 500 steps of the
    native Euler–Maruyama reverse-SDE loop (it needs only drift and diffusion)."""
    from ..sampling import DPMSolver, ReverseSDESampler

    if all(hasattr(sde, name) for name in ("scale", "std", "log_snr", "time_from_log_snr")):
        return DPMSolver(steps=50, order=2, denoise=True)
    return ReverseSDESampler(steps=500, backend="native", denoise=False)


def save_sample_figure(x: Tensor, path: str, data_range: Optional[Tuple[float, float]] = None,
                       title: Optional[str] = None) -> str:
    """Save samples as a PNG through :func:`scoresde.plot.samples` (scatter for (B, 2), image grid for images,
    clipped to ``data_range``, default (−1, 1)). Uses matplotlib's object API: no pyplot state, no backend change.
    Returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..plot import samples

    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    samples(x, ax=fig.add_subplot(1, 1, 1), title=title, data_range=data_range or (-1.0, 1.0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _as_dataset(data, name: str) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if torch.is_tensor(data):
        return Dataset(data, name="tensor")
    raise TypeError(f"{name} must be a scoresde.data.Dataset, a tensor (N, *D) or (for data) a "
                    f"scoresde.data.Batches; got {type(data).__name__}")


class Trainer:
    """Train a score model by denoising score matching, with EMA, periodic samples/evaluation and checkpoints.

    Args:
        model: the score model (e.g. :class:`scoresde.ScoreModel`), an ``nn.Module`` score(x, t).
        sde: the forward SDE.
        data: a :class:`scoresde.data.Dataset`, a tensor (N, *D), or a :class:`scoresde.data.Batches` iterator
            (its state is checkpointed); batches are drawn from a generator seeded by ``config.seed``.
        config: a :class:`TrainConfig`.
        eval_data: held-out data for the default evaluation (a Dataset or a tensor). For a quantized Dataset
            (``levels`` set) the evaluation reports bits/dim with uniform dequantization and bin width Δ.
        sampler: any object with ``sample(sde, score, shape, generator)`` returning samples or a result with
            ``.x`` (default: :func:`default_sampler`).
        eval_fn: ``eval_fn(model, sde) -> dict`` replacing the default evaluation (called with EMA weights).
        loss_fn: ``loss_fn(sde, model, x0, weighting=, importance_sampling=, eps=, generator=)`` returning a
            scalar (default: :func:`scoresde.dsm_loss`).
        resume: True to continue from ``out_dir/checkpoint.pt`` when it exists (else start afresh), or the path
            of a checkpoint (which must exist).
        distributed: a :class:`scoresde.training.DistributedContext` for data-parallel training under torchrun
            (DistributedDataParallel). ``config.batch_size`` is then the global batch: every rank draws the same
            seeded global batch and evaluates its strided shard (rows ``rank::world_size``, DistributedSampler's
            rule), with the times and noise drawn for the global batch (``dsm_loss(shard=...)``), so the loss
            matches a single-process run of the same seed. Only rank 0 writes checkpoints, figures and logs, and
            evaluates. Model randomness such as dropout uses each rank's global RNG.

    Attributes:
        step: number of optimizer steps done.
        history: the logged records (dicts with "step" and "loss", "nll", "bpd", ...).
        ema: the :class:`EMA` of the weights.
        last_checkpoint: path of the last checkpoint written or loaded, or None.
    """

    def __init__(self, model: nn.Module, sde, data, config: Optional[TrainConfig] = None, *,
                 eval_data=None, sampler=None, eval_fn: Optional[Callable] = None,
                 loss_fn: Optional[Callable] = None, resume: Union[bool, str] = False, distributed=None):
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
        if self.distributed is not None:
            if config.batch_size % self.distributed.world_size:
                raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes "
                                 f"{self.distributed.world_size} (it is the global batch)")
            if loss_fn is not None:
                raise ValueError("distributed training shards the default dsm_loss; a custom loss_fn is not "
                                 "supported with distributed=")
        self.device = torch.device(config.device) if config.device is not None else params[0].device
        self.model = model.to(self.device)
        self.train_model = self.model
        if self.distributed is not None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.dtype = params[0].dtype
        if isinstance(data, Batches):
            self.batches = data
        else:
            self.batches = _as_dataset(data, "data").batches(config.batch_size, seed=config.seed)
        self.dataset = self.batches.dataset
        self.eval_data = None if eval_data is None else _as_dataset(eval_data, "eval_data")
        self.sampler = default_sampler(sde) if sampler is None else sampler
        self.eval_fn = eval_fn
        if loss_fn is None:
            from ..losses import dsm_loss as loss_fn
        self.loss_fn = loss_fn
        self.optimizer = torch.optim.Adam(params, lr=config.lr, betas=config.adam_betas,
                                          weight_decay=config.weight_decay)
        self.ema = EMA(model, decay=config.ema_decay, warmup=config.ema_warmup)
        # Seed offset keeps the loss's stream distinct from the data stream seeded by ``seed``.
        self.loss_generator = torch.Generator(device=self.device).manual_seed(config.seed + 7919)
        self.step = 0
        self.history: List[Dict[str, float]] = []
        self.last_checkpoint: Optional[str] = None
        self._checkpoint_step: Optional[int] = None
        if isinstance(resume, (str, os.PathLike)):
            self.resume(resume)                       # an explicit path must exist
        elif resume:
            if self.checkpoint_path is None:
                raise ValueError("resume=True needs config.out_dir (or pass a checkpoint path)")
            if os.path.isfile(self.checkpoint_path):
                self.resume()

    # -- the schedule ---------------------------------------------------------------------------------------
    def learning_rate(self, step: int) -> float:
        """lr · min(1, (step + 1)/warmup_steps) for the update after ``step`` completed steps."""
        warm = self.config.warmup_steps
        return self.config.lr * (min(1.0, (step + 1) / warm) if warm > 0 else 1.0)

    @property
    def checkpoint_path(self) -> Optional[str]:
        """``out_dir/checkpoint.pt``, or None without an out_dir."""
        out = self.config.out_dir
        return None if out is None else os.path.join(out, CHECKPOINT_NAME)

    # -- training -------------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        """Whether this process writes files (always, unless it is a rank > 0 of a distributed run)."""
        return self.distributed is None or self.distributed.is_main

    def loss(self, x0: Tensor) -> Tensor:
        """The training loss of a batch x0 (B, *D) with the configured weighting (this rank's shard of it)."""
        c = self.config
        extra = {}
        if self.distributed is not None:
            extra["shard"] = (self.distributed.rank, self.distributed.world_size)
        return self.loss_fn(self.sde, self.train_model, x0, weighting=c.weighting,
                            importance_sampling=c.importance_sampling, eps=c.eps, generator=self.loss_generator,
                            **extra)

    def _global_mean(self, value: Tensor) -> Tensor:
        """Mean of a scalar over the ranks (itself in a single process)."""
        if self.distributed is None:
            return value
        import torch.distributed as dist

        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.distributed.world_size

    def train(self, num_steps: Optional[int] = None) -> List[Dict[str, float]]:
        """Run ``num_steps`` more steps (default: until ``config.steps``); returns :attr:`history`.

        Raises:
            NonFiniteLossError: the loss or gradient norm is NaN/inf; the message names the step. Nothing is
                written for that step, so the last checkpoint on disk stays the last good one.
        """
        c = self.config
        target = c.steps if num_steps is None else self.step + int(num_steps)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        bar = None
        if c.progress and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=target, initial=self.step, unit="step", desc="train", dynamic_ncols=True)
        self.model.train()
        running, count, start, start_step = 0.0, 0, time.perf_counter(), self.step
        try:
            while self.step < target:
                x0 = next(self.batches).to(device=self.device, dtype=self.dtype)
                lr = self.learning_rate(self.step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss = self.loss(x0)
                reported = self._global_mean(loss.detach())
                if not bool(torch.isfinite(reported)):
                    raise self._nonfinite("loss", float(reported))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                max_norm = c.grad_clip if c.grad_clip is not None else float("inf")
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
                if not math.isfinite(grad_norm):
                    raise self._nonfinite("gradient norm", grad_norm)
                self.optimizer.step()
                self.ema.update()
                self.step += 1
                running += float(reported)
                count += 1
                if bar is not None:
                    bar.update(1)
                if self.step % c.log_every == 0 or self.step == target:
                    elapsed = time.perf_counter() - start
                    record = {"step": self.step, "loss": running / count, "lr": lr, "grad_norm": grad_norm,
                              "steps_per_sec": (self.step - start_step) / max(elapsed, 1e-9)}
                    self._log(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
                    running, count = 0.0, 0
                if c.sample_every and self.step % c.sample_every == 0 and c.out_dir is not None and self.is_main:
                    self.save_samples()
                if c.eval_every and self.step % c.eval_every == 0 and self.is_main:
                    metrics = self.evaluate()
                    if metrics:
                        self._log({"step": self.step, **metrics})
                if c.checkpoint_every and self.step % c.checkpoint_every == 0 and c.out_dir is not None:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        if c.out_dir is not None and (self.last_checkpoint is None or self._checkpoint_step != self.step):
            self.save_checkpoint()
        return self.history

    def _nonfinite(self, what: str, value: float) -> NonFiniteLossError:
        failing = self.step + 1
        if self.last_checkpoint is not None:
            kept = f"the last good checkpoint (step {self._checkpoint_step}) is kept at {self.last_checkpoint}"
        else:
            kept = "no checkpoint was written before it"
        return NonFiniteLossError(f"non-finite {what} ({value}) at step {failing}; training stopped, {kept}",
                                  step=failing)

    def _log(self, record: Dict[str, float]) -> None:
        self.history.append(record)
        if self.config.out_dir is not None and self.is_main:
            os.makedirs(self.config.out_dir, exist_ok=True)
            with open(os.path.join(self.config.out_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    # -- sampling and evaluation (EMA weights) --------------------------------------------------------------
    def _score(self) -> Callable[[Tensor, Tensor], Tensor]:
        """The model as a score function that accepts any floating dtype (cast to the model's and back)."""
        model, dtype = self.model, self.dtype

        def score(x: Tensor, t: Tensor) -> Tensor:
            return model(x.to(dtype), t.to(dtype)).to(x.dtype)

        return score

    def sample(self, n: Optional[int] = None, seed: Optional[int] = None) -> Tensor:
        """Draw ``n`` samples (default ``num_samples``) with the EMA weights: shape (n, *D).

        The sampler's generator is seeded by ``seed`` (default ``config.seed``), so figures at different steps
        start from the same noise, and training's random streams are untouched.
        """
        n = self.config.num_samples if n is None else int(n)
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed if seed is None else seed)
        was_training = self.model.training
        self.model.eval()
        try:
            with self.ema.average_parameters(), torch.no_grad():
                res = self.sampler.sample(self.sde, self._score(), (n,) + self.dataset.shape, generator)
        finally:
            self.model.train(was_training)
        return res.x if hasattr(res, "x") else res

    def save_samples(self, path: Optional[str] = None) -> str:
        """Sample with the EMA weights and save the figure (default ``out_dir/samples_<step>.png``)."""
        if path is None:
            if self.config.out_dir is None:
                raise ValueError("no path given and config.out_dir is None")
            path = os.path.join(self.config.out_dir, f"samples_{self.step:07d}.png")
        return save_sample_figure(self.sample(), path, self.dataset.data_range, title=f"step {self.step}")

    def evaluate(self) -> Dict[str, float]:
        """Evaluate with the EMA weights: ``eval_fn`` if given, else NLL (and bits/dim) on ``eval_data``.

        Default, with d elements per sample and the first ``num_eval`` held-out points: log p_eps(x) from
        :func:`scoresde.log_likelihood` (exact divergence for d ≤ 16, else Hutchinson with 1 Rademacher
        probe) gives "nll" = −mean log p in nats and "nll_stderr". For quantized data (bin width Δ) the points
        are dequantized with a fixed seed and "bpd" = nll/(d ln 2) + log₂(1/Δ) with "bpd_stderr" is added.
        Returns {} when there is no eval_data.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            with self.ema.average_parameters():
                if self.eval_fn is not None:
                    return dict(self.eval_fn(self.model, self.sde))
                return self._default_eval()
        finally:
            self.model.train(was_training)

    def _default_eval(self) -> Dict[str, float]:
        if self.eval_data is None:
            return {}
        from ..likelihood import bits_per_dim_from_log_prob, log_likelihood

        ds = self.eval_data
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed + 104729)
        x = ds.x[: self.config.num_eval].to(device=self.device, dtype=self.dtype)
        if ds.levels is not None:
            x = dequantize(x, ds.levels, ds.data_range, generator)
        d = x[0].numel()
        divergence = "exact" if d <= 16 else "hutchinson"
        res = log_likelihood(self.sde, self._score(), x, divergence=divergence, eps=self.config.eps,
                             rtol=self.config.eval_rtol, atol=self.config.eval_atol, generator=generator)
        nll = -res.log_prob.double()
        n = nll.shape[0]
        metrics = {"nll": float(nll.mean()), "nll_stderr": float(nll.std() / math.sqrt(n)) if n > 1 else math.nan}
        if ds.levels is not None:
            bpd = bits_per_dim_from_log_prob(-nll, d, ds.bin_width)
            metrics["bpd"] = float(bpd.mean())
            metrics["bpd_stderr"] = float(bpd.std() / math.sqrt(n)) if n > 1 else math.nan
        return metrics

    # -- checkpoints ----------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue exactly: model, EMA, optimizer, step, RNG and data states, config."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {**rng_state(self.device), "loss_generator": self.loss_generator.get_state()},
            "data": self.batches.state_dict(),
            "config": self.config.to_dict(),
            "history": list(self.history),
        }

    def save_checkpoint(self, path: Optional[str] = None) -> str:
        """Write :meth:`state_dict` atomically (default ``out_dir/checkpoint.pt``); returns the path."""
        path = self.checkpoint_path if path is None else os.fspath(path)
        if path is None:
            raise ValueError("no path given and config.out_dir is None")
        if self.is_main:
            save_checkpoint(self.state_dict(), path)
        if self.distributed is not None:
            import torch.distributed as dist

            dist.barrier()  # every rank may read the checkpoint once rank 0 has written it
        self.last_checkpoint, self._checkpoint_step = path, self.step
        return path

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; a different architecture raises a ValueError naming the keys."""
        check_state_dict(self.model.state_dict(), state["model"], what="model")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        set_rng_state(state["rng"])
        self.loss_generator.set_state(state["rng"]["loss_generator"].cpu())
        self.batches.load_state_dict(state["data"])
        self.history = [dict(r) for r in state.get("history", [])]

    def resume(self, path: Optional[str] = None) -> int:
        """Load a checkpoint (default ``out_dir/checkpoint.pt``) and continue from its step; returns the step.

        The checkpoint is read with ``torch.load(weights_only=True)``. The current config is kept (e.g. a larger
        ``steps``); the checkpoint's config is in ``load_checkpoint(path)["config"]``.
        """
        path = self.checkpoint_path if path is None else os.fspath(path)
        if path is None:
            raise ValueError("no path given and config.out_dir is None")
        self.load_state_dict(load_checkpoint(path, map_location="cpu"))
        self.last_checkpoint, self._checkpoint_step = path, self.step
        return self.step
