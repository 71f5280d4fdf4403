"""Other projects' models and checkpoints, loaded safely and proven equal to their own code.

- `from_score_sde_pytorch`: score_sde_pytorch's (Song et al. 2021) checkpoints, with the SDE of their marginals;
  `presets`: their published configs by name; `ScoreSDELoss`: their training objective.
"""
from . import presets
from .score_sde_pytorch import ScoreSDELoss, ScoreSDEModel, ScoreSDENet, from_score_sde_pytorch

__all__ = ["presets", "from_score_sde_pytorch", "ScoreSDEModel", "ScoreSDENet", "ScoreSDELoss"]
