"""Normalizations and RefineNet blocks of NCSN / NCSNv2 (Song & Ermon 2019, 2020), laid out like score_sde_pytorch.

The attribute names and the order in which sub-modules are created follow score_sde_pytorch's
``models/layers.py`` and ``models/normalization.py``, so ``state_dict()`` keys and ``parameters()`` order match
its checkpoints. Building blocks (Lin et al. 2017, RefineNet):

- RCU (residual conv unit): ``n_blocks`` residual units, each ``n_stages`` × (act → conv3×3).
- CRP (chained residual pooling): x ← act(x); p ← x; repeat ``n_stages``: p ← conv(pool₅ₓ₅(p)), x ← x + p.
- MSF (multi-resolution fusion): Σᵢ upsample_bilinear(conv3×3(xᵢ)) at the finest input's size.
- Refine: RCU on every input → MSF (when there are several) → CRP → RCU.

The ``Cond*`` variants put a noise-level conditional normalization in front of each convolution
(NCSN, where y indexes the noise level); the unconditional ones serve NCSNv2.

Two deliberate fixes to score_sde_pytorch at commit cb1f359, which cannot build these nets as written: a dilated
3×3 convolution is padded by its dilation (the original NCSN/NCSNv2 code and score_sde's JAX 'SAME' padding;
the port pads by 1, which breaks the residual sums), and a convolution without bias is allowed (the port scales
``conv.bias.data`` unconditionally). Neither changes any parameter's name or shape.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F


Tensor = torch.Tensor

#: Variance-stabilising ε of every normalization below (PyTorch's InstanceNorm default).
EPS = 1e-5


# --------------------------------------------------------------------------------------------------------------
# Normalizations
# --------------------------------------------------------------------------------------------------------------

def _standardized_channel_means(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel spatial means μ (B, C) of x (B, C, H, W) and (μ − mean_c μ) / √(var_c μ + ε), unbiased var."""
    mu = x.mean(dim=(2, 3))
    z = (mu - mu.mean(dim=1, keepdim=True)) / torch.sqrt(mu.var(dim=1, keepdim=True) + EPS)
    return mu, z


class InstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ (Song & Ermon 2019, Appendix A): instance norm that keeps the channel means' spread.

    With μ_c, σ_c² the spatial mean and (biased) variance of channel c and m, s² the mean and unbiased variance
    of (μ_1, …, μ_C),  out_c = γ_c [ (x_c − μ_c)/√(σ_c² + ε) + α_c (μ_c − m)/√(s² + ε) ] + β_c.
    x: (B, C, H, W) → same shape. Parameters alpha, gamma ~ N(1, 0.02²) and beta = 0 (when ``bias``).
    """

    def __init__(self, num_features: int, bias: bool = True):
        super().__init__()
        self.num_features = num_features
        self.bias = bool(bias)
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        if self.bias:
            self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        _, z = _standardized_channel_means(x)
        h = F.instance_norm(x, eps=EPS) + (z * self.alpha)[..., None, None]
        h = h * self.gamma[:, None, None]
        return h + self.beta[:, None, None] if self.bias else h


class ConditionalInstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ whose (γ, α, β) are looked up per noise level: ``embed.weight[y] = [γ | α | β]``.

    x: (B, C, H, W), y: (B,) integer indices < num_classes → (B, C, H, W). Without ``bias`` the table is [γ | α].
    γ, α start at N(1, 0.02²), β at 0.
    """

    def __init__(self, num_features: int, num_classes: int, bias: bool = True):
        super().__init__()
        self.num_features = num_features
        self.bias = bool(bias)
        self.embed = nn.Embedding(num_classes, (3 if self.bias else 2) * num_features)
        with torch.no_grad():
            self.embed.weight[:, :2 * num_features].normal_(1.0, 0.02)
            self.embed.weight[:, 2 * num_features:].zero_()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _, z = _standardized_channel_means(x)
        coeffs = self.embed(y).chunk(3 if self.bias else 2, dim=-1)  # each (B, C)
        gamma, alpha = coeffs[0], coeffs[1]
        h = F.instance_norm(x, eps=EPS) + (z * alpha)[..., None, None]
        h = h * gamma[..., None, None]
        return h + coeffs[2][..., None, None] if self.bias else h


class VarianceNorm2d(nn.Module):
    """Scale each channel to unit spatial variance without centering: out_c = α_c x_c / √(var_hw x_c + ε).

    The variance is the unbiased one. x: (B, C, H, W) → same shape. ``bias`` is accepted and unused (no β).
    """

    def __init__(self, num_features: int, bias: bool = False):
        super().__init__()
        self.num_features = num_features
        self.bias = bias
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))

    def forward(self, x: Tensor) -> Tensor:
        var = x.var(dim=(2, 3), keepdim=True)
        return self.alpha[:, None, None] * (x / torch.sqrt(var + EPS))


