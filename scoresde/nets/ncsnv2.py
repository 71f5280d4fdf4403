"""NCSN and NCSNv2 score networks (Song & Ermon 2019, 2020): dilated RefineNets over a geometric noise ladder.

Parameter-for-parameter compatible with score_sde_pytorch's ``models/ncsnv2.py`` (commit cb1f359): the same
``state_dict()`` keys, shapes and dtypes (``sigmas`` is float64) and the same ``parameters()`` order, so its
checkpoints, EMA shadows included, load as they are. Registered there as

======================  ==============  =====================================================================
score_sde name          class           structure
======================  ==============  =====================================================================
``ncsn``                `NCSN`          4 conditional stages (noise-level InstanceNorm++), output not scaled
``ncsnv2_64``           `NCSNv2`        4 stages, unconditional, output / σ_y; up to 96 px in their configs
``ncsnv2_128``          `NCSNv2_128`    5 stages, for 96–128 px
``ncsnv2_256``          `NCSNv2_256`    6 stages, for 129–256 px
======================  ==============  =====================================================================

All take ``forward(x, y)``: x (B, C, H, W) in [0, 1] (or [-1, 1] with ``centered=True``), y (B,) integer indices
into the noise levels σ_i = exp(linspace(log σ_max, log σ_min, num_scales))_i, largest first.

score_sde_pytorch at cb1f359 cannot build these classes as written (see `scoresde.nets.refinenet_layers`);
these follow the evident intent (the original NCSN/NCSNv2 code): dilated convolutions keep the size, and NCSN's
normalizations are the noise-conditional InstanceNorm++ with ``num_scales`` classes. Their code reads
``data.channels`` where its configs define ``data.num_channels``; `from_config` accepts either.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Mapping, Optional, Tuple

import torch
from torch import nn

from .._utils import check_choice, expand_like
from ._checks import positive_int
from .ncsnpp import noise_levels
from .refinenet_layers import (CONDITIONAL_NORMALIZATIONS, NORMALIZATIONS, CondRefineBlock,
                               ConditionalResidualBlock, RefineBlock, ResidualBlock)
from .score_sde_layers import activation

Tensor = torch.Tensor

#: Config fields each constructor argument comes from: argument → (section, field names tried in order).
_CONFIG_FIELDS = {
    "nf": ("model", ("nf",)),
    "normalization": ("model", ("normalization",)),
    "nonlinearity": ("model", ("nonlinearity",)),
    "sigma_min": ("model", ("sigma_min",)),
    "sigma_max": ("model", ("sigma_max",)),
    "num_scales": ("model", ("num_scales",)),
    "interpolation": ("model", ("interpolation",)),
    "image_size": ("data", ("image_size",)),
    "num_channels": ("data", ("num_channels", "channels")),
    "centered": ("data", ("centered",)),
}




def _section(config, name: str) -> Mapping:
    section = config.get(name, {}) if isinstance(config, Mapping) else getattr(config, name, {})
    if hasattr(section, "to_dict"):  # an ml_collections.ConfigDict
        section = section.to_dict()
    if not isinstance(section, Mapping):
        raise TypeError(f"config[{name!r}] must be a mapping of fields; got {type(section).__name__}")
    return section


class _RefineNet(nn.Module):
    """Shared body: begin_conv → encoder stages (2 residual blocks each) → RefineNet decoder → norm, act, end_conv.

    A subclass lists its encoder stages (attribute, output channels / nf, resample, dilation) and its refine
    blocks in creation order, each with the encoder stage whose output it takes as a skip; the decoder runs
    from the deepest stage to the shallowest, each block fusing its skip with the previous block's output.
    """

    _encoder: Tuple[Tuple[str, int, Optional[str], int], ...]
    _decoder: Tuple[Tuple[str, str], ...]
    _conditional = False  # noise-level conditional normalizations (NCSN) instead of unconditional ones
    _scale_by_sigma = True  # divide the output by σ_y

    #: Constructor arguments that follow from the data's per-sample shape (see `shape_arguments`).
    shape_parameters = ("num_channels", "image_size")

    @staticmethod
    def shape_arguments(sample_shape) -> dict:
        """Constructor arguments fixed by the per-sample shape (C, H, W): ``num_channels`` and ``image_size``."""
        sample_shape = tuple(int(s) for s in sample_shape)
        if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
            raise ValueError(f"NCSN/NCSNv2 need square images (C, H, W); the data has per-sample shape {sample_shape}")
        return {"num_channels": sample_shape[0], "image_size": sample_shape[1]}

    @classmethod
    def from_config(cls, config) -> "_RefineNet":
        """Build from score_sde's nested config ``{"model": {...}, "data": {...}}`` (plain dicts or a ConfigDict).

        Reads the fields named like this class's constructor arguments (``data.channels`` stands in for
        ``data.num_channels``); missing fields keep the defaults, other fields are ignored.
        """
        kwargs = {}
        for arg in inspect.signature(cls.__init__).parameters:
            if arg not in _CONFIG_FIELDS:
                continue
            section_name, fields = _CONFIG_FIELDS[arg]
            section = _section(config, section_name)
            found = {f: section[f] for f in fields if f in section}
            if len(set(map(repr, found.values()))) > 1:
                raise ValueError(f"config {section_name} gives different values for {' and '.join(found)}: {found}")
            if found:
                kwargs[arg] = next(iter(found.values()))
        return cls(**kwargs)

    def _build(self, *, nf, normalization, nonlinearity, num_scales, interpolation, image_size, num_channels,
               centered, sigma_min=None, sigma_max=None) -> None:
        self.nf = nf = positive_int("nf", nf)
        self.num_scales = num_scales = positive_int("num_scales", num_scales)
        self.image_size = image_size = positive_int("image_size", image_size)
        self.num_channels = num_channels = positive_int("num_channels", num_channels)
        norms = CONDITIONAL_NORMALIZATIONS if self._conditional else NORMALIZATIONS
        self.normalization = check_choice(normalization, list(norms), "normalization")
        check_choice(interpolation, ["bilinear"], "interpolation")  # MSF always resizes bilinearly, as in theirs
        if not isinstance(centered, bool):
            raise TypeError(f"centered must be a bool; got {type(centered).__name__}")
        self.centered = centered
        if image_size % self.downsampling:
            raise ValueError(f"image_size must be divisible by {self.downsampling} for {type(self).__name__} "
                             f"(its encoder halves the size {self.downsampling.bit_length() - 1} times); "
                             f"got {image_size}")
        if self._scale_by_sigma:
            if not (isinstance(sigma_min, numbers.Real) and isinstance(sigma_max, numbers.Real)
                    and 0 < sigma_min <= sigma_max):
                raise ValueError(f"need 0 < sigma_min <= sigma_max; got sigma_min={sigma_min!r}, "
                                 f"sigma_max={sigma_max!r}")
            self.register_buffer("sigmas", noise_levels(float(sigma_min), float(sigma_max), num_scales))

        # Creation order below fixes the parameters' order (checkpoints store EMA weights positionally).
        self.act = act = activation(nonlinearity)
        norm = norms[normalization]
        self.begin_conv = nn.Conv2d(num_channels, nf, 3, padding=1)
        if self._conditional:
            self.normalizer = norm(nf, num_scales)
        elif normalization == "InstanceNorm":
            # score_sde builds the final norm as nn.InstanceNorm2d(nf, num_scales): num_scales lands in eps.
            self.normalizer = nn.InstanceNorm2d(nf, eps=float(num_scales))
        else:
            self.normalizer = norm(nf)
        self.end_conv = nn.Conv2d(nf, num_channels, 3, padding=1)

        channels = nf
        self._skip_channels = {}
        for name, mult, resample, dilation in self._encoder:
            out = mult * nf
            blocks = [self._residual_block(channels, out, resample, dilation, act, norm),
                      self._residual_block(out, out, None, dilation, act, norm)]
            self.add_module(name, nn.ModuleList(blocks))
            self._skip_channels[name] = channels = out

        # A refine block outputs the channels of the next shallower stage (the shallowest keeps its own).
        stages = [name for name, *_ in self._encoder]
        for name, stage in self._decoder:
            i = stages.index(stage)
            c = self._skip_channels[stage]
            features = self._skip_channels[stages[max(i - 1, 0)]]
            in_planes = [c] if i == len(stages) - 1 else [c, c]
            start, end = i == len(stages) - 1, i == 0
            if self._conditional:
                block = CondRefineBlock(in_planes, features, num_scales, norm, act=act, start=start, end=end)
            else:
                block = RefineBlock(in_planes, features, act=act, start=start, end=end)
            self.add_module(name, block)
        self._refine_of = {stage: name for name, stage in self._decoder}

    def _residual_block(self, c_in, c_out, resample, dilation, act, norm) -> nn.Module:
        if self._conditional:
            return ConditionalResidualBlock(c_in, c_out, self.num_scales, resample=resample, act=act,
                                            normalization=norm, dilation=dilation)
        return ResidualBlock(c_in, c_out, resample=resample, act=act, normalization=norm, dilation=dilation)

    @property
    def downsampling(self) -> int:
        """Total factor by which the encoder shrinks H and W (stages that go down without dilation)."""
        return 2 ** sum(resample == "down" and dilation == 1 for _, _, resample, dilation in self._encoder)

    def _check_inputs(self, x: Tensor, y: Tensor) -> None:
        if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != self.num_channels:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape (B, {self.num_channels}, H, W); got {got}")
        if x.shape[2] % self.downsampling or x.shape[3] % self.downsampling:
            raise ValueError(f"H and W must be divisible by {self.downsampling}; got {tuple(x.shape[2:])}")
        if not torch.is_tensor(y) or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            got = y.dtype if torch.is_tensor(y) else type(y).__name__
            raise TypeError(f"y must be an integer tensor of noise-level indices in [0, {self.num_scales}); got {got}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},), one noise level per sample; got {tuple(y.shape)}")

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Score estimate s(x, σ_y): x (B, C, H, W), y (B,) integer noise-level indices → (B, C, H, W).

        Inputs in [0, 1] are mapped to 2x − 1 unless ``centered``. The NCSNv2 classes return the network's
        output divided by σ_y (computed in float64, returned in x's dtype); NCSN returns it as it is.
        """
        self._check_inputs(x, y)
        cond = (y,) if self._conditional else ()
        h = self.begin_conv(x if self.centered else 2 * x - 1.0)
        skips = {}
        for name, *_ in self._encoder:
            for block in getattr(self, name):
                h = block(h, *cond)
            skips[name] = h
        h = None
        for name, *_ in reversed(self._encoder):
            skip = skips[name]
            xs = [skip] if h is None else [skip, h]
            h = getattr(self, self._refine_of[name])(xs, *cond, skip.shape[2:])
        h = self.end_conv(self.act(self.normalizer(h, *cond)))
        if self._scale_by_sigma:
            h = (h / expand_like(self.sigmas[y], h)).to(h.dtype)
        return h


