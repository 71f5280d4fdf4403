"""A noise-conditional classifier p_t(c | x_t) for classifier guidance."""
from __future__ import annotations

import torch
from torch import nn

from .._utils import as_time
from .embedding import time_embedding
from .mlp import MLP, _ResidualBlock

Tensor = torch.Tensor


class Classifier(nn.Module):
    """Time-conditioned residual MLP classifier: ``forward(x, t)`` → log-probabilities (B, num_classes).

    The same trunk as [`scoresde.nets.MLP`][scoresde.nets.MLP] (Fourier time embedding γ(t), ``depth`` residual blocks
    conditioned on γ) on the flattened sample, then a linear head and log_softmax. Train it on noised data with
    [`scoresde.classifier_loss`][scoresde.classifier_loss]; use it with [`scoresde.classifier_guidance`][scoresde.classifier_guidance].
    ``t`` is the raw time in [0, T] (so ``fourier_scale`` ~16 suits t ∈ [0, 1]).

    Args:
        dim: number of elements of one sample (images are flattened).
        num_classes: C.
        hidden: width of the residual stream.
        depth: number of residual blocks.
        time_embedding_dim: width of the time embedding (even).
        fourier_scale: standard deviation of the Fourier frequencies of the time embedding.
    """

    shape_parameters = ("dim",)
    shape_arguments = MLP.shape_arguments

    def __init__(self, dim: int, num_classes: int, hidden: int = 128, depth: int = 3, time_embedding_dim: int = 64,
                 fourier_scale: float = 16.0):
        super().__init__()
        for name, value, low in (("dim", dim, 1), ("num_classes", num_classes, 2), ("hidden", hidden, 1),
                                 ("depth", depth, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        self.dim, self.num_classes = dim, num_classes
        self.embedding = time_embedding(time_embedding_dim, fourier_scale)
        self.input = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([_ResidualBlock(hidden, time_embedding_dim) for _ in range(depth)])
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x (B, dim) or (B, *D), t (B,) or a scalar → log p_t(c | x), shape (B, num_classes)."""
        if x.dim() < 2 or x[0].numel() != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}) or (B, *D) with {self.dim} elements per sample; "
                             f"got {tuple(x.shape)}")
        emb = self.embedding(as_time(t, x))
        h = self.input(x.reshape(x.shape[0], self.dim))
        for block in self.blocks:
            h = block(h, emb)
        return torch.log_softmax(self.head(h), dim=-1)
