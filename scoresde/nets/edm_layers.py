"""Layers of EDM's U-Nets (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models"; NVlabs/edm ``training/networks.py`` at commit 008a4e5), with its attribute names, parameter shapes and
registration order so that its state_dicts load as is. Written from the semantics, not copied.

Every layer computes in the dtype of its input: weights, biases and filters are cast to ``x.dtype`` on the
fly (float16 activations with float32 master weights), except the attention logits and softmax, which are
always float32.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

Tensor = torch.Tensor

INIT_MODES = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")


def initial_weights(shape: Sequence[int], mode: str, fan_in: int, fan_out: int) -> Tensor:
    """A fresh float32 tensor of ``shape`` with EDM's variance-scaling init.

    xavier_uniform: U(-a, a), a = √(6 / (fan_in + fan_out)); xavier_normal: N(0, 2 / (fan_in + fan_out));
    kaiming_uniform: U(-a, a), a = √(3 / fan_in); kaiming_normal: N(0, 1 / fan_in). Draws one ``torch.rand``
    or ``torch.randn`` of ``shape`` from the global generator, as EDM does, so a seed gives its initial weights.
    """
    shape = list(shape)
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (2 * torch.rand(shape) - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (2 * torch.rand(shape) - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(shape)
    raise ValueError(f"init_mode must be one of {', '.join(map(repr, INIT_MODES))}; got {mode!r}")


class Linear(nn.Module):
    """y = x Wᵀ + b with W (out_features, in_features), b (out_features,) (b optional); x (..., in_features).

    Init: ``initial_weights(init_mode)`` times ``init_weight`` for W and times ``init_bias`` for b (fans
    in_features and out_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_mode: str = "kaiming_normal",
                 init_weight: float = 1, init_bias: float = 0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(initial_weights([out_features, in_features], **fans) * init_weight)
        self.bias = nn.Parameter(initial_weights([out_features], **fans) * init_bias) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = x @ self.weight.to(x.dtype).t()
        return y if self.bias is None else y.add_(self.bias.to(x.dtype))


def resample_kernel(taps: Sequence[float]) -> Tensor:
    """The separable 2-D resampling filter f fᵀ / (Σf)², shape (1, 1, k, k), from 1-D taps f (float32)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.dim() != 1 or f.numel() == 0:
        raise ValueError(f"resample_filter must be a non-empty 1-D sequence of taps; got {taps!r}")
    return (torch.outer(f, f) / f.sum().square())[None, None]


def upsample2x(x: Tensor, kernel: Tensor, padding: int) -> Tensor:
    """Per-channel 2x upsampling: zero-insertion then the filter 4·kernel (a transposed stride-2 conv).

    x (B, C, H, W), kernel (1, 1, k, k) → (B, C, 2H + k − 2 − 2·padding, …); [1, 1] taps, padding 0 repeat
    each pixel 2x2 times (nearest neighbour); [1, 3, 3, 1], padding 1 is the FIR upsampler of StyleGAN2.
    """
    channels = x.shape[1]
    return F.conv_transpose2d(x, kernel.mul(4).repeat(channels, 1, 1, 1), groups=channels, stride=2, padding=padding)


def downsample2x(x: Tensor, kernel: Tensor, padding: int) -> Tensor:
    """Per-channel 2x downsampling: the filter, then every second pixel (a stride-2 depthwise conv).

    x (B, C, H, W) → (B, C, ⌊(H + 2·padding − k) / 2⌋ + 1, …); [1, 1] taps is 2x2 average pooling.
    """
    channels = x.shape[1]
    return F.conv2d(x, kernel.repeat(channels, 1, 1, 1), groups=channels, stride=2, padding=padding)


class Conv2d(nn.Module):
    """A k×k convolution ("same" padding, weight (out, in, k, k), bias (out,)) with optional 2x up/downsampling.

    ``kernel=0`` has no weight nor bias: the layer only resamples (then out_channels must equal in_channels).
    Unfused, the order is upsample → conv, or downsample → conv. ``fused_resample`` instead runs
    upsample (padding max(p_f − p_w, 0)) → conv (padding max(p_w − p_f, 0)), or conv (padding p_w + p_f) →
    downsample (padding 0), where p_w = k // 2 and p_f = (len(taps) − 1) // 2; this matches EDM exactly,
    boundary effects included. The filter is the buffer ``resample_filter`` (1, 1, t, t), present only when
    resampling.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False,
                 down: bool = False, resample_filter: Sequence[float] = (1, 1), fused_resample: bool = False,
                 init_mode: str = "kaiming_normal", init_weight: float = 1, init_bias: float = 0):
        if up and down:
            raise ValueError("Conv2d resamples one way: up and down cannot both be True")
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused_resample = up, down, fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        shape = [out_channels, in_channels, kernel, kernel]
        self.weight = nn.Parameter(initial_weights(shape, **fans) * init_weight) if kernel else None
        self.bias = nn.Parameter(initial_weights([out_channels], **fans) * init_bias) if kernel and bias else None
        kernel_2d = resample_kernel(resample_filter)
        self.register_buffer("resample_filter", kernel_2d if up or down else None)

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        pad_w = 0 if w is None else w.shape[-1] // 2
        pad_f = 0 if f is None else (f.shape[-1] - 1) // 2
        if w is not None and self.fused_resample and self.up:
            x = F.conv2d(upsample2x(x, f, max(pad_f - pad_w, 0)), w, padding=max(pad_w - pad_f, 0))
        elif w is not None and self.fused_resample and self.down:
            x = downsample2x(F.conv2d(x, w, padding=pad_w + pad_f), f, 0)
        else:
            if self.up:
                x = upsample2x(x, f, pad_f)
            if self.down:
                x = downsample2x(x, f, pad_f)
            if w is not None:
                x = F.conv2d(x, w, padding=pad_w)
        if self.bias is not None:
            x = x.add_(self.bias.to(x.dtype).reshape(1, -1, 1, 1))
        return x


