"""Score networks: any ``nn.Module`` with ``forward(x, t)`` works with the rest of scoresde.

- :class:`MLP`: residual MLP with a Gaussian-Fourier time embedding, for low-dimensional data.
- :class:`UNet`: a compact DDPM++-style U-Net for images (B, C, H, W).
- :class:`GaussianFourierEmbedding`: the time (or noise-level) embedding both use.
"""
from .embedding import GaussianFourierEmbedding
from .mlp import MLP
from .unet import UNet

__all__ = ["GaussianFourierEmbedding", "MLP", "UNet"]
