"""NVlabs/edm's snapshots (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
github.com/NVlabs/edm) as scoresde models, read without running any code from the file.

    sde, score = sd.from_edm("network-snapshot-200000.pkl")                 # or edm-cifar10-32x32-cond-vp.pkl
    info = score.edm                                                        # label_dim, shape, σ range, denoiser
    x = sd.SAMPLERS.build("heun", steps=18, eps=info.eps).sample(sde, score, (16, *info.shape)).x  # in [−1, 1]

**Reading.** Their snapshots are ``pickle.dump(dict(ema=net, loss_fn=..., augment_pipe=..., dataset_kwargs=...))``
where every network class is wrapped by their ``persistent_class``: its pickle stores the Python source of the
class's module, and their loader executes that source. `read_snapshot` never does: `EDMUnpickler` replaces the
persistent constructor by `PersistentRecord` (class name, constructor arguments, the object's ``__dict__``; the
stored source is dropped unread), rebuilds tensors only through a short allow-list of torch's own rebuild
functions (storages are read with ``torch.load(weights_only=True)``), turns ``EasyDict`` into a dict and numpy
scalars into Python numbers, and refuses every other global with a ValueError naming it.

**Preconditioning.** The network is the record's class rebuilt from scoresde's code with the recorded keyword
arguments (`PRECONDITIONINGS`; the raw U-Nets are `scoresde.nets.edm`'s ``SongUNet`` and ``DhariwalUNet``), and its
parameters and buffers are loaded by name, strictly. Each preconditioning is EDM's denoiser (their Table 1)

    D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ), labels)

=============  ================  ===================  ==============  ==========================
class          c_skip            c_out                c_in            c_noise
=============  ================  ===================  ==============  ==========================
VPPrecond      1                 −σ                   1/√(σ² + 1)     (M − 1) σ⁻¹(σ)
VEPrecond      1                 σ                    1               ln(σ/2)
iDDPMPrecond   1                 −σ                   1/√(σ² + 1)     M − 1 − argmin_j |u_j − σ|
EDMPrecond     σ_d²/(σ² + σ_d²)  σ σ_d/√(σ² + σ_d²)   1/√(σ² + σ_d²)  ln(σ)/4
=============  ================  ===================  ==============  ==========================

with VP's σ(t) = √(exp(β_d t²/2 + β_min t) − 1) and its inverse σ⁻¹(σ) = (√(β_min² + 2 β_d ln(1 + σ²)) − β_min)/β_d,
and iDDPM's discrete levels u_M = 0, u_{j−1} = √((u_j² + 1)/max(ᾱ_{j−1}/ᾱ_j, C_1) − 1), ᾱ_j = sin²(π j/(2 M (C_2 + 1))).
iDDPM's network has 2C output channels (mean and variance); D uses the first C.

**Which SDE.** The denoiser is a function of the noise level σ̃ only, so it is a score on *any* linear SDE through
Tweedie (`scoresde.from_denoiser`: score(x, t) = (s D(x/s, σ/s) − x)/σ²); `from_edm` picks the process the model was
trained as, so that its time variable means what it meant in training:

- ``VPPrecond``: `VPSDE` (β_min, β_max = β_min + β_d). Its std/scale = √(e^{B(t)} − 1) with B(t) = β_min t + β_d t²/2
  is EDM's VP σ(t) exactly, so t is their t (network label (M − 1) t) and T = 1 is their largest level σ(1).
- ``VEPrecond``, ``EDMPrecond``, ``iDDPMPrecond``: `EDMSDE` (s = 1, σ = t), where the time is the noise level,
  on the range their ``edm_sampler`` (generate.py) uses: [max(0.002, sigma_min), min(80, sigma_max)] of the network
  (VE: 0.02 to 80; EDM: 0.002 to 80; iDDPM: u_{M−1} ≈ 0.0064 to 80, its u_0 ≈ 2·10⁴ being no sensible prior).

``score.edm.eps`` is the time at σ̃ = max(0.002, sigma_min) for every model, where samplers should end.
Pass ``sde=`` to put the same denoiser on another linear SDE (for instance `EDMSDE` for a VP model, as their
``edm_sampler`` does). Images are in [−1, 1]; class labels are integers (one-hot inside, as their generate.py builds
them); augmentation labels stay zero (None) at sampling.
"""
from __future__ import annotations

import collections
import gzip
import io
import math
import os
import pickle
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..interop import from_denoiser
from ..score import Score
from ..sde import EDMSDE, VPSDE, LinearSDE, require_linear, times_at_noise_levels
from ..training.checkpoint import check_state_dict
from .._utils import expand_like

Tensor = torch.Tensor

#: EDM's sampler defaults (generate.py), used where a network declares no finite noise range.
DEFAULT_SIGMA_MIN, DEFAULT_SIGMA_MAX = 0.002, 80.0

# ---------------------------------------------------------------------------------------------------------------
# Reading their pickles without executing them
# ---------------------------------------------------------------------------------------------------------------

