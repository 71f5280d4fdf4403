"""score_sde_pytorch's NCSN++ / DDPM++ U-Net (Song et al. 2021, "Score-Based Generative Modeling through SDEs",
App. H), parameter-for-parameter compatible with its ``NCSNpp`` (commit cb1f359)."""
from __future__ import annotations

import inspect
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import score_sde_layers as L
from ._checks import positive_int, positive_ints
from .fir import fir_kernel as taps_kernel

Tensor = torch.Tensor

_CHOICES = {
    "resblock_type": ("ddpm", "biggan"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "embedding_type": ("fourier", "positional"),
    "attention_type": ("ddpm",),
    "nonlinearity": tuple(L.ACTIVATIONS),
}


def _choice(name: str, value: Any) -> str:
    valid = _CHOICES[name]
    key = value.lower() if isinstance(value, str) else value
    if key not in valid:
        raise ValueError(f"{name} must be one of {', '.join(repr(v) for v in valid)}; got {value!r}")
    return key


_positive_int, _int_tuple = positive_int, positive_ints


def noise_levels(sigma_min: float, sigma_max: float, num_scales: int) -> Tensor:
    """σ_i = exp(linspace(log σ_max, log σ_min, N)), i = 0 … N − 1, as a float64 tensor (score_sde's
    ``get_sigmas``, computed with NumPy so that the values are bit-identical to its ``sigmas`` buffer)."""
    if not (0 < sigma_min and 0 < sigma_max and math.isfinite(sigma_max)):
        raise ValueError(f"sigma_min and sigma_max must be positive and finite; got {sigma_min!r}, {sigma_max!r}")
    num_scales = _positive_int("num_scales", num_scales)
    return torch.from_numpy(np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales)))


def time_vector(t: Any, x: Tensor) -> Tensor:
    """``t`` as a (B,) tensor on x's device (a number or 0-dim tensor is broadcast); its dtype is kept."""
    if not torch.is_tensor(t):
        t = torch.as_tensor(t, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"time_cond must have shape (B,) = ({x.shape[0]},) to match x of shape {tuple(x.shape)}; "
                         f"got shape {tuple(t.shape)}")
    return t.to(x.device)


