"""Training: the `Trainer`, its `TrainConfig`, hooks, the weight `EMA` and checkpoints."""
from .checkpoint import check_state_dict, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistributedContext
from .ema import EMA
from .hooks import CheckpointHook, EvaluateHook, Hook, LogHook, SampleFigureHook, default_hooks
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted, default_sampler, warmup_schedule

__all__ = ["EMA", "TrainConfig", "Trainer", "NonFiniteLossError", "TrainingInterrupted", "default_sampler", "warmup_schedule",
           "Hook", "LogHook", "SampleFigureHook", "EvaluateHook", "CheckpointHook", "default_hooks",
           "save_checkpoint", "load_checkpoint", "check_state_dict", "DistributedContext"]