#: Their persistent classes by name → the module they live in (the pickle stores the class name and the module's
#: source, not the module's name).
KNOWN_CLASSES = {
    **{name: "training.networks" for name in (
        "Linear", "Conv2d", "GroupNorm", "UNetBlock", "PositionalEmbedding", "FourierEmbedding", "SongUNet",
        "DhariwalUNet", "VPPrecond", "VEPrecond", "iDDPMPrecond", "EDMPrecond")},
    **{name: "training.loss" for name in ("VPLoss", "VELoss", "EDMLoss")},
    "AugmentPipe": "training.augment",
}


class Record:
    """An object of the pickle kept as data: ``class_name`` and ``state`` (the object's pickled ``__dict__``).

    For an ``nn.Module``, ``state`` holds ``_parameters``, ``_buffers`` (tensors) and ``_modules`` (nested records);
    `state_dict` flattens them like ``nn.Module.state_dict``.
    """

    class_name = "?"

    def __init__(self, state: Optional[Mapping] = None):
        self.state: Dict[str, Any] = dict(state or {})

    def __setstate__(self, state) -> None:  # pickle's BUILD: keep the state as data, set no attribute
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        if not isinstance(state, Mapping):
            raise ValueError(f"{self.class_name}: expected a dict as pickled state; got {type(state).__name__}")
        self.__dict__.setdefault("state", {}).update(state)  # built by __new__ alone (NEWOBJ): no __init__ ran

    @property
    def is_module(self) -> bool:
        """Whether the state looks like an ``nn.Module``'s (it has ``_parameters`` and ``_modules``)."""
        return isinstance(self.state.get("_parameters"), Mapping) and isinstance(self.state.get("_modules"), Mapping)

    def state_dict(self, prefix: str = "") -> Dict[str, Tensor]:
        """Parameters and persistent buffers by dotted name, submodules after their parent's own tensors."""
        if not self.is_module:
            raise ValueError(f"{self.class_name} at {prefix or 'top level'!r} is not a torch module record")
        out: Dict[str, Tensor] = collections.OrderedDict()
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for kind in ("_parameters", "_buffers"):
            for name, value in (self.state.get(kind) or {}).items():
                if value is None or (kind == "_buffers" and name in skip):
                    continue
                if not torch.is_tensor(value):
                    raise ValueError(f"{prefix}{name}: expected a tensor in {kind}; got {type(value).__name__}")
                out[prefix + name] = value
        for name, module in self.state["_modules"].items():
            if module is None:
                continue
            if not isinstance(module, Record):
                raise ValueError(f"{prefix}{name}: expected a module record; got {type(module).__name__}")
            out.update(module.state_dict(prefix + name + "."))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.class_name})"


class PersistentRecord(Record):
    """One of their ``persistent_class`` objects, as data: what ``_reconstruct_persistent_obj(meta)`` received.

    Attributes:
        class_name: the qualified name, e.g. "training.networks.EDMPrecond" (the module from `KNOWN_CLASSES`,
            "<persistent>" for a class EDM does not define).
        name: the bare class name stored in the pickle, e.g. "EDMPrecond".
        version: their persistence format version (6 at commit 008a4e5).
        state: the object's ``__dict__`` (for a module: ``_parameters``, ``_buffers``, ``_modules``, ...).
    The stored module source is discarded unread.
    """

    def __init__(self, name: str, state: Mapping, version: Any = None):
        super().__init__(state)
        self.name, self.version = name, version
        self.class_name = f"{KNOWN_CLASSES.get(name, '<persistent>')}.{name}"

    @property
    def init_args(self) -> tuple:
        """The positional arguments their constructor was called with (recorded by ``persistent_class``)."""
        args = self.state.get("_init_args")
        return tuple(args) if args is not None else ()

    @property
    def init_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments their constructor was called with."""
        kwargs = self.state.get("_init_kwargs")
        return dict(kwargs) if kwargs is not None else {}


def _persistent_record(meta) -> PersistentRecord:
    """Stands in for their ``persistence._reconstruct_persistent_obj``: keeps the meta's data, drops the source."""
    if not isinstance(meta, Mapping) or not isinstance(meta.get("class_name"), str):
        raise ValueError(f"malformed persistent object: expected their meta dict with a 'class_name'; got "
                         f"{type(meta).__name__}")
    if meta.get("type", "class") != "class":
        raise ValueError(f"persistent object {meta['class_name']!r} of type {meta.get('type')!r}; only 'class' exists")
    state = meta.get("state") or {}
    if not isinstance(state, Mapping):
        raise ValueError(f"persistent object {meta['class_name']!r}: state must be a dict; got {type(state).__name__}")
    return PersistentRecord(meta["class_name"], state, meta.get("version"))


_OBJECT_RECORDS: Dict[str, type] = {}


def _object_record(qualified: str) -> type:
    """A `Record` class standing for the (non-persistent) torch container ``qualified`` (ModuleDict, ...)."""
    if qualified not in _OBJECT_RECORDS:
        _OBJECT_RECORDS[qualified] = type(qualified.rsplit(".", 1)[1] + "Record", (Record,), {"class_name": qualified})
    return _OBJECT_RECORDS[qualified]