def read_config(cls, config: Mapping[str, Mapping[str, Any]], data_fields: Sequence[str]) -> dict:
    """Constructor keywords of ``cls`` from a nested ``{"model": {...}, "data": {...}}`` dict of score_sde
    config fields; fields the class does not read are ignored, missing ones keep the class defaults."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping {{'model': {{...}}, 'data': {{...}}}}; got {type(config).__name__}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    kwargs = {}
    for section in ("model", "data"):
        fields = config.get(section, {}) or {}
        if not isinstance(fields, Mapping):
            raise TypeError(f"config[{section!r}] must be a mapping; got {type(fields).__name__}")
        for name, value in fields.items():
            if name in accepted and (section == "data") == (name in data_fields):
                kwargs[name] = value
    return kwargs


class NCSNpp(nn.Module):
    """NCSN++ (VE) and DDPM++ (VP) U-Net; ``forward(x, time_cond)`` maps x (B, C, H, W) to a score-shaped output.

    Levels ℓ = 0 … L − 1 (L = len(ch_mult)) have nf·ch_mult[ℓ] channels at side image_size / 2^ℓ, with
    ``num_res_blocks`` residual blocks going down and ``num_res_blocks + 1`` going up (each eating a skip), and
    self-attention at the sides in ``attn_resolutions`` (after every down block, after the last up block of the
    level) and in the middle (ResBlock → attention → ResBlock). Resampling between levels is done by BigGAN
    residual blocks (``resblock_type='biggan'``) or by Upsample/Downsample layers (``'ddpm'``), with FIR filters
    when ``fir``. ``progressive_input`` feeds a downsampled copy of the input to every level ('input_skip',
    merged by ``progressive_combine``) or a residual pyramid ('residual'); ``progressive`` builds the output
    from every level ('output_skip') or from a residual pyramid ('residual').

    The conditioning ``time_cond`` (B,) is, with ``embedding_type='fourier'``, the noise level σ, embedded as
    GaussianFourier(log σ); with ``'positional'``, a time index (score_sde passes 999·t for continuous VP and
    the integer index otherwise), embedded sinusoidally. With ``scale_by_sigma`` the output is divided by σ:
    the given σ (fourier) or ``sigmas[time_cond.long()]`` (positional). With ``centered=False`` the input is taken
    in [0, 1] and mapped to 2x − 1 first.

    The module tree (a flat ``all_modules`` list), ``state_dict`` keys, shapes, dtypes (``sigmas`` is float64)
    and ``parameters()`` order are those of score_sde_pytorch's ``NCSNpp``, whose checkpoints load as is.
    Defaults are its ``ve/cifar10_ncsnpp_continuous`` configuration (NCSN++ cont., CIFAR-10).

    Args: score_sde's ``config.model`` fields (nf, ch_mult, num_res_blocks, attn_resolutions, dropout,
        resamp_with_conv, conditional, fir, fir_kernel, skip_rescale, resblock_type, progressive,
        progressive_input, progressive_combine, attention_type ('ddpm' only), embedding_type, fourier_scale,
        init_scale, scale_by_sigma, nonlinearity (elu, relu, lrelu, swish), conv_size (3 only), sigma_min,
        sigma_max, num_scales) and ``config.data`` fields (image_size, num_channels, centered).
    """

    _data_fields = ("image_size", "num_channels", "centered")

    def __init__(self, *, nf: int = 128, ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1, resamp_with_conv: bool = True,
                 conditional: bool = True, fir: bool = True, fir_kernel: Sequence[float] = (1, 3, 3, 1),
                 skip_rescale: bool = True, resblock_type: str = "biggan", progressive: str = "none",
                 progressive_input: str = "residual", progressive_combine: str = "sum", attention_type: str = "ddpm",
                 embedding_type: str = "fourier", fourier_scale: float = 16.0, init_scale: float = 0.0,
                 scale_by_sigma: bool = True, nonlinearity: str = "swish", conv_size: int = 3,
                 sigma_min: float = 0.01, sigma_max: float = 50.0, num_scales: int = 1000, image_size: int = 32,
                 num_channels: int = 3, centered: bool = False):
        super().__init__()
        nf = _positive_int("nf", nf)
        ch_mult = _int_tuple("ch_mult", ch_mult)
        num_res_blocks = _positive_int("num_res_blocks", num_res_blocks)
        attn_resolutions = _int_tuple("attn_resolutions", attn_resolutions, allow_empty=True)
        image_size, channels = _positive_int("image_size", image_size), _positive_int("num_channels", num_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        if conv_size != 3:
            raise ValueError(f"conv_size must be 3 (the only size NCSN++ builds); got {conv_size!r}")
        resblock_type = _choice("resblock_type", resblock_type)
        progressive = _choice("progressive", progressive)
        progressive_input = _choice("progressive_input", progressive_input)
        combine = _choice("progressive_combine", progressive_combine)
        embedding_type = _choice("embedding_type", embedding_type)
        _choice("attention_type", attention_type)
        taps_kernel(fir_kernel)  # validates the taps (1-D separable, or a square 2-D kernel)
        fir_kernel = tuple(fir_kernel)
        levels = len(ch_mult)
        if image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size must be divisible by 2^(len(ch_mult) - 1) = {2 ** (levels - 1)}; "
                             f"got {image_size}")

        self.act = act = L.activation(_choice("nonlinearity", nonlinearity))
        self.register_buffer("sigmas", noise_levels(sigma_min, sigma_max, num_scales))
        self.nf, self.num_res_blocks, self.num_resolutions = nf, num_res_blocks, levels
        self.attn_resolutions = attn_resolutions
        self.all_resolutions = [image_size // 2 ** i for i in range(levels)]
        self.conditional, self.skip_rescale, self.resblock_type = bool(conditional), bool(skip_rescale), resblock_type
        self.progressive, self.progressive_input, self.embedding_type = progressive, progressive_input, embedding_type
        self.scale_by_sigma, self.centered = bool(scale_by_sigma), bool(centered)
        self.image_size, self.num_channels = image_size, channels
        # Which levels carry attention, by the side they have at the configured image size.
        self._attention = [side in attn_resolutions for side in self.all_resolutions]

        temb_dim = 4 * nf

        def resblock(in_ch, out_ch=None, up=False, down=False):
            if resblock_type == "ddpm":
                return L.ResnetBlockDDPMpp(act, in_ch, out_ch, temb_dim, dropout=dropout, skip_rescale=skip_rescale,
                                           init_scale=init_scale)
            return L.ResnetBlockBigGANpp(act, in_ch, out_ch, temb_dim, up=up, down=down, dropout=dropout, fir=fir,
                                         fir_kernel=fir_kernel, skip_rescale=skip_rescale, init_scale=init_scale)

        def attention(ch):
            return L.AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        modules = []
        if embedding_type == "fourier":
            modules.append(L.GaussianFourierProjection(embedding_size=nf, scale=fourier_scale))
        if self.conditional:
            embed_dim = 2 * nf if embedding_type == "fourier" else nf
            modules += [L.dense(embed_dim, temb_dim), L.dense(temb_dim, temb_dim)]
        # The fixed (parameter-free) resamplers of the input/output pyramids live outside all_modules.
        if progressive == "output_skip":
            self.pyramid_upsample = L.Upsample(fir=fir, fir_kernel=fir_kernel, with_conv=False)
        if progressive_input == "input_skip":
            self.pyramid_downsample = L.Downsample(fir=fir, fir_kernel=fir_kernel, with_conv=False)

        # Encoder; `skips` records the width of every feature map pushed for the decoder.
        modules.append(L.conv3x3(channels, nf))
        skips, width, pyramid_width = [nf], nf, channels
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                modules.append(resblock(width, nf * mult))
                width = nf * mult
                if self._attention[level]:
                    modules.append(attention(width))
                skips.append(width)
            if level == levels - 1:
                continue
            if resblock_type == "ddpm":
                modules.append(L.Downsample(in_ch=width, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
            else:
                modules.append(resblock(width, down=True))
            if progressive_input == "input_skip":
                modules.append(L.Combine(dim1=pyramid_width, dim2=width, method=combine))
                width = 2 * width if combine == "cat" else width
            elif progressive_input == "residual":
                modules.append(L.Downsample(in_ch=pyramid_width, out_ch=width, with_conv=True, fir=fir,
                                            fir_kernel=fir_kernel))
                pyramid_width = width
            skips.append(width)

        modules += [resblock(width), attention(width), resblock(width)]

        # Decoder.
        for level in reversed(range(levels)):
            for _ in range(num_res_blocks + 1):
                modules.append(resblock(width + skips.pop(), nf * ch_mult[level]))
                width = nf * ch_mult[level]
            if self._attention[level]:
                modules.append(attention(width))
            if progressive == "output_skip":
                modules += [L.group_norm(width), L.conv3x3(width, channels, init_scale=init_scale)]
            elif progressive == "residual" and level == levels - 1:
                modules += [L.group_norm(width), L.conv3x3(width, width)]
                pyramid_width = width
            elif progressive == "residual":
                modules.append(L.Upsample(in_ch=pyramid_width, out_ch=width, with_conv=True, fir=fir,
                                          fir_kernel=fir_kernel))
                pyramid_width = width
            if level > 0:
                if resblock_type == "ddpm":
                    modules.append(L.Upsample(in_ch=width, with_conv=resamp_with_conv, fir=fir,
                                              fir_kernel=fir_kernel))
                else:
                    modules.append(resblock(width, up=True))
        if progressive != "output_skip":
            modules += [L.group_norm(width), L.conv3x3(width, channels, init_scale=init_scale)]
        self.all_modules = nn.ModuleList(modules)

    @classmethod
    def from_config(cls, config: Mapping[str, Mapping[str, Any]]) -> "NCSNpp":
        """Build from score_sde config fields as plain dicts, ``{"model": {...}, "data": {...}}``.

        ``model.*`` fields named like the constructor's keywords and ``data.image_size``, ``data.num_channels``,
        ``data.centered`` are passed on; every other field (``name``, ``ema_rate``, ``normalization``,
        ``beta_min``, …) is ignored; a missing field keeps the default.
        """
        return cls(**read_config(cls, config, cls._data_fields))

    def _merge(self, a: Tensor, b: Tensor) -> Tensor:
        return (a + b) / math.sqrt(2.0) if self.skip_rescale else a + b

    def forward(self, x: Tensor, time_cond: Tensor) -> Tensor:
        """x (B, num_channels, H, W) with H, W divisible by 2^(L−1); time_cond (B,) (σ or time index, see the
        class) → (B, num_channels, H, W) in x's dtype."""
        if x.dim() != 4 or x.shape[1] != self.num_channels or any(s % 2 ** (self.num_resolutions - 1)
                                                                   for s in x.shape[2:]):
            raise ValueError(f"x must have shape (B, {self.num_channels}, H, W) with H and W divisible by "
                             f"{2 ** (self.num_resolutions - 1)}; got {tuple(x.shape)}")
        time_cond = time_vector(time_cond, x)
        layers = iter(self.all_modules)
        if self.embedding_type == "fourier":
            sigma = time_cond.to(x.dtype)
            temb = next(layers)(torch.log(sigma))
        else:
            temb = L.timestep_embedding(time_cond, self.nf, dtype=torch.promote_types(x.dtype, torch.float32))
            temb = temb.to(x.dtype)
        if self.conditional:
            first, second = next(layers), next(layers)
            temb = second(self.act(first(temb)))
        else:
            temb = None
        if not self.centered:
            x = 2 * x - 1.0
        biggan = self.resblock_type == "biggan"

        # Encoder.
        pyramid = x if self.progressive_input != "none" else None
        hs = [next(layers)(x)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(layers)(hs[-1], temb)
                if self._attention[level]:
                    h = next(layers)(h)
                hs.append(h)
            if level == self.num_resolutions - 1:
                continue
            down = next(layers)
            h = down(hs[-1], temb) if biggan else down(hs[-1])
            if self.progressive_input == "input_skip":
                pyramid = self.pyramid_downsample(pyramid)
                h = next(layers)(pyramid, h)
            elif self.progressive_input == "residual":
                pyramid = h = self._merge(next(layers)(pyramid), h)
            hs.append(h)

        h = hs[-1]
        block, attention, block2 = next(layers), next(layers), next(layers)
        h = block2(attention(block(h, temb)), temb)

        # Decoder.
        pyramid = None
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(layers)(torch.cat([h, hs.pop()], dim=1), temb)
            if self._attention[level]:
                h = next(layers)(h)
            if self.progressive == "output_skip":
                norm, conv = next(layers), next(layers)
                out = conv(self.act(norm(h)))
                pyramid = out if pyramid is None else self.pyramid_upsample(pyramid) + out
            elif self.progressive == "residual" and level == self.num_resolutions - 1:
                norm, conv = next(layers), next(layers)
                pyramid = conv(self.act(norm(h)))
            elif self.progressive == "residual":
                pyramid = h = self._merge(next(layers)(pyramid), h)
            if level > 0:
                up = next(layers)
                h = up(h, temb) if biggan else up(h)

        if self.progressive == "output_skip":
            h = pyramid
        else:
            norm, conv = next(layers), next(layers)
            h = conv(self.act(norm(h)))
        if self.scale_by_sigma:
            if self.embedding_type == "positional":
                sigma = self.sigmas[time_cond.long()]
            h = h / sigma.to(h.dtype).reshape(-1, *[1] * (h.dim() - 1))
        return h
