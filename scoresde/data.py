"""Datasets, never downloaded: 2-D toy sets, scikit-learn's bundled 8×8 digits, CIFAR-10 files, arrays, image folders.

    ds = sd.data.load("eight_gaussians")          # Dataset: ds.x (N, 2), ds.oracle (GaussianMixture)
    ds = sd.data.load("digits", split="test")      # ds.x (N, 1, 8, 8) in [-1, 1], 17 levels; ds.labels (N,)
    ds = sd.data.load("cifar10", path="data/")     # reads data/cifar-10-batches-py/ (N, 3, 32, 32), 256 levels
    batches = ds.batches(128, seed=0)              # infinite, seeded, checkpointable iterator
    x0, cond = next(batches)                       # (128, *ds.shape), (128,) long: labelled sets yield pairs
    x0 = next(ds.batches(128, labels=False))       # only the data

Every set is a `Dataset`: a tensor ``x`` of shape (N, *D) plus what evaluation needs to know about it
(``data_range``, the number of quantization ``levels``, the exact ``oracle`` density when there is one) and,
for labelled sets, ``labels`` (N,) long in 0 … ``num_classes`` − 1: eight_gaussians (the component index k mod
``num_classes``, 8 by default), rings (the ring), moons (the moon), digits (the digit), cifar10 (its 10 named
classes), an .npz file's ``label_key`` array, an image folder with one sub-folder per class.

**Quantized data.** A set with ``levels = K`` over ``data_range = (a, b)`` stores raw integer values
v ∈ {0, …, K − 1} on K evenly spaced levels with both ends included (what ``v / 255 · 2 − 1`` gives for 8-bit
images, and the convention of [`scoresde.bits_per_dim`][scoresde.bits_per_dim]):

    x = a + v (b − a)/(K − 1).

Level v owns the bin [a + vΔ, a + (v + 1)Δ) of width Δ = (b − a)/K; the K bins tile [a, b]. Uniform
dequantization replaces x by a uniform point of its bin, x̃ = a + (v + u) Δ with u ~ U(0, 1) per element, drawn
afresh for every batch. For the digits (pixel values 0..16, so K = 17, (a, b) = (−1, 1)):

    x = v / 16 · 2 − 1,    x̃ = (v + u) / 17 · 2 − 1,

and bits/dim of the dequantized data use Δ = 2/17: bpd = −log p(x)/(d ln 2) + log2(1/Δ)
([`scoresde.bits_per_dim`][scoresde.bits_per_dim]).
"""
from __future__ import annotations

import io
import logging
import math
import os
import pickle
import tarfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ._registry import Registry
from ._utils import check_finite
from .evaluation.oracle import GaussianMixture, eight_gaussians
from .guidance.condition import check_cond, cond_to, index_rows

Tensor = torch.Tensor
SampleFn = Callable[[int, Optional[torch.Generator]], Tensor]
_LOG = logging.getLogger(__name__)

__all__ = ["Dataset", "Batches", "DATASETS", "load", "names", "rings", "checkerboard", "swiss_roll", "moons",
           "dequantize"]

#: Seed of the fixed permutation that splits the digits (and arrays asked to split) into train and test.
SPLIT_SEED = 20240607
_SPLITS = ("train", "test")


# -- 2-D generators ------------------------------------------------------------------------------------------
def rings(radii: Sequence[float] = (1.0, 2.0), std: float = 0.08, spacing: float = 0.25,
          dtype=torch.float64, device=None) -> GaussianMixture:
    """Concentric rings as a Gaussian mixture, so the density is exact; a component's label is its ring.

    Ring r carries round(2π r / spacing) isotropic components N(r (cos θ_j, sin θ_j), std² I) at equally
    spaced angles θ_j; the weights are equal per component, so each ring's mass is proportional to its
    circumference (a uniform density along the curves).
    """
    if len(radii) == 0 or any(float(r) <= 0 for r in radii):
        raise ValueError(f"radii must be a non-empty sequence of positive numbers; got {tuple(radii)}")
    means, labels = [], []
    for ring, r in enumerate(radii):
        k = max(3, int(round(2 * math.pi * float(r) / spacing)))
        theta = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
        means.append(float(r) * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1))
        labels.append(torch.full((k,), ring, dtype=torch.long))
    means = torch.cat(means)
    return GaussianMixture(means, torch.full((means.shape[0],), float(std), dtype=torch.float64),
                           labels=torch.cat(labels), dtype=dtype, device=device)


def checkerboard(n: int, generator: Optional[torch.Generator] = None, size: float = 4.0,
                 dtype=torch.float32) -> Tensor:
    """Uniform on the 8 "black" cells of a 4×4 checkerboard centred at 0 with side ``size``: shape (n, 2).

    The board is split into 4×4 cells of side size/4 indexed (i, j) ∈ {0..3}²; a cell is black when i + j is
    even. The density is 2/size² on black cells and 0 elsewhere.
    """
    n = int(n)
    device = generator.device if generator is not None else None
    cell = torch.randint(0, 8, (n,), generator=generator, device=device)
    i = cell // 2                                    # row 0..3
    j = 2 * (cell % 2) + (i % 2)                     # column with i + j even
    u = torch.rand((n, 2), generator=generator, device=device, dtype=torch.float64)
    width = size / 4
    xy = torch.stack([j, i], dim=1).to(torch.float64) + u
    return (xy * width - size / 2).to(dtype)