class _EasyDict(dict):
    """Their ``dnnlib.EasyDict`` as a plain dict (attribute access is not kept)."""

    def __setstate__(self, state) -> None:
        if isinstance(state, Mapping):
            self.update(state)


def _load_storage(data) -> Any:
    """A storage from ``torch.save`` bytes (what pickling a tensor embeds), read with ``weights_only=True``."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"a storage must be given as bytes; got {type(data).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.TypedStorage):
        raise ValueError(f"expected a typed tensor storage in the embedded bytes; got {type(storage).__name__}")
    return storage


def _no_hooks(hooks, what: str) -> None:
    if hooks:  # hooks would be callables run later; EDM's nets have none
        raise ValueError(f"{what} carries backward hooks ({len(hooks)}); refused")


def _check_extent(tensor: Tensor, what: str = "a tensor") -> Tensor:
    """Refuse a view reaching past its storage (``set_`` itself does not check) or carrying hooks."""
    if tensor.numel():
        last = tensor.storage_offset() + sum((n - 1) * abs(st) for n, st in zip(tensor.shape, tensor.stride()))
        if (last + 1) * tensor.element_size() > tensor.untyped_storage().nbytes():
            raise ValueError(f"{what} of shape {tuple(tensor.shape)} reaches past its storage; refused")
    _no_hooks(getattr(tensor, "_backward_hooks", None), what)
    return tensor


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> Tensor:
    """torch's ``_rebuild_tensor_v2`` after checking its arguments (a typed storage, integers in bounds, no hooks)."""
    if not isinstance(storage, torch.TypedStorage):
        raise ValueError(f"a tensor must be rebuilt from a typed storage; got {type(storage).__name__}")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, *size, *stride)):
        raise ValueError(f"malformed tensor: offset {offset!r}, size {size!r}, stride {stride!r}")
    _no_hooks(hooks, "a tensor")
    if metadata:
        raise ValueError("a tensor with metadata (a tensor subclass?); refused")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elements = storage.size()
        # set_ would silently grow the storage to fit (exposing uninitialized memory): check the extent first
        if all(size) and offset + sum((n - 1) * st for n, st in zip(size, stride)) >= elements:
            raise ValueError(f"a tensor of shape {size} at offset {offset} reaches past its storage of {elements} "
                             f"elements; refused")
        tensor = torch._utils._rebuild_tensor_v2(storage, offset, size, stride, bool(requires_grad),
                                                 collections.OrderedDict())
    tensor.__setstate__ = _refuse_build  # shadows Tensor.__setstate__ (set_, no bounds) until the load ends
    return _check_extent(tensor)


def _refuse_build(state) -> None:
    raise ValueError("the pickle sets a tensor's state after building it (set_ on a forged view?); refused")


def _check_loaded(obj) -> None:
    """Walk what was read and check every tensor again (a later BUILD could have re-pointed one with ``set_``)."""
    seen, stack = set(), [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if torch.is_tensor(item):
            vars(item).pop("__setstate__", None)
            _check_extent(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, Record):
            stack.append(item.state)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None) -> Tensor:
    """A parameter as its plain tensor (the loader copies values into scoresde's own parameters)."""
    if not torch.is_tensor(data):
        raise ValueError(f"a parameter must wrap a tensor; got {type(data).__name__}")
    _no_hooks(hooks, "a parameter")
    if state:
        raise ValueError("a parameter with extra state; refused")
    return data


def _latin1(text, encoding="latin1") -> bytes:
    """Protocol-2 pickles write bytes as ``_codecs.encode(text, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"_codecs.encode is only allowed for latin1 text; got {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


class _NumpyDtype:
    """A numpy dtype as data (numpy is not imported): the type string and, after BUILD, its byte order."""

    def __init__(self, name, align=False, copy=True):
        if not isinstance(name, str):
            raise ValueError(f"numpy dtype: expected a type string; got {type(name).__name__}")
        self.name, self.order = name, "<"

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = state[1]


#: numpy type string → struct format
_NUMPY_SCALARS = {"f2": "e", "f4": "f", "f8": "d", "i1": "b", "i2": "h", "i4": "i", "i8": "q", "u1": "B", "u2": "H",
                  "u4": "I", "u8": "Q", "b1": "?"}


def _numpy_scalar(dtype, data=None):
    """A numpy scalar (their ``np.sqrt(0.5)`` attributes) as the Python number it holds."""
    if not isinstance(dtype, _NumpyDtype) or dtype.name not in _NUMPY_SCALARS or not isinstance(data, bytes):
        raise ValueError(f"only numeric numpy scalars can be read; got dtype "
                         f"{getattr(dtype, 'name', type(dtype).__name__)!r}")
    order = ">" if dtype.order == ">" else "<"
    return struct.unpack(order + _NUMPY_SCALARS[dtype.name], data)[0]


#: Every global an EDM snapshot may name, and what stands for it. Nothing else is ever imported.
ALLOWED_GLOBALS: Dict[Tuple[str, str], Callable] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    **{(module, name): _object_record(f"{module}.{name}")
       for module in ("torch.nn.modules.container",) for name in ("ModuleDict", "ModuleList", "Sequential")},
}


_PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class EDMUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that builds only `ALLOWED_GLOBALS`: their persistent objects become `PersistentRecord`,
    tensors are rebuilt through checked torch functions, anything else raises a ValueError naming the global."""

    def find_class(self, module: str, name: str):
        module = _PYTHON2_MODULES.get(module, module)  # protocol 2 writes Python 2's module names
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ValueError(f"refused to load {module}.{name}: an EDM snapshot holds only persistent objects, "
                             f"tensors, containers and numbers (nothing from the file is imported or run)") from None

    def persistent_load(self, pid):
        raise ValueError("the pickle uses persistent ids (a torch.save file?); EDM snapshots are plain pickles")


