"""Score networks: any ``nn.Module`` with ``forward(x, t)`` works with the rest of scoresde.

- `MLP`: residual MLP with a Gaussian-Fourier time embedding, for low-dimensional data.
- `UNet`: a compact DDPM++-style U-Net for images (B, C, H, W).
- `Classifier`: a noise-conditional classifier log p_t(c | x) for classifier guidance.
- `GaussianFourierEmbedding`: the time (or noise-level) embedding both use; `LabelEmbedding`: the class
  vector a conditional net (``num_classes=K``, called ``net(x, t, cond)``) adds to it.
- score_sde_pytorch's architectures, parameter for parameter (their checkpoints load as is; see
  `scoresde.from_score_sde_pytorch`): `NCSNpp` (NCSN++ and DDPM++), `DDPM` (Ho et al.), `NCSN` and `NCSNv2`
  (RefineNets; `NCSNv2_128`, `NCSNv2_256`). Each takes their config fields and has ``from_config(config)``; its
  ``forward(x, label)`` takes their noise label (σ, 999 t or a level index), not scoresde's t.
- EDM's architectures (NVlabs/edm), parameter for parameter: `SongUNet` (DDPM++ / NCSN++) and `DhariwalUNet` (ADM),
  ``forward(x, noise_labels, class_labels, augment_labels)``; EDM's preconditionings live in `scoresde.zoo`
  (see `scoresde.from_edm`).

`NETS` names them for configs and the command line. A net whose constructor needs the data's shape
lists those arguments in ``shape_parameters`` and computes them in a static ``shape_arguments(sample_shape)
-> dict``, which the builder calls; every other constructor argument is a config option.
"""
from .._registry import Registry
from .classifier import Classifier
from .embedding import GaussianFourierEmbedding, LabelEmbedding
from .mlp import MLP
from .unet import UNet
from .ddpm import DDPM
from .edm import DhariwalUNet, SongUNet
from .ncsnpp import NCSNpp
from .ncsnv2 import NCSN, NCSNv2, NCSNv2_128, NCSNv2_256

#: Networks by name: ``NETS.build("mlp", dim=2, hidden=64)``.
NETS = Registry("net")
NETS.register("mlp", MLP)
NETS.register("unet", UNet)

__all__ = ["GaussianFourierEmbedding", "LabelEmbedding", "MLP", "UNet", "Classifier", "NETS", "NCSNpp", "DDPM", "NCSN",
           "NCSNv2", "NCSNv2_128", "NCSNv2_256", "SongUNet", "DhariwalUNet"]