def swiss_roll(n: int, generator: Optional[torch.Generator] = None, noise: float = 0.05,
               dtype=torch.float32) -> Tensor:
    """2-D Swiss roll: the spiral r(θ) (cos θ, sin θ) with θ ~ U(1.5π, 4.5π), r = 2 θ/(4.5π), plus
    N(0, noise² I); the outer radius is 2. Shape (n, 2)."""
    n = int(n)
    device = generator.device if generator is not None else None
    theta = math.pi * (1.5 + 3 * torch.rand((n,), generator=generator, device=device, dtype=torch.float64))
    radius = 2 * theta / (4.5 * math.pi)
    xy = radius[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    z = torch.randn((n, 2), generator=generator, device=device, dtype=torch.float64)
    return (xy + noise * z).to(dtype)


def moons(n: int, generator: Optional[torch.Generator] = None, noise: float = 0.05,
          dtype=torch.float32, return_labels: bool = False):
    """Two interleaved half circles, centred and scaled by 1.5: shape (n, 2) (and with ``return_labels`` the
    moon of each point, (n,) long: 0 upper, 1 lower).

    Upper moon (cos θ, sin θ), lower moon (1 − cos θ, ½ − sin θ), θ ~ U(0, π), each with probability ½;
    then x ← 1.5 (x − (½, ¼)) + N(0, noise² I).
    """
    n = int(n)
    device = generator.device if generator is not None else None
    theta = math.pi * torch.rand((n,), generator=generator, device=device, dtype=torch.float64)
    lower = torch.rand((n,), generator=generator, device=device) < 0.5
    upper_xy = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    lower_xy = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    xy = torch.where(lower[:, None], lower_xy, upper_xy)
    shift = torch.tensor([0.5, 0.25], dtype=torch.float64, device=xy.device)
    z = torch.randn((n, 2), generator=generator, device=device, dtype=torch.float64)
    x = (1.5 * (xy - shift) + noise * z).to(dtype)
    return (x, lower.long()) if return_labels else x


def dequantize(x: Tensor, bits: int = 8, data_range: Sequence[float] = (-1.0, 1.0),
               generator: Optional[torch.Generator] = None, levels: Optional[int] = None) -> Tensor:
    """Spread k-bit data uniformly over its bins: x̃ = a + (i + u) Δ with u ~ U(0, 1), Δ = (b − a) / 2^k.

    Convention: the 2^k levels of k-bit data in [a, b] are x_i = a + i (b − a) / (2^k − 1), i = 0 … 2^k − 1
    (what ``ToTensor`` and a rescale to [a, b] give: both ends included). Level i owns the bin
    [a + i Δ, a + (i + 1) Δ) of width Δ = (b − a) / 2^k; the bins tile [a, b]. The index is recovered by
    rounding; data more than a quarter of a level spacing off the grid is rejected.

    Args:
        x: k-bit data of shape (B, *D).
        bits: k ≥ 1.
        data_range: (a, b) with a < b.
        generator: draws u (on x's device).
        levels: the number of levels L when it is not a power of two (e.g. 17 for the 8×8 digits, values
            0…16); then the levels are a + i (b − a)/(L − 1) and Δ = (b − a)/L. Overrides ``bits``.

    Returns:
        the dequantized data x̃, shape and dtype of x.
    """
    a, b, levels = check_quantization(bits, data_range, levels)
    if not torch.is_tensor(x) or not x.is_floating_point():
        got = x.dtype if torch.is_tensor(x) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor of shape (B, *D); got {got}")
    spacing = (b - a) / (levels - 1)
    index = torch.round((x - a) / spacing)
    off_grid = (x - (a + index * spacing)).abs() > 0.25 * spacing
    if bool(((index < 0) | (index > levels - 1) | off_grid).any()):
        raise ValueError(f"x must be quantized data on the {levels} levels a + i (b - a)/({levels} - 1) of "
                         f"data_range [a, b] = [{a}, {b}]; got values in [{float(x.min()):.6g}, {float(x.max()):.6g}]"
                         " off that grid")
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return a + (index + u) * ((b - a) / levels)


def check_quantization(bits, data_range, levels=None) -> Tuple[float, float, int]:
    """(a, b, number of levels) of a quantization given by ``bits`` or ``levels`` over ``data_range``."""
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an integer >= 2; got {levels!r}")
    elif isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer in [1, 32]; got {bits!r}")
    try:
        a, b = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (a, b) of numbers; got {data_range!r}") from None
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ValueError(f"data_range must be (a, b) with finite a < b; got {data_range!r}")
    return a, b, levels if levels is not None else 2**bits


# -- the dataset and its batch iterator ------------------------------------------------------------------
def _dataset_labels(labels, num_classes, n: int, name: str):
    """(labels (N,) long or None, K or None), checked."""
    if labels is None:
        if num_classes is not None:
            raise ValueError("num_classes needs labels")
        return None, None
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels of data set {name!r} must be an integer tensor of shape (N,) = ({n},); got "
                         f"shape {tuple(labels.shape)}, dtype {labels.dtype}")
    labels = labels.long()
    top = int(labels.max()) + 1
    k = top if num_classes is None else int(num_classes)
    if bool((labels < 0).any()) or top > k:
        raise ValueError(f"labels of data set {name!r} must be in [0, {k}); got values in "
                         f"[{int(labels.min())}, {top - 1}]")
    return labels, k