def _open(source) -> Tuple[Any, str, bool]:
    """A binary file for ``source`` (a path, possibly gzipped, or an open binary file) and its description."""
    if hasattr(source, "read"):
        return source, f"EDM pickle {getattr(source, 'name', type(source).__name__)!r}", False
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no EDM pickle at {path!r}")
    with open(path, "rb") as f:
        magic = f.read(4)
    f = gzip.open(path, "rb") if magic[:2] == b"\x1f\x8b" else open(path, "rb")
    return f, f"EDM pickle {path!r}", True


def read_snapshot(source: Union[str, os.PathLike, Any]) -> Any:
    """Unpickle an EDM snapshot (``network-snapshot-*.pkl``) with `EDMUnpickler`: nothing in it is run.

    Args:
        source: a path (plain or gzipped) or an open binary file.

    Returns:
        What was pickled, with their persistent objects as `PersistentRecord`: for a snapshot the dict
        ``{'ema': record, 'loss_fn': record or None, 'augment_pipe': record or None, 'dataset_kwargs': dict}``.

    Raises:
        FileNotFoundError: no such file. ValueError: a refused global (named), a truncated or malformed pickle, or a
        file of another kind (a zip archive such as a ``torch.save`` checkpoint).
    """
    f, what, owned = _open(source)
    try:
        head = f.peek(4)[:4] if hasattr(f, "peek") else b""
        if head.startswith(b"PK\x03\x04"):
            raise ValueError(f"{what} is a zip archive (a torch.save checkpoint?), not an EDM pickle; read torch.save "
                             f"files with torch.load(weights_only=True)")
        try:
            result = EDMUnpickler(f).load()
            _check_loaded(result)  # also drops the guards against BUILD on tensors
            return result
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None
        except (EOFError, pickle.UnpicklingError, TypeError, AttributeError, IndexError, KeyError, RuntimeError,
                OSError, struct.error) as err:  # truncated, garbage, or a malformed reduce: not what EDM writes
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{what} is truncated or not an EDM pickle (refused without executing anything): "
                             f"{reason[:200]}") from None
    finally:
        if owned:
            f.close()


# ---------------------------------------------------------------------------------------------------------------
# Preconditionings
# ---------------------------------------------------------------------------------------------------------------

def network_class(model_type: str) -> type:
    """The raw U-Net class for their ``model_type``: `scoresde.nets.edm` SongUNet or DhariwalUNet."""
    from ..nets import edm as nets_edm  # the raw networks; imported when a preconditioning is built

    classes = {"SongUNet": nets_edm.SongUNet, "DhariwalUNet": nets_edm.DhariwalUNet}
    if model_type not in classes:
        raise ValueError(f"model_type must be one of {sorted(classes)}; got {model_type!r}")
    return classes[model_type]


