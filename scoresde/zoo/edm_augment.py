"""EDM's non-leaking geometric augmentation (Karras et al. 2022, Appendix F.2; github.com/NVlabs/edm
``training/augment.py``, after Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"),
with its randomness drawn from a ``torch.Generator``.

    augment = EDMAugment(p=0.12, **CIFAR10)           # their train.py --augment=0.12
    y, labels = augment(x, generator)                  # x (N, C, H, W) → y (N, C, H, W), labels (N, 9)

Each transform is drawn for an image with probability p · multiplier (a multiplier ≥ 1/p: always). A drawn x- or
y-flip mirrors the image with probability ½ (their xflip=1e8: a random half). The other four are composed per
image into one inverse 2-D map in homogeneous pixel coordinates centred on the image (S a scaling, R a rotation, T
a translation),

    G⁻¹ = S(2^{σ_s w_s})⁻¹ · R(w_r) · R(r)⁻¹ S(2^{σ_a w_a}, 2^{−σ_a w_a})⁻¹ R(r) · T(σ_t W w_x, σ_t H w_y)⁻¹,

with w_s, w_a, w_x, w_y ~ N(0, 1), w_r ~ U(−π ρ, π ρ) (ρ = ``rotate_frac_max``) and r ~ U(−π, π) (kept with probability
``aniso_rotate_prob``, else 0); a skipped transform has w = 0. The image is resampled at G⁻¹ of each output pixel:
reflect-padded far enough to cover the mapped corners, upsampled ×2 with the sym6 wavelet low-pass filter, sampled
bilinearly, filtered and downsampled ×2 again. The labels tell the network what was done (zero for no augmentation,
as at sampling), in this order:

    [x-flip (0/1), y-flip (0/1), w_s, cos w_r − 1, sin w_r, w_a cos r, w_a sin r, w_x, w_y],

the entries of the transforms whose multiplier is 0 left out. On the CPU, a generator seeded like their global RNG
gives their draws in their order, and the same images and labels (see tests/test_zoo_edm_augment.py).
Their integer rotation and translation and their colour transforms (unused by EDM) are not implemented.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

#: The multipliers of their train.py's pipeline (``--augment=p``; 9 labels).
CIFAR10 = dict(xflip=1e8, yflip=1.0, scale=1.0, rotate_frac=1.0, aniso=1.0, translate_frac=1.0)

#: The low-pass filter of the Symlet-6 wavelet (the resampling filter; PyWavelets' ``Wavelet("sym6").dec_lo``).
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)


def _matrices(rows, like: Tensor) -> Tensor:
    """(*like.shape, n, n) float32 matrices from rows of numbers and tensors shaped like ``like``."""
    entries = [e.to(torch.float32) if torch.is_tensor(e) else torch.full(like.shape, float(e), device=like.device)
               for row in rows for e in row]
    return torch.stack([e.expand(like.shape) for e in entries], -1).reshape(*like.shape, len(rows), len(rows[0]))


def _scale(sx, sy, like):
    return _matrices([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], like)


def _rotate(theta, like):
    return _matrices([[theta.cos(), (-theta).sin(), 0], [theta.sin(), theta.cos(), 0], [0, 0, 1]], like)


def _translate(tx, ty, like):
    return _matrices([[1, 0, tx], [0, 1, ty], [0, 0, 1]], like)


def _number(name: str, value, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ValueError(f"{name} must be a finite number >= {low:g}; got {value!r}")
    return float(value)


class EDMAugment:
    """EDM's augmentation pipe (their ``AugmentPipe``'s geometric part): ``augment(x, generator)`` → (y, labels).

    Args:
        p: the overall probability multiplier (their ``--augment``: 0.12 on CIFAR-10); 0: the identity.
        xflip: the multiplier of the x-flip (0: off and no label; their default for every multiplier is 0, their
            train.py's are `CIFAR10`).
        yflip: the multiplier of the y-flip.
        scale: the multiplier of the isotropic scaling.
        rotate_frac: the multiplier of the rotation.
        aniso: the multiplier of the anisotropic scaling.
        translate_frac: the multiplier of the fractional translation.
        scale_std: σ_s, the log2 standard deviation of isotropic scaling.
        rotate_frac_max: ρ, the range of rotation (1: the full circle).
        aniso_std: σ_a, the log2 standard deviation of anisotropic scaling.
        aniso_rotate_prob: the probability of scaling along a rotated frame.
        translate_frac_std: σ_t, the standard deviation of translation relative to the image side.
    """

    def __init__(self, p: float = 1.0, xflip: float = 0.0, yflip: float = 0.0, scale: float = 0.0,
                 rotate_frac: float = 0.0, aniso: float = 0.0, translate_frac: float = 0.0, scale_std: float = 0.2,
                 rotate_frac_max: float = 1.0, aniso_std: float = 0.2, aniso_rotate_prob: float = 0.5,
                 translate_frac_std: float = 0.125):
        self.p = _number("p", p)
        if self.p > 1:
            raise ValueError(f"p is a probability, in [0, 1]; got {p!r}")
        self.xflip, self.yflip = _number("xflip", xflip), _number("yflip", yflip)
        self.scale, self.rotate_frac = _number("scale", scale), _number("rotate_frac", rotate_frac)
        self.aniso, self.translate_frac = _number("aniso", aniso), _number("translate_frac", translate_frac)
        self.scale_std, self.rotate_frac_max = _number("scale_std", scale_std), _number("rotate_frac_max",
                                                                                       rotate_frac_max)
        self.aniso_std, self.aniso_rotate_prob = _number("aniso_std", aniso_std), _number("aniso_rotate_prob",
                                                                                         aniso_rotate_prob)
        self.translate_frac_std = _number("translate_frac_std", translate_frac_std)

    @property
    def label_dim(self) -> int:
        """The number of labels: 1 per flip, 1 for scaling, 2 for rotation, anisotropy and translation each."""
        return (self.xflip > 0) + (self.yflip > 0) + (self.scale > 0) + 2 * (self.rotate_frac > 0) \
            + 2 * (self.aniso > 0) + 2 * (self.translate_frac > 0)

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None,
                 rows: Optional[slice] = None) -> Tuple[Tensor, Tensor]:
        """Augmented images (N, C, H, W) in x's dtype and their labels (N, `label_dim`) float32, for x (N, C, H, W).

        Draws come from ``generator`` (None: the global RNG) in their order; with p = 0 nothing is drawn and x is
        returned unchanged (theirs still resamples it through the identity map, equal to float32 rounding). ``rows``
        (a slice of the batch, e.g. a data-parallel shard ``rank::world_size``): draw for all N images, transform
        and return only these rows (the same values as the rows of the whole batch's result).
        """
        if not torch.is_tensor(x) or x.dim() != 4 or not x.is_floating_point():
            got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"EDMAugment needs floating-point images (N, C, H, W); got {got}")
        N, C, H, W = x.shape
        device = x.device
        rows = slice(None) if rows is None else rows
        if not isinstance(rows, slice) or len(range(N)[rows]) == 0:
            raise ValueError(f"rows must be a slice selecting rows of the whole batch x (N = {N}: x is the global "
                             f"batch, rows its shard); got {rows!r}")
        if self.p == 0:
            x = x[rows]
            return x, torch.zeros(x.shape[0], self.label_dim, device=device)

        def rand(*shape):
            return torch.rand(shape, generator=generator, device=device)

        def randn(*shape):
            return torch.randn(shape, generator=generator, device=device)

        def chosen(w, multiplier, *shape):          # w where a uniform falls below p · multiplier, else 0
            return torch.where(rand(*shape) < multiplier * self.p, w, torch.zeros_like(w))

        x, labels = x[rows], []
        for multiplier, dim in ((self.xflip, 3), (self.yflip, 2)):
            if multiplier > 0:
                w = chosen(torch.randint(2, (N, 1, 1, 1), generator=generator, device=device), multiplier, N, 1, 1, 1)
                x = torch.where(w[rows] == 1, x.flip(dim), x)
                labels.append(w)

        # The inverse map G⁻¹ (N, 3, 3), composed left to right in their order.
        ref = torch.zeros(N, device=device)
        G, geometric = torch.eye(3, device=device), False
        if self.scale > 0:
            w = chosen(randn(N), self.scale, N)
            s = w.mul(self.scale_std).exp2()
            G, geometric = G @ _scale(1 / s, 1 / s, ref), True
            labels.append(w)
        if self.rotate_frac > 0:
            w = chosen((rand(N) * 2 - 1) * (math.pi * self.rotate_frac_max), self.rotate_frac, N)
            G, geometric = G @ _rotate(w, ref), True
            labels += [w.cos() - 1, w.sin()]
        if self.aniso > 0:
            w = randn(N)
            r = (rand(N) * 2 - 1) * math.pi
            w = chosen(w, self.aniso, N)
            r = torch.where(rand(N) < self.aniso_rotate_prob, r, torch.zeros_like(r))
            s = w.mul(self.aniso_std).exp2()
            G, geometric = G @ _rotate(-r, ref) @ _scale(1 / s, 1 / (1 / s), ref) @ _rotate(r, ref), True
            labels += [w * r.cos(), w * r.sin()]
        if self.translate_frac > 0:
            w = chosen(randn(2, N), self.translate_frac, 1, N)
            t = (-w[0].mul(W * self.translate_frac_std), -w[1].mul(H * self.translate_frac_std))
            G, geometric = G @ _translate(*t, ref), True
            labels += [w[0], w[1]]
        if geometric:
            with torch.autocast(device.type, enabled=False):        # their float32 resampling, also under AMP
                x = self._resample(x, G, rows)
        labels = [v.to(torch.float32).reshape(N, -1) for v in labels]
        labels = torch.cat(labels, 1) if labels else torch.zeros(N, 0, device=device)
        return x, labels[rows]

    @staticmethod
    def _resample(x: Tensor, G: Tensor, rows: slice) -> Tensor:
        """x (n, C, H, W), the ``rows`` of the batch, sampled at G⁻¹ (N, 3, 3) (the whole batch's, which sets the
        padding) of each pixel (centred coordinates), through a ×2 sym6 upsampling."""
        N, C, H, W = x.shape
        device = x.device
        one = torch.zeros((), device=device)
        taps = torch.tensor(SYM6, dtype=torch.float32)
        pad = len(SYM6) // 4                                               # 3 low-resolution pixels of filter support
        cx, cy = (W - 1) / 2, (H - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=torch.float32,
                               device=device)
        mapped = (G @ corners.t())[:, :2, :].permute(1, 0, 2).flatten(1)    # (xy, N · 4)
        margin = torch.cat([-mapped, mapped]).max(dim=1).values            # (left, top, right, bottom) extents
        margin = margin + torch.tensor([pad * 2 - cx, pad * 2 - cy] * 2, dtype=torch.float32, device=device)
        margin = margin.max(torch.zeros(4, device=device))
        margin = margin.min(torch.tensor([W - 1, H - 1] * 2, dtype=torch.float32, device=device))
        left, top, right, bottom = margin.ceil().to(torch.int32)
        G = G[rows]
        x = F.pad(x, [int(left), int(right), int(top), int(bottom)], mode="reflect")
        G = _translate((left - right) / 2, (top - bottom) / 2, one) @ G

        # ×2 upsampling: zeros between the samples, then the time-reversed filter, along W and then H.
        weight = taps.flip(0).to(x.dtype).to(device).reshape(1, 1, -1).tile([C, 1, 1])
        up = (len(SYM6) + 1) // 2
        x = torch.stack([x, torch.zeros_like(x)], dim=4).reshape(N, C, x.shape[2], -1)[:, :, :, :-1]
        x = F.conv2d(x, weight.unsqueeze(2), groups=C, padding=[0, up])
        x = torch.stack([x, torch.zeros_like(x)], dim=3).reshape(N, C, -1, x.shape[3])[:, :, :-1, :]
        x = F.conv2d(x, weight.unsqueeze(3), groups=C, padding=[up, 0])
        G = _scale(2, 2, one) @ G @ _scale(1 / 2, 1 / 2, one)
        G = _translate(-0.5, -0.5, one) @ G @ _translate(0.5, 0.5, one)

        # Bilinear sampling on the normalized grid of the ×2 output (with the filter's margin).
        shape = [N, C, (H + pad * 2) * 2, (W + pad * 2) * 2]
        G = _scale(2 / x.shape[3], 2 / x.shape[2], one) @ G @ _scale(1 / (2 / shape[3]), 1 / (2 / shape[2]), one)
        grid = F.affine_grid(theta=G[:, :2, :].to(x.dtype), size=shape, align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        # ×2 downsampling through the filter, then the crop of the margin.
        weight = taps.to(x.dtype).to(device).reshape(1, 1, -1).tile([C, 1, 1])
        down = (len(SYM6) - 1) // 2
        x = F.conv2d(x, weight.unsqueeze(2), groups=C, stride=[1, 2], padding=[0, down])[:, :, :, pad:-pad]
        return F.conv2d(x, weight.unsqueeze(3), groups=C, stride=[2, 1], padding=[down, 0])[:, :, pad:-pad, :]

    def __repr__(self) -> str:
        names = ("p", "xflip", "yflip", "scale", "rotate_frac", "aniso", "translate_frac")
        return "EDMAugment(" + ", ".join(f"{n}={getattr(self, n):g}" for n in names) + ")"
