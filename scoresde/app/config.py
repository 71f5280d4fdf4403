"""Run configurations: YAML files and ``--section.key=value`` overrides, and the builders that turn them into a
data set, an SDE, a score model and a sampler through the registries.

A run is four sections, and an optional fifth::

    data:  {name: eight_gaussians, n: 10000, ...}                  # an entry of scoresde.DATASETS and its options
    sde:   {name: vp, beta_min: 0.1, beta_max: 20.0, ...}          # an entry of scoresde.SDES and its options
    model: {net: mlp, parameterization: eps, hidden: 128, ...}     # scoresde.ScoreModel around scoresde.NETS
    train: {steps: 2000, batch_size: 256, lr: 0.002, ...}          # scoresde.TrainConfig
    loss:  {name: score_sde, reduce_mean: false, ...}              # an entry of scoresde.LOSSES (default: dsm
                                                                   # with train's weighting and time distribution)

A component section names a registered class (or a user's class by import path, ``mypkg.module:MySDE``) and its
keyword arguments, checked against the constructor's signature; an error lists the valid names and options.
The resolved config (with every constructor default filled in) is what ``config.yaml`` records. An override
names a key as ``section.key`` or, when unambiguous, as the bare key (``--steps=500``). Values are parsed as
YAML scalars/lists (``--channel_mults=[1,2]``, ``--grad_clip=null``).

Configs written before the registries (sections holding every field of every SDE and net) still load: the
fields that did not apply to the named component are dropped.
"""
from __future__ import annotations

import inspect as _inspect
import os
import re
import textwrap
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import yaml

from .._registry import Registry, check_keywords, check_types, signature_defaults, signature_parameters
from .._utils import write_atomically
from ..data import DATASETS, has_split_folders, resolve_name
from ..losses import LOSSES
from ..nets import NETS
from ..parameterization import PARAMETERIZATIONS, ScoreModel
from ..sampling import SAMPLERS
from ..sde import SDES
from ..training import TrainConfig

SECTIONS = ("data", "sde", "model", "loss", "train")
#: The sections that name a registered component; ``loss`` is optional (absent: `scoresde.DSMLoss` with the
#: train section's weighting, time distribution and eps).
COMPONENTS = ("data", "sde", "model", "loss")
#: The per-sample shape a training run records next to its sections in config.yaml (ignored when read back).
SAMPLE_SHAPE_KEY = "sample_shape"
#: The keys of the model section that configure [`scoresde.ScoreModel`][scoresde.ScoreModel] (the rest go to the net).
MODEL_KEYS = ("net", "parameterization", "preconditioning", "sigma_data")
#: Constructor arguments a config never sets: the split and dtype of a data set (chosen by the command).
_DATA_HIDDEN = ("split", "dtype")

DEFAULTS: Dict[str, Dict[str, Any]] = {
    "data": {"name": "eight_gaussians"},
    "sde": {"name": "vp"},
    "model": {"net": "mlp", "parameterization": "eps", "preconditioning": True, "sigma_data": 1.0},
}

# The sections written before the registries: every field of every component, and which applied to which.
_LEGACY_KEYS = {
    "data": {"name", "n", "path", "seed", "dequantize"},
    "sde": {"name", "beta_min", "beta_max", "sigma_min", "sigma_max", "T"},
    "model": {"net", "parameterization", "preconditioning", "sigma_data", "hidden", "depth", "time_embedding_dim",
              "fourier_scale", "channels", "channel_mults", "num_res_blocks", "attention_resolutions", "dropout"},
}
_LEGACY_APPLIES = {
    "sde": {"vp": ("beta_min", "beta_max", "T"), "subvp": ("beta_min", "beta_max", "T"),
            "ve": ("sigma_min", "sigma_max", "T")},
    "model": {"mlp": ("hidden", "depth", "time_embedding_dim", "fourier_scale"),
              "unet": ("channels", "channel_mults", "num_res_blocks", "attention_resolutions", "dropout")},
}


class ConfigError(ValueError):
    """A configuration problem the CLI reports in one line (bad key, bad value, unknown name, bad path)."""


def _registries() -> Dict[str, Registry]:

    return {"data": DATASETS, "sde": SDES, "model": NETS, "loss": LOSSES}


def _name_key(section: str) -> str:
    return "net" if section == "model" else "name"