class Preconditioning(nn.Module):
    """EDM's denoiser around a raw network F: D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ), labels).

    Subclasses give `coefficients` (their Table 1) and, where the levels are discrete, `round_sigma`. The network
    is in ``self.model`` (their attribute name, so state keys ``model.*`` match their snapshots), built as
    ``model_type(img_resolution=..., in_channels=img_channels, out_channels=img_channels × out_factor,
    label_dim=..., **model_kwargs)``.

    Args:
        img_resolution: image height and width H = W.
        img_channels: C.
        label_dim: number of classes, 0 for an unconditional model.
        use_fp16: run the network in float16 on CUDA (coefficients and output stay in float32).
        model_type: "SongUNet" (DDPM++ / NCSN++) or "DhariwalUNet" (ADM).
        **model_kwargs: the network's other keyword arguments (model_channels, channel_mult, augment_dim, ...).
    """

    out_factor = 1

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 model_type: str = "SongUNet", **model_kwargs):
        super().__init__()
        for name, value, low in (("img_resolution", img_resolution, 1), ("img_channels", img_channels, 1),
                                 ("label_dim", label_dim, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.use_fp16 = bool(use_fp16)
        self.model_type = model_type
        self.model = network_class(model_type)(img_resolution=img_resolution, in_channels=img_channels,
                                               out_channels=img_channels * self.out_factor, label_dim=label_dim,
                                               **model_kwargs)

    @property
    def shape(self) -> Tuple[int, int, int]:
        """One image's shape (C, H, W)."""
        return (self.img_channels, self.img_resolution, self.img_resolution)

    def coefficients(self, sigma: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) at σ (B,), each (B,) in σ's dtype."""
        raise NotImplementedError

    def round_sigma(self, sigma, return_index: bool = False) -> Tensor:
        """The supported noise level nearest σ: σ itself for continuous preconditionings."""
        if return_index:
            raise ValueError(f"{type(self).__name__} has continuous noise levels; return_index needs iDDPMPrecond")
        return torch.as_tensor(sigma)

    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def _sigma(self, sigma, x: Tensor, dtype: torch.dtype) -> Tensor:
        batch = x.shape[0]
        sigma = torch.as_tensor(sigma, device=x.device).to(dtype).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(batch)
        if sigma.numel() != batch:
            raise ValueError(f"sigma must be a number or have shape (B,) = ({batch},) (or B elements); got "
                             f"{sigma.numel()} elements")
        return sigma

    def _labels(self, class_labels, batch: int, device, dtype: torch.dtype) -> Optional[Tensor]:
        """Integer labels (B,) → one-hot (B, label_dim); float (B, label_dim) as given; None → zeros (their default)."""
        if self.label_dim == 0:
            if class_labels is not None:
                raise ValueError("this model is unconditional (label_dim=0); got class_labels")
            return None
        if class_labels is None:
            return torch.zeros(batch, self.label_dim, device=device, dtype=dtype)
        labels = torch.as_tensor(class_labels, device=device)
        if not labels.is_floating_point():
            labels = labels.reshape(-1)
            if labels.numel() == 1:
                labels = labels.expand(batch)
            if labels.numel() != batch:
                raise ValueError(f"integer class_labels must have shape (B,) = ({batch},); got {tuple(labels.shape)}")
            if labels.min() < 0 or labels.max() >= self.label_dim:
                raise ValueError(f"class labels must lie in [0, {self.label_dim - 1}]; got {labels.min().item()} to "
                                 f"{labels.max().item()}")
            return nn.functional.one_hot(labels.long(), self.label_dim).to(dtype)
        labels = labels.to(dtype).reshape(-1, self.label_dim) if labels.numel() % self.label_dim == 0 else labels
        if labels.dim() != 2 or labels.shape[1] != self.label_dim or labels.shape[0] not in (1, batch):
            raise ValueError(f"float class_labels must have shape (B, label_dim) = ({batch}, {self.label_dim}); got "
                             f"{tuple(torch.as_tensor(class_labels).shape)}")
        return labels.expand(batch, self.label_dim)

    def forward(self, x: Tensor, sigma, class_labels: Optional[Tensor] = None,
                augment_labels: Optional[Tensor] = None, force_fp32: bool = False) -> Tensor:
        """D(x; σ) ≈ E[x_0 | x_0 + σ n = x].

        Args:
            x: noisy images (B, C, H, W).
            sigma: noise levels (B,) or a number.
            class_labels: integers (B,) in [0, label_dim) (one-hot inside), or float (B, label_dim) vectors;
                None gives the zero vector (as their code does). Must be None for an unconditional model.
            augment_labels: (B, augment_dim) for a network trained with augmentation; None (= zero) at sampling.
            force_fp32: run the network in float32 even when ``use_fp16``.

        Returns:
            D (B, C, H, W) in x's dtype (computed in the network's dtype, float32 for their snapshots).
        """
        if x.dim() != 4 or x.shape[1:] != self.shape:
            raise ValueError(f"x must have shape (B, {self.img_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}); got {tuple(x.shape)}")
        dtype = self._dtype()
        xc = x.to(dtype)
        sigma = self._sigma(sigma, x, dtype)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        labels = self._labels(class_labels, x.shape[0], x.device, dtype)
        if augment_labels is not None:
            augment_labels = torch.as_tensor(augment_labels, device=x.device).to(dtype)
        net_dtype = torch.float16 if self.use_fp16 and not force_fp32 and x.device.type == "cuda" else dtype
        out = self.model((expand_like(c_in, xc) * xc).to(net_dtype), c_noise.reshape(-1), labels,
                         augment_labels=augment_labels)
        out = out[:, :self.img_channels].to(dtype)
        return (expand_like(c_skip, xc) * xc + expand_like(c_out, xc) * out).to(x.dtype)


def vp_sigma(t, beta_d: float, beta_min: float) -> Tensor:
    """EDM's VP noise level σ(t) = √(exp(β_d t²/2 + β_min t) − 1), in float64 with expm1, returned in t's dtype
    (float64 for a number)."""
    t = torch.as_tensor(t, dtype=torch.float64) if not torch.is_tensor(t) else t
    t64 = t.to(torch.float64)
    return torch.expm1(0.5 * beta_d * t64 * t64 + beta_min * t64).sqrt().to(t.dtype)


class VPPrecond(Preconditioning):
    """EDM's preconditioning of the VP formulation (Song et al. 2021): c_skip = 1, c_out = −σ, c_in = 1/√(σ² + 1),
    c_noise = (M − 1) σ⁻¹(σ), with σ(t) = √(exp(β_d t²/2 + β_min t) − 1).

    Args:
        beta_d: the schedule's β_max − β_min (19.9).
        beta_min: the schedule's β_min (0.1).
        M: DDPM's number of steps (the network's time label is (M − 1) t).
        epsilon_t: the smallest t of training; sigma_min = σ(ε_t), sigma_max = σ(1).
        (the rest as `Preconditioning`)
    """

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000, epsilon_t: float = 1e-5,
                 model_type: str = "SongUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        if not (beta_d > 0 and beta_min >= 0 and 0 < epsilon_t < 1 and M >= 2):
            raise ValueError(f"need beta_d > 0, beta_min >= 0, 0 < epsilon_t < 1, M >= 2; got beta_d={beta_d}, "
                             f"beta_min={beta_min}, epsilon_t={epsilon_t}, M={M}")
        self.beta_d, self.beta_min, self.M, self.epsilon_t = float(beta_d), float(beta_min), int(M), float(epsilon_t)
        # float64 with expm1 (their float32 value of σ(1e-5) is about 2% off)
        self.sigma_min = float(vp_sigma(self.epsilon_t, self.beta_d, self.beta_min))
        self.sigma_max = float(vp_sigma(1.0, self.beta_d, self.beta_min))

    def sigma(self, t) -> Tensor:
        """σ(t) = √(exp(β_d t²/2 + β_min t) − 1) (`vp_sigma`)."""
        return vp_sigma(t, self.beta_d, self.beta_min)

    def sigma_inv(self, sigma) -> Tensor:
        """t(σ) = (√(β_min² + 2 β_d ln(1 + σ²)) − β_min)/β_d, with ln(1 + σ²) rounded in σ's dtype like in training."""
        sigma = torch.as_tensor(sigma)
        return (torch.sqrt(self.beta_min ** 2 + 2 * self.beta_d * torch.log(1 + sigma * sigma)) - self.beta_min) \
            / self.beta_d

    def coefficients(self, sigma: Tensor):
        one = torch.ones_like(sigma)
        return one, -sigma, 1 / torch.sqrt(sigma * sigma + 1), (self.M - 1) * self.sigma_inv(sigma)


class VEPrecond(Preconditioning):
    """EDM's preconditioning of the VE formulation (Song et al. 2021): c_skip = 1, c_out = σ, c_in = 1,
    c_noise = ln(σ/2); trained on σ in [sigma_min, sigma_max] (0.02 to 100). (Other arguments as `Preconditioning`.)"""

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 sigma_min: float = 0.02, sigma_max: float = 100.0, model_type: str = "SongUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        if not 0 <= sigma_min < sigma_max:
            raise ValueError(f"need 0 <= sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def coefficients(self, sigma: Tensor):
        one = torch.ones_like(sigma)
        return one, sigma, one, torch.log(0.5 * sigma)


class iDDPMPrecond(Preconditioning):
    """EDM's preconditioning of improved DDPM (Nichol & Dhariwal 2021): c_skip = 1, c_out = −σ, c_in = 1/√(σ² + 1),
    c_noise = M − 1 − j(σ), j(σ) = argmin_j |u_j − σ|, on its M + 1 discrete levels (buffer ``u``, decreasing):
    u_M = 0, u_{j−1} = √((u_j² + 1)/max(ᾱ_{j−1}/ᾱ_j, C_1) − 1), ᾱ_j = sin²(π j/(2 M (C_2 + 1))).
    The network outputs 2C channels; D uses the first C. The levels are computed in float64 (EDM's float32 recursion
    loses up to 5e-4 relative at the smallest ones); a loaded snapshot brings its own ``u`` buffer.

    Args:
        C_1, C_2: the clip of ᾱ ratios at low noise and the cosine schedule's offset.
        M: the number of levels.
        (the rest as `Preconditioning`)
    """

    out_factor = 2

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 C_1: float = 0.001, C_2: float = 0.008, M: int = 1000, model_type: str = "DhariwalUNet",
                 **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        if not (0 < C_1 and 0 <= C_2 and M >= 2):
            raise ValueError(f"need C_1 > 0, C_2 >= 0, M >= 2; got C_1={C_1}, C_2={C_2}, M={M}")
        self.C_1, self.C_2, self.M = float(C_1), float(C_2), int(M)
        u = [0.0] * (self.M + 1)
        for j in range(self.M, 0, -1):
            ratio = max(self.alpha_bar(j - 1) / self.alpha_bar(j), self.C_1)
            u[j - 1] = math.sqrt((u[j] ** 2 + 1) / ratio - 1)
        self.register_buffer("u", torch.tensor(u, dtype=torch.float32))

    def alpha_bar(self, j: int) -> float:
        """ᾱ_j = sin²(π j/(2 M (C_2 + 1)))."""
        return math.sin(0.5 * math.pi * j / self.M / (self.C_2 + 1)) ** 2

    @property
    def sigma_min(self) -> float:
        """u_{M−1}, the smallest nonzero level."""
        return float(self.u[self.M - 1])

    @property
    def sigma_max(self) -> float:
        """u_0, the largest level."""
        return float(self.u[0])

    @property
    def round_noise_level(self):
        """`round_sigma`, under the name `scoresde.Score` reads: a score made from this denoiser (`from_denoiser`,
        conditional or not) snaps the levels a sampler picks (Heun's churn) to the u_j, as their sampler does."""
        return self.round_sigma

    def round_sigma(self, sigma, return_index: bool = False) -> Tensor:
        """The level u_j nearest σ (or its index j), in σ's shape (the exact distance; theirs uses ``cdist``, whose
        rounding can pick the other neighbour within float32 rounding of a midpoint)."""
        sigma = torch.as_tensor(sigma)
        distance = (sigma.to(self.u.device, torch.float32).reshape(-1, 1) - self.u.reshape(1, -1)).abs()
        index = distance.argmin(dim=1).reshape(sigma.shape)
        if return_index:
            return index.to(sigma.device)
        return self.u[index.reshape(-1)].reshape(sigma.shape).to(sigma.device, sigma.dtype if sigma.is_floating_point()
                                                                 else torch.float32)

    def coefficients(self, sigma: Tensor):
        one = torch.ones_like(sigma)
        index = self.round_sigma(sigma, return_index=True).to(sigma.dtype)
        return one, -sigma, 1 / torch.sqrt(sigma * sigma + 1), (self.M - 1) - index


class EDMPrecond(Preconditioning):
    """EDM's own preconditioning: c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²),
    c_noise = ln(σ)/4.

    Args:
        sigma_min: the smallest supported σ (their default 0: no limit).
        sigma_max: the largest supported σ (their default ∞: no limit).
        sigma_data: σ_d, the data's standard deviation (0.5).
        (the rest as `Preconditioning`)
    """

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int = 0, use_fp16: bool = False,
                 sigma_min: float = 0.0, sigma_max: float = math.inf, sigma_data: float = 0.5,
                 model_type: str = "DhariwalUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)
        if not (0 <= sigma_min < sigma_max and sigma_data > 0):
            raise ValueError(f"need 0 <= sigma_min < sigma_max and sigma_data > 0; got {sigma_min}, {sigma_max}, "
                             f"{sigma_data}")
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)

    def coefficients(self, sigma: Tensor):
        sd2 = self.sigma_data ** 2
        total = sigma * sigma + sd2
        return sd2 / total, sigma * self.sigma_data / torch.sqrt(total), 1 / torch.sqrt(total), torch.log(sigma) / 4


#: Their preconditioning class names → ours (same constructor keywords).
PRECONDITIONINGS = {cls.__name__: cls for cls in (VPPrecond, VEPrecond, iDDPMPrecond, EDMPrecond)}


def build_denoiser(record: PersistentRecord, strict: bool = True) -> Preconditioning:
    """Our preconditioning for a record of theirs, built from its recorded arguments, weights loaded by name.

    Raises:
        ValueError: an unsupported class (named, with the supported ones), arguments our class does not take, or
            (``strict``) missing / unexpected keys or shape mismatches between the record and our module.
    """
    if not isinstance(record, PersistentRecord):
        raise TypeError(f"expected a PersistentRecord (the 'ema' entry of read_snapshot); got {type(record).__name__}")
    if record.name not in PRECONDITIONINGS:
        raise ValueError(f"{record.class_name} is not one of EDM's preconditionings "
                         f"{sorted(PRECONDITIONINGS)}; cannot build it")
    cls = PRECONDITIONINGS[record.name]
    try:
        with torch.random.fork_rng(devices=[]):  # the fresh init is overwritten; leave the caller's RNG alone
            denoiser = cls(*record.init_args, **record.init_kwargs)
    except TypeError as err:
        raise ValueError(f"{record.class_name}: its recorded arguments do not fit {cls.__name__} ({err}); recorded "
                         f"args {record.init_args}, kwargs {sorted(record.init_kwargs)}") from None
    state = record.state_dict()
    if strict:
        what = f"{cls.__name__}({record.init_kwargs.get('model_type', denoiser.model_type)})"
        check_state_dict(denoiser.state_dict(), state, what=what)
    denoiser.load_state_dict(state, strict=strict)
    return denoiser.eval().requires_grad_(False)


@dataclass(frozen=True)
class EDMInfo:
    """What `from_edm` read besides the score (``score.edm``).

    Attributes:
        denoiser: the preconditioned network D(x, σ, class_labels, augment_labels) (`Preconditioning`).
        preconditioning: their class name ("EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond").
        label_dim: number of classes (0: unconditional); ``cond`` takes integer labels.
        shape: one image (C, H, W); the data are in [−1, 1].
        sigma_min: the smallest noise level σ̃ = σ/s the SDE spans (see the module docstring).
        sigma_max: the largest one.
        eps: the time at σ̃ = sigma_min, where samplers should end (``eps=info.eps``).
        snapshot: the rest of the pickle as read (loss_fn, augment_pipe as records; dataset_kwargs).
    """

    denoiser: Preconditioning
    preconditioning: str
    label_dim: int
    shape: Tuple[int, int, int]
    sigma_min: float
    sigma_max: float
    eps: float
    snapshot: Dict[str, Any] = field(repr=False)

    @property
    def img_resolution(self) -> int:
        return self.shape[1]

    @property
    def img_channels(self) -> int:
        return self.shape[0]

    def round_sigma(self, sigma, return_index: bool = False) -> Tensor:
        """The denoiser's supported level nearest σ (iDDPM's discrete u_j; σ itself otherwise)."""
        return self.denoiser.round_sigma(sigma, return_index=return_index)


def sampling_range(denoiser: Preconditioning) -> Tuple[float, float]:
    """The noise levels their ``edm_sampler`` uses: [max(0.002, sigma_min), min(80, sigma_max)] of the network, each
    end rounded by ``round_sigma`` as their grid is (iDDPM: its levels nearest 0.002 and 80, u ≈ 0.0064 and 80.2)."""
    lo = max(DEFAULT_SIGMA_MIN, float(denoiser.sigma_min))
    hi = min(DEFAULT_SIGMA_MAX, float(denoiser.sigma_max))
    ends = denoiser.round_sigma(torch.tensor([lo, hi], dtype=torch.float64))
    return float(ends[0]), float(ends[1])


def default_sde(denoiser: Preconditioning) -> LinearSDE:
    """The SDE of the module docstring: `VPSDE` for VPPrecond, `EDMSDE` on `sampling_range` otherwise."""
    if isinstance(denoiser, VPPrecond):
        return VPSDE(beta_min=denoiser.beta_min, beta_max=denoiser.beta_min + denoiser.beta_d, T=1.0)
    return EDMSDE(*sampling_range(denoiser))


def _snapshot_parts(payload, what: str) -> Tuple[PersistentRecord, Dict[str, Any]]:
    if isinstance(payload, PersistentRecord):
        return payload, {}
    if not isinstance(payload, Mapping) or not isinstance(payload.get("ema"), PersistentRecord):
        got = f"keys {sorted(map(str, payload))[:8]}" if isinstance(payload, Mapping) else type(payload).__name__
        raise ValueError(f"{what} is not an EDM snapshot: expected a dict with a persistent network under 'ema' "
                         f"(their network-snapshot-*.pkl); got {got}")
    return payload["ema"], {k: v for k, v in payload.items() if k != "ema"}


def from_edm(path: Union[str, os.PathLike, Any], cond: Optional[Tensor] = None, device=None, *,
             sde: Optional[LinearSDE] = None) -> Tuple[LinearSDE, Score]:
    """Load an EDM snapshot safely: ``sde, score = from_edm("network-snapshot-*.pkl")``.

    Args:
        path: their pickle (``network-snapshot-*.pkl`` or a published ``edm-*.pkl``; plain or gzipped), or an open
            binary file. Read with `read_snapshot`: nothing in it is executed.
        cond: class labels for a conditional model, integers (B,) in [0, label_dim) (or one-hot (B, label_dim)),
            passed to the denoiser at every call; None gives their zero label vector.
        device: where the network goes (default: the CPU).
        sde: a linear SDE to put the denoiser on instead of `default_sde` (VPSDE for VP models, EDMSDE otherwise).

    Returns:
        (sde, score): ``score = sd.from_denoiser(denoiser, sde, cond)``, score(x, t) = (s D(x/s, σ/s) − x)/σ², with
        ``score.edm`` an `EDMInfo` (denoiser, label_dim, shape, σ range, eps, round_sigma, the rest of the snapshot).
    """
    what = f"EDM pickle {os.fspath(path)!r}" if not hasattr(path, "read") else "EDM pickle"
    record, rest = _snapshot_parts(read_snapshot(path), what)
    denoiser = build_denoiser(record)
    if device is not None:
        denoiser = denoiser.to(device)
    if cond is not None and denoiser.label_dim == 0:
        raise ValueError(f"{what} holds an unconditional model (label_dim=0); got cond")
    if sde is None:
        sde = default_sde(denoiser)
    require_linear(sde, "from_edm")
    score = from_denoiser(denoiser, sde, cond=cond)     # iDDPM's round_noise_level comes with it
    lowest = torch.tensor([sampling_range(denoiser)[0]], dtype=torch.float64)
    times = torch.cat([times_at_noise_levels(sde, lowest), torch.tensor([sde.T], dtype=torch.float64)])
    levels = sde.std(times) / sde.scale(times)  # σ̃ at eps and at T
    low, sigma_lo, sigma_hi = float(times[0]), float(levels[0]), float(levels[1])
    score.edm = EDMInfo(denoiser=denoiser, preconditioning=record.name, label_dim=denoiser.label_dim,
                        shape=denoiser.shape, sigma_min=sigma_lo, sigma_max=sigma_hi, eps=low, snapshot=rest)
    return sde, score
