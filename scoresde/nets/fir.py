"""FIR up/down-sampling of image batches in pure PyTorch (StyleGAN2, Karras et al. 2020; used by NCSN++).

Every operation here is an instance of ``upfirdn2d`` on each channel of x (N, C, H, W):

    1. upsample by ``up``: insert ``up − 1`` zeros after every sample along H and W;
    2. pad by (p₀, p₁) zeros before/after along H and W (negative values crop);
    3. convolve (true convolution, i.e. correlate with the flipped kernel) with the 2-D FIR kernel K, 'valid';
    4. keep every ``down``-th sample.

The output side is (H·up + p₀ + p₁ − k_h) // down + 1. The kernel given as taps k (1-D: separable,
K = k kᵀ; 2-D: K itself) is normalised to sum 1 and scaled by ``gain`` (times factor² when upsampling, so that a
constant image keeps its value). Steps 1–3 run as one depthwise ``conv_transpose2d`` and steps 2–4 as one
depthwise strided ``conv2d``, so the ops are fast on CPU and GPU and differentiable to any order.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

Tensor = torch.Tensor
Taps = Union[Sequence[float], Sequence[Sequence[float]], Tensor]


@functools.lru_cache(maxsize=64)
def _normalised_taps(taps: tuple) -> tuple:
    """K / ΣK as nested tuples (rows), from 1-D taps (outer product k kᵀ) or 2-D rows."""
    if taps and not isinstance(taps[0], tuple):
        rows = tuple(tuple(a * b for b in taps) for a in taps)
    else:
        rows = taps
    total = math.fsum(v for row in rows for v in row)
    if total == 0:
        raise ValueError(f"the FIR kernel must not sum to zero; got {taps!r}")
    return tuple(tuple(v / total for v in row) for row in rows)


def fir_kernel(k: Optional[Taps], factor: int = 2, gain: float = 1.0, *, dtype: torch.dtype = torch.float32,
               device=None) -> Tensor:
    """The (k_h, k_w) FIR kernel K = gain · k kᵀ / Σ(k kᵀ) (1-D taps) or gain · k / Σk (2-D taps).

    ``k=None`` gives ``[1] * factor`` (box filter: nearest-neighbour up / average-pool down).
    """
    if k is None:
        k = [1.0] * factor
    if torch.is_tensor(k):
        k = k.tolist()
    try:
        taps = tuple(tuple(float(v) for v in row) for row in k) if k and isinstance(k[0], (list, tuple)) \
            else tuple(float(v) for v in k)
    except TypeError:
        raise TypeError(f"the FIR kernel must be a sequence of numbers (1-D) or of rows (2-D); got {k!r}") from None
    if not taps or (isinstance(taps[0], tuple) and any(len(row) != len(taps) for row in taps)):
        raise ValueError(f"the FIR kernel must be a non-empty 1-D sequence or a square 2-D one; got {k!r}")
    kernel = torch.tensor(_normalised_taps(taps), dtype=torch.float64)
    return (kernel * gain).to(dtype=dtype, device=device)


def _check_image(x: Tensor, name: str = "x") -> None:
    if not torch.is_tensor(x) or x.dim() != 4:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must be a 4-D tensor (N, C, H, W); got {shape}")


def _check_factor(factor) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer; got {factor!r}")
    return factor


def _depthwise(kernel: Tensor, channels: int) -> Tensor:
    return kernel[None, None].expand(channels, 1, *kernel.shape)


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: Tuple[int, int] = (0, 0)) -> Tensor:
    """upfirdn2d (see the module docstring) of every channel of x (N, C, H, W) with the 2-D kernel K (k_h, k_w).

    Output (N, C, (H·up + p₀ + p₁ − k_h) // down + 1, (W·up + p₀ + p₁ − k_w) // down + 1), with (p₀, p₁) = pad
    applied to both axes.
    """
    _check_image(x)
    if kernel.dim() != 2:
        raise ValueError(f"kernel must be 2-D (k_h, k_w); got shape {tuple(kernel.shape)}")
    up, down = _check_factor(up), _check_factor(down)
    p0, p1 = (int(p) for p in pad)
    channels = x.shape[1]
    kernel = kernel.to(dtype=x.dtype, device=x.device)
    kh, kw = kernel.shape
    if up == 1:
        # Correlation with the flipped kernel over the padded input, every `down`-th output kept.
        weight = _depthwise(kernel.flip(0, 1), channels)
        if p0 == p1 and p0 >= 0:
            return F.conv2d(x, weight, stride=down, padding=p0, groups=channels)
        return F.conv2d(F.pad(x, (p0, p1, p0, p1)), weight, stride=down, groups=channels)
    # The zero-inserted signal u convolved with K in full is conv_transpose2d(x, K, stride=up), of side
    # (H − 1)·up + k; upfirdn2d's output is that full convolution from index k − 1 − p₀ on.
    sides = [(x.shape[2], kh), (x.shape[3], kw)]
    out_sides = [n * up + p0 + p1 - k + 1 for n, k in sides]
    crop = [k - 1 - p0 for _, k in sides]
    extra = [o - ((n - 1) * up + k - 2 * c) for o, c, (n, k) in zip(out_sides, crop, sides)]
    weight = _depthwise(kernel, channels)
    if all(c >= 0 for c in crop) and all(0 <= e < up for e in extra):
        y = F.conv_transpose2d(x, weight, stride=up, padding=tuple(crop), output_padding=tuple(extra),
                               groups=channels)
    else:
        y = F.conv_transpose2d(x, weight, stride=up, groups=channels)
        full = [(n - 1) * up + k for n, k in sides]
        y = F.pad(y, (-crop[1], out_sides[1] + crop[1] - full[1], -crop[0], out_sides[0] + crop[0] - full[0]))
    return y[:, :, ::down, ::down] if down > 1 else y


def upsample_2d(x: Tensor, k: Optional[Taps] = None, factor: int = 2, gain: float = 1.0) -> Tensor:
    """FIR upsampling (N, C, H, W) → (N, C, H·f, W·f): upfirdn2d with up = f, kernel gain·f²·K, and padding
    p₀ = ⌈p/2⌉ + f − 1, p₁ = ⌊p/2⌋ for p = k − f, which centres the filter on the upsampled grid."""
    _check_image(x)
    factor = _check_factor(factor)
    kernel = fir_kernel(k, factor, gain * factor ** 2, dtype=x.dtype, device=x.device)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Tensor, k: Optional[Taps] = None, factor: int = 2, gain: float = 1.0) -> Tensor:
    """FIR downsampling (N, C, H, W) → (N, C, H/f, W/f): upfirdn2d with down = f, kernel gain·K and padding
    (⌈p/2⌉, ⌊p/2⌋) for p = k − f."""
    _check_image(x)
    factor = _check_factor(factor)
    kernel = fir_kernel(k, factor, gain, dtype=x.dtype, device=x.device)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def _check_weight(x: Tensor, w: Tensor) -> Tuple[int, int]:
    _check_image(x)
    if w.dim() != 4 or w.shape[2] != w.shape[3] or w.shape[1] != x.shape[1]:
        raise ValueError(f"w must be a square conv weight (out_C, in_C = {x.shape[1]}, k, k); "
                         f"got shape {tuple(w.shape)}")
    return w.shape[0], w.shape[2]


def upsample_conv_2d(x: Tensor, w: Tensor, k: Optional[Taps] = None, factor: int = 2, gain: float = 1.0) -> Tensor:
    """Upsample by f then convolve with w (out_C, in_C, c, c), fused: (N, in_C, H, W) → (N, out_C, H·f, W·f).

    A stride-f transposed convolution with the spatially flipped w, followed by the FIR kernel gain·f²·K with
    padding (⌈p/2⌉ + f − 1, ⌊p/2⌋ + 1), p = (k − f) − (c − 1) (StyleGAN2's ``upsample_conv_2d``).
    """
    factor = _check_factor(factor)
    _, size = _check_weight(x, w)
    y = F.conv_transpose2d(x, w.flip(2, 3).transpose(0, 1), stride=factor)
    kernel = fir_kernel(k, factor, gain * factor ** 2, dtype=x.dtype, device=x.device)
    p = (kernel.shape[0] - factor) - (size - 1)
    return upfirdn2d(y, kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: Tensor, w: Tensor, k: Optional[Taps] = None, factor: int = 2,
                       gain: float = 1.0) -> Tensor:
    """Convolve with w (out_C, in_C, c, c) then downsample by f, fused: (N, in_C, H, W) → (N, out_C, H/f, W/f).

    The FIR kernel gain·K with padding (⌈p/2⌉, ⌊p/2⌋), p = (k − f) + (c − 1), then a stride-f 'valid' conv2d.
    """
    factor = _check_factor(factor)
    _, size = _check_weight(x, w)
    kernel = fir_kernel(k, factor, gain, dtype=x.dtype, device=x.device)
    p = (kernel.shape[0] - factor) + (size - 1)
    return F.conv2d(upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2)), w, stride=factor)


def naive_upsample_2d(x: Tensor, factor: int = 2) -> Tensor:
    """Nearest-neighbour upsampling: every pixel repeated f × f times, (N, C, H, W) → (N, C, H·f, W·f)."""
    _check_image(x)
    factor = _check_factor(factor)
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def naive_downsample_2d(x: Tensor, factor: int = 2) -> Tensor:
    """Average pooling over f × f blocks, (N, C, H, W) → (N, C, H/f, W/f)."""
    _check_image(x)
    factor = _check_factor(factor)
    n, c, h, w = x.shape
    return x.reshape(n, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


class FIRConv2d(nn.Module):
    """A c × c convolution, optionally fused with FIR upsampling (``up``) or downsampling (``down``) by 2.

    Parameters ``weight`` (out_ch, in_ch, c, c) and ``bias`` (out_ch,), as score_sde_pytorch's
    ``up_or_down_sampling.Conv2d``. Without up/down it is a 'same'-padded conv2d.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel: odd convolution size c.
        up: upsample by 2 (not with ``down``).
        down: downsample by 2 (not with ``up``).
        resample_kernel: FIR taps (1-D, separable).
        use_bias: add a per-channel bias.
        kernel_init: ``init(shape) -> Tensor`` for the weight; None leaves it zero.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, up: bool = False, down: bool = False,
                 resample_kernel: Taps = (1, 3, 3, 1), use_bias: bool = True, kernel_init=None):
        super().__init__()
        if up and down:
            raise ValueError("FIRConv2d resamples one way: pass up=True or down=True, not both")
        if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd integer; got {kernel!r}")
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel, kernel))
        if kernel_init is not None:
            self.weight.data = kernel_init(self.weight.data.shape)
        if use_bias:
            self.bias = nn.Parameter(torch.zeros(out_ch))
        self.up, self.down, self.kernel, self.use_bias = up, down, kernel, use_bias
        self.resample_kernel = tuple(resample_kernel)

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_ch, H, W) → (N, out_ch, H', W') with H' = 2H (up), H/2 (down) or H."""
        if self.up:
            y = upsample_conv_2d(x, self.weight, k=self.resample_kernel)
        elif self.down:
            y = conv_downsample_2d(x, self.weight, k=self.resample_kernel)
        else:
            y = F.conv2d(x, self.weight, padding=self.kernel // 2)
        return y + self.bias[None, :, None, None] if self.use_bias else y
