"""Training: the :class:`Trainer`, its :class:`TrainConfig`, the weight :class:`EMA` and checkpoints."""
from .checkpoint import check_state_dict, load_checkpoint, save_checkpoint
from .distributed import DistributedContext
from .ema import EMA
from .trainer import NonFiniteLossError, TrainConfig, Trainer, default_sampler, save_sample_figure

__all__ = ["EMA", "TrainConfig", "Trainer", "NonFiniteLossError", "default_sampler", "save_sample_figure",
           "save_checkpoint", "load_checkpoint", "check_state_dict", "DistributedContext"]
