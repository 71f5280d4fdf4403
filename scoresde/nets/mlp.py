"""A residual MLP score network for low-dimensional data."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._utils import as_time
from .embedding import LabelEmbedding, VectorEmbedding, check_condition_arguments, conditioned, time_embedding

Tensor = torch.Tensor


class _ResidualBlock(nn.Module):
    """h ← h + W₂ SiLU(W₁ SiLU(h) + E γ), with γ the time embedding."""

    def __init__(self, hidden: int, embedding_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(hidden, hidden)
        self.time = nn.Linear(embedding_dim, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        out = self.linear1(self.act(h)) + self.time(emb)
        return h + self.linear2(self.act(out))


class MLP(nn.Module):
    """Time-conditioned residual MLP: ``forward(x, t)`` maps (B, dim) or (B, *D) with prod(D) = dim to x's shape.

    Architecture: γ = MLP(GaussianFourier(t)) of width ``time_embedding_dim``; h = W_in x; ``depth`` residual
    blocks h ← h + W₂ SiLU(W₁ SiLU(h) + E γ); output W_out SiLU(h). ``t`` is whatever the caller conditions
    on: the time in [0, T], or the noise feature c_noise that [`scoresde.ScoreModel`][scoresde.ScoreModel] passes when it
    preconditions.

    Args:
        dim: number of elements of one sample.
        hidden: width of the residual stream.
        depth: number of residual blocks.
        time_embedding_dim: width of the time embedding (even).
        fourier_scale: standard deviation of the Fourier frequencies of the time embedding (1 suits the
            c_noise = ¼ log(σ/s) of a preconditioned [`scoresde.ScoreModel`][scoresde.ScoreModel]; raw t ∈ [0, 1] wants ~16).
        num_classes: K for a class-conditional net, called ``forward(x, t, cond)`` with cond (B,) long in
            0 … K (K = no label, ∅): a learned label vector (`LabelEmbedding`) is added to γ. None: unconditional.
        cond_dim: D for a net conditioned on a vector, called ``forward(x, t, cond)`` with cond (B, D) floating:
            γ ← γ + W₂ SiLU(W₁ cond) (`VectorEmbedding`, k-diffusion's ``mapping_cond``). Excludes ``num_classes``.

    Attributes:
        num_classes: as given (None when absent).
        cond_dim: as given (None when absent).
        null_cond: the condition that stands for "none" (∅) in classifier-free training: the int K of a
            class-conditional net; a learned (D,) ``nn.Parameter`` of a vector-conditioned one, which callers
            put in place of dropped rows of cond (``torch.where``) so that its gradient trains it; None for an
            unconditional net.
    """

    #: Constructor arguments that follow from the data's per-sample shape (see `shape_arguments`).
    shape_parameters = ("dim",)

    @staticmethod
    def shape_arguments(sample_shape) -> dict:
        """Constructor arguments fixed by the per-sample shape D: ``dim`` = prod(D)."""
        dim = 1
        for size in sample_shape:
            dim *= int(size)
        return {"dim": dim}

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, time_embedding_dim: int = 64,
                 fourier_scale: float = 1.0, num_classes: Optional[int] = None, cond_dim: Optional[int] = None):
        super().__init__()
        cond_dim = check_condition_arguments(num_classes, cond_dim)
        for name, value, low in (("dim", dim, 1), ("hidden", hidden, 1), ("depth", depth, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        self.dim = dim
        self.embedding = time_embedding(time_embedding_dim, fourier_scale)
        self.input = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([_ResidualBlock(hidden, time_embedding_dim) for _ in range(depth)])
        self.output = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))
        self.num_classes = num_classes
        self.labels = None if num_classes is None else LabelEmbedding(num_classes, time_embedding_dim)
        # Created last, and only when asked for, so that the other nets keep their parameters and RNG draws.
        self.cond_dim = cond_dim
        self.vectors = None if cond_dim is None else VectorEmbedding(cond_dim, time_embedding_dim)

    @property
    def null_cond(self):
        """∅: the int K (class labels), the learned (cond_dim,) parameter (vectors), or None (unconditional)."""
        if self.labels is not None:
            return self.num_classes
        return None if self.vectors is None else self.vectors.null

    def forward(self, x: Tensor, t: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        """x (B, dim) or (B, *D), t (B,) or a scalar, cond (B,) long or (B, cond_dim) floating (conditional nets
        only) → x's shape."""
        if x.dim() < 2 or x[0].numel() != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}) or (B, *D) with {self.dim} elements per sample; "
                             f"got {tuple(x.shape)}")
        t = as_time(t, x)
        emb = conditioned(self.embedding(t), self.labels if self.vectors is None else self.vectors, cond, "MLP")
        h = self.input(x.reshape(x.shape[0], self.dim))
        for block in self.blocks:
            h = block(h, emb)
        return self.output(h).reshape(x.shape)