class Dataset:
    """A finite tensor data set, with what sampling and evaluation need to know about it.

    Its values must be finite: a NaN or an inf raises a ValueError naming the first offending row (one check, at
    construction; every loader builds its set through here).

    Attributes:
        x: the data, shape (N, *D). For quantized data (``levels`` set) these are the bin centres.
        name: the name it was loaded by.
        split: "train" or "test".
        data_range: (a, b) bounds of the data, or None when unbounded.
        levels: number of quantization levels K per element (None for continuous data).
        dequantize: whether `batches` adds uniform dequantization noise.
        oracle: the exact density (a GaussianMixture) when the set is drawn from one, else None.
        sampler: ``sampler(n, generator) -> (n, *D)`` drawing fresh samples of the same law (for a labelled
            set: the pair (x, labels)), or None.
        labels: the class of each sample, (N,) long in 0 … num_classes − 1, or None.
        num_classes: K (default: labels.max() + 1), or None without labels.
        cond: a condition of each sample beyond a class (an embedding, a measurement, a low-resolution image):
            a tensor (N, ...) or a dict of them (`scoresde.guidance.condition`), or None; a conditional model
            trains on it (it takes the place of ``labels`` in the batches).
        class_names: optional names of the K classes (an image folder's sub-folders).
        summary: one line on how the set was read (an image folder: images and classes found, what was
            scaled, cropped, converted or skipped), or None.
    """

    def __init__(self, x: Tensor, name: str = "tensor", split: str = "train",
                 data_range: Optional[Tuple[float, float]] = None, levels: Optional[int] = None,
                 dequantize: bool = False, oracle: Optional[GaussianMixture] = None,
                 sampler: Optional[SampleFn] = None, labels: Optional[Tensor] = None,
                 num_classes: Optional[int] = None, class_names: Optional[Sequence[str]] = None,
                 summary: Optional[str] = None, cond=None):
        if not torch.is_tensor(x) or x.dim() < 2 or x.shape[0] < 1:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (N, *D) with N >= 1 and at least one data "
                             f"dimension; got {got}")
        if dequantize and levels is None:
            raise ValueError("dequantize=True needs quantized data (levels and data_range set)")
        if levels is not None and data_range is None:
            raise ValueError("quantized data (levels set) also needs data_range=(a, b)")
        self.x = check_finite(x, f"data set {name!r}")
        self.name, self.split = name, split
        self.data_range = None if data_range is None else (float(data_range[0]), float(data_range[1]))
        self.levels = None if levels is None else int(levels)
        self.dequantize = bool(dequantize)
        self.oracle = oracle
        self.sampler = sampler
        self.labels, self.num_classes = _dataset_labels(labels, num_classes, x.shape[0], name)
        if cond is not None and labels is not None:
            raise ValueError("give a data set labels or cond, not both (a dict cond may hold the labels)")
        self.cond = None if cond is None else check_cond(cond, x.shape[0], what=f"cond of data set {name!r}")
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.summary = summary
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names must name the {self.num_classes} classes; got {len(self.class_names)}")

    def __len__(self) -> int:
        return self.x.shape[0]

    def __repr__(self) -> str:
        extra = f", levels={self.levels}, dequantize={self.dequantize}" if self.levels else ""
        extra += f", num_classes={self.num_classes}" if self.labels is not None else ""
        extra += ", cond" if self.cond is not None else ""
        return (f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, shape={self.shape}, "
                f"data_range={self.data_range}{extra})")

    @property
    def shape(self) -> Tuple[int, ...]:
        """Shape of one sample, D."""
        return tuple(self.x.shape[1:])

    @property
    def dim(self) -> int:
        """Number of elements of one sample, d."""
        return int(math.prod(self.shape))

    @property
    def bin_width(self) -> Optional[float]:
        """Δ = (b − a)/levels for quantized data, else None."""
        if self.levels is None:
            return None
        return (self.data_range[1] - self.data_range[0]) / self.levels

    def dequantized(self, generator: Optional[torch.Generator] = None) -> Tensor:
        """The whole set with one draw of uniform dequantization noise (quantized sets only): (N, *D)."""
        if self.levels is None:
            raise ValueError(f"dataset {self.name!r} is not quantized (levels is None)")
        return dequantize(self.x, data_range=self.data_range, generator=generator, levels=self.levels)

    def batches(self, batch_size: int, seed: int = 0, fresh: Optional[bool] = None,
                labels: Optional[bool] = None) -> "Batches":
        """An infinite, seeded iterator of batches of shape (batch_size, *D), or of pairs (x, labels) for a
        labelled set and (x, cond) for a set with conditions (``labels=False`` asks for the data only); see
        `Batches`."""
        return Batches(self, batch_size, seed=seed, fresh=fresh, labels=labels)


class Batches:
    """Infinite seeded batch iterator whose state can be checkpointed (for exact resume).

    With ``fresh`` (the default when the data set has a ``sampler``) every batch is a new draw from the
    sampler; otherwise the data are visited in epochs, each a random permutation (the last incomplete
    batch of an epoch is completed from the next one, so every batch has ``batch_size`` rows). Quantized
    sets with ``dequantize`` get new uniform noise per batch. All randomness comes from one CPU
    ``torch.Generator`` seeded by ``seed``; `state_dict` holds its state and the epoch position.
    Batches are returned on the CPU, in the data's dtype. With ``labels`` (the default for a labelled set or one
    with ``cond``) each batch is a pair (x, cond): cond (batch_size,) long labels, or the rows of the set's
    ``cond``; the draws are the same either way.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, fresh: Optional[bool] = None,
                 labels: Optional[bool] = None):
        if not isinstance(dataset, Dataset):
            raise TypeError(f"dataset must be a scoresde.data.Dataset; got {type(dataset).__name__}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        if fresh is None:
            fresh = dataset.sampler is not None
        if fresh and dataset.sampler is None:
            raise ValueError(f"fresh=True needs a data set with a sampler; {dataset.name!r} has none")
        conditioned = dataset.labels is not None or dataset.cond is not None
        if labels is None:
            labels = conditioned
        if labels and not conditioned:
            raise ValueError(f"labels=True needs a data set with labels or cond; {dataset.name!r} has no labels (nor cond)")
        self.dataset, self.batch_size, self.fresh = dataset, int(batch_size), bool(fresh)
        self.labels = bool(labels)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.perm: Optional[Tensor] = None
        self.position = 0

    def __iter__(self) -> "Batches":
        return self

    def __next__(self):
        ds = self.dataset
        y = None
        if self.fresh:
            x = ds.sampler(self.batch_size, self.generator)
            if isinstance(x, tuple):
                x, y = x
            elif self.labels:
                raise ValueError(f"the sampler of {ds.name!r} returns no labels; a labelled set's sampler returns "
                                 f"(x, labels)")
            x = x.to(ds.x.dtype)
        else:
            parts, need = [], self.batch_size
            while need > 0:
                if self.perm is None or self.position >= len(self.perm):
                    self.perm = torch.randperm(len(ds), generator=self.generator)
                    self.position = 0
                take = self.perm[self.position:self.position + need]
                self.position += len(take)
                need -= len(take)
                parts.append(take)
            index = torch.cat(parts)
            x = ds.x[index.to(ds.x.device)].cpu()
            if self.labels and ds.cond is not None:
                y = cond_to(index_rows(ds.cond, index), "cpu")
            elif self.labels:
                y = ds.labels[index.to(ds.labels.device)].cpu()
        if ds.dequantize:
            x = dequantize(x, data_range=ds.data_range, generator=self.generator, levels=ds.levels)
        if not self.labels:
            return x
        return x, (y.long() if torch.is_tensor(y) and ds.cond is None else y)

    def state_dict(self) -> Dict[str, object]:
        """Generator state and epoch position (tensors and ints only, loadable with weights_only=True)."""
        return {"generator": self.generator.get_state(), "position": self.position,
                "perm": self.perm.clone() if self.perm is not None else None,
                "batch_size": self.batch_size, "fresh": self.fresh}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore a state from `state_dict`; the batch size and mode must match."""
        if int(state["batch_size"]) != self.batch_size or bool(state["fresh"]) != self.fresh:
            raise ValueError(f"batch iterator state has batch_size={state['batch_size']}, fresh={state['fresh']}; "
                             f"this iterator has batch_size={self.batch_size}, fresh={self.fresh}")
        self.generator.set_state(state["generator"].cpu())
        self.position = int(state["position"])
        self.perm = state["perm"].clone() if state["perm"] is not None else None