def _plain(value):
    """YAML-friendly copy: tuples become lists."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _is_plain(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(_is_plain(v) for v in value)


class RunConfig:
    """A whole training run: three component sections (plain dicts) and a `TrainConfig`.

    Attributes:
        data: dicts ``{name: ..., **options}`` (the model section names its net by ``net``).
        sde: as ``data``.
        model: as ``data``.
        train: the `TrainConfig`.
    """

    def __init__(self, data: Optional[Mapping] = None, sde: Optional[Mapping] = None,
                 model: Optional[Mapping] = None, train: Optional[TrainConfig] = None,
                 loss: Optional[Mapping] = None):
        self.data = dict(data if data is not None else DEFAULTS["data"])
        self.loss = dict(loss or {})
        self.sde = dict(sde if sde is not None else DEFAULTS["sde"])
        self.model = {**DEFAULTS["model"], **(model or {})}
        self.train = train if train is not None else TrainConfig()

    # -- reading and writing ---------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """Plain nested dict (tuples as lists), every constructor default filled in: what ``config.yaml`` holds."""
        out = {section: _plain(self.resolved(section)) for section in COMPONENTS if getattr(self, section)}
        out["train"] = {k: _plain(v) for k, v in self.train.to_dict().items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """Build from a nested dict; unknown sections or keys raise a ConfigError listing the valid ones."""
        config = cls()
        config.update(d or {})
        return config.validated()

    def update(self, d: Mapping[str, Any], origin: str = "config") -> None:
        """Apply a nested dict of sections on top of this config (a section's name replaces its options)."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{origin} must hold a mapping of sections; got {type(d).__name__}")
        for section, values in d.items():
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section {section!r} in {origin}; valid sections: "
                                  f"{', '.join(SECTIONS)}")
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise ConfigError(f"config section {section!r} must be a mapping of keys to values; got {values!r}")
            values = _upgrade_legacy(section, dict(values))
            key = _name_key(section)
            if key in values:                     # the name first: it decides which options are valid
                self.set(f"{section}.{key}", values.pop(key))
            for name, value in values.items():
                self.set(f"{section}.{name}", value)

    def set(self, key: str, value: Any) -> None:
        """Set ``section.key`` (or an unambiguous bare key) to ``value``; a new component name drops the
        options of the previous component (the model section keeps ScoreModel's keys)."""
        section, name = self.resolve_key(key)
        if section == "train":
            current = getattr(self.train, name)
            if isinstance(current, tuple):
                value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            setattr(self.train, name, value)
            return
        target = getattr(self, section)
        path = None
        if section == "data" and name == "path" and "path" not in self.keys("data"):
            inferred, _ = resolve_name(value)          # --data.path=DIR alone: the folder or file is the data set
            if inferred in ("image_folder", "array"):
                self.set("data.name", value)
                return
        if section == "data" and name == "name":     # a file or folder given as the name

            value, path = resolve_name(value)
        if name == _name_key(section) and value != target.get(name):
            for option in [k for k in target if not (section == "model" and k in MODEL_KEYS)]:
                del target[option]
        target[name] = value
        if path is not None:
            target["path"] = path

    # -- keys --------------------------------------------------------------------------------------------
    def keys(self, section: str) -> List[str]:
        """The valid keys of a section for its current component."""
        if section == "train":
            return list(TrainConfig.__dataclass_fields__)
        key = _name_key(section)
        if not getattr(self, section):                  # the optional loss section, unset
            return [key]
        try:
            options = _component_options(section, getattr(self, section).get(key))
        except ConfigError:
            options = []
        head = list(MODEL_KEYS) if section == "model" else [key]
        return head + [o for o in options if o not in head]

    def resolve_key(self, key: str) -> Tuple[str, str]:
        """Map ``section.key`` or a bare key to (section, key); a ConfigError names the valid keys otherwise."""
        key = key.replace("-", "_")
        if "." in key:
            section, name = key.split(".", 1)
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section {section!r} in {key!r}; valid sections: "
                                  f"{', '.join(SECTIONS)}")
            # A component's options are checked when the config is validated (the name may change first).
            if section == "train" and name not in self.keys("train"):
                raise ConfigError(f"unknown config key {key!r}; valid keys of train: {', '.join(self.keys('train'))}")
            return section, name
        owners = [s for s in SECTIONS if key in self.keys(s)]
        if len(owners) == 1:
            return owners[0], key
        if len(owners) > 1:
            raise ConfigError(f"config key {key!r} is ambiguous; write one of: "
                              + ", ".join(f"{s}.{key}" for s in owners))
        valid = ", ".join(f"{s}.{k}" for s in SECTIONS for k in self.keys(s))
        raise ConfigError(f"unknown config key {key!r}; valid keys: {valid}")

    # -- validation ------------------------------------------------------------------------------------
    def resolved(self, section: str) -> Dict[str, Any]:
        """A component section with the constructor's plain defaults filled in (name first)."""
        values = getattr(self, section)
        key = _name_key(section)
        target, fixed = _component(section, values[key])
        hidden = set(fixed) | set(_hidden(section, target))
        out = {key: values[key]}
        if section == "model":
            out.update({k: values[k] for k in MODEL_KEYS[1:]})
        defaults = {k: v for k, v in signature_defaults(target).items() if k not in hidden and _is_plain(v)}
        return {**out, **defaults, **values}

    def options(self, section: str) -> Dict[str, Any]:
        """The keyword arguments of a section's component (the name, and for the model ScoreModel's keys, left out)."""
        skip = MODEL_KEYS if section == "model" else (_name_key(section),)
        return {k: v for k, v in getattr(self, section).items() if k not in skip}

    def validated(self) -> "RunConfig":
        """Check every section's name and options, and rebuild the TrainConfig so its own validation runs."""
        for section in COMPONENTS:
            values = getattr(self, section)
            if section == "loss" and not values:
                continue
            key = _name_key(section)
            if key not in values:
                raise ConfigError(f"config section {section!r} needs {key!r}")
            target, fixed = _component(section, values[key])
            exclude = set(fixed) | set(_hidden(section, target))
            bad = [k for k in self.options(section) if k in exclude]
            if bad:
                raise ConfigError(f"{section}: {', '.join(bad)} cannot be set in a config (it follows from the data)")
            try:
                check_keywords(target, self.options(section), f"{section} {values[key]!r}", exclude=exclude)
                check_types(target, self.options(section), section)
            except TypeError as err:
                raise ConfigError(f"{section}: {err}" if not str(err).startswith(section) else str(err)) from None

        if self.model["parameterization"] not in PARAMETERIZATIONS and ":" not in str(self.model["parameterization"]):
            raise ConfigError(f"unknown model.parameterization {self.model['parameterization']!r}; valid choices: "
                              f"{', '.join(PARAMETERIZATIONS.names())}")
        try:
            self.train = TrainConfig.from_dict(self.train.to_dict())
        except (TypeError, ValueError) as err:
            raise ConfigError(f"train: {err}") from None
        return self