_ENCODER_4 = (("res1", 1, None, 1), ("res2", 2, "down", 1), ("res3", 2, "down", 2), ("res4", 2, "down", 4))
_DECODER_4 = (("refine1", "res4"), ("refine2", "res3"), ("refine3", "res2"), ("refine4", "res1"))


class NCSNv2(_RefineNet):
    """NCSNv2 for images up to ~96 px (score_sde's ``ncsnv2_64``); s(x, σ_y) = RefineNet(x) / σ_y.

    Encoder: res1 (nf) → res2 (2nf, ÷2) → res3 (2nf, dilation 2) → res4 (2nf, dilation 4), two residual blocks
    each; decoder: refine1..refine4 from the deepest stage up. Defaults: score_sde's ``ve/ncsnv2/cifar10``.
    """

    _encoder = _ENCODER_4
    _decoder = _DECODER_4

    def __init__(self, nf: int = 128, normalization: str = "InstanceNorm++", nonlinearity: str = "elu",
                 sigma_min: float = 0.01, sigma_max: float = 50.0, num_scales: int = 232,
                 interpolation: str = "bilinear", image_size: int = 32, num_channels: int = 3,
                 centered: bool = False):
        super().__init__()
        self._build(nf=nf, normalization=normalization, nonlinearity=nonlinearity, sigma_min=sigma_min,
                    sigma_max=sigma_max, num_scales=num_scales, interpolation=interpolation,
                    image_size=image_size, num_channels=num_channels, centered=centered)