class GroupNorm(nn.Module):
    """Group normalization with G = min(num_groups, C // min_channels_per_group) groups and a per-channel
    affine (weight (C,) = 1, bias (C,) = 0 at init): x (B, C, H, W) → same shape."""

    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        if self.num_groups < 1 or num_channels % self.num_groups:
            raise ValueError(f"GroupNorm needs num_channels divisible into min({num_groups}, num_channels // "
                             f"{min_channels_per_group}) >= 1 groups; got num_channels={num_channels}")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def attention_weights(q: Tensor, k: Tensor) -> Tensor:
    """softmax over keys of qᵀk / √c: q (N, c, Q), k (N, c, K) → (N, Q, K).

    The logits and softmax are float32 whatever the inputs' dtype (as in EDM's ``AttentionOp``); the result
    is returned in q's dtype. Gradients flow through ordinary autograd.
    """
    logits = torch.einsum("ncq,nck->nqk", q.to(torch.float32), (k / math.sqrt(k.shape[1])).to(torch.float32))
    return logits.softmax(dim=2).to(q.dtype)


class UNetBlock(nn.Module):
    """The residual block shared by DDPM++, NCSN++ and ADM, with optional 2x resampling and self-attention.

    h = conv0(silu(norm0(x)))  (conv0 resamples when up/down); with e = affine(emb):
    adaptive_scale: h = silu(norm1(h)·(1 + scale) + shift), (scale, shift) = e split in two (ADM);
    otherwise: h = silu(norm1(h + e)) (DDPM++/NCSN++).
    y = (conv1(dropout(h)) + skip(x)) · skip_scale, skip = identity, or resample (+ 1x1 conv when the width
    changes or ``resample_proj``). With attention (``num_heads`` heads, default out_channels //
    channels_per_head; none if that is 0): (q, k, v) = qkv(norm2(y)) split per head, where channel
    h·3c + 3i + j of qkv's output is channel i of head h of (q, k, v)[j]; y ← (proj(v·Wᵀ) + y) · skip_scale
    with W = attention_weights(q, k).

    x (B, in_channels, H, W), emb (B or 1, emb_channels) → (B, out_channels, H', W'), H' = 2H, H / 2 or H.
    ``init``, ``init_zero`` and ``init_attn`` are Conv2d/Linear init keywords for the ordinary layers (default
    {}), the last conv of each branch (conv1, proj; default {"init_weight": 0}) and qkv (default ``init``).
    """

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False,
                 down: bool = False, attention: bool = False, num_heads: int | None = None,
                 channels_per_head: int = 64, dropout: float = 0, skip_scale: float = 1, eps: float = 1e-5,
                 resample_filter: Sequence[float] = (1, 1), resample_proj: bool = False, adaptive_scale: bool = True,
                 init: Mapping | None = None, init_zero: Mapping | None = None, init_attn: Mapping | None = None):
        super().__init__()
        init = {} if init is None else init
        init_zero = {"init_weight": 0} if init_zero is None else init_zero
        self.in_channels, self.out_channels, self.emb_channels = in_channels, out_channels, emb_channels
        if not attention:
            self.num_heads = 0
        else:
            self.num_heads = num_heads if num_heads is not None else out_channels // channels_per_head
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale

        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter, **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3, **init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            projected = resample_proj or out_channels != in_channels
            self.skip = Conv2d(in_channels, out_channels, 1 if projected else 0, up=up, down=down,
                               resample_filter=resample_filter, **init)
        if self.num_heads:
            if out_channels % self.num_heads:
                raise ValueError(f"UNetBlock attention needs out_channels divisible by num_heads; got "
                                 f"out_channels={out_channels}, num_heads={self.num_heads}")
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1, **(init if init_attn is None else init_attn))
            self.proj = Conv2d(out_channels, out_channels, 1, **init_zero)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        e = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = e.chunk(2, dim=1)
            h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        else:
            h = F.silu(self.norm1(h.add_(e)))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        y = h.add_(x if self.skip is None else self.skip(x)) * self.skip_scale
        if not self.num_heads:
            return y
        batch, channels = y.shape[:2]
        qkv = self.qkv(self.norm2(y)).reshape(batch * self.num_heads, channels // self.num_heads, 3, -1)
        q, k, v = qkv.unbind(2)
        a = torch.einsum("nqk,nck->ncq", attention_weights(q, k), v)
        return self.proj(a.reshape(y.shape)).add_(y) * self.skip_scale


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding [cos(x ω), sin(x ω)]: x (B,) → (B, num_channels), ω_i = max_positions^(−i / D),
    i = 0 … num_channels/2 − 1, D = num_channels/2 − 1 with ``endpoint`` (ω spans 1 … 1/max_positions) else
    num_channels/2 (Vaswani et al. 2017). ω is computed in float32, then cast to x's dtype."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

    def forward(self, x: Tensor) -> Tensor:
        half = self.num_channels // 2
        i = torch.arange(half, dtype=torch.float32, device=x.device)
        omega = (1 / self.max_positions) ** (i / (half - (1 if self.endpoint else 0)))
        angles = torch.outer(x, omega.to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features [cos(2π x f), sin(2π x f)]: x (B,) → (B, num_channels), with the buffer
    ``freqs`` f ~ N(0, scale²) of size num_channels/2 (Tancik et al. 2020; NCSN++'s noise embedding)."""

    def __init__(self, num_channels: int, scale: float = 16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: Tensor) -> Tensor:
        angles = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)
