"""Periodic actions of a training run, each a small hook with an ``every``: log, sample figure, evaluate, power-EMA
snapshot, checkpoint.

    trainer = sd.Trainer(model, sde, data, config, hooks=default_hooks(config) + [MyHook(every=500)])

A hook's `Hook.after_step` runs after every optimizer step with that step's metrics (a dict with "step",
"loss", "lr", "grad_norm"); `Hook.due` says whether its period has come. `Hook.start` and
`Hook.end` run at the start and the (normal) end of every [`scoresde.Trainer.train`][scoresde.Trainer.train] call,
`Hook.stop` when a signal stops it (before the checkpoint of that step).
"""
from __future__ import annotations

import time
from typing import Dict, List


class Hook:
    """A periodic action. Args: every: act every this many steps (0: never, except what `end` does)."""

    def __init__(self, every: int = 0):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"every must be a non-negative integer; got {every!r}")
        self.every = every

    def due(self, step: int) -> bool:
        """Whether the hook acts after ``step`` completed steps."""
        return self.every > 0 and step % self.every == 0

    def start(self, trainer) -> None:
        """At the start of a ``train()`` call."""

    def after_step(self, trainer, metrics: Dict[str, float], last: bool) -> None:
        """After every step; ``last`` is True on the final step of this ``train()`` call."""

    def end(self, trainer) -> None:
        """At the end of a ``train()`` call that completed (not after an error)."""

    def stop(self, trainer) -> None:
        """When a signal stops ``train()`` (SIGTERM, Ctrl-C), after the current step and before its checkpoint."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(every={self.every})"


class LogHook(Hook):
    """Record the mean loss since the last record, the learning rate, the gradient norm and steps/s, every
    ``every`` steps, on the last step and when a signal stops training (written to ``metrics.jsonl`` by
    [`scoresde.Trainer.log`][scoresde.Trainer.log])."""

    def start(self, trainer) -> None:
        self.running, self.count = 0.0, 0
        self.start_time, self.start_step = time.perf_counter(), trainer.global_step

    def after_step(self, trainer, metrics, last):
        self.running += metrics["loss"]
        self.count += 1
        self.last = metrics
        if self.due(metrics["step"]) or last:
            self._record(trainer)

    def stop(self, trainer) -> None:
        """The partial interval since the last record (so that the checkpoint's history holds it too)."""
        if self.count:
            self._record(trainer)

    def _record(self, trainer) -> None:
        metrics = self.last
        elapsed = time.perf_counter() - self.start_time
        record = {"step": metrics["step"], "loss": self.running / self.count, "lr": metrics["lr"],
                  "grad_norm": metrics["grad_norm"],
                  "steps_per_sec": (metrics["step"] - self.start_step) / max(elapsed, 1e-9)}
        trainer.log(record)
        if trainer.bar is not None:
            trainer.bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
        self.running, self.count = 0.0, 0


class SampleFigureHook(Hook):
    """Save a figure of samples (EMA weights) to ``out_dir/samples_<step>.png`` every ``every`` steps."""

    def after_step(self, trainer, metrics, last):
        if self.due(metrics["step"]) and trainer.config.out_dir is not None and trainer.is_main:
            trainer.save_samples()


class EvaluateHook(Hook):
    """Evaluate (EMA weights, [`scoresde.Trainer.evaluate`][scoresde.Trainer.evaluate]) every ``every`` steps and log the metrics."""

    def after_step(self, trainer, metrics, last):
        if self.due(metrics["step"]) and trainer.is_main:
            result = trainer.evaluate()
            if result:
                trainer.log({"step": metrics["step"], **result})


class CheckpointHook(Hook):
    """Write ``out_dir/checkpoint.pt`` every ``every`` steps, when ``checkpoint_seconds`` of wall time have passed
    since the last one (``trainer.checkpoint_clock_due``, agreed by all ranks), and at the end of ``train()``
    unless the last checkpoint already holds the current step (no out_dir: nothing)."""

    def after_step(self, trainer, metrics, last):
        if (self.due(metrics["step"]) or trainer.checkpoint_clock_due) and trainer.config.out_dir is not None:
            trainer.save_checkpoint()

    def end(self, trainer) -> None:
        if trainer.config.out_dir is not None and trainer.checkpoint_step != trainer.global_step:
            trainer.save_checkpoint()


class EMASnapshotHook(Hook):
    """Write the trainer's power-EMA snapshot (`scoresde.Trainer.save_ema_snapshot`) every ``every`` steps.

    `default_hooks` puts it before the checkpoint hook (keep that order in a list of one's own), so a checkpoint
    never holds a step whose snapshot is missing: a run killed between the two resumes from the previous
    checkpoint and writes that snapshot again."""

    def after_step(self, trainer, metrics, last):
        if self.due(metrics["step"]):
            trainer.save_ema_snapshot()


def default_hooks(config) -> List[Hook]:
    """The hooks a [`scoresde.TrainConfig`][scoresde.TrainConfig] asks for: log, sample figure, evaluate, power-EMA
    snapshots (with ``ema_snapshot_every``; before the checkpoint of the same step), checkpoint."""
    snapshots = [EMASnapshotHook(config.ema_snapshot_every)] if config.ema_snapshot_every else []
    return [LogHook(config.log_every), SampleFigureHook(config.sample_every), EvaluateHook(config.eval_every),
            *snapshots, CheckpointHook(config.checkpoint_every)]