class NCSN(_RefineNet):
    """NCSN (score_sde's ``ncsn``): NCSNv2's layout with noise-level conditional InstanceNorm++ everywhere.

    Every normalization looks its (γ, α, β) up by y among ``num_scales`` rows; the output is *not* divided
    by σ_y, and the net holds no noise levels. Defaults: score_sde's ``ve/ncsn/cifar10``.
    """

    _encoder = _ENCODER_4
    _decoder = _DECODER_4
    _conditional = True
    _scale_by_sigma = False

    def __init__(self, nf: int = 128, normalization: str = "InstanceNorm++", nonlinearity: str = "elu",
                 num_scales: int = 10, interpolation: str = "bilinear", image_size: int = 32,
                 num_channels: int = 3, centered: bool = False):
        super().__init__()
        self._build(nf=nf, normalization=normalization, nonlinearity=nonlinearity, num_scales=num_scales,
                    interpolation=interpolation, image_size=image_size, num_channels=num_channels,
                    centered=centered)


class NCSNv2_128(_RefineNet):
    """NCSNv2 for 96–128 px images (score_sde's ``ncsnv2_128``): 5 stages, channels nf, 2nf, 2nf, 4nf, 4nf.

    res2 and res3 halve the size, res4 and res5 are dilated (2, 4). Defaults: score_sde's ``ve/ncsnv2/bedroom``.
    """

    _encoder = (("res1", 1, None, 1), ("res2", 2, "down", 1), ("res3", 2, "down", 1), ("res4", 4, "down", 2),
                ("res5", 4, "down", 4))
    _decoder = (("refine1", "res5"), ("refine2", "res4"), ("refine3", "res3"), ("refine4", "res2"),
                ("refine5", "res1"))

    def __init__(self, nf: int = 128, normalization: str = "InstanceNorm++", nonlinearity: str = "elu",
                 sigma_min: float = 0.01, sigma_max: float = 190.0, num_scales: int = 1086,
                 interpolation: str = "bilinear", image_size: int = 128, num_channels: int = 3,
                 centered: bool = False):
        super().__init__()
        self._build(nf=nf, normalization=normalization, nonlinearity=nonlinearity, sigma_min=sigma_min,
                    sigma_max=sigma_max, num_scales=num_scales, interpolation=interpolation,
                    image_size=image_size, num_channels=num_channels, centered=centered)


