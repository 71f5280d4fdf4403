"""EDM's U-Nets (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models";
NVlabs/edm ``training/networks.py`` at commit 008a4e5), parameter for parameter: `SongUNet` (DDPM++ / NCSN++
of Song et al. 2021) and `DhariwalUNet` (ADM of Dhariwal & Nichol 2021).

Module names and nesting (``map_*``, the ``enc`` / ``dec`` ModuleDicts with keys such as ``32x32_block0``),
state_dict keys, shapes, dtypes and ``parameters()`` order are EDM's, and the constructors take EDM's keyword
arguments, so an EDM checkpoint's inner model (``EDMPrecond.model`` etc.) loads with ``load_state_dict`` into
``SongUNet(**init_kwargs)``. Both are called like EDM's: ``forward(x, noise_labels, class_labels,
augment_labels=None)`` with EDM's noise label c_noise(σ) (the preconditioning wrapper's job), not scoresde's t.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import count, positive_int, positive_ints
from .edm_layers import Conv2d, FourierEmbedding, GroupNorm, Linear, PositionalEmbedding, UNetBlock

Tensor = torch.Tensor

__all__ = ["SongUNet", "DhariwalUNet"]


_positive_int, _count = positive_int, count


def _int_list(name: str, value: Any, allow_empty: bool = False) -> list:
    return list(positive_ints(name, value, allow_empty))


def _choice(name: str, value: Any, valid: Sequence[str]) -> str:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")
    return value


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")
    return float(value)


def _check_resolution(img_resolution: int, levels: int) -> None:
    if img_resolution % 2 ** (levels - 1):
        raise ValueError(f"img_resolution must be divisible by 2^(len(channel_mult) - 1) = {2 ** (levels - 1)}; "
                         f"got {img_resolution}")


def _check_input(net: nn.Module, x: Tensor, noise_labels: Tensor) -> Tensor:
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != net.in_channels:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x must be a (B, {net.in_channels}, H, W) tensor; got {shape}")
    if not torch.is_tensor(noise_labels):
        raise TypeError(f"noise_labels must be a tensor of shape (B,); got {type(noise_labels).__name__}")
    noise_labels = noise_labels.reshape(1) if noise_labels.dim() == 0 else noise_labels
    if noise_labels.dim() != 1 or noise_labels.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"noise_labels must have shape ({x.shape[0]},) or (1,); got {tuple(noise_labels.shape)}")
    return noise_labels


def _dropped_labels(net: nn.Module, class_labels: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """class_labels (B or 1, label_dim), each row zeroed with probability ``label_dropout`` in training mode
    (classifier-free guidance's unconditional model, Ho & Salimans 2022)."""
    if class_labels is None:
        raise ValueError(f"this net is class-conditional (label_dim={net.map_label.in_features}): class_labels "
                         f"must be a (B, {net.map_label.in_features}) tensor; got None")
    if class_labels.dim() != 2 or class_labels.shape[1] != net.map_label.in_features:
        raise ValueError(f"class_labels must have shape (B, {net.map_label.in_features}); "
                         f"got {tuple(class_labels.shape)}")
    if net.training and net.label_dropout:
        keep = torch.rand([batch, 1], device=device) >= net.label_dropout
        class_labels = class_labels * keep.to(class_labels.dtype)
    return class_labels


class SongUNet(nn.Module):
    """DDPM++ / NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs") as EDM builds them.

    Embedding: e = silu(L1(silu(L0([sin, cos](c_noise) + label(√label_dim · y) + augment(a))))) with
    emb_channels = model_channels·channel_mult_emb; the noise embedding (model_channels·channel_mult_noise
    channels) is positional (DDPM++, with endpoint) or random Fourier (NCSN++, scale 16), its cos/sin halves
    swapped. Level ℓ has side img_resolution / 2^ℓ and width model_channels·channel_mult[ℓ]; the encoder is a
    3x3 conv, then per level a downsampling block (ℓ > 0) and ``num_blocks`` blocks; the decoder starts with two
    blocks at the lowest side (the first with attention), then per level an upsampling block (ℓ < L − 1) and
    ``num_blocks + 1`` blocks, each concatenating the matching encoder output. Blocks are `UNetBlock` with
    skip_scale √½, eps 1e-6, one attention head (at the sides in ``attn_resolutions``: every encoder block,
    the last decoder block of the level), projected resampling skips.

    encoder_type: 'standard'; 'skip' (the input, downsampled, is added through a 1x1 conv at each level);
    'residual' (a running auxiliary image: aux ← (x + conv3x3↓(aux)) / √2, NCSN++). decoder_type: 'standard'
    (output conv at full side) or 'skip' (an output conv at every level, summed after upsampling).
    resample_filter: 1-D taps, [1, 1] (box, DDPM++) or [1, 3, 3, 1] (FIR, NCSN++).

    forward: x (B, in_channels, H, W), noise_labels (B,) (or (1,)), class_labels (B or 1, label_dim) or None,
    augment_labels (B, augment_dim) or None → (B, out_channels, H, W), in x's dtype. Labels are dropped
    (with probability ``label_dropout``) only in training mode.
    """

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 128, channel_mult: Sequence[int] = (1, 2, 2, 2),
                 channel_mult_emb: int = 4, num_blocks: int = 4, attn_resolutions: Sequence[int] = (16,),
                 dropout: float = 0.10, label_dropout: float = 0, embedding_type: str = "positional",
                 channel_mult_noise: int = 1, encoder_type: str = "standard", decoder_type: str = "standard",
                 resample_filter: Sequence[float] = (1, 1)):
        img_resolution = _positive_int("img_resolution", img_resolution)
        in_channels, out_channels = _positive_int("in_channels", in_channels), _positive_int("out_channels",
                                                                                               out_channels)
        label_dim, augment_dim = _count("label_dim", label_dim), _count("augment_dim", augment_dim)
        model_channels = _positive_int("model_channels", model_channels)
        channel_mult = _int_list("channel_mult", channel_mult)
        channel_mult_emb = _positive_int("channel_mult_emb", channel_mult_emb)
        channel_mult_noise = _positive_int("channel_mult_noise", channel_mult_noise)
        num_blocks = _positive_int("num_blocks", num_blocks)
        attn_resolutions = _int_list("attn_resolutions", attn_resolutions, allow_empty=True)
        dropout, label_dropout = _probability("dropout", dropout), _probability("label_dropout", label_dropout)
        _choice("embedding_type", embedding_type, ("positional", "fourier"))
        _choice("encoder_type", encoder_type, ("standard", "skip", "residual"))
        _choice("decoder_type", decoder_type, ("standard", "skip"))
        _check_resolution(img_resolution, len(channel_mult))
        super().__init__()
        self.img_resolution, self.in_channels, self.out_channels = img_resolution, in_channels, out_channels
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        block = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                     resample_filter=resample_filter, resample_proj=True, adaptive_scale=False, init=init,
                     init_zero=init_zero, init_attn=init_attn)

        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(noise_channels)
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        self.enc = nn.ModuleDict()
        width, aux_width = in_channels, in_channels
        for level, mult in enumerate(channel_mult):
            side = img_resolution >> level
            tag = f"{side}x{side}"
            if level == 0:
                self.enc[f"{tag}_conv"] = Conv2d(width, model_channels, 3, **init)
                width = model_channels
            else:
                self.enc[f"{tag}_down"] = UNetBlock(width, width, down=True, **block)
                if encoder_type == "skip":
                    self.enc[f"{tag}_aux_down"] = Conv2d(aux_width, aux_width, 0, down=True,
                                                         resample_filter=resample_filter)
                    self.enc[f"{tag}_aux_skip"] = Conv2d(aux_width, width, 1, **init)
                elif encoder_type == "residual":
                    self.enc[f"{tag}_aux_residual"] = Conv2d(aux_width, width, 3, down=True,
                                                             resample_filter=resample_filter, fused_resample=True,
                                                             **init)
                    aux_width = width
            for idx in range(num_blocks):
                self.enc[f"{tag}_block{idx}"] = UNetBlock(width, model_channels * mult,
                                                          attention=side in attn_resolutions, **block)
                width = model_channels * mult
        skip_widths = [m.out_channels for name, m in self.enc.items() if "_aux_" not in name]

        self.dec = nn.ModuleDict()
        for level in reversed(range(len(channel_mult))):
            side = img_resolution >> level
            tag = f"{side}x{side}"
            if level == len(channel_mult) - 1:
                self.dec[f"{tag}_in0"] = UNetBlock(width, width, attention=True, **block)
                self.dec[f"{tag}_in1"] = UNetBlock(width, width, **block)
            else:
                self.dec[f"{tag}_up"] = UNetBlock(width, width, up=True, **block)
            for idx in range(num_blocks + 1):
                attention = idx == num_blocks and side in attn_resolutions
                self.dec[f"{tag}_block{idx}"] = UNetBlock(width + skip_widths.pop(), model_channels * channel_mult[
                    level], attention=attention, **block)
                width = model_channels * channel_mult[level]
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{tag}_aux_up"] = Conv2d(out_channels, out_channels, 0, up=True,
                                                       resample_filter=resample_filter)
                self.dec[f"{tag}_aux_norm"] = GroupNorm(width, eps=1e-6)
                self.dec[f"{tag}_aux_conv"] = Conv2d(width, out_channels, 3, **init_zero)

    def embedding(self, noise_labels: Tensor, class_labels: Tensor | None, augment_labels: Tensor | None,
                  batch: int, device: torch.device) -> Tensor:
        """The conditioning vector e (B or 1, emb_channels) every block receives."""
        emb = self.map_noise(noise_labels)
        emb = torch.cat(emb.chunk(2, dim=1)[::-1], dim=1)  # [cos, sin] -> [sin, cos], as score_sde's DDPM++
        if self.map_label is not None:
            labels = _dropped_labels(self, class_labels, batch, device)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None,
                augment_labels: Tensor | None = None) -> Tensor:
        noise_labels = _check_input(self, x, noise_labels)
        emb = self.embedding(noise_labels, class_labels, augment_labels, x.shape[0], x.device)

        skips, aux = [], x
        for name, layer in self.enc.items():
            role = name.split("_", 1)[1]
            if role == "aux_down":
                aux = layer(aux)
            elif role == "aux_skip":  # the block output just stored is replaced by x + skip(aux)
                x = skips[-1] = x + layer(aux)
            elif role == "aux_residual":
                x = skips[-1] = aux = (x + layer(aux)) / math.sqrt(2)
            else:
                x = layer(x) if role == "conv" else layer(x, emb)
                skips.append(x)

        out, h = None, None
        for name, layer in self.dec.items():
            role = name.split("_", 1)[1]
            if role == "aux_up":
                out = layer(out)
            elif role == "aux_norm":
                h = layer(x)
            elif role == "aux_conv":
                h = layer(F.silu(h))
                out = h if out is None else h + out
            else:
                if role.startswith("block"):
                    x = torch.cat([x, skips.pop()], dim=1)
                x = layer(x, emb)
        return out