#: Unconditional normalizations by config name (``model.normalization``) → factory(num_features).
NORMALIZATIONS = {
    "InstanceNorm": lambda num_features: nn.InstanceNorm2d(num_features),
    "InstanceNorm++": lambda num_features: InstanceNorm2dPlus(num_features),
    "VarianceNorm": lambda num_features: VarianceNorm2d(num_features),
}

#: Noise-level conditional normalizations by config name → factory(num_features, num_classes).
CONDITIONAL_NORMALIZATIONS = {
    "InstanceNorm++": lambda num_features, num_classes: ConditionalInstanceNorm2dPlus(num_features, num_classes),
}



# --------------------------------------------------------------------------------------------------------------
# Convolutions
# --------------------------------------------------------------------------------------------------------------

def conv3x3(in_channels: int, out_channels: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    """3×3 convolution, stride 1, padded by ``dilation`` so (H, W) is kept; PyTorch's default initialization."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=bias)


def _mean_pool2(x: Tensor) -> Tensor:
    """Average over non-overlapping 2×2 windows: (B, C, 2H, 2W) → (B, C, H, W)."""
    return (x[:, :, ::2, ::2] + x[:, :, 1::2, ::2] + x[:, :, ::2, 1::2] + x[:, :, 1::2, 1::2]) / 4.0


class ConvMeanPool(nn.Module):
    """Convolution ('same' padding) followed by 2×2 mean pooling: (B, C_in, H, W) → (B, C_out, H/2, W/2).

    With ``adjust_padding`` a row and a column of zeros are first added at the top and left (``conv`` is then a
    Sequential(ZeroPad2d, Conv2d), so the weights are ``conv.1.*``), for odd sizes such as 7 → 4.
    """

    def __init__(self, input_dim: int, output_dim: int, kernel_size: int = 3, biases: bool = True,
                 adjust_padding: bool = False):
        super().__init__()
        conv = nn.Conv2d(input_dim, output_dim, kernel_size, padding=kernel_size // 2, bias=biases)
        self.conv = nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), conv) if adjust_padding else conv

    def forward(self, x: Tensor) -> Tensor:
        return _mean_pool2(self.conv(x))


# --------------------------------------------------------------------------------------------------------------
# Residual blocks of the encoder
# --------------------------------------------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """Pre-activation residual block: out = shortcut(x) + conv₂(act(norm₂(conv₁(act(norm₁(x)))))).

    ``resample='down'`` halves (H, W) through a ConvMeanPool in conv₂ and the shortcut, unless ``dilation > 1``,
    where the block keeps the size and uses dilated 3×3 convolutions instead (the "dilated RefineNet" of NCSN).
    The shortcut is the identity when the channels and the size are kept, else a (1×1 or dilated 3×3) conv.
    x: (B, input_dim, H, W) → (B, output_dim, H', W').
    """

    def __init__(self, input_dim: int, output_dim: int, resample: Optional[str] = None, act: Optional[nn.Module] = None,
                 normalization: Callable[[int], nn.Module] = nn.InstanceNorm2d, adjust_padding: bool = False,
                 dilation: int = 1):
        super().__init__()
        self._build(input_dim, output_dim, resample, act, normalization, adjust_padding, dilation)

    def _build(self, input_dim, output_dim, resample, act, normalization, adjust_padding, dilation):
        if resample not in (None, "down"):
            raise ValueError(f"resample must be None or 'down'; got {resample!r}")
        dilation = 1 if dilation is None else int(dilation)
        self.non_linearity = nn.ELU() if act is None else act
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.resample = resample
        dilated = dilation > 1
        # Creation order (conv1, normalize2, conv2, shortcut, normalize1) fixes the parameters' order.
        if resample == "down" and not dilated:
            self.conv1 = conv3x3(input_dim, input_dim)
            self.normalize2 = normalization(input_dim)
            self.conv2 = ConvMeanPool(input_dim, output_dim, 3, adjust_padding=adjust_padding)
            shortcut = lambda: ConvMeanPool(input_dim, output_dim, 1, adjust_padding=adjust_padding)  # noqa: E731
        else:
            mid = input_dim if resample == "down" else output_dim
            self.conv1 = conv3x3(input_dim, mid, dilation=dilation)
            self.normalize2 = normalization(mid)
            self.conv2 = conv3x3(mid, output_dim, dilation=dilation)
            if dilated:
                shortcut = lambda: conv3x3(input_dim, output_dim, dilation=dilation)  # noqa: E731
            else:
                shortcut = lambda: nn.Conv2d(input_dim, output_dim, 1)  # noqa: E731
        self.has_shortcut = output_dim != input_dim or resample is not None
        if self.has_shortcut:
            self.shortcut = shortcut()
        self.normalize1 = normalization(input_dim)

    def _norm(self, norm: nn.Module, x: Tensor, y: Optional[Tensor]) -> Tensor:
        return norm(x)

    def forward(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        h = self.conv1(self.non_linearity(self._norm(self.normalize1, x, y)))
        h = self.conv2(self.non_linearity(self._norm(self.normalize2, h, y)))
        return (self.shortcut(x) if self.has_shortcut else x) + h


class ConditionalResidualBlock(ResidualBlock):
    """`ResidualBlock` whose normalizations are conditioned on the noise level y: forward(x, y), y (B,) integers.

    ``normalization(num_features, num_classes)`` builds each of them.
    """

    def __init__(self, input_dim: int, output_dim: int, num_classes: int, resample: Optional[str] = None,
                 act: Optional[nn.Module] = None,
                 normalization: Callable[[int, int], nn.Module] = ConditionalInstanceNorm2dPlus,
                 adjust_padding: bool = False, dilation: int = 1):
        nn.Module.__init__(self)
        self._build(input_dim, output_dim, resample, act, lambda c: normalization(c, num_classes),
                    adjust_padding, dilation)

    def _norm(self, norm: nn.Module, x: Tensor, y: Optional[Tensor]) -> Tensor:
        return norm(x, y)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return super().forward(x, y)


# --------------------------------------------------------------------------------------------------------------
# RefineNet blocks of the decoder
# --------------------------------------------------------------------------------------------------------------

def _conv_name(i: int, j: int) -> str:
    return f"{i + 1}_{j + 1}_conv"


def _norm_name(i: int, j: int) -> str:
    return f"{i + 1}_{j + 1}_norm"


class RCUBlock(nn.Module):
    """Residual conv unit: ``n_blocks`` × [x ← x + (act → conv3×3, bias-free) repeated ``n_stages`` times].

    Convolution (i, j) is the attribute ``"{i}_{j}_conv"`` (1-based). Shape-preserving, (B, C, H, W).
    """

    def __init__(self, features: int, n_blocks: int, n_stages: int, act: Optional[nn.Module] = None):
        super().__init__()
        self.n_blocks = n_blocks
        self.n_stages = n_stages
        self.act = nn.ReLU() if act is None else act
        for i in range(n_blocks):
            for j in range(n_stages):
                self.add_module(_conv_name(i, j), conv3x3(features, features, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.n_blocks):
            h = x
            for j in range(self.n_stages):
                h = getattr(self, _conv_name(i, j))(self.act(h))
            x = h + x
        return x


class CondRCUBlock(nn.Module):
    """`RCUBlock` with a conditional normalization ``"{i}_{j}_norm"`` before each activation; forward(x, y)."""

    def __init__(self, features: int, n_blocks: int, n_stages: int, num_classes: int,
                 normalizer: Callable[..., nn.Module], act: Optional[nn.Module] = None):
        super().__init__()
        self.n_blocks = n_blocks
        self.n_stages = n_stages
        self.act = nn.ReLU() if act is None else act
        for i in range(n_blocks):
            for j in range(n_stages):
                self.add_module(_norm_name(i, j), normalizer(features, num_classes))
                self.add_module(_conv_name(i, j), conv3x3(features, features, bias=False))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        for i in range(self.n_blocks):
            h = x
            for j in range(self.n_stages):
                h = getattr(self, _norm_name(i, j))(h, y)
                h = getattr(self, _conv_name(i, j))(self.act(h))
            x = h + x
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: x ← act(x), p ← x; ``n_stages`` × [p ← conv3×3(pool(p)); x ← x + p].

    pool is a 5×5, stride-1 max pool (average pool with ``maxpool=False``). Shape-preserving.
    """

    def __init__(self, features: int, n_stages: int, act: Optional[nn.Module] = None, maxpool: bool = True):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(features, features, bias=False) for _ in range(n_stages))
        self.n_stages = n_stages
        self.pool = (nn.MaxPool2d if maxpool else nn.AvgPool2d)(kernel_size=5, stride=1, padding=2)
        self.act = nn.ReLU() if act is None else act

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(x)
        path = x
        for conv in self.convs:
            path = conv(self.pool(path))
            x = x + path
        return x


