"""Layers of score_sde_pytorch's DDPM, NCSN++ and DDPM++ networks (Ho et al. 2020; Song et al. 2021, App. H).

Module attribute names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0``, …) and parameter shapes follow
score_sde_pytorch (commit cb1f359) so that its ``state_dict`` loads as is. Weights start from the
variance-scaling initialisation the DDPM code uses (fan-avg, uniform); a layer with ``init_scale=0`` starts at
a tiny scale (1e-10), so that residual branches begin close to the identity.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import fir as _fir

Tensor = torch.Tensor

#: Activations by the name score_sde_pytorch's ``model.nonlinearity`` uses.
ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2), "swish": nn.SiLU}

_SQRT2 = math.sqrt(2.0)


def activation(name: str) -> nn.Module:
    """The activation module for ``name`` in ``ACTIVATIONS`` (elu, relu, lrelu = LeakyReLU(0.2), swish = SiLU)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in ACTIVATIONS:
        raise ValueError(f"nonlinearity must be one of {sorted(ACTIVATIONS)}; got {name!r}")
    return ACTIVATIONS[key]()


def variance_scaling(scale: float, mode: str = "fan_avg", distribution: str = "uniform", in_axis: int = 1,
                     out_axis: int = 0) -> Callable:
    """An initialiser ``init(shape, dtype=float32, device=None)`` with Var[w] = scale / n (JAX's variance_scaling).

    n = fan_in, fan_out or their mean (``mode``), where fan_in = shape[in_axis]·r, fan_out = shape[out_axis]·r and
    r = Π shape / (shape[in_axis]·shape[out_axis]) is the receptive field. ``distribution`` 'uniform' draws
    U(−√(3 scale/n), √(3 scale/n)), 'normal' draws N(0, scale/n).
    """
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg'; got {mode!r}")
    if distribution not in ("uniform", "normal"):
        raise ValueError(f"distribution must be 'uniform' or 'normal'; got {distribution!r}")

    def init(shape, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        shape = tuple(int(s) for s in shape)
        receptive = math.prod(shape) / shape[in_axis] / shape[out_axis]
        fan_in, fan_out = shape[in_axis] * receptive, shape[out_axis] * receptive
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / n
        if distribution == "normal":
            return torch.randn(*shape, dtype=dtype, device=device) * math.sqrt(variance)
        return (torch.rand(*shape, dtype=dtype, device=device) * 2.0 - 1.0) * math.sqrt(3 * variance)

    return init


def default_init(scale: float = 1.0) -> Callable:
    """DDPM's initialiser: fan-avg uniform variance scaling with ``scale`` (0 is replaced by 1e-10)."""
    return variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


def _reinit(layer: nn.Module, init_scale: float = 1.0) -> nn.Module:
    """Replace a Conv2d/Linear's weight by ``default_init(init_scale)`` and zero its bias."""
    layer.weight.data = default_init(init_scale)(layer.weight.shape, dtype=layer.weight.dtype,
                                                 device=layer.weight.device)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def conv1x1(in_ch: int, out_ch: int, stride: int = 1, bias: bool = True, init_scale: float = 1.0,
            padding: int = 0) -> nn.Conv2d:
    """1 × 1 ``nn.Conv2d`` with DDPM initialisation (``default_init(init_scale)`` weight, zero bias)."""
    return _reinit(nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, padding=padding, bias=bias), init_scale)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, bias: bool = True, dilation: int = 1, init_scale: float = 1.0,
            padding: int = 1) -> nn.Conv2d:
    """3 × 3 ``nn.Conv2d`` with DDPM initialisation (``default_init(init_scale)`` weight, zero bias)."""
    return _reinit(nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=padding, dilation=dilation,
                             bias=bias), init_scale)


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    """``nn.Linear`` with DDPM initialisation (``default_init()`` weight, zero bias)."""
    return _reinit(nn.Linear(in_dim, out_dim))


def group_norm(channels: int, groups: Optional[int] = None) -> nn.GroupNorm:
    """GroupNorm with ε = 1e-6 and ``groups`` groups (default min(channels // 4, 32), as NCSN++)."""
    groups = min(channels // 4, 32) if groups is None else groups
    if groups < 1 or channels % groups:
        raise ValueError(f"GroupNorm needs a number of groups ≥ 1 dividing the channels; got {groups} groups for "
                         f"{channels} channels (NCSN++ uses min(channels // 4, 32), DDPM 32)")
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6)


