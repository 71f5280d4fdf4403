"""Image features for FID and friends: 8-bit quantization exactly as PNG files hold images, torch-fidelity's
Inception-v3 extractor (weights read with ``weights_only=True``), batched extraction and reference statistics.

    images = to_uint8(x, data_range=(-1, 1))             # (N, C, H, W) uint8: what a saved PNG holds
    net = inception(weights="pt_inception.pth")          # torch-fidelity's "inception-v3-compat"
    feats = extract(net, images, batch_size=64)          # {"features": (N, 2048), "logits": (N, 1008)} float32
    save_reference("stats.npz", feats["features"], net.name, image_size=(32, 32))
    ref = load_reference("stats.npz", extractor=net.name, image_size=(32, 32))   # refuses another extractor

The Inception network is torch-fidelity's (``pip install scoresde[metrics]``), the PyTorch port of the TF graph
that FID is defined on; nothing here re-implements it. Its package ``__init__`` imports torchvision (for CLIP,
DINOv2 and data sets); where torchvision does not import (PyPI's build with a CPU torch), the Inception module is
loaded on its own, as it needs only torch and torch-fidelity's small helpers.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .image_metrics import as_features, feature_statistics

Tensor = torch.Tensor

#: The extractor's name recorded in reference files (torch-fidelity's name for the TF-compatible Inception).
INCEPTION = "inception-v3-compat"
_METRICS_EXTRA = "pip install scoresde[metrics]  (torch-fidelity)"
_INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                  "weights-inception-2015-12-05-6726825d.pth")


# -- 8-bit images --------------------------------------------------------------------------------------------
def to_uint8(x: Tensor, data_range: Sequence[float] = (-1.0, 1.0)) -> Tensor:
    """Images x in [a, b] as the 8-bit values a PNG file stores: round(255 (x − a)/(b − a)), clipped to 0..255.

    This is EDM's ``(x · 127.5 + 128).clip(0, 255).to(uint8)`` for [−1, 1] and the inverse of the data loaders'
    v/255 · 2 − 1; features are computed on these values so that a FID of samples in memory equals the FID of the
    same samples saved as PNG (clean-fid's point: quantization changes the number).
    x: (N, C, H, W) float; returns (N, C, H, W) uint8 on the same device.
    """
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ValueError(f"images must be a tensor of shape (N, C, H, W); got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if x.dtype == torch.uint8:
        return x
    a, b = float(data_range[0]), float(data_range[1])
    if not b > a:
        raise ValueError(f"data_range must be (a, b) with a < b; got {tuple(data_range)}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x.reshape(x.shape[0], -1))).any(dim=1).nonzero()[0])
        raise ValueError(f"images hold non-finite values; the first is sample {bad}")
    return torch.round((x.double() - a) * (255.0 / (b - a))).clamp(0, 255).to(torch.uint8)


def _rgb(images: Tensor) -> Tensor:
    """(N, 1 or 3, H, W) uint8 → (N, 3, H, W): grey repeated on three channels (what PIL's convert("RGB") does)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W); got {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def save_png(images: Tensor, folder: str, start: int = 0) -> None:
    """Write (N, C, H, W) uint8 images as ``folder/{start + i:06d}.png`` (lossless: reading them back gives the
    same values)."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    arr = images.to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, img in enumerate(arr):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(os.path.join(folder, f"{start + i:06d}.png"))


def read_images(folder: str) -> Tensor:
    """The images in ``folder`` (png, jpg, …; sorted by name) as (N, 3, H, W) uint8 RGB (grey → three channels, as
    torch-fidelity reads a folder). All images must have the same size."""
    from PIL import Image

    if not os.path.isdir(folder):
        raise ValueError(f"no such image folder: {folder!r}")
    suffixes = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(suffixes))
    if not files:
        raise ValueError(f"no images ({', '.join(suffixes)}) in {folder!r}")
    arrays = []
    for f in files:
        with Image.open(os.path.join(folder, f)) as img:
            arrays.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) != 1:
        raise ValueError(f"images in {folder!r} have different sizes {[s[:2] for s in shapes]}; FID compares images "
                         f"of one size (resize them first, the same way for every set)")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


# -- torch-fidelity's Inception --------------------------------------------------------------------------------
def _torch_fidelity_module(name: str) -> types.ModuleType:
    """``torch_fidelity.<name>``, importing the package ``__init__`` only if it is already imported (it pulls in
    torchvision); otherwise the submodule is loaded under a temporary package stub that is removed afterwards (so
    a later ``import torch_fidelity`` still runs the real ``__init__``)."""
    full = f"torch_fidelity.{name}"
    if full in sys.modules:
        return sys.modules[full]
    if "torch_fidelity" in sys.modules:
        return importlib.import_module(full)
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"this needs torch-fidelity: {_METRICS_EXTRA}")
    stub = types.ModuleType("torch_fidelity")
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__spec__ = spec
    sys.modules["torch_fidelity"] = stub
    try:
        return importlib.import_module(full)
    finally:
        if sys.modules.get("torch_fidelity") is stub:
            del sys.modules["torch_fidelity"]


def _load_state(weights: Union[str, os.PathLike, Dict[str, Tensor]]) -> Dict[str, Tensor]:
    if isinstance(weights, dict):
        return weights
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(f"Inception weights {path!r} do not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)       # nothing in the file executes
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path!r} must hold a state dict of tensors (torch-fidelity's Inception weights); got "
                         f"{type(state).__name__}")
    return state


def _cached_weights() -> str:
    """torch-fidelity's Inception weights in torch's hub cache, downloaded there when missing (online machines)."""
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(folder, os.path.basename(_INCEPTION_URL))
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        try:
            torch.hub.download_url_to_file(_INCEPTION_URL, path, progress=True)
        except Exception as err:  # offline
            raise OSError(f"cannot download torch-fidelity's Inception weights ({err}); on an offline machine pass "
                          f"a local copy of {os.path.basename(_INCEPTION_URL)} (--weights FILE)") from None
    return path


class InceptionExtractor(torch.nn.Module):
    """torch-fidelity's ``FeatureExtractorInceptionV3``: uint8 images (N, 3, H, W) of any size, resized to 299×299
    by its TF-1.x-compatible bilinear interpolation, → {"features": pool3 (N, 2048), "logits": (N, 1008)
    unbiased logits (the Inception score's)}.

    Attributes:
        name: ``"inception-v3-compat"`` (recorded in reference files).
        net: torch-fidelity's module.
    """

    name = INCEPTION

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    @torch.no_grad()
    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        features, logits = self.net(_rgb(images))
        return {"features": features, "logits": logits}


def _network(state: Optional[Dict[str, Tensor]]):
    """torch-fidelity's network holding ``state`` (randomly initialised when None). Its constructor loads a file
    with ``weights_only=False``; here it gets an empty stand-in, and the weights are set afterwards by
    ``load_state_dict`` (strict), so no file it reads can execute code."""
    module = _torch_fidelity_module("feature_extractor_inceptionv3")

    class _Net(module.FeatureExtractorInceptionV3):
        _constructing = True

        def load_state_dict(self, state_dict, strict=True, assign=False):
            if self._constructing:      # the constructor's own load of the stand-in: skipped
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    import io

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    net = _Net(INCEPTION, ["2048", "logits_unbiased"], feature_extractor_weights_path=empty)
    net._constructing = False
    if state is not None:
        net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def inception(weights: Union[None, str, os.PathLike, Dict[str, Tensor]] = None,
              device: Union[str, torch.device] = "cpu") -> InceptionExtractor:
    """torch-fidelity's Inception-v3 ("compat") as an `InceptionExtractor` on ``device``.

    Args:
        weights: a local copy of torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (offline machines),
            a state dict, or None for torch's hub cache (downloaded there when online). Files are read with
            ``torch.load(..., weights_only=True)``.
    Raises:
        ImportError: naming the extra when torch-fidelity is not installed.
    """
    state = _load_state(_cached_weights() if weights is None else weights)
    return InceptionExtractor(_network(state)).to(device)


def random_inception_weights(path: str, seed: int = 0) -> str:
    """Save randomly initialised weights of torch-fidelity's Inception to ``path`` (for tests and offline checks of
    the pipeline; the numbers mean nothing). Convolutions get He-normal weights and the batch norms unit
    statistics, so activations keep their scale through the 94 layers."""
    torch.manual_seed(seed)
    net = _network(None)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


# -- extraction ------------------------------------------------------------------------------------------------
@torch.no_grad()
def extract(extractor, images: Union[Tensor, Iterable[Tensor]], batch_size: int = 64,
            device: Union[str, torch.device, None] = None, progress: bool = False) -> Dict[str, Tensor]:
    """Features of uint8 images (N, C, H, W) (or an iterable of such batches), batch by batch on ``device`` (the
    extractor's by default); returns each output of the extractor concatenated, float32 on the CPU."""
    if device is None:
        device = next(iter(extractor.parameters()), torch.empty(0)).device
    batches = images.split(int(batch_size)) if torch.is_tensor(images) else images
    out: Dict[str, list] = {}
    if progress:
        from .._progress import progress_bar

        batches = progress_bar(batches, desc="features", unit="batch", leave=False)
    for batch in batches:
        if batch.dtype != torch.uint8:
            raise ValueError(f"extract takes uint8 images (see to_uint8); got {batch.dtype}")
        for key, value in extractor(batch.to(device)).items():
            out.setdefault(key, []).append(value.detach().to("cpu", torch.float32))
    if not out:
        raise ValueError("no images to extract features from")
    return {key: torch.cat(parts) for key, parts in out.items()}


# -- reference statistics ----------------------------------------------------------------------------------------
def save_reference(path: str, features, extractor: str, image_size: Optional[Tuple[int, int]] = None,
                   keep_features: bool = False) -> str:
    """Write reference statistics as an ``.npz`` with ``mu`` and ``sigma`` (the layout of pytorch-fid and EDM's
    ``fid.py``, so those tools read it) plus ``extractor``, ``image_size`` and ``n``; with ``keep_features`` the
    features themselves too (KID and precision/recall need them). Written atomically (temporary file, then
    os.replace)."""
    x = as_features(features)
    mu, sigma = feature_statistics(x)
    arrays = {"mu": mu, "sigma": sigma, "extractor": np.array(str(extractor)), "n": np.array(x.shape[0])}
    if image_size is not None:
        arrays["image_size"] = np.asarray(image_size, dtype=np.int64)
    if keep_features:
        arrays["features"] = x.astype(np.float32)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_reference(path: str, extractor: Optional[str] = None, image_size: Optional[Tuple[int, int]] = None,
                   feature_dim: Optional[int] = None) -> Dict[str, object]:
    """Read reference statistics (ours, pytorch-fid's or EDM's ``.npz`` with ``mu`` and ``sigma``; no pickles).

    A file that records another extractor or image size than the one asked for is refused (ValueError): its FID
    would not be comparable. Files without those records (pytorch-fid, EDM) are checked on the feature dimension.
    Returns {"mu", "sigma", "extractor" (or None), "image_size" (or None), "n" (or None), "features" (or None)}.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"reference statistics {path!r} do not exist (write them with `scoresde fid-stats`)")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("mu", "sigma") if k not in data.files]
        if missing:
            raise ValueError(f"{path!r} is not a statistics file: it lacks {', '.join(missing)} (has "
                             f"{', '.join(data.files) or 'nothing'})")
        ref = {"mu": data["mu"].astype(np.float64), "sigma": data["sigma"].astype(np.float64),
               "extractor": str(data["extractor"]) if "extractor" in data.files else None,
               "image_size": tuple(int(v) for v in data["image_size"]) if "image_size" in data.files else None,
               "n": int(data["n"]) if "n" in data.files else None,
               "features": data["features"] if "features" in data.files else None}
    if extractor is not None and ref["extractor"] is not None and ref["extractor"] != extractor:
        raise ValueError(f"{path!r} holds statistics of extractor {ref['extractor']!r}, not {extractor!r}: a FID "
                         f"between them means nothing (recompute them with the same extractor)")
    if image_size is not None and ref["image_size"] is not None and tuple(ref["image_size"]) != tuple(image_size):
        raise ValueError(f"{path!r} holds statistics of {ref['image_size'][0]}×{ref['image_size'][1]} images, not "
                         f"{image_size[0]}×{image_size[1]}: resolution changes FID (recompute them at this size)")
    f = ref["mu"].shape[0] if ref["mu"].ndim == 1 else -1
    if f < 1 or ref["sigma"].shape != (f, f):
        raise ValueError(f"{path!r}: mu must be (F,) and sigma (F, F); got {ref['mu'].shape} and {ref['sigma'].shape}")
    if feature_dim is not None and f != feature_dim:
        raise ValueError(f"{path!r} holds {f}-dimensional statistics; this extractor gives {feature_dim}")
    return ref
