"""Image features for FID and friends: 8-bit quantization exactly as PNG files hold images, torch-fidelity's
Inception-v3, DINOv2 and CLIP extractors (weights read with ``weights_only=True``), batched extraction and reference
statistics.

    images = to_uint8(x, data_range=(-1, 1))             # (N, C, H, W) uint8: what a saved PNG holds
    net = inception(weights="pt_inception.pth")          # torch-fidelity's "inception-v3-compat"
    feats = extract(net, images, batch_size=64)          # {"features": (N, 2048), "logits": (N, 1008)} float32
    save_reference("stats.npz", feats["features"], net.name, image_size=(32, 32))
    ref = load_reference("stats.npz", extractor=net.name, image_size=(32, 32))   # refuses another extractor

    net = dinov2("dinov2-vit-l-14", repo="dinov2/", weights="dinov2_vitl14_pretrain.pth")   # FD-DINOv2
    net = clip("clip-vit-b-32", weights="clip-vit-b-32-state.pt")                          # {"features": (N, 512)}

The networks are torch-fidelity's (``pip install scoresde[metrics]``); nothing here re-implements them. Its package
``__init__`` imports torchvision (for data sets and VGG); where torchvision does not import (PyPI's build with a CPU
torch), the extractor modules are loaded on their own: Inception's needs only torch and torch-fidelity's small
helpers, and DINOv2's and CLIP's, which call torchvision's ``normalize`` only, are imported with a stand-in
``torchvision`` holding that one function that leaves ``sys.modules`` afterwards (`_vision_module`).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pickle
import sys
import types
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._utils import write_atomically
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


def _load_state(weights: Union[str, os.PathLike, Dict[str, Tensor]],
                what: str = "torch-fidelity's Inception weights") -> Dict[str, Tensor]:
    """A state dict of tensors from ``weights`` (a dict, or a file read with ``torch.load(weights_only=True)``, so
    nothing in it executes; a checkpoint's ``"state_dict"`` entry is taken)."""
    if isinstance(weights, dict):
        return weights
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(f"weights {path!r} do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)   # nothing in the file executes
    except pickle.UnpicklingError:
        raise ValueError(f"{path!r} holds pickled Python objects, which are not read (nothing in a weights file "
                         f"runs here): save the network's weights alone, torch.save(model.state_dict(), path) "
                         f"({what})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        other = ([f"{k!r} ({type(v).__name__})" for k, v in state.items() if not torch.is_tensor(v)][:5]
                 if isinstance(state, dict) else [])
        raise ValueError(f"{path!r} must hold a state dict of tensors ({what}); got {type(state).__name__}"
                         + (f" with non-tensor entries {', '.join(other)}" if other else ""))
    return state


def _cached_weights(url: str = _INCEPTION_URL, what: str = "torch-fidelity's Inception weights") -> str:
    """The file at ``url`` in torch's hub cache (``torch.hub.get_dir()/checkpoints``, the name torch.hub gives it),
    downloaded there when missing (online machines)."""
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(folder, os.path.basename(url))
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, path, progress=True)
        except Exception as err:  # offline
            raise OSError(f"cannot download {what} ({err}); on an offline machine pass a local copy of "
                          f"{os.path.basename(url)} (--weights FILE)") from None
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


# -- torch-fidelity's DINOv2 and CLIP ---------------------------------------------------------------------------
#: Where ``import torchvision`` fails, the DINOv2 and CLIP modules are imported with this stand-in (see
#: `_vision_module`); cached here, since they are not left in ``sys.modules``.
_VISION_MODULES: Dict[str, types.ModuleType] = {}
_TORCHVISION_IMPORTS: Optional[bool] = None
_DINOV2_HUB = "facebookresearch/dinov2"
_DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{0}/{0}_pretrain.pth"


def _normalize(tensor: Tensor, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> Tensor:
    """``torchvision.transforms.functional.normalize`` on a float tensor (..., C, H, W): (x − mean_c) / std_c, mean
    and std first cast to x's dtype (torchvision's semantics, so the stand-in gives its numbers bit for bit)."""
    if not torch.is_tensor(tensor) or not tensor.is_floating_point():
        raise TypeError(f"normalize takes a float tensor; got {getattr(tensor, 'dtype', type(tensor).__name__)}")
    if tensor.dim() < 3:
        raise ValueError(f"normalize takes a tensor (..., C, H, W); got shape {tuple(tensor.shape)}")
    if not inplace:
        tensor = tensor.clone()
    mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
    std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
    if (std == 0).any():
        raise ValueError(f"std evaluated to zero after conversion to {tensor.dtype}, leading to division by zero")
    if mean.dim() == 1:
        mean = mean.view(-1, 1, 1)
    if std.dim() == 1:
        std = std.view(-1, 1, 1)
    return tensor.sub_(mean).div_(std)


def _torchvision_imports() -> bool:
    """Whether the real torchvision imports here (tried once; a failed attempt's partial modules are removed)."""
    global _TORCHVISION_IMPORTS
    if "torchvision" in sys.modules:
        return True
    if _TORCHVISION_IMPORTS is None:
        before = set(sys.modules)
        try:
            importlib.import_module("torchvision")
            _TORCHVISION_IMPORTS = True
        except Exception:  # ImportError, or PyPI's build on a CPU torch: "operator torchvision::nms does not exist"
            for name in [m for m in sys.modules if m.split(".")[0] == "torchvision" and m not in before]:
                del sys.modules[name]
            _TORCHVISION_IMPORTS = False
    return _TORCHVISION_IMPORTS


def _vision_module(name: str) -> types.ModuleType:
    """``torch_fidelity.<name>`` for DINOv2 or CLIP. These modules ``import torchvision`` at the top and call only
    ``torchvision.transforms.functional.normalize`` when they run. With a torchvision that imports, the module is
    loaded as `_torch_fidelity_module` does; otherwise it is imported while ``sys.modules`` holds a stand-in
    ``torchvision`` whose only content is that function (`_normalize`), and afterwards the stand-in and the module
    itself leave ``sys.modules`` (the module keeps its reference): a later ``import torchvision`` or
    ``import torch_fidelity`` elsewhere runs the real thing."""
    if name in _VISION_MODULES:
        return _VISION_MODULES[name]
    if _torchvision_imports():
        return _torch_fidelity_module(name)
    vision = types.ModuleType("torchvision", "scoresde's stand-in: transforms.functional.normalize only")
    vision.transforms = types.ModuleType("torchvision.transforms")
    vision.transforms.functional = types.ModuleType("torchvision.transforms.functional")
    vision.transforms.functional.normalize = _normalize
    stand_ins = {"torchvision": vision, "torchvision.transforms": vision.transforms,
                 "torchvision.transforms.functional": vision.transforms.functional}
    full = f"torch_fidelity.{name}"
    sys.modules.update(stand_ins)
    try:
        module = _torch_fidelity_module(name)
    finally:
        for key, stand_in in stand_ins.items():
            if sys.modules.get(key) is stand_in:
                del sys.modules[key]
        sys.modules.pop(full, None)
    _VISION_MODULES[name] = module
    return module


def _without_download(cls, name: str, feature: str, **attributes):
    """An instance of torch-fidelity's extractor class ``cls`` without running its ``__init__`` body (which
    downloads weights or code): its base class's ``__init__`` (name and feature list), then ``attributes`` set as
    that body would set them; ``forward`` is theirs."""
    net = cls.__new__(cls)
    super(cls, net).__init__(name, [feature])
    for key, value in attributes.items():
        setattr(net, key, value)
    return net.to(torch.float32).requires_grad_(False).eval()


def _check_state(model: torch.nn.Module, state: Dict[str, Tensor], what: str) -> None:
    """Refuse (ValueError) a state dict that does not fit ``model`` exactly: names and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} entries missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(shapes)} of another shape (e.g. {shapes[0]})" if shapes else ""]
        raise ValueError(f"these weights do not fit {what}: " + ", ".join(p for p in parts if p)
                         + "; pass the weights of the network you named")


class FeatureExtractor(torch.nn.Module):
    """One of torch-fidelity's extractors that give features only (DINOv2, CLIP): uint8 images (N, 1 or 3, H, W)
    of any size → {"features": (N, F) float32}, by its own ``forward`` (its resizing and normalization).

    Attributes:
        name: torch-fidelity's name of the network (``"dinov2-vit-l-14"``, ``"clip-vit-b-32"``, …; recorded in
            reference files).
        net: torch-fidelity's module (``FeatureExtractorDinoV2`` or ``FeatureExtractorCLIP``).
    """

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.name = str(net.name)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        (features,) = self.net(_rgb(images))
        return {"features": features}


def _hub_dinov2(entry: str, repo: Optional[str]) -> torch.nn.Module:
    """DINOv2's ``entry`` (e.g. ``dinov2_vitl14``) with random weights from torch.hub: GitHub's
    facebookresearch/dinov2 (torch-fidelity's source; downloaded, or torch's hub cache) or a local folder."""
    kwargs = {"pretrained": False}
    source = _DINOV2_HUB
    if repo is not None:
        source = os.fspath(repo)
        if not os.path.isfile(os.path.join(source, "hubconf.py")):
            raise ValueError(f"--dinov2-repo {source!r} is not a clone of facebookresearch/dinov2 (no hubconf.py)")
        kwargs["source"] = "local"
    before = os.environ.get("XFORMERS_DISABLED")
    os.environ["XFORMERS_DISABLED"] = "1"             # as torch-fidelity: the plain attention, not xFormers'
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="xFormers is")
            model = torch.hub.load(source, entry, **kwargs)
    except (OSError, ConnectionError, RuntimeError) as err:   # torch.hub offline: RuntimeError "no internet"
        if repo is not None or (isinstance(err, RuntimeError) and "internet" not in str(err)
                                and "cache" not in str(err)):
            raise
        raise OSError(f"cannot fetch DINOv2's code from GitHub ({err}); on an offline machine pass a clone of "
                      f"{_DINOV2_HUB} (--dinov2-repo DIR, repo=DIR) and its weights (--weights FILE)") from None
    finally:
        if before is None:
            os.environ.pop("XFORMERS_DISABLED", None)
        else:
            os.environ["XFORMERS_DISABLED"] = before
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{source}'s hubconf {entry}() returned {type(model).__name__}, not a torch module")
    return model


def dinov2(name: str = "dinov2-vit-l-14", repo: Union[None, str, os.PathLike] = None,
           weights: Union[None, str, os.PathLike, Dict[str, Tensor]] = None,
           device: Union[str, torch.device] = "cpu") -> FeatureExtractor:
    """torch-fidelity's DINOv2 extractor (FD-DINOv2 is the Fréchet distance of its features; EDM2 reports it with
    ViT-L/14) as a `FeatureExtractor` on ``device``: uint8 images → TF-1.x bilinear resize to 224×224 → ImageNet
    normalization → the ViT's class token, (N, 384 / 768 / 1024 / 1536) for S / B / L / g.

    Args:
        name: ``dinov2-vit-s-14``, ``dinov2-vit-b-14``, ``dinov2-vit-l-14`` or ``dinov2-vit-g-14``.
        repo: a local clone of facebookresearch/dinov2 (its ``hubconf.py`` is run: code you trust), or None for
            torch.hub's ``"facebookresearch/dinov2"`` (downloaded, or torch's hub cache), as torch-fidelity.
        weights: the model's weights, e.g. ``dinov2_vitl14_pretrain.pth`` (a plain state dict, read with
            ``torch.load(weights_only=True)`` and loaded strictly), or a state dict; None: that file from torch's
            hub cache (``checkpoints/``, where torch.hub keeps it), downloaded there when missing.
    Raises:
        ValueError: an unknown name, a missing file, or weights of another architecture.
        ImportError: naming the extra when torch-fidelity is not installed.
    """
    module = _vision_module("feature_extractor_dinov2")
    if name not in module.MODEL_METADATA:
        raise ValueError(f"unknown DINOv2 extractor {name!r}; choose from {', '.join(module.MODEL_METADATA)}")
    entry = module.MODEL_METADATA[name]
    if weights is None:
        weights = _cached_weights(_DINOV2_URL.format(entry), what=f"DINOv2's {entry} weights")
    state = _load_state(weights, what=f"DINOv2's {entry}_pretrain.pth")
    model = _hub_dinov2(entry, repo)
    _check_state(model, state, name)
    model.load_state_dict(state, strict=True)
    net = _without_download(module.FeatureExtractorDinoV2, name, "dinov2",
                            feature_extractor_internal_dtype=torch.float32, model=model)
    return FeatureExtractor(net).to(device)


#: OpenAI's CLIP image towers by torch-fidelity's name: (layers, width, patch size or None for a ResNet, input
#: resolution, embedding dimension), as their published models (the features' dimension is the last).
CLIP_ARCHITECTURES: Dict[str, Tuple[object, int, Optional[int], int, int]] = {
    "clip-rn50": ((3, 4, 6, 3), 64, None, 224, 1024),
    "clip-rn101": ((3, 4, 23, 3), 64, None, 224, 512),
    "clip-rn50x4": ((4, 6, 10, 6), 80, None, 288, 640),
    "clip-rn50x16": ((6, 8, 18, 8), 96, None, 384, 768),
    "clip-rn50x64": ((3, 15, 36, 10), 128, None, 448, 1024),
    "clip-vit-b-32": (12, 768, 32, 224, 512),
    "clip-vit-b-16": (12, 768, 16, 224, 512),
    "clip-vit-l-14": (24, 1024, 14, 224, 768),
    "clip-vit-l-14-336px": (24, 1024, 14, 336, 768),
}


def _clip_architecture(state: Dict[str, Tensor]) -> Tuple[object, int, Optional[int], int, int]:
    """(layers, width, patch, resolution, embedding dimension) of a CLIP state dict, read from its shapes."""
    if "text_projection" not in state or not ("visual.proj" in state or
                                              "visual.attnpool.positional_embedding" in state):
        raise ValueError("these weights are not a CLIP state dict (no text_projection and visual.proj or "
                         "visual.attnpool); convert OpenAI's archive with torch.save(torch.jit.load(f, "
                         "map_location='cpu').state_dict(), out)")
    embed = int(state["text_projection"].shape[1])
    if "visual.proj" in state:
        width, _, patch, _ = state["visual.conv1.weight"].shape
        layers = sum(k.startswith("visual.transformer.resblocks.") and k.endswith(".attn.in_proj_weight")
                     for k in state)
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        return layers, int(width), int(patch), int(patch) * grid, embed
    layers = tuple(len({k.split(".")[2] for k in state if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4))
    grid = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
    return layers, int(state["visual.layer1.0.conv1.weight"].shape[0]), None, 32 * grid, embed


def _describe_clip(arch) -> str:
    layers, width, patch, resolution, embed = arch
    tower = f"a ResNet with blocks {tuple(layers)} of width {width}" if patch is None else \
        f"a ViT with {layers} layers of width {width}, patch {patch}"
    return f"{tower} at {resolution}×{resolution} → {embed} features"


def clip(name: str = "clip-vit-b-32", weights: Union[None, str, os.PathLike, Dict[str, Tensor]] = None,
         device: Union[str, torch.device] = "cpu") -> FeatureExtractor:
    """torch-fidelity's CLIP image extractor as a `FeatureExtractor` on ``device``: uint8 images → TF-1.x bilinear
    resize to the model's resolution → CLIP's normalization → the image embedding (N, 512 for ViT-B, 768 for ViT-L).

    Args:
        name: torch-fidelity's name: ``clip-vit-b-32``, ``clip-vit-b-16``, ``clip-vit-l-14``,
            ``clip-vit-l-14-336px``, ``clip-rn50``, ``clip-rn101``, ``clip-rn50x4``, ``clip-rn50x16``, ``clip-rn50x64``.
        weights: a file holding OpenAI's CLIP *state dict* (read with ``torch.load(weights_only=True)``), or a state
            dict. OpenAI publishes TorchScript archives; convert one once with
            ``torch.save(torch.jit.load(f, map_location="cpu").state_dict(), out)``. The model is built from it by
            torch-fidelity's ``build_model`` (which rounds the weights to float16 as OpenAI's are, then runs in
            float32), after checking that it is the architecture ``name`` says. None: torch-fidelity's own loading
            (downloads OpenAI's archive, or torch's hub cache, and runs ``torch.jit.load`` on it).
    Raises:
        ValueError: an unknown name, a missing file, or weights of another architecture.
    """
    module = _vision_module("feature_extractor_clip")
    if name not in module.MODEL_URLS:
        raise ValueError(f"unknown CLIP extractor {name!r}; choose from {', '.join(module.MODEL_URLS)}")
    if weights is None:
        return FeatureExtractor(module.FeatureExtractorCLIP(name, ["clip"])).to(device)
    state = _load_state(weights, what="OpenAI's CLIP as a state dict")
    found, expected = _clip_architecture(state), CLIP_ARCHITECTURES.get(name)
    if expected is not None and tuple(found) != tuple(expected):
        raise ValueError(f"these weights are {_describe_clip(found)}, not {name} ({_describe_clip(expected)})")
    try:
        model = module.build_model(dict(state), torch.float32)     # it deletes the text tower's entries: a copy
    except RuntimeError as err:                                    # load_state_dict's missing/unexpected keys
        raise ValueError(f"these weights do not fit {name}: {str(err).splitlines()[0]}") from None
    net = _without_download(module.FeatureExtractorCLIP, name, "clip", feature_extractor_internal_dtype=torch.float32,
                            model=model, resolution=model.visual.input_resolution)
    return FeatureExtractor(net).to(device)


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
def weights_fingerprint(module) -> str:
    """A short SHA-256 of a module's weights (every state-dict entry's name, dtype, shape and bytes, in order):
    recorded with reference statistics and evaluations, so features of other weights under the same extractor
    name (a random or converted file, another checkpoint) are not mixed into one FID."""
    digest = hashlib.sha256()
    state = module.state_dict() if hasattr(module, "state_dict") else {}
    for key in sorted(state):
        value = state[key]
        if not torch.is_tensor(value):
            continue
        value = value.detach().to("cpu").contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]


def save_reference(path: str, features, extractor: str, image_size: Optional[Tuple[int, int]] = None,
                   keep_features: bool = False, weights: Optional[str] = None) -> str:
    """Write reference statistics as an ``.npz`` with ``mu`` and ``sigma`` (the layout of pytorch-fid and EDM's
    ``fid.py``, so those tools read it) plus ``extractor``, ``image_size`` and ``n``; with ``keep_features`` the
    features themselves too (KID and precision/recall need them). Written atomically (temporary file, then
    os.replace)."""
    x = as_features(features)
    mu, sigma = feature_statistics(x)
    arrays = {"mu": mu, "sigma": sigma, "extractor": np.array(str(extractor)), "n": np.array(x.shape[0])}
    if weights is not None:
        arrays["weights"] = np.array(str(weights))
    if image_size is not None:
        arrays["image_size"] = np.asarray(image_size, dtype=np.int64)
    if keep_features:
        arrays["features"] = x.astype(np.float32)
    path = write_atomically(path, lambda fh: np.savez(fh, **arrays))
    return path


def load_reference(path: str, extractor: Optional[str] = None, image_size: Optional[Tuple[int, int]] = None,
                   feature_dim: Optional[int] = None, weights: Optional[str] = None) -> Dict[str, object]:
    """Read reference statistics (ours, pytorch-fid's or EDM's ``.npz`` with ``mu`` and ``sigma``; no pickles).

    A file that records another extractor, weights (`weights_fingerprint`) or image size than the one asked for is
    refused (ValueError): its FID would not be comparable. Files without those records (pytorch-fid, EDM) are checked on the feature dimension.
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
               "features": data["features"] if "features" in data.files else None,
               "weights": str(data["weights"]) if "weights" in data.files else None}
    if extractor is not None and ref["extractor"] is not None and ref["extractor"] != extractor:
        raise ValueError(f"{path!r} holds statistics of extractor {ref['extractor']!r}, not {extractor!r}: a FID "
                         f"between them means nothing (recompute them with the same extractor)")
    if weights is not None and ref["weights"] is not None and ref["weights"] != weights:
        raise ValueError(f"{path!r} holds statistics of {ref['extractor']!r} with other weights (fingerprint "
                         f"{ref['weights']}, these are {weights}): a FID between them means nothing (recompute them "
                         f"with the same --weights)")
    if image_size is not None and ref["image_size"] is not None and tuple(ref["image_size"]) != tuple(image_size):
        raise ValueError(f"{path!r} holds statistics of {ref['image_size'][0]}×{ref['image_size'][1]} images, not "
                         f"{image_size[0]}×{image_size[1]}: resolution changes FID (recompute them at this size)")
    f = ref["mu"].shape[0] if ref["mu"].ndim == 1 else -1
    if f < 1 or ref["sigma"].shape != (f, f):
        raise ValueError(f"{path!r}: mu must be (F,) and sigma (F, F); got {ref['mu'].shape} and {ref['sigma'].shape}")
    if feature_dim is not None and f != feature_dim:
        raise ValueError(f"{path!r} holds {f}-dimensional statistics; this extractor gives {feature_dim}")
    return ref