class NCSNv2_256(_RefineNet):
    """NCSNv2 for 129–256 px images (score_sde's ``ncsnv2_256``): `NCSNv2_128` with one more ÷2 stage, res31.

    score_sde ships no 256-px config; the defaults are ``ve/ncsnv2/bedroom``'s with ``image_size=256``.
    """

    _encoder = (("res1", 1, None, 1), ("res2", 2, "down", 1), ("res3", 2, "down", 1), ("res31", 2, "down", 1),
                ("res4", 4, "down", 2), ("res5", 4, "down", 4))
    _decoder = (("refine1", "res5"), ("refine2", "res4"), ("refine3", "res3"), ("refine31", "res31"),
                ("refine4", "res2"), ("refine5", "res1"))

    def __init__(self, nf: int = 128, normalization: str = "InstanceNorm++", nonlinearity: str = "elu",
                 sigma_min: float = 0.01, sigma_max: float = 190.0, num_scales: int = 1086,
                 interpolation: str = "bilinear", image_size: int = 256, num_channels: int = 3,
                 centered: bool = False):
        super().__init__()
        self._build(nf=nf, normalization=normalization, nonlinearity=nonlinearity, sigma_min=sigma_min,
                    sigma_max=sigma_max, num_scales=num_scales, interpolation=interpolation,
                    image_size=image_size, num_channels=num_channels, centered=centered)


#: score_sde_pytorch's registry names (``config.model.name``) → class.
SCORE_SDE_NAMES = {"ncsn": NCSN, "ncsnv2_64": NCSNv2, "ncsnv2_128": NCSNv2_128, "ncsnv2_256": NCSNv2_256}

__all__ = ["NCSN", "NCSNv2", "NCSNv2_128", "NCSNv2_256", "SCORE_SDE_NAMES"]