class DhariwalUNet(nn.Module):
    """ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis") as EDM builds it.

    Embedding: e = silu(L1(silu(L0(pos(c_noise) + augment(a)))) + label(y)), pos the positional embedding
    (model_channels wide, no endpoint), emb_channels = model_channels·channel_mult_emb. Level ℓ has side
    img_resolution / 2^ℓ and width model_channels·channel_mult[ℓ]; the encoder is a 3x3 conv, then per level a
    downsampling block (ℓ > 0, box filter, parameter-free skip) and ``num_blocks`` blocks; the decoder starts
    with two blocks at the lowest side (the first with attention), then per level an upsampling block and
    ``num_blocks + 1`` blocks, each concatenating the matching encoder output (the stem conv's included); the
    output is conv3x3(silu(GroupNorm(h))). Blocks are `UNetBlock` with adaptive scale/shift (AdaGN), skip_scale
    1, eps 1e-5, attention at the sides in ``attn_resolutions`` with out_channels // 64 heads of 64 channels.

    forward: x (B, in_channels, H, W), noise_labels (B,) (or (1,)), class_labels (B or 1, label_dim) or None,
    augment_labels (B, augment_dim) or None → (B, out_channels, H, W), in x's dtype. Labels are dropped
    (with probability ``label_dropout``) only in training mode.
    """

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 192, channel_mult: Sequence[int] = (1, 2, 3, 4),
                 channel_mult_emb: int = 4, num_blocks: int = 3, attn_resolutions: Sequence[int] = (32, 16, 8),
                 dropout: float = 0.10, label_dropout: float = 0):
        img_resolution = _positive_int("img_resolution", img_resolution)
        in_channels, out_channels = _positive_int("in_channels", in_channels), _positive_int("out_channels",
                                                                                               out_channels)
        label_dim, augment_dim = _count("label_dim", label_dim), _count("augment_dim", augment_dim)
        model_channels = _positive_int("model_channels", model_channels)
        channel_mult = _int_list("channel_mult", channel_mult)
        channel_mult_emb = _positive_int("channel_mult_emb", channel_mult_emb)
        num_blocks = _positive_int("num_blocks", num_blocks)
        attn_resolutions = _int_list("attn_resolutions", attn_resolutions, allow_empty=True)
        dropout, label_dropout = _probability("dropout", dropout), _probability("label_dropout", label_dropout)
        _check_resolution(img_resolution, len(channel_mult))
        super().__init__()
        self.img_resolution, self.in_channels, self.out_channels = img_resolution, in_channels, out_channels
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init,
                     init_zero=init_zero)

        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = (Linear(label_dim, emb_channels, bias=False, init_mode="kaiming_normal",
                                 init_weight=math.sqrt(label_dim)) if label_dim else None)

        self.enc = nn.ModuleDict()
        width = in_channels
        for level, mult in enumerate(channel_mult):
            side = img_resolution >> level
            tag = f"{side}x{side}"
            if level == 0:
                self.enc[f"{tag}_conv"] = Conv2d(width, model_channels * mult, 3, **init)
                width = model_channels * mult
            else:
                self.enc[f"{tag}_down"] = UNetBlock(width, width, down=True, **block)
            for idx in range(num_blocks):
                self.enc[f"{tag}_block{idx}"] = UNetBlock(width, model_channels * mult,
                                                          attention=side in attn_resolutions, **block)
                width = model_channels * mult
        skip_widths = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level in reversed(range(len(channel_mult))):
            side = img_resolution >> level
            tag = f"{side}x{side}"
            if level == len(channel_mult) - 1:
                self.dec[f"{tag}_in0"] = UNetBlock(width, width, attention=True, **block)
                self.dec[f"{tag}_in1"] = UNetBlock(width, width, **block)
            else:
                self.dec[f"{tag}_up"] = UNetBlock(width, width, up=True, **block)
            for idx in range(num_blocks + 1):
                self.dec[f"{tag}_block{idx}"] = UNetBlock(width + skip_widths.pop(), model_channels * channel_mult[
                    level], attention=side in attn_resolutions, **block)
                width = model_channels * channel_mult[level]
        self.out_norm = GroupNorm(width)
        self.out_conv = Conv2d(width, out_channels, 3, **init_zero)

    def embedding(self, noise_labels: Tensor, class_labels: Tensor | None, augment_labels: Tensor | None,
                  batch: int, device: torch.device) -> Tensor:
        """The conditioning vector e (B or 1, emb_channels) every block receives."""
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            emb = emb + self.map_label(_dropped_labels(self, class_labels, batch, device))
        return F.silu(emb)

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None,
                augment_labels: Tensor | None = None) -> Tensor:
        noise_labels = _check_input(self, x, noise_labels)
        emb = self.embedding(noise_labels, class_labels, augment_labels, x.shape[0], x.device)
        skips = []
        for name, layer in self.enc.items():
            x = layer(x) if name.endswith("_conv") else layer(x, emb)
            skips.append(x)
        for name, layer in self.dec.items():
            if "_block" in name:
                x = torch.cat([x, skips.pop()], dim=1)
            x = layer(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))