def _component(section: str, name):
    """(class or loader, fixed keyword arguments) of a section's component; a ConfigError lists valid names."""
    try:
        return _registries()[section].get(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _hidden(section: str, target) -> Sequence[str]:
    """Constructor arguments that follow from the data, not from the config."""
    if section == "data":
        return _DATA_HIDDEN
    if section == "model":
        return tuple(getattr(target, "shape_parameters", ()))
    return ()


def _component_options(section: str, name) -> List[str]:
    target, fixed = _component(section, name)
    hidden = set(fixed) | set(_hidden(section, target))
    return [p for p in signature_parameters(target) if p not in hidden]


def _upgrade_legacy(section: str, values: Dict[str, Any]) -> Dict[str, Any]:
    """Drop the fields of a pre-registry section (all fields of all components) that its component ignored."""
    if section not in _LEGACY_KEYS or set(values) != _LEGACY_KEYS[section]:
        return values
    if section == "data":
        try:
            accepted = set(_component_options("data", values["name"])) | {"name"}
        except ConfigError:
            return values
        # The old loader ignored what did not apply (n and seed for files, path and dequantize for 2-D sets).
        return {k: v for k, v in values.items() if k in accepted and not (k == "path" and v is None)}
    key = _name_key(section)
    applies = _LEGACY_APPLIES[section].get(values[key])
    if applies is None:
        return values
    head = MODEL_KEYS if section == "model" else (key,)
    return {k: v for k, v in values.items() if k in head or k in applies}


def _descriptions(obj) -> Dict[str, str]:
    """name → first line of its description in a Google-style docstring's Args / Attributes sections."""

    doc = _inspect.getdoc(obj) or ""
    out, inside, name = {}, False, None
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Attributes:"):
            inside, name = True, None
            continue
        if inside and line and not line.startswith(" "):
            inside, name = False, None
        if not inside:
            continue
        if line.startswith("    ") and not line.startswith("     ") and ":" in line:
            key, _, text = line.strip().partition(":")
            name = key if key.isidentifier() else None
            if name is not None:
                out[name] = text.strip()
        elif name is not None and line.startswith("     ") and line.strip():   # a continuation line
            out[name] = f"{out[name]} {line.strip()}".strip()
        elif not line.strip():
            name = None
    return out


def _first_sentence(text: str) -> str:
    """The first sentence of a description (up to a full stop followed by a capital; "e.g." does not end it)."""
    for match in re.finditer(r"[.!?](?=\s+[A-Z`(\"])", text):
        head = text[: match.end()]
        if not re.search(r"\b(e\.g|i\.e|cf|vs|etc)\.$", head):
            return head
    return text


def _show(value) -> str:
    """A value as it is written on the command line (YAML scalars)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def describe_keys(config: Optional[RunConfig] = None, width: int = 110) -> str:
    """Every config key of ``config`` (default: the defaults) with its value and a one-line description, by
    section: the command line's ``train --help`` epilog. The descriptions come from the components' docstrings."""

    config = config or RunConfig()
    lines = []
    for section, values in config.to_dict().items():
        if section == "train":
            docs = _descriptions(TrainConfig)
            title = "train (scoresde.TrainConfig)"
        else:
            target, _ = _component(section, getattr(config, section)[_name_key(section)])
            docs = {**_descriptions(target), **(_descriptions(ScoreModel) if section == "model" else {})}
            docs[_name_key(section)] = (f"one of {', '.join(_registries()[section].names())} "
                                        f"(or package.module:Name)")
            title = f"{section} ({values[_name_key(section)]}; other components take other keys)"
        lines.append(f"{title}:")
        for key, value in values.items():
            text = f"  --{section}.{key}={_show(value)}"
            description = _first_sentence(docs.get(key, ""))
            if not description:
                lines.append(text)
                continue
            indent = " " * 6
            if len(text) + 3 + 30 <= width:       # the description beside the key, wrapped under it
                lines.extend(textwrap.wrap(description, width, initial_indent=text + "   ",
                                           subsequent_indent=indent, break_on_hyphens=False))
            else:                                  # a long value: the description on the lines below
                lines.append(text)
                lines.extend(textwrap.wrap(description, width, initial_indent=indent, subsequent_indent=indent,
                                           break_on_hyphens=False))
    return "\n".join(lines)


def parse_value(text: str) -> Any:
    """Parse an override's value as a YAML scalar or list ("3" → 3, "1e-3" → 0.001, "[1,2]", "null", "true")."""

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            return value
    return value


def parse_overrides(items: Sequence[str]) -> List[Tuple[str, Any]]:
    """``["--steps=10", "--sde.name=ve"]`` → [("steps", 10), ("sde.name", "ve")]."""
    out = []
    for item in items:
        if not item.startswith("--") or "=" not in item:
            raise ConfigError(f"expected an override of the form --key=value; got {item!r}")
        key, value = item[2:].split("=", 1)
        out.append((key, parse_value(value)))
    return out


def _is_name_override(key: str) -> bool:
    section, _, name = key.replace("-", "_").partition(".")
    return section in COMPONENTS and name == _name_key(section)


def load_config(path: Optional[str] = None, overrides: Sequence[Tuple[str, Any]] = (),
                base: Optional[Mapping[str, Any]] = None) -> RunConfig:
    """Defaults, then ``base`` (a nested dict), then the YAML file at ``path``, then the overrides (component
    names first, so that ``--sde.name=ve --sigma_max=100`` works in either order)."""

    config = RunConfig()
    config.update(base or {}, origin="base config")
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path!r} does not exist")
        with open(path) as fh:
            try:
                loaded = yaml.safe_load(fh) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
        if isinstance(loaded, Mapping):
            loaded = {k: v for k, v in loaded.items() if k != SAMPLE_SHAPE_KEY}   # a run's own config.yaml
        config.update(loaded, origin=path)
    ordered = [o for o in overrides if _is_name_override(o[0])] + [o for o in overrides if not _is_name_override(o[0])]
    for key, value in ordered:
        config.set(key, value)
    return config.validated()


