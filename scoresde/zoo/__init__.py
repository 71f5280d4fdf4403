"""Other projects' models and checkpoints, loaded safely and proven equal to their own code.

- `from_score_sde_pytorch`: score_sde_pytorch's (Song et al. 2021) checkpoints, with the SDE of their marginals;
  `presets`: their published configs by name; `ScoreSDELoss`: their training objective.
- `from_edm`: NVlabs/edm's snapshot pickles (Karras et al. 2022), read without running anything stored in them, with
  EDM's four preconditionings (`VPPrecond`, `VEPrecond`, `iDDPMPrecond`, `EDMPrecond`).
"""
from . import presets
from .edm import (PRECONDITIONINGS, EDMInfo, EDMPrecond, PersistentRecord, VEPrecond, VPPrecond, from_edm,
                  iDDPMPrecond, read_snapshot)
from .score_sde_pytorch import ScoreSDELoss, ScoreSDEModel, ScoreSDENet, from_score_sde_pytorch

__all__ = ["presets", "from_score_sde_pytorch", "ScoreSDEModel", "ScoreSDENet", "ScoreSDELoss", "from_edm",
           "read_snapshot", "EDMInfo", "PersistentRecord", "EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond",
           "PRECONDITIONINGS"]
