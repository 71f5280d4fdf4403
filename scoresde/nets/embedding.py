"""Gaussian-Fourier features of a scalar time or noise level (Tancik et al. 2020; Song et al. 2021, NCSN++)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..guidance.labels import check_labels

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


def time_embedding(dim: int, fourier_scale: float) -> nn.Sequential:
    """γ(t) = W₂ SiLU(W₁ GaussianFourier(t)): the time embedding of width ``dim`` every net here uses."""
    return nn.Sequential(GaussianFourierEmbedding(dim, fourier_scale), nn.Linear(dim, dim), nn.SiLU(),
                         nn.Linear(dim, dim))


class LabelEmbedding(nn.Module):
    """A learned vector per class, added to the time embedding of a conditional net.

    K = ``num_classes`` classes take the indices 0 … K − 1; a (K + 1)-th entry, index K, stands for "no label"
    (∅), which label dropout trains so that one network models both p(x | c) and p(x).
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, cond: Tensor, batch: int) -> Tensor:
        """cond (B,) long in 0 … K (K = ∅) → (B, dim)."""
        return self.table(check_labels(cond, batch, self.num_classes, device=self.table.weight.device))


def conditioned(embedding: Tensor, labels: "LabelEmbedding | None", cond, who: str) -> Tensor:
    """The time embedding plus the label's (B, dim); checks that ``cond`` is given exactly when the net is
    conditional."""
    if labels is None:
        if cond is not None:
            raise ValueError(f"{who} is unconditional (num_classes=None) but was given cond; build it with "
                             f"num_classes=K to condition on labels")
        return embedding
    if cond is None:
        raise ValueError(f"{who} is conditional (num_classes={labels.num_classes}) and needs cond: call it as "
                         f"net(x, t, cond) with cond (B,) long in 0 … {labels.num_classes - 1}, or "
                         f"{labels.num_classes} for no label (∅)")
    return embedding + labels(cond, embedding.shape[0]).to(embedding.dtype)
