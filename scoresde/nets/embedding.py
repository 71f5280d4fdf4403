"""Gaussian-Fourier features of a scalar time or noise level (Tancik et al. 2020; Song et al. 2021, NCSN++), and the
embeddings of a condition (a class label or a vector) that a conditional net adds to them."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..guidance.labels import check_labels
from ._checks import positive_int

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

    @property
    def setting(self) -> str:
        """The constructor argument that made the net conditional, for error messages."""
        return f"num_classes={self.num_classes}"

    @property
    def usage(self) -> str:
        """What ``cond`` must be, for error messages."""
        return f"cond (B,) long in 0 … {self.num_classes - 1}, or {self.num_classes} for no label (∅)"

    def forward(self, cond: Tensor, batch: int) -> Tensor:
        """cond (B,) long in 0 … K (K = ∅) → (B, dim)."""
        return self.table(check_labels(cond, batch, self.num_classes, device=self.table.weight.device))


def check_vectors(cond, batch: int, cond_dim: int) -> Tensor:
    """``cond`` checked as a floating (batch, cond_dim) tensor: a TypeError for another type or an integer dtype,
    a ValueError naming the expected and received shapes otherwise."""
    if not torch.is_tensor(cond):
        raise TypeError(f"cond must be a floating tensor of shape (B, cond_dim) = ({batch}, {cond_dim}); "
                        f"got {type(cond).__name__}")
    if not cond.is_floating_point():
        raise TypeError(f"cond must be a floating tensor of shape (B, cond_dim) = ({batch}, {cond_dim}) (a net "
                        f"built with cond_dim takes vectors, not class indices); got dtype {cond.dtype}")
    if tuple(cond.shape) != (batch, cond_dim):
        raise ValueError(f"cond must have shape (B, cond_dim) = ({batch}, {cond_dim}), one vector per sample of x; "
                         f"got {tuple(cond.shape)}")
    return cond


class VectorEmbedding(nn.Module):
    """A learned map of a vector condition c ∈ ℝ^D (D = ``cond_dim``), added to the time embedding of a net.

    e(c) = W₂ SiLU(W₁ c + b₁) + b₂ of width ``dim`` (k-diffusion's ``mapping_cond``). ``null`` is a learned
    ∅ ∈ ℝ^D in the *input* space, drawn from N(0, I) so that it starts apart from typical conditions: for
    classifier-free training a caller replaces the dropped rows of cond by it,
    ``torch.where(drop[:, None], null.expand_as(cond), cond)``, and the gradient reaches it through that
    ``where``; the map itself treats ∅ like any other vector.
    """

    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        self.cond_dim = positive_int("cond_dim", cond_dim)
        self.mapping = nn.Sequential(nn.Linear(self.cond_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.randn(self.cond_dim))

    @property
    def setting(self) -> str:
        """The constructor argument that made the net conditional, for error messages."""
        return f"cond_dim={self.cond_dim}"

    @property
    def usage(self) -> str:
        """What ``cond`` must be, for error messages."""
        return f"cond (B, {self.cond_dim}) floating, or rows of net.null_cond for no condition (∅)"

    def forward(self, cond: Tensor, batch: int) -> Tensor:
        """cond (B, D) floating → (B, dim)."""
        weight = self.mapping[0].weight
        return self.mapping(check_vectors(cond, batch, self.cond_dim).to(device=weight.device, dtype=weight.dtype))


def check_condition_arguments(num_classes: Optional[int], cond_dim: Optional[int]) -> Optional[int]:
    """``cond_dim`` checked (None or a positive int) and exclusive of ``num_classes``: a net takes one ``cond``."""
    if cond_dim is None:
        return None
    cond_dim = positive_int("cond_dim", cond_dim)
    if num_classes is not None:
        raise ValueError(f"num_classes and cond_dim exclude each other (cond is either a class index or a vector); "
                         f"got num_classes={num_classes!r} and cond_dim={cond_dim!r}")
    return cond_dim


def conditioned(embedding: Tensor, condition: "LabelEmbedding | VectorEmbedding | None", cond, who: str) -> Tensor:
    """The time embedding plus the condition's (B, dim); checks that ``cond`` is given exactly when the net is
    conditional (``condition`` not None)."""
    if condition is None:
        if cond is not None:
            raise ValueError(f"{who} takes no cond (unconditional: num_classes=None, cond_dim=None) but was given "
                             f"cond; build it with num_classes=K to condition on labels, or cond_dim=D on vectors")
        return embedding
    if cond is None:
        raise ValueError(f"{who} is conditional ({condition.setting}) and needs cond: call it as net(x, t, cond) "
                         f"with {condition.usage}")
    return embedding + condition(cond, embedding.shape[0]).to(embedding.dtype)