def save_config(config: RunConfig, path: str, extra: Optional[Mapping[str, Any]] = None) -> str:
    """Write the resolved config (and ``extra`` top-level entries) as YAML, atomically."""

    content = {**config.to_dict(), **dict(extra or {})}
    return write_atomically(path, lambda fh: yaml.safe_dump(content, fh, sort_keys=False), binary=False)


# -- builders ------------------------------------------------------------------------------------------------
def _build(section: str, registry: Registry, name, options: Mapping[str, Any], **given):
    try:
        return registry.build(name, **given, **options)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{section}: {err}") from None


def build_data(config: RunConfig, split: str, **overrides):
    """The data set of the config's data section (``overrides`` replace its options, e.g. ``n``)."""

    return _data(config.data["name"], {**config.options("data"), **overrides}, split)


def _data(name, options: Mapping[str, Any], split: str):
    """A data set by name and options; its summary line (an image folder's counts) is printed once, by rank 0."""

    options = dict(options)
    name, path = resolve_name(name, options.pop("path", None))
    if path is not None:
        options["path"] = path
    if split != "train" and "dequantize" in options:
        options["dequantize"] = False          # held-out data are evaluated on their levels
    try:
        dataset = _build("data", DATASETS, name, options, split=split)
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"data: cannot read {options.get('path', name)!r}: {err}") from None
    if getattr(dataset, "summary", None) and os.environ.get("RANK", "0") == "0":
        print(f"data: {dataset.summary}")
    return dataset