# -- loaders -------------------------------------------------------------------------------------------------
def _split_seed(seed: int, split: str) -> int:
    return 2 * int(seed) + (1 if split == "test" else 0)


def _mixture_set(name: str, mixture: GaussianMixture, n: int, split: str, seed: int, dtype) -> Dataset:
    generator = torch.Generator().manual_seed(_split_seed(seed, split))
    mixture = mixture.to(device="cpu")

    def sample(k: int, generator: Optional[torch.Generator] = None):
        x, y = mixture.sample(k, generator, return_labels=True)
        return x.to(dtype), y

    x, y = sample(n, generator)
    return Dataset(x, name=name, split=split, oracle=mixture, sampler=sample, labels=y,
                   num_classes=mixture.num_classes)


def _generated_set(name: str, fn, n: int, split: str, seed: int, dtype, options, num_classes=None) -> Dataset:
    """A set drawn by ``fn(n, generator, dtype=, **options)``; with ``num_classes`` the generator also returns
    labels (``return_labels=True``)."""
    generator = torch.Generator().manual_seed(_split_seed(seed, split))
    extra = {} if num_classes is None else {"return_labels": True}

    def sample(k: int, generator: Optional[torch.Generator] = None):
        return fn(k, generator, dtype=dtype, **options, **extra)

    drawn = sample(n, generator)
    x, y = drawn if num_classes is not None else (drawn, None)
    return Dataset(x, name=name, split=split, sampler=sample, labels=y, num_classes=num_classes)


