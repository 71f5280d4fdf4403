"""score_sde_pytorch's DDPM U-Net (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", App. B),
parameter-for-parameter compatible with its ``DDPM`` model (commit cb1f359)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from . import score_sde_layers as L
from ._checks import count
from .ncsnpp import _choice, _int_tuple, _positive_int, noise_levels, read_config, time_vector

Tensor = torch.Tensor


class DDPM(nn.Module):
    """The DDPM U-Net; ``forward(x, labels)`` maps x (B, C, H, W) and integer time indices (B,) to x's shape.

    Levels ℓ = 0 … L − 1 have nf·ch_mult[ℓ] channels at side image_size / 2^ℓ, ``num_res_blocks`` DDPM residual
    blocks going down and ``num_res_blocks + 1`` going up (each eating a skip), self-attention at the sides in
    ``attn_resolutions`` (after every down block, after the last up block of the level) and in the middle,
    stride-2 conv (or average-pool) downsampling and nearest-neighbour (+ conv) upsampling. GroupNorms have 32
    groups, so every width nf·ch_mult[ℓ] must be a multiple of 32.

    With ``conditional`` the labels t (time indices 0 … N − 1, or any real time) are embedded sinusoidally and
    added as a per-channel bias in every residual block. With ``scale_by_sigma`` the output is divided by
    ``sigmas[labels]``; with ``centered=False`` the input is taken in [0, 1] and mapped to 2x − 1 first.

    The module tree (a flat ``all_modules`` list), ``state_dict`` keys, shapes, dtypes (``sigmas`` is float64)
    and ``parameters()`` order are those of score_sde_pytorch's ``DDPM``, whose checkpoints load as is.
    Defaults are its ``vp/ddpm/cifar10`` configuration.

    Args: score_sde's ``config.model`` fields (nf, ch_mult, num_res_blocks, attn_resolutions, dropout,
        resamp_with_conv, conditional, scale_by_sigma, nonlinearity (elu, relu, lrelu, swish), sigma_min,
        sigma_max, num_scales) and ``config.data`` fields (image_size, num_channels, centered).
    """

    _data_fields = ("image_size", "num_channels", "centered")

    def __init__(self, *, nf: int = 128, ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1, resamp_with_conv: bool = True,
                 conditional: bool = True, scale_by_sigma: bool = False, nonlinearity: str = "swish",
                 sigma_min: float = 0.01, sigma_max: float = 50.0, num_scales: int = 1000, image_size: int = 32,
                 num_channels: int = 3, centered: bool = True):
        super().__init__()
        nf = _positive_int("nf", nf)
        ch_mult = _int_tuple("ch_mult", ch_mult)
        num_res_blocks = count("num_res_blocks", num_res_blocks)
        attn_resolutions = _int_tuple("attn_resolutions", attn_resolutions, allow_empty=True)
        image_size, channels = _positive_int("image_size", image_size), _positive_int("num_channels", num_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        bad = [nf * m for m in ch_mult if (nf * m) % 32]
        if bad:
            raise ValueError(f"DDPM's GroupNorms have 32 groups: nf·ch_mult must be multiples of 32; got widths "
                             f"{[nf * m for m in ch_mult]} (nf={nf}, ch_mult={ch_mult})")
        levels = len(ch_mult)
        if image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size must be divisible by 2^(len(ch_mult) - 1) = {2 ** (levels - 1)}; "
                             f"got {image_size}")

        self.act = act = L.activation(_choice("nonlinearity", nonlinearity))
        self.register_buffer("sigmas", noise_levels(sigma_min, sigma_max, num_scales))
        self.nf, self.num_res_blocks, self.num_resolutions = nf, num_res_blocks, levels
        self.attn_resolutions = attn_resolutions
        self.all_resolutions = [image_size // 2 ** i for i in range(levels)]
        self.conditional, self.centered, self.scale_by_sigma = bool(conditional), bool(centered), bool(scale_by_sigma)
        self.image_size, self.num_channels = image_size, channels
        self._attention = [side in attn_resolutions for side in self.all_resolutions]

        temb_dim = 4 * nf  # every residual block has its Dense_0, as in score_sde, even when unconditional

        def resblock(in_ch, out_ch=None):
            return L.ResnetBlockDDPM(act, in_ch, out_ch, temb_dim=temb_dim, dropout=dropout)

        def attention(ch):
            return L.AttnBlock(ch, skip_rescale=False, init_scale=0.0, norm_groups=32)

        modules = [L.dense(nf, temb_dim), L.dense(temb_dim, temb_dim)] if self.conditional else []
        modules.append(L.conv3x3(channels, nf))
        skips, width = [nf], nf
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                modules.append(resblock(width, nf * mult))
                width = nf * mult
                if self._attention[level]:
                    modules.append(attention(width))
                skips.append(width)
            if level < levels - 1:
                modules.append(L.Downsample(in_ch=width, with_conv=resamp_with_conv))
                skips.append(width)
        modules += [resblock(width), attention(width), resblock(width)]
        for level in reversed(range(levels)):
            for _ in range(num_res_blocks + 1):
                modules.append(resblock(width + skips.pop(), nf * ch_mult[level]))
                width = nf * ch_mult[level]
            if self._attention[level]:
                modules.append(attention(width))
            if level > 0:
                modules.append(L.Upsample(in_ch=width, with_conv=resamp_with_conv))
        modules += [L.group_norm(width, 32), L.conv3x3(width, channels, init_scale=0.0)]
        self.all_modules = nn.ModuleList(modules)

    @classmethod
    def from_config(cls, config: Mapping[str, Mapping[str, Any]]) -> "DDPM":
        """Build from score_sde config fields as plain dicts, ``{"model": {...}, "data": {...}}``.

        ``model.*`` fields named like the constructor's keywords and ``data.image_size``, ``data.num_channels``,
        ``data.centered`` are passed on; every other field is ignored; a missing field keeps the default.
        """
        return cls(**read_config(cls, config, cls._data_fields))

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """x (B, num_channels, H, W) with H, W divisible by 2^(L−1); labels (B,) time indices → x's shape."""
        if x.dim() != 4 or x.shape[1] != self.num_channels or any(s % 2 ** (self.num_resolutions - 1)
                                                                   for s in x.shape[2:]):
            raise ValueError(f"x must have shape (B, {self.num_channels}, H, W) with H and W divisible by "
                             f"{2 ** (self.num_resolutions - 1)}; got {tuple(x.shape)}")
        labels = time_vector(labels, x)
        layers = iter(self.all_modules)
        temb = None
        if self.conditional:
            emb = L.timestep_embedding(labels, self.nf, dtype=torch.promote_types(x.dtype, torch.float32))
            first, second = next(layers), next(layers)
            temb = second(self.act(first(emb.to(x.dtype))))
        h = x if self.centered else 2 * x - 1.0

        hs = [next(layers)(h)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(layers)(hs[-1], temb)
                if self._attention[level]:
                    h = next(layers)(h)
                hs.append(h)
            if level < self.num_resolutions - 1:
                hs.append(next(layers)(hs[-1]))

        h = hs[-1]
        block, attention, block2 = next(layers), next(layers), next(layers)
        h = block2(attention(block(h, temb)), temb)
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(layers)(torch.cat([h, hs.pop()], dim=1), temb)
            if self._attention[level]:
                h = next(layers)(h)
            if level > 0:
                h = next(layers)(h)

        norm, conv = next(layers), next(layers)
        h = conv(self.act(norm(h)))
        if self.scale_by_sigma:
            h = h / self.sigmas[labels.long()].to(h.dtype).reshape(-1, *[1] * (h.dim() - 1))
        return h