def build_evaluation_data(config: RunConfig, data: Optional[str] = None, split: str = "test"):
    """The data an evaluation command scores, and what to call it: ``(dataset, "test samples of NAME")``.

    Without ``data``, the ``split`` of the run's data set. ``data`` names another set (its ``split``) or a path:
    a folder of images or an array file given for evaluation is the evaluation set, read whole and named by its
    path, unless it is a folder with split sub-folders (train/, test/, val/, …), whose ``split`` is read. A path
    read by the run's loader keeps the run's options (mode, image_size, crop, resize) except ``path`` and
    ``test_fraction``.
    """

    run_name, _ = resolve_name(config.data["name"], config.options("data").get("path"))
    if data is None:
        path = config.options("data").get("path")
        return build_data(config, split), f"{split} samples of {path or run_name}"
    name, path = resolve_name(data)
    options = dict(config.options("data")) if name == run_name else {}
    if path is None:                            # a registered data set: its split
        return _data(name, options, split), f"{split} samples of {name}"
    options.pop("test_fraction", None)
    options["path"] = path
    if name == "image_folder" and has_split_folders(path):
        return _data(name, options, split), f"{split} samples of {path}"
    options.pop("dequantize", None)             # the whole file or folder, on its levels
    return _data(name, options, "train"), f"samples of {path} (all of it)"


def build_sde(config: RunConfig):
    """The SDE of the config's sde section."""

    return _build("sde", SDES, config.sde["name"], config.options("sde"))


def build_loss(config: RunConfig):
    """The loss object of the config's loss section, or None when it has none (the Trainer's default `DSMLoss`)."""

    if not config.loss:
        return None
    return _build("loss", LOSSES, config.loss["name"], config.options("loss"))


def build_model(config: RunConfig, sde, sample_shape: Sequence[int]):
    """A [`scoresde.ScoreModel`][scoresde.ScoreModel] around the net of the model section, for samples of ``sample_shape``."""

    name = config.model["net"]
    target, _ = _component("model", name)
    given = {}
    if getattr(target, "shape_parameters", ()):
        try:
            given = dict(target.shape_arguments(tuple(int(s) for s in sample_shape)))
        except ValueError as err:
            raise ConfigError(f"model.net={name!r}: {err}") from None
    net = _build("model", NETS, name, config.options("model"), **given)
    m = config.model
    try:
        return ScoreModel(net, sde, parameterization=m["parameterization"], preconditioning=m["preconditioning"],
                          sigma_data=m["sigma_data"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from None


def build_sampler(name: str, options: Mapping[str, Any]):
    """A sampler by registry name with keyword options; bad names or options raise a ConfigError listing valid ones."""

    try:
        return SAMPLERS.build(name, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler {name!r}: {err}" if name in SAMPLERS else str(err)) from None


def default_device() -> str:
    """"cuda" when available, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"