class NIN(nn.Module):
    """Network-in-network: a per-pixel linear map y[b, :, i, j] = x[b, :, i, j] W + b.

    W (in_dim, num_units), b (num_units,); (B, in_dim, H, W) → (B, num_units, H, W).
    """

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(default_init(init_scale)((in_dim, num_units)))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: Tensor) -> Tensor:
        return (x.permute(0, 2, 3, 1) @ self.W + self.b).permute(0, 3, 1, 2)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features γ(s) = [sin(2π W s), cos(2π W s)] with fixed W ~ N(0, scale²) (NCSN++).

    ``W`` (embedding_size,) is a parameter with ``requires_grad=False``, as score_sde_pytorch stores it: it is in
    ``parameters()`` and the model's state dict, but not in their EMA's ``shadow_params`` (which keep only the
    parameters that require gradients). s (B,) → (B, 2·embedding_size). NCSN++ feeds s = log σ.
    """

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, s: Tensor) -> Tensor:
        angles = s[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def timestep_embedding(timesteps: Tensor, dim: int, max_positions: int = 10000,
                       dtype: torch.dtype = torch.float32) -> Tensor:
    """Transformer sinusoidal embedding of (B,) timesteps (DDPM): (B, dim) = [sin(t ω_i), cos(t ω_i)].

    ω_i = max_positions^(−i / (d/2 − 1)) for i = 0 … d/2 − 1 (d/2 = dim // 2); an odd ``dim`` gets a zero last
    column. Computed in ``dtype`` (float32 by default, as DDPM); t may be integer or real.
    """
    if timesteps.dim() != 1:
        raise ValueError(f"timesteps must have shape (B,); got {tuple(timesteps.shape)}")
    half = dim // 2
    if half < 2:
        raise ValueError(f"the timestep embedding needs dim >= 4; got {dim}")
    rate = math.log(max_positions) / (half - 1)
    frequencies = torch.exp(torch.arange(half, dtype=dtype, device=timesteps.device) * -rate)
    angles = timesteps.to(dtype)[:, None] * frequencies[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class AttnBlock(nn.Module):
    """Self-attention over the H·W positions with one head of width C, residual.

    out = x + NIN₃(softmax(q kᵀ / √C) v), with q, k, v = NIN₀,₁,₂(GroupNorm(x)); divided by √2 when
    ``skip_rescale``. (B, C, H, W) → same. ``init_scale`` initialises NIN₃ (0: starts as the identity).
    ``norm_groups`` None gives min(C // 4, 32) groups (NCSN++'s AttnBlockpp); DDPM uses 32.
    """

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0,
                 norm_groups: Optional[int] = None):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, norm_groups)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (nin(h).reshape(b, c, height * width).transpose(1, 2)
                   for nin in (self.NIN_0, self.NIN_1, self.NIN_2))                      # each (B, HW, C)
        weights = torch.softmax(q @ k.transpose(1, 2) * c ** -0.5, dim=-1)               # (B, HW, HW)
        h = (weights @ v).transpose(1, 2).reshape(b, c, height, width)
        h = self.NIN_3(h)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class Combine(nn.Module):
    """Merge the input pyramid x into features y: cat([Conv₁ₓ₁(x), y]) or Conv₁ₓ₁(x) + y (``method``)."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        if method not in ("cat", "sum"):
            raise ValueError(f"progressive_combine must be 'cat' or 'sum'; got {method!r}")
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class Upsample(nn.Module):
    """×2 upsampling (B, in_ch, H, W) → (B, out_ch, 2H, 2W).

    Without FIR: nearest neighbour, then a 3 × 3 conv if ``with_conv`` (``Conv_0``). With FIR: the FIR filter
    (``fir_kernel``), fused with a 3 × 3 conv if ``with_conv`` (``Conv2d_0``). Without a conv out_ch = in_ch.
    """

    def __init__(self, in_ch: Optional[int] = None, out_ch: Optional[int] = None, with_conv: bool = False,
                 fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        if with_conv and fir:
            self.Conv2d_0 = _fir.FIRConv2d(in_ch, out_ch, kernel=3, up=True, resample_kernel=fir_kernel,
                                           use_bias=True, kernel_init=default_init())
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch)
        self.fir, self.with_conv, self.fir_kernel, self.out_ch = fir, with_conv, tuple(fir_kernel), out_ch

    def forward(self, x: Tensor) -> Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else _fir.upsample_2d(x, self.fir_kernel, factor=2)
        h = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """×2 downsampling (B, in_ch, H, W) → (B, out_ch, H/2, W/2).

    Without FIR: a stride-2 3 × 3 conv after padding one zero row/column at the bottom/right ('SAME' as in
    TensorFlow; ``Conv_0``) if ``with_conv``, else 2 × 2 average pooling. With FIR: the FIR filter, fused with a
    3 × 3 conv if ``with_conv`` (``Conv2d_0``).
    """

    def __init__(self, in_ch: Optional[int] = None, out_ch: Optional[int] = None, with_conv: bool = False,
                 fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        if with_conv and fir:
            self.Conv2d_0 = _fir.FIRConv2d(in_ch, out_ch, kernel=3, down=True, resample_kernel=fir_kernel,
                                           use_bias=True, kernel_init=default_init())
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        self.fir, self.with_conv, self.fir_kernel, self.out_ch = fir, with_conv, tuple(fir_kernel), out_ch

    def forward(self, x: Tensor) -> Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else _fir.downsample_2d(x, self.fir_kernel, factor=2)
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlockDDPMpp(nn.Module):
    """DDPM residual block with the time embedding as a per-channel bias (DDPM++, Song et al. 2021).

    h = Conv₁(Dropout(act(GN₁(Conv₀(act(GN₀(x))) + Dense₀(act(temb)))))); out = skip(x) + h, divided by √2
    when ``skip_rescale``. skip is the identity, or a NIN (``Conv_2``, a 3 × 3 conv, with ``conv_shortcut``)
    when the channels change. (B, in_ch, H, W), temb (B, temb_dim) → (B, out_ch, H, W).
    """

    def __init__(self, act: nn.Module, in_ch: int, out_ch: Optional[int] = None, temb_dim: Optional[int] = None,
                 conv_shortcut: bool = False, dropout: float = 0.1, skip_rescale: bool = False,
                 init_scale: float = 0.0, norm_groups: Optional[int] = None):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        self.GroupNorm_0 = group_norm(in_ch, norm_groups)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, norm_groups)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.in_ch, self.out_ch = act, in_ch, out_ch
        self.skip_rescale, self.conv_shortcut = skip_rescale, conv_shortcut

    def forward(self, x: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class ResnetBlockDDPM(ResnetBlockDDPMpp):
    """The original DDPM residual block: `ResnetBlockDDPMpp` with 32 GroupNorm groups, no rescaling and the last
    conv initialised at scale 0."""

    def __init__(self, act: nn.Module, in_ch: int, out_ch: Optional[int] = None, temb_dim: Optional[int] = None,
                 conv_shortcut: bool = False, dropout: float = 0.1):
        super().__init__(act, in_ch, out_ch, temb_dim, conv_shortcut, dropout, skip_rescale=False, init_scale=0.0,
                         norm_groups=32)


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block that can resample (NCSN++, Song et al. 2021, App. H).

    h = act(GN₀(x)), resampled ×2 (``up``) or ×½ (``down``) by FIR (``fir``) or nearest/average pooling, then
    h = Conv₁(Dropout(act(GN₁(Conv₀(h) + Dense₀(act(temb)))))). The skip path resamples x the same way and
    applies a 1 × 1 conv (``Conv_2``) when the channels change or it resamples; out = (skip + h) / √2 with
    ``skip_rescale``, else skip + h. (B, in_ch, H, W) → (B, out_ch, H', W').
    """

    def __init__(self, act: nn.Module, in_ch: int, out_ch: Optional[int] = None, temb_dim: Optional[int] = None,
                 up: bool = False, down: bool = False, dropout: float = 0.1, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        if up and down:
            raise ValueError("ResnetBlockBigGANpp resamples one way: pass up=True or down=True, not both")
        out_ch = out_ch if out_ch else in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.up, self.down, self.fir, self.fir_kernel = up, down, fir, tuple(fir_kernel)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.skip_rescale, self.act, self.in_ch, self.out_ch = skip_rescale, act, in_ch, out_ch

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return _fir.upsample_2d(x, self.fir_kernel, factor=2) if self.fir else _fir.naive_upsample_2d(x, 2)
        if self.down:
            return _fir.downsample_2d(x, self.fir_kernel, factor=2) if self.fir else _fir.naive_downsample_2d(x, 2)
        return x

    def forward(self, x: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        h = self._resample(self.act(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch or self.up or self.down:
            x = self.Conv_2(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h