def _fixed_split(x: Tensor, split: str, test_fraction: float, name: str, *rows: Optional[Tensor]):
    """Split by a permutation with the fixed seed SPLIT_SEED: the last round(N·test_fraction) rows are test.
    Returns (x, *rows) of the split (the rows of each of ``rows``, e.g. labels; None stays None).

    Without a test part the data are returned unchanged (in file order).
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction!r}")
    n_test = int(round(len(x) * test_fraction))
    if n_test == 0:
        if split == "test":
            raise ValueError(f"{name!r} has no test split; pass test_fraction > 0")
        return (x, *rows)                          # no split: the whole file, in its order
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    idx = perm[len(x) - n_test:] if split == "test" else perm[:len(x) - n_test]
    return (x[idx], *(None if r is None else r[idx] for r in rows))


def _quantized(values: Tensor, levels: int, data_range: Tuple[float, float], dtype) -> Tensor:
    """Levels a + v (b − a)/(K − 1) of integer values v ∈ {0..K−1} (both ends included)."""
    a, b = data_range
    return (a + values.to(torch.float64) * ((b - a) / (levels - 1))).to(dtype)


def _digits(split: str, test_fraction: float, dequantize: bool, dtype) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the 'digits' data set needs scikit-learn (pip install scikit-learn); it ships the "
                          "8x8 digits with the package, nothing is downloaded") from err
    bunch = load_digits()
    values = torch.as_tensor(bunch.images).reshape(-1, 1, 8, 8)      # 0..16
    values, labels = _fixed_split(values, split, test_fraction, "digits", torch.as_tensor(bunch.target))
    return Dataset(_quantized(values, 17, (-1.0, 1.0), dtype), name="digits", split=split,
                   data_range=(-1.0, 1.0), levels=17, dequantize=dequantize, labels=labels, num_classes=10)


def _array(path: str, split: str, test_fraction: float, key: Optional[str], dequantize: bool, dtype,
           label_key: Optional[str] = None, cond_key: Optional[str] = None,
           cond_name: Optional[str] = None) -> Dataset:

    if not os.path.isfile(path):
        raise ValueError(f"no such array file: {path!r}")
    labels = cond = None
    if label_key is not None and cond_key is not None:
        raise ValueError("give label_key (class labels) or cond_key (conditions), not both")
    if path.endswith(".npz"):
        with np.load(path) as archive:
            keys = list(archive.keys())
            if key is None:
                data_keys = [k for k in keys if k not in (label_key, cond_key)]
                if len(data_keys) != 1:
                    raise ValueError(f"{path!r} holds arrays {keys}; pass key= to choose one")
                key = data_keys[0]
            for wanted in (key, label_key, cond_key):
                if wanted is not None and wanted not in keys:
                    raise ValueError(f"{path!r} has no array {wanted!r}; it holds {keys}")
            array = archive[key]
            if label_key is not None:
                labels = torch.from_numpy(np.ascontiguousarray(archive[label_key]))
            if cond_key is not None:
                cond = torch.from_numpy(np.ascontiguousarray(archive[cond_key]))
                cond = cond.to(dtype) if cond.is_floating_point() else cond
    elif label_key is not None or cond_key is not None:
        raise ValueError(f"label_key= / cond_key= need an .npz file holding the data and the labels or "
                         f"conditions; {path!r} is one array")
    else:
        array = np.load(path, allow_pickle=False)
    if array.ndim < 2:
        raise ValueError(f"the array must have shape (N, *D); {path!r} has shape {array.shape}")
    x = torch.from_numpy(np.ascontiguousarray(array))
    if labels is not None and tuple(labels.shape) != (x.shape[0],):
        raise ValueError(f"labels {label_key!r} of {path!r} must have shape (N,) = ({x.shape[0]},); got "
                         f"{tuple(labels.shape)}")
    if cond is not None and (cond.dim() < 1 or cond.shape[0] != x.shape[0]):
        raise ValueError(f"conditions {cond_key!r} of {path!r} must have shape (N, ...) with N = {x.shape[0]}; got "
                         f"{tuple(cond.shape)}")
    x, labels, cond = _fixed_split(x, split, test_fraction, path, labels, cond)
    if cond_name is not None:
        if cond is None:
            raise ValueError("cond_name= names the keyword of the cond_key array; give cond_key= too")
        cond = {str(cond_name): cond}
    if x.dtype == torch.uint8:          # 8-bit data: 256 levels over [-1, 1]
        return Dataset(_quantized(x, 256, (-1.0, 1.0), dtype), name=path, split=split,
                       data_range=(-1.0, 1.0), levels=256, dequantize=dequantize, labels=labels, cond=cond)
    if dequantize:
        raise ValueError(f"dequantize=True applies to uint8 arrays; {path!r} has dtype {array.dtype}")
    return Dataset(x.to(dtype), name=path, split=split, labels=labels, cond=cond)


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


#: Sub-folder names read as splits of an image folder (case-insensitive), never as classes.
_SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val", "valid", "validation")}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _folder_entries(folder: str) -> Tuple[List[str], List[str], List[str]]:
    """(image files, other files, sub-folders) directly in ``folder``, each sorted by name."""
    images, others, folders = [], [], []
    for entry in sorted(os.listdir(folder)):
        full = os.path.join(folder, entry)
        if os.path.isdir(full):
            folders.append(entry)
        elif entry.lower().endswith(_IMAGE_SUFFIXES):
            images.append(full)
        else:
            others.append(entry)
    return images, others, folders


def _class_folders(folder: str) -> List[str]:
    """The sub-folders of ``folder`` holding images, when ``folder`` holds none itself (else [])."""
    images, _, folders = _folder_entries(folder)
    return [] if images else [d for d in folders if _folder_entries(os.path.join(folder, d))[0]]


def _split_source(path: str, split: str, test_fraction: float) -> Tuple[str, Optional[str], List[str]]:
    """(folder to read, the split folder's name or None, class names shared by the splits).

    A folder without images of its own whose sub-folders are named like splits (train, test, val, valid,
    validation) holds splits: split="train" reads train/, split="test" the held-out one. Split folders beside
    other folders of images are ambiguous and refused.
    """
    if not has_split_folders(path):
        return path, None, _class_folders(path)
    _, _, folders = _folder_entries(path)
    splits = [d for d in folders if d.lower() in _SPLIT_FOLDERS["train"] + _SPLIT_FOLDERS["test"]]
    others = [d for d in folders if d not in splits and _folder_entries(os.path.join(path, d))[0]]
    if others:
        raise ValueError(f"{path!r} holds split folders ({', '.join(splits)}) beside other sub-folders "
                         f"({', '.join(others)}); point path= at one split (e.g. path="
                         f"{os.path.join(path, splits[0])!r}) or move the class folders into the split folders")
    held_out = [d for d in splits if d.lower() in _SPLIT_FOLDERS["test"]]
    if len(held_out) > 1:
        raise ValueError(f"{path!r} holds several held-out folders ({', '.join(held_out)}); point path= at the "
                         f"one to use (e.g. path={os.path.join(path, held_out[0])!r}; all of it is then one set)")
    train = [d for d in splits if d.lower() in _SPLIT_FOLDERS["train"]]
    if held_out and test_fraction > 0:
        raise ValueError(f"test_fraction={test_fraction} splits a folder without a held-out folder; {path!r} "
                         f"holds {held_out[0]}/: pass test_fraction=0")
    chosen = held_out if split == "test" and not test_fraction else train
    if not chosen:
        if split == "test":
            raise ValueError(f"{path!r} has no test split: it holds {', '.join(d + '/' for d in splits)} but no "
                             f"test/, val/, valid/ or validation/ folder (or pass test_fraction > 0)")
        raise ValueError(f"{path!r} has no train/ folder (it holds {', '.join(d + '/' for d in splits)}); point "
                         f"path= at the training images")
    names = sorted({c for d in train + held_out for c in _class_folders(os.path.join(path, d))})
    return os.path.join(path, chosen[0]), chosen[0], names


def has_split_folders(path: str) -> bool:
    """Whether image folder ``path`` holds split sub-folders (train, test, val, valid, validation) and no images
    of its own: then ``split`` chooses one; otherwise the folder (or its class sub-folders) is one set."""
    if not os.path.isdir(path):
        return False
    images, _, folders = _folder_entries(path)
    return not images and any(d.lower() in _SPLIT_FOLDERS["train"] + _SPLIT_FOLDERS["test"] for d in folders)


def _image_folder(path: str, split: str, test_fraction: float, mode: str, image_size: Optional[int],
                  dequantize: bool, dtype, crop: bool = False, resize: bool = False) -> Dataset:
    """The images directly in ``path``; or, when it holds none but has sub-folders with images, one class per
    sub-folder (sorted by name, as torchvision's ImageFolder); sub-folders named like splits are splits.

    Images are converted to ``mode``; with ``image_size`` an image of another size is scaled to a square of that
    side (bilinear) when it is square, centre-cropped to a square first with ``crop``, stretched with ``resize``,
    and refused otherwise. Files that are not images are skipped. One line (``Dataset.summary``, logged at INFO
    on ``scoresde.data``) says how many images and classes were read and what was done to them.
    """
    if not os.path.isdir(path):
        raise ValueError(f"no such image folder: {path!r}")
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("loading an image folder needs Pillow (pip install pillow; it comes with "
                          "matplotlib)") from err

    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' (grey) or 'RGB'; got {mode!r}")
    if crop and resize:
        raise ValueError("give crop=True or resize=True, not both")
    if (crop or resize) and image_size is None:
        raise ValueError(f"crop=True and resize=True need image_size= (the side of the square images); got "
                         f"crop={crop}, resize={resize}, image_size=None")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction!r}")

    source, split_folder, class_names = _split_source(path, split, test_fraction)
    files, skipped, _ = _folder_entries(source)
    labels = None
    if not files and class_names:
        per_class = [_folder_entries(os.path.join(source, d)) if os.path.isdir(os.path.join(source, d))
                     else ([], [], []) for d in class_names]
        files = [f for group, _, _ in per_class for f in group]
        skipped = [os.path.join(d, o) for d, (_, group, _) in zip(class_names, per_class) for o in group]
        labels = torch.tensor([c for c, (group, _, _) in enumerate(per_class) for _ in group], dtype=torch.long)
    else:
        class_names = None
    if not files:
        raise ValueError(f"no images ({', '.join(_IMAGE_SUFFIXES)}) in {source!r} or in its sub-folders")
    images, converted, scaled, cropped, stretched, not_square = [], {}, 0, 0, 0, []
    side = None if image_size is None else int(image_size)
    for f in files:
        with Image.open(f) as img:
            if img.mode != mode:
                converted[img.mode] = converted.get(img.mode, 0) + 1
            img = img.convert(mode)
            if side is not None and img.size != (side, side):
                w, h = img.size
                if w != h and crop:
                    s = min(w, h)
                    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                    cropped += 1
                elif w != h and not resize:
                    not_square.append(f"{os.path.relpath(f, path)} is {w}×{h}")
                    continue
                elif w != h:
                    stretched += 1
                img = img.resize((side, side), Image.BILINEAR)
                scaled += 1
            images.append(np.asarray(img, dtype=np.uint8))
    if not_square:
        raise ValueError(f"{len(not_square)} image(s) in {path!r} are not square like image_size={side} ("
                         f"{not_square[0]}); pass crop=True (centre-crop to a square, then scale) or resize=True "
                         f"(stretch to {side}×{side})")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images in {path!r} have different sizes {sorted(shapes)}; pass image_size=")
    stack = torch.from_numpy(np.stack(images))
    stack = stack[:, None] if mode == "L" else stack.permute(0, 3, 1, 2)       # (N, C, H, W)
    total = len(stack)
    within = split if split_folder is None or test_fraction > 0 else "train"   # a split folder is read whole
    stack, labels = _fixed_split(stack.contiguous(), within, test_fraction, path, labels)

    where = f"image folder {path!r}"
    if split_folder is not None:
        where += f", split {split} from {split_folder}/"
    if test_fraction > 0:
        where += f", split {split}: {len(stack)} of {total} (test_fraction={test_fraction})"
    classes = "no classes" if class_names is None else (
        f"{len(class_names)} classes ({', '.join(class_names[:5])}{', …' if len(class_names) > 5 else ''})")
    notes = [f"{len(stack)} images, {classes}"]
    if scaled:
        how = (f" ({cropped} centre-cropped to a square first)" if cropped else
               f" ({stretched} stretched to a new aspect ratio)" if stretched else "")
        notes.append(f"{scaled} scaled to {side}×{side}{how}")
    if converted:
        modes = ", ".join(f"{m}: {k}" for m, k in sorted(converted.items()))
        alpha = ", alpha dropped" if any(m in _ALPHA_MODES for m in converted) else ""
        notes.append(f"{sum(converted.values())} converted to {mode} ({modes}{alpha})")
    if skipped:
        shown = ", ".join(skipped[:3]) + (", …" if len(skipped) > 3 else "")
        notes.append(f"{len(skipped)} file{'s' if len(skipped) > 1 else ''} skipped ({shown})")
    summary = f"{where}: " + "; ".join(notes)
    _LOG.info(summary)
    return Dataset(_quantized(stack, 256, (-1.0, 1.0), dtype), name=path, split=split,
                   data_range=(-1.0, 1.0), levels=256, dequantize=dequantize, labels=labels,
                   num_classes=None if class_names is None else len(class_names), class_names=class_names,
                   summary=summary)


# -- CIFAR-10 from the python-version batches, read with a restricted unpickler ---------------------------------
_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_CIFAR10_SOURCE = ("CIFAR-10 comes from https://www.cs.toronto.edu/~kriz/cifar.html ('CIFAR-10 python version', "
                   f"{_CIFAR10_ARCHIVE}); nothing is downloaded")


def _cifar10_globals() -> Dict[str, object]:
    """The only globals a CIFAR-10 batch pickle names (numpy's array reconstruction), by "module.name"."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core.multiarray import _reconstruct
    return {"numpy.core.multiarray._reconstruct": _reconstruct, "numpy._core.multiarray._reconstruct": _reconstruct,
            "numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that admits only `_cifar10_globals`; any other global raises a ValueError before it is imported
    or called, so a hostile file runs nothing."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")          # the files were written by Python 2
        self.source, self.allowed = source, _cifar10_globals()

    def find_class(self, module: str, name: str):
        key = f"{module}.{name}"
        if key not in self.allowed:
            raise ValueError(f"{self.source}: refusing the global {key!r}; a CIFAR-10 batch file may only name "
                             f"{', '.join(sorted(self.allowed))}")
        return self.allowed[key]


def _cifar10_unpickle(raw: bytes, source: str) -> dict:
    """The dict a CIFAR-10 batch file holds, keys as str (the files' Python 2 byte strings read as latin-1)."""
    try:
        obj = _CifarUnpickler(io.BytesIO(raw), source).load()
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"{source} is not a CIFAR-10 python batch file: {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{source} must hold a dict; got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar10_files(path: str, wanted: Sequence[str]) -> Tuple[Dict[str, bytes], str]:
    """(file name -> bytes for the ``wanted`` files, where they were read) from the folder ``cifar-10-batches-py``,
    given itself or as a sub-folder of ``path``, or from the archive ``cifar-10-python.tar.gz`` (``path`` itself
    or inside it), read in memory without extracting anything."""
    expected = (f"the files {', '.join(_CIFAR10_FILES['train'] + _CIFAR10_FILES['test'])}, batches.meta in "
                f"{path!r} or in {os.path.join(path, _CIFAR10_FOLDER)!r}, or the archive "
                f"{os.path.join(path, _CIFAR10_ARCHIVE)!r}. {_CIFAR10_SOURCE}")
    archive = path if os.path.isfile(path) else os.path.join(path, _CIFAR10_ARCHIVE)
    for folder in (path, os.path.join(path, _CIFAR10_FOLDER)):
        if os.path.isdir(folder) and all(os.path.isfile(os.path.join(folder, f)) for f in wanted):
            out = {}
            for f in wanted:
                with open(os.path.join(folder, f), "rb") as handle:
                    out[f] = handle.read()
            return out, folder
    if os.path.isfile(archive) and archive.endswith((".tar.gz", ".tgz")):
        out = {}
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:                                  # one pass over the stream
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted and base not in out:
                    out[base] = tar.extractfile(member).read()
        missing = [f for f in wanted if f not in out]
        if missing:
            raise ValueError(f"the archive {archive!r} lacks {', '.join(missing)}; expected {expected}")
        return out, archive
    raise ValueError(f"no CIFAR-10 data at {path!r}: expected {expected}")


def _cifar10(path: Optional[str], split: str, dequantize: bool, dtype,
             data_range: Tuple[float, float] = (-1.0, 1.0)) -> Dataset:
    a, b, _ = check_quantization(8, data_range)
    if path is None:
        raise ValueError(f"'cifar10' needs path=: the folder holding {_CIFAR10_FOLDER}/ or {_CIFAR10_ARCHIVE}. "
                         f"{_CIFAR10_SOURCE}")
    if split not in _CIFAR10_FILES:
        raise ValueError(f"split must be one of {_SPLITS}; got {split!r}")
    names = _CIFAR10_FILES[split]
    files, where = _cifar10_files(path, names + ["batches.meta"])
    meta = _cifar10_unpickle(files["batches.meta"], f"{where}: batches.meta")
    class_names = meta.get("label_names")
    if not isinstance(class_names, list) or len(class_names) != 10:
        raise ValueError(f"{where}: batches.meta must hold 'label_names', a list of the 10 class names; got "
                         f"{class_names!r}")
    class_names = [c.decode("latin1") if isinstance(c, bytes) else str(c) for c in class_names]
    batches = []
    for name in names:
        batch = _cifar10_unpickle(files[name], f"{where}: {name}")
        data, labels = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"shape {data.shape}, dtype {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"{where}: {name} must hold 'data', a uint8 array of shape (N, 3072); got {got}")
        try:
            labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
        except (TypeError, ValueError):
            labels = np.zeros((0, 0), dtype=np.int64)                 # reported below
        if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
            raise ValueError(f"{where}: {name} must hold 'labels', N = {data.shape[0]} integers in 0..9; got "
                             f"shape {labels.shape}")
        batches.append((data, labels))
    n = sum(len(d) for d, _ in batches)
    x = torch.empty((n, 3, 32, 32), dtype=dtype)
    start = 0
    for data, _ in batches:                                 # a row: 1024 red, 1024 green, 1024 blue, row-major
        values = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
        x[start:start + len(data)] = _quantized(values, 256, (a, b), dtype)
        start += len(data)
    labels = torch.from_numpy(np.concatenate([y for _, y in batches]))
    return Dataset(x, name="cifar10", split=split, data_range=(a, b), levels=256, dequantize=dequantize,
                   labels=labels, num_classes=10, class_names=class_names)


# -- the registry of data sets ---------------------------------------------------------------------------------
#: Data sets by name: ``DATASETS.build("moons", split="train", n=1000)`` is ``load("moons", n=1000)``. Each entry
#: is a loader ``(split, **options) -> Dataset``; ``DATASETS.register("mine", my_loader)`` adds one.
DATASETS = Registry("data set")


def _two_d_size(n: Optional[int], split: str) -> int:
    n = (10_000 if split == "train" else 2_000) if n is None else int(n)
    if n < 1:
        raise ValueError(f"n must be a positive integer; got {n}")
    return n


@DATASETS.register("eight_gaussians")
def _load_eight_gaussians(split: str = "train", n: Optional[int] = None, seed: int = 0, radius: float = 2.0,
                          std: float = 0.1, num_classes: int = 8, dtype: torch.dtype = torch.float32) -> Dataset:
    """Eight Gaussians on a circle ([`scoresde.eight_gaussians`][scoresde.eight_gaussians]); ``oracle`` holds the exact density,
    labels are the component index k mod ``num_classes``."""
    mixture = eight_gaussians(radius=radius, std=std, num_classes=num_classes)
    return _mixture_set("eight_gaussians", mixture, _two_d_size(n, split), split, seed, dtype)


@DATASETS.register("rings")
def _load_rings(split: str = "train", n: Optional[int] = None, seed: int = 0, radii: Sequence[float] = (1.0, 2.0),
                std: float = 0.08, spacing: float = 0.25, dtype: torch.dtype = torch.float32) -> Dataset:
    """Concentric rings (`rings`); ``oracle`` holds the exact density, labels are the rings."""
    mixture = rings(radii=radii, std=std, spacing=spacing)
    return _mixture_set("rings", mixture, _two_d_size(n, split), split, seed, dtype)


@DATASETS.register("checkerboard")
def _load_checkerboard(split: str = "train", n: Optional[int] = None, seed: int = 0, size: float = 4.0,
                       dtype: torch.dtype = torch.float32) -> Dataset:
    """The 2-D checkerboard (`checkerboard`)."""
    return _generated_set("checkerboard", checkerboard, _two_d_size(n, split), split, seed, dtype, {"size": size})


@DATASETS.register("swiss_roll")
def _load_swiss_roll(split: str = "train", n: Optional[int] = None, seed: int = 0, noise: float = 0.05,
                     dtype: torch.dtype = torch.float32) -> Dataset:
    """The 2-D Swiss roll (`swiss_roll`)."""
    return _generated_set("swiss_roll", swiss_roll, _two_d_size(n, split), split, seed, dtype, {"noise": noise})


@DATASETS.register("moons")
def _load_moons(split: str = "train", n: Optional[int] = None, seed: int = 0, noise: float = 0.05,
                dtype: torch.dtype = torch.float32) -> Dataset:
    """Two moons (`moons`); labels: 0 upper moon, 1 lower."""
    return _generated_set("moons", moons, _two_d_size(n, split), split, seed, dtype, {"noise": noise}, num_classes=2)


@DATASETS.register("digits")
def _load_digits(split: str = "train", test_fraction: float = 1 / 6, dequantize: bool = False,
                 dtype: torch.dtype = torch.float32) -> Dataset:
    """scikit-learn's bundled 8×8 digits, (N, 1, 8, 8), 17 levels over [−1, 1], labelled 0–9; a fixed split keeps
    1/6 for test."""
    return _digits(split, test_fraction, dequantize, dtype)


@DATASETS.register("cifar10")
def _load_cifar10(split: str = "train", path: Optional[str] = None, dequantize: bool = False,
                  dtype: torch.dtype = torch.float32, data_range: Sequence[float] = (-1.0, 1.0)) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009) from the python-version batches in ``path``: (N, 3, 32, 32) RGB, 256 levels
    over [−1, 1], labelled 0–9 with the class names of batches.meta; the official split (50,000 train from
    data_batch_1..5 in file order, 10,000 test from test_batch).

    ``path`` is the folder ``cifar-10-batches-py`` (data_batch_1..5, test_batch, batches.meta), a folder holding
    it, or the archive ``cifar-10-python.tar.gz`` (or a folder holding it; members are read in memory, nothing is
    extracted). Nothing is downloaded: get "CIFAR-10 python version" from https://www.cs.toronto.edu/~kriz/cifar.html.
    The files are pickles; they are read by an unpickler that admits only numpy's array reconstruction
    (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``) and refuses any other global with a
    ValueError before importing or calling it.

    Pixel value v ∈ {0..255} becomes x = v/255 · 2 − 1 (as every 8-bit loader here), or a + v/255 (b − a) with
    ``data_range=(a, b)``. score_sde_pytorch's models trained with ``data.centered = True`` take the default x;
    those with ``centered = False`` expect v/255 ∈ [0, 1]: ``data_range=(0, 1)``. With ``dequantize`` each batch gets
    x̃ = (v + u)/256 · 2 − 1, u ~ U(0, 1), whose (x̃ + 1)/2 = (v + u)/256 is their ``uniform_dequantization``.
    """
    return _cifar10(None if path is None else os.fspath(path), split, dequantize, dtype, tuple(data_range))


@DATASETS.register("array")
def _load_array(split: str = "train", path: Optional[str] = None, key: Optional[str] = None,
                label_key: Optional[str] = None, test_fraction: float = 0.0, dequantize: bool = False,
                dtype: torch.dtype = torch.float32, cond_key: Optional[str] = None,
                cond_name: Optional[str] = None) -> Dataset:
    """A .npy/.npz file at ``path`` ((N, *D); uint8 arrays become 256 levels over [−1, 1]); an .npz file's
    ``label_key`` array (N,) holds the labels, or its ``cond_key`` array (N, ...) each sample's condition, passed
    to the model as its third argument, or as the keyword ``cond_name`` when given (e.g. "image" for a U-Net
    built with ``cond_channels``: ``model(x, t, image=y)``)."""
    if path is None:
        raise ValueError("'array' needs path=")
    return _array(os.fspath(path), split, test_fraction, key, dequantize, dtype, label_key=label_key,
                  cond_key=cond_key, cond_name=cond_name)


@DATASETS.register("image_folder")
def _load_image_folder(split: str = "train", path: Optional[str] = None, mode: str = "L",
                       image_size: Optional[int] = None, crop: bool = False, resize: bool = False,
                       test_fraction: float = 0.0, dequantize: bool = False,
                       dtype: torch.dtype = torch.float32) -> Dataset:
    """The images in folder ``path`` (Pillow), (N, C, H, W), 256 levels over [−1, 1]; a folder of sub-folders
    of images is labelled by sub-folder (one class each, sorted by name), except sub-folders named train, test,
    val, valid or validation: those are the splits (split="test" reads the held-out one). ``mode`` "L" or "RGB"
    (other modes are converted); ``image_size`` scales square images of another size to that side, ``crop``
    centre-crops other aspect ratios to a square first, ``resize`` stretches them (without either they are
    refused). ``Dataset.summary`` states the counts of each."""
    if path is None:
        raise ValueError("'image_folder' needs path=")
    return _image_folder(os.fspath(path), split, test_fraction, mode, image_size, dequantize, dtype,
                         crop=bool(crop), resize=bool(resize))


def names() -> List[str]:
    """The valid names for `load` (a path to a .npy/.npz file or an image folder also works)."""
    return DATASETS.names()


def resolve_name(name, path: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """(registry name, path): a path to a .npy/.npz file or to a folder given as ``name`` becomes "array" or
    "image_folder" with that path."""
    if path is None and isinstance(name, (str, os.PathLike)) and str(name) not in DATASETS:
        candidate = os.fspath(name)
        if os.path.isdir(candidate):
            return "image_folder", candidate
        if candidate.endswith((".npy", ".npz")):
            return "array", candidate
    return name, path


def load(name: str, split: str = "train", **options) -> Dataset:
    """Load a data set by name; nothing is downloaded.

    Args:
        name: one of `names` (the entries of `DATASETS`), a path to a .npy/.npz file or an image
            folder, or an import path ``"package.module:loader"``:

            - "eight_gaussians", "rings": Gaussian mixtures (``oracle`` holds the exact density); options
              ``n`` (default 10,000 for train, 2,000 for test), ``seed`` and the mixture's parameters.
            - "checkerboard", "swiss_roll", "moons": 2-D generators; ``n``, ``seed`` and the generator's options.
            - "digits": scikit-learn's bundled 8×8 digits, (N, 1, 8, 8), 17 levels over [−1, 1]; a fixed
              split (seed ``SPLIT_SEED``) keeps ``test_fraction`` = 1/6 of the 1797 images for test.
            - "cifar10": CIFAR-10 from the python-version batches at ``path`` (the folder
              ``cifar-10-batches-py``, a folder holding it or ``cifar-10-python.tar.gz``), (N, 3, 32, 32), 256
              levels over [−1, 1], labelled 0–9; the official split.
            - "array": a .npy/.npz file at ``path`` (``key`` chooses the array of an .npz, ``label_key`` its
              labels).
            - "image_folder": the images in folder ``path`` (or, one class each, in its sub-folders; sub-folders
              named train, test, val, valid or validation are the splits); ``mode`` "L" (grey) or "RGB", optional
              square ``image_size`` with ``crop`` or ``resize`` for other aspect ratios; ``Dataset.summary``
              states what was found, scaled, converted and skipped.
        split: "train" or "test". 2-D sets draw the two splits from different seeds; files split by a
            fixed permutation when ``test_fraction`` > 0 (otherwise "train" is the whole file).
        **options: the loader's keyword arguments (an unknown one raises an error listing the valid ones);
            quantized sets take ``dequantize`` (uniform noise over each bin in every batch, see
            `dequantize`); all take ``dtype``.

    Returns:
        A `Dataset`.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}; got {split!r}")
    name, path = resolve_name(name, options.pop("path", None))
    if path is not None:
        options["path"] = path
    if name not in DATASETS and not (isinstance(name, str) and ":" in name):
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS.names())} "
                         f"(or a path to a .npy/.npz file or an image folder)")
    return DATASETS.build(name, split=split, **options)
