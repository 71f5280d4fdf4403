"""Other projects' models and checkpoints, loaded safely and proven equal to their own code.

- `from_score_sde_pytorch`: score_sde_pytorch's (Song et al. 2021) checkpoints, with the SDE of their marginals;
  `presets`: their published configs by name; `ScoreSDELoss`: their training objective.
- `from_edm`: NVlabs/edm's snapshot pickles (Karras et al. 2022), read without running anything stored in them, with
  EDM's four preconditionings (`VPPrecond`, `VEPrecond`, `iDDPMPrecond`, `EDMPrecond`); `edm_training`: EDM's
  losses (`EDMLoss`, `VPLoss`, `VELoss`) with their augmentation pipeline (`EDMAugment`), the run net `EDMNet` and
  its CIFAR-10 recipes as presets.
"""
from . import edm_training, presets
from .edm import (PRECONDITIONINGS, EDMInfo, EDMPrecond, PersistentRecord, VEPrecond, VPPrecond, from_edm,
                  iDDPMPrecond, read_snapshot)
from .edm_augment import EDMAugment
from .edm_training import EDMLoss, EDMNet, VELoss, VPLoss
from .score_sde_pytorch import ScoreSDELoss, ScoreSDEModel, ScoreSDENet, from_score_sde_pytorch

__all__ = ["presets", "edm_training", "EDMAugment", "EDMLoss", "VPLoss", "VELoss", "EDMNet", "from_score_sde_pytorch", "ScoreSDEModel", "ScoreSDENet", "ScoreSDELoss", "from_edm",
           "read_snapshot", "EDMInfo", "PersistentRecord", "EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond",
           "PRECONDITIONINGS"]