class CondCRPBlock(nn.Module):
    """`CRPBlock` with a conditional normalization before each (5×5 average) pooling; forward(x, y)."""

    def __init__(self, features: int, n_stages: int, num_classes: int, normalizer: Callable[..., nn.Module],
                 act: Optional[nn.Module] = None):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(features, features, bias=False) for _ in range(n_stages))
        self.norms = nn.ModuleList(normalizer(features, num_classes) for _ in range(n_stages))
        self.n_stages = n_stages
        self.pool = nn.AvgPool2d(kernel_size=5, stride=1, padding=2)
        self.act = nn.ReLU() if act is None else act

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        x = self.act(x)
        path = x
        for norm, conv in zip(self.norms, self.convs):
            path = conv(self.pool(norm(path, y)))
            x = x + path
        return x


def _resize(h: Tensor, shape: Sequence[int]) -> Tensor:
    """Bilinear resampling to ``shape`` (H, W) with aligned corners."""
    return F.interpolate(h, size=tuple(shape), mode="bilinear", align_corners=True)


class MSFBlock(nn.Module):
    """Multi-resolution fusion: Σᵢ resize(conv3×3ᵢ(xᵢ), shape) → (B, features, *shape)."""

    def __init__(self, in_planes: Sequence[int], features: int):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(c, features) for c in in_planes)
        self.features = features

    def forward(self, xs: List[Tensor], shape: Sequence[int]) -> Tensor:
        out = None
        for conv, x in zip(self.convs, xs):
            h = _resize(conv(x), shape)
            out = h if out is None else out + h
        return out


