"""Training: the `Trainer`, its `TrainConfig`, hooks, the weight `EMA` (and EDM2's post-hoc EMA) and checkpoints."""
from .checkpoint import check_state_dict, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistributedContext
from .ema import (EMA, load_ema_snapshots, post_hoc_ema, post_hoc_ema_weights, power_from_sigma_rel,
                  save_ema_snapshot, sigma_rel_from_power)
from .hooks import CheckpointHook, EMASnapshotHook, EvaluateHook, Hook, LogHook, SampleFigureHook, default_hooks
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted, default_sampler, warmup_schedule

__all__ = ["EMA", "TrainConfig", "Trainer", "NonFiniteLossError", "TrainingInterrupted", "default_sampler", "warmup_schedule",
           "Hook", "LogHook", "SampleFigureHook", "EvaluateHook", "CheckpointHook", "default_hooks",
           "save_checkpoint", "load_checkpoint", "check_state_dict", "DistributedContext",
           "post_hoc_ema", "post_hoc_ema_weights", "load_ema_snapshots", "save_ema_snapshot", "EMASnapshotHook",
           "power_from_sigma_rel", "sigma_rel_from_power"]
