"""Gaussian-Fourier features of a scalar time or noise level (Tancik et al. 2020; Song et al. 2021, NCSN++)."""
from __future__ import annotations

import math

import torch
from torch import nn

Tensor = torch.Tensor


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of a per-sample scalar: γ(t) = [sin(2π w t), cos(2π w t)], w ~ N(0, scale²).

    The frequencies w (``dim // 2`` of them) are drawn once at construction from the global torch RNG and
    kept fixed as a buffer, so they are saved in ``state_dict`` and follow ``.to(device)``.

    Args:
        dim: output width (even).
        scale: standard deviation of the frequencies; larger values resolve finer changes of t.
    """

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        if int(dim) != dim or dim < 2 or dim % 2:
            raise ValueError(f"embedding dim must be an even integer >= 2; got {dim!r}")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive finite number; got {scale!r}")
        self.dim, self.scale = int(dim), float(scale)
        self.register_buffer("frequencies", torch.randn(self.dim // 2) * self.scale)

    def forward(self, t: Tensor) -> Tensor:
        """Embed ``t`` of shape (B,) into (B, dim)."""
        if t.dim() != 1:
            raise ValueError(f"t must have shape (B,); got {tuple(t.shape)}")
        angles = 2 * math.pi * t[:, None] * self.frequencies.to(t.dtype)[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