class CondMSFBlock(nn.Module):
    """`MSFBlock` with a conditional normalization of each input before its conv; forward(xs, y, shape)."""

    def __init__(self, in_planes: Sequence[int], features: int, num_classes: int,
                 normalizer: Callable[..., nn.Module]):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(c, features) for c in in_planes)
        self.norms = nn.ModuleList(normalizer(c, num_classes) for c in in_planes)
        self.features = features

    def forward(self, xs: List[Tensor], y: Tensor, shape: Sequence[int]) -> Tensor:
        out = None
        for conv, norm, x in zip(self.convs, self.norms, xs):
            h = _resize(conv(norm(x, y)), shape)
            out = h if out is None else out + h
        return out


class RefineBlock(nn.Module):
    """RefineNet block: RCU(2×2) on each input → MSF to ``output_shape`` (≥ 2 inputs) → CRP(2) → RCU.

    ``start``: a single input, no MSF. ``end``: the output RCU has 3 units instead of 1.
    xs[i]: (B, in_planes[i], Hᵢ, Wᵢ) → (B, features, *output_shape).
    """

    def __init__(self, in_planes: Sequence[int], features: int, act: Optional[nn.Module] = None, start: bool = False,
                 end: bool = False, maxpool: bool = True):
        super().__init__()
        act = nn.ReLU() if act is None else act
        self.n_blocks = len(in_planes)
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, act) for c in in_planes)
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, act)
        if not start:
            self.msf = MSFBlock(in_planes, features)
        self.crp = CRPBlock(features, 2, act, maxpool=maxpool)

    def forward(self, xs: List[Tensor], output_shape: Sequence[int]) -> Tensor:
        hs = [rcu(x) for rcu, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, output_shape) if self.n_blocks > 1 else hs[0]
        return self.output_convs(self.crp(h))


class CondRefineBlock(nn.Module):
    """`RefineBlock` built from the conditional RCU, MSF and CRP blocks; forward(xs, y, output_shape)."""

    def __init__(self, in_planes: Sequence[int], features: int, num_classes: int, normalizer: Callable[..., nn.Module],
                 act: Optional[nn.Module] = None, start: bool = False, end: bool = False):
        super().__init__()
        act = nn.ReLU() if act is None else act
        self.n_blocks = len(in_planes)
        self.adapt_convs = nn.ModuleList(CondRCUBlock(c, 2, 2, num_classes, normalizer, act) for c in in_planes)
        self.output_convs = CondRCUBlock(features, 3 if end else 1, 2, num_classes, normalizer, act)
        if not start:
            self.msf = CondMSFBlock(in_planes, features, num_classes, normalizer)
        self.crp = CondCRPBlock(features, 2, num_classes, normalizer, act)

    def forward(self, xs: List[Tensor], y: Tensor, output_shape: Sequence[int]) -> Tensor:
        hs = [rcu(x, y) for rcu, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, y, output_shape) if self.n_blocks > 1 else hs[0]
        return self.output_convs(self.crp(h, y), y)
