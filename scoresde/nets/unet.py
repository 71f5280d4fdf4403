"""A compact DDPM++-style U-Net score network for images (Ho et al. 2020; Song et al. 2021, Appendix H)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .._utils import as_time
from ._checks import positive_int
from .embedding import LabelEmbedding, VectorEmbedding, check_condition_arguments, conditioned, time_embedding

Tensor = torch.Tensor

_SKIP_RESCALE = 1 / math.sqrt(2)  # DDPM++ divides every residual sum by √2 to keep activations at unit scale


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(32, channels // 4) groups (at least 1), reduced until it divides ``channels``."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class _ResBlock(nn.Module):
    """GN → SiLU → conv → GN modulated by the time embedding (scale/shift) → SiLU → dropout → conv, plus skip.

    out = (skip(x) + h) / √2 with h = conv₂(Dropout(SiLU(GN(conv₁(SiLU(GN(x)))) (1 + a) + b))), (a, b) = W γ.
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.time(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(self.act(h)))
        return (self.skip(x) + h) * _SKIP_RESCALE


class _Attention(nn.Module):
    """Single-head self-attention over the H·W positions, residual: (x + proj(softmax(q kᵀ/√C) v)) / √2."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, emb: Optional[Tensor] = None) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(-1, -2).unbind(1)  # each (B, HW, C)
        h = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]           # (B, HW, C)
        h = self.proj(h.transpose(-1, -2).reshape(B, C, H, W))
        return (x + h) * _SKIP_RESCALE


class _Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Optional[Tensor] = None) -> Tensor:
        return self.conv(x)


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Optional[Tensor] = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Compact DDPM++-style U-Net: ``forward(x, t)`` maps x (B, C, H, W) and t (B,) to x's shape.

    Levels ℓ = 0..L−1 have ``channels · channel_mults[ℓ]`` channels at resolution ``image_size / 2^ℓ``. Each
    level of the encoder has ``num_res_blocks`` residual blocks, the decoder ``num_res_blocks + 1`` (each eating
    one skip connection), with self-attention after every block whose resolution is in
    ``attention_resolutions``; stride-2 convolutions go down and nearest-neighbour upsampling + conv goes up.
    The middle is ResBlock → attention → ResBlock. Every residual block receives the time embedding
    γ = MLP(GaussianFourier(t)) as a per-channel scale and shift after its second GroupNorm
    (h ← GN(h)(1 + a) + b), and residual sums are divided by √2 (DDPM++).

    ``t`` is whatever the caller conditions on: the time, or the noise feature c_noise that
    [`scoresde.ScoreModel`][scoresde.ScoreModel] passes when it preconditions.

    Args:
        in_channels: image channels C (the output has the same number).
        channels: base width.
        channel_mults: width multiplier per resolution level; their number L sets the depth.
        num_res_blocks: residual blocks per encoder level.
        attention_resolutions: resolutions (side lengths) at which to add self-attention.
        dropout: dropout probability inside the residual blocks.
        time_embedding_dim: width of the time embedding (even).
        image_size: side H = W of the inputs; must be divisible by 2^(L−1).
        fourier_scale: standard deviation of the Fourier frequencies of the time embedding.
        num_classes: K for a class-conditional net, called ``forward(x, t, cond)`` with cond (B,) long in
            0 … K (K = no label, ∅): a learned label vector is added to the time embedding. None: unconditional.
        cond_dim: D for a net conditioned on a vector, called ``forward(x, t, cond)`` with cond (B, D) floating:
            γ ← γ + W₂ SiLU(W₁ cond) (`VectorEmbedding`, k-diffusion's ``mapping_cond``). Excludes ``num_classes``.
        cond_channels: C' for a net conditioned on an image (super-resolution, inpainting), called
            ``forward(x, t, image=y)`` with y (B, C', H, W): the first convolution reads the concatenation
            [x, y] of C + C' channels (k-diffusion's ``unet_cond``). Combines with ``num_classes`` or ``cond_dim``.

    Attributes:
        num_classes: as given (None when absent).
        cond_dim: as given (None when absent).
        cond_channels: as given (None when absent).
        null_cond: the condition that stands for "none" (∅) in classifier-free training, None for an
            unconditional net. For ``cond``: the int K of a class-conditional net, a learned (D,)
            ``nn.Parameter`` of a vector-conditioned one. For ``image``: a learned (C', 1, 1) ``nn.Parameter``,
            broadcast over the pixels, drawn from N(0, 1) so that ∅ is not the zero image, which for data centred
            at 0 is a plausible condition (flat mid-grey, a blanked inpainting input). Callers put it in place of
            the dropped rows (``torch.where``), so that its gradient trains it. With ``cond_channels`` it is a dict
            of ``forward``'s keywords, ``{"image": ∅}`` or ``{"cond": ∅, "image": ∅}``, for
            ``net(x, t, **conditions)``.
    """

    #: Constructor arguments that follow from the data's per-sample shape (see `shape_arguments`).
    shape_parameters = ("in_channels", "image_size")

    @staticmethod
    def shape_arguments(sample_shape) -> dict:
        """Constructor arguments fixed by the per-sample shape (C, H, W): ``in_channels`` and ``image_size``."""
        sample_shape = tuple(int(s) for s in sample_shape)
        if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
            raise ValueError(f"the U-Net needs square images (C, H, W); the data has per-sample shape {sample_shape}")
        return {"in_channels": sample_shape[0], "image_size": sample_shape[1]}

    def __init__(self, in_channels: int = 1, channels: int = 32, channel_mults: Sequence[int] = (1, 2),
                 num_res_blocks: int = 1, attention_resolutions: Sequence[int] = (4,), dropout: float = 0.0,
                 time_embedding_dim: int = 128, image_size: int = 8, fourier_scale: float = 16.0,
                 num_classes: Optional[int] = None, cond_dim: Optional[int] = None,
                 cond_channels: Optional[int] = None):
        super().__init__()
        cond_dim = check_condition_arguments(num_classes, cond_dim)
        cond_channels = None if cond_channels is None else positive_int("cond_channels", cond_channels)
        channel_mults = tuple(channel_mults)
        if not channel_mults or any(not isinstance(m, int) or m < 1 for m in channel_mults):
            raise ValueError(f"channel_mults must be a non-empty sequence of positive integers; got {channel_mults!r}")
        for name, value in (("in_channels", in_channels), ("channels", channels), ("image_size", image_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if not isinstance(num_res_blocks, int) or num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be a positive integer; got {num_res_blocks!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        levels = len(channel_mults)
        if image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size must be divisible by 2^(len(channel_mults) - 1) = {2 ** (levels - 1)}; "
                             f"got {image_size}")
        self.in_channels, self.image_size = in_channels, image_size
        attention_resolutions = set(int(r) for r in attention_resolutions)

        self.embedding = time_embedding(time_embedding_dim, fourier_scale)
        self.input = nn.Conv2d(in_channels + (cond_channels or 0), channels, 3, padding=1)  # reads [x, image]

        # Encoder: remember the width of every skip connection it pushes.
        self.down = nn.ModuleList()
        skips = [channels]
        width, resolution = channels, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                stage = [_ResBlock(width, channels * mult, time_embedding_dim, dropout)]
                width = channels * mult
                if resolution in attention_resolutions:
                    stage.append(_Attention(width))
                self.down.append(nn.ModuleList(stage))
                skips.append(width)
            if level < levels - 1:
                self.down.append(nn.ModuleList([_Downsample(width)]))
                skips.append(width)
                resolution //= 2

        self.middle = nn.ModuleList([_ResBlock(width, width, time_embedding_dim, dropout), _Attention(width),
                                     _ResBlock(width, width, time_embedding_dim, dropout)])

        # Decoder: each block concatenates one skip connection, popped in reverse order.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                stage = [_ResBlock(width + skips.pop(), channels * mult, time_embedding_dim, dropout)]
                width = channels * mult
                if resolution in attention_resolutions:
                    stage.append(_Attention(width))
                self.up.append(nn.ModuleList(stage))
            if level > 0:
                self.up.append(nn.ModuleList([_Upsample(width)]))
                resolution *= 2

        self.output = nn.Sequential(_group_norm(width), nn.SiLU(), nn.Conv2d(width, in_channels, 3, padding=1))
        self.num_classes = num_classes
        self.labels = None if num_classes is None else LabelEmbedding(num_classes, time_embedding_dim)
        # Created last, and only when asked for, so that the other nets keep their parameters and RNG draws.
        self.cond_dim, self.cond_channels = cond_dim, cond_channels
        self.vectors = None if cond_dim is None else VectorEmbedding(cond_dim, time_embedding_dim)
        self.null_image = None if cond_channels is None else nn.Parameter(torch.randn(cond_channels, 1, 1))

    @property
    def null_cond(self):
        """∅: K or the (cond_dim,) parameter for ``cond``; ``{"image": (C', 1, 1) parameter}`` joined by
        ``"cond"`` when the net also takes one; None for an unconditional net."""
        cond = self.num_classes if self.labels is not None else None if self.vectors is None else self.vectors.null
        if self.null_image is None:
            return cond
        return {"image": self.null_image} if cond is None else {"cond": cond, "image": self.null_image}

    def _with_image(self, x: Tensor, image: Optional[Tensor]) -> Tensor:
        """[x, image] along the channels for a net built with ``cond_channels``, x itself otherwise (checked)."""
        if self.cond_channels is None:
            if image is not None:
                raise ValueError("UNet has no image condition (cond_channels=None) but was given image; build it "
                                 "with cond_channels=C' to condition on (B, C', H, W) images")
            return x
        expected = (x.shape[0], self.cond_channels) + tuple(x.shape[2:])
        if image is None:
            raise ValueError(f"UNet is conditioned on an image (cond_channels={self.cond_channels}) and needs image: "
                             f"call it as net(x, t, image=y) with y of shape (B, C', H, W) = {expected}, or "
                             f"net.null_cond['image'] for no image (∅)")
        if not torch.is_tensor(image):
            raise TypeError(f"image must be a tensor of shape (B, C', H, W) = {expected}; got {type(image).__name__}")
        if tuple(image.shape) != expected:
            raise ValueError(f"image must have shape (B, C', H, W) = {expected}, the batch and size of x with "
                             f"C' = cond_channels; got {tuple(image.shape)}")
        return torch.cat([x, image.to(dtype=x.dtype)], dim=1)

    def forward(self, x: Tensor, t: Tensor, cond: Optional[Tensor] = None, image: Optional[Tensor] = None) -> Tensor:
        """x (B, C, H, W) with C = in_channels and H = W = image_size; t (B,) or a scalar; cond (B,) long or
        (B, cond_dim) floating (nets built with num_classes or cond_dim); image (B, cond_channels, H, W) (nets
        built with cond_channels) → x's shape."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}); "
                             f"got {tuple(x.shape)}")
        t = as_time(t, x)
        emb = conditioned(self.embedding(t), self.labels if self.vectors is None else self.vectors, cond, "UNet")
        h = self.input(self._with_image(x, image))
        skips = [h]
        for stage in self.down:
            for layer in stage:
                h = layer(h, emb)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for stage in self.up:
            if isinstance(stage[0], _ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            for layer in stage:
                h = layer(h, emb)
        return self.output(h)
