"""score_sde_pytorch's published configs (Song et al. 2021), by name, as plain nested dicts.

    from scoresde.zoo import presets
    presets.names()                                    # 39 names: "vp/cifar10_ddpmpp_deep_continuous", ...
    cfg = presets.get("ve/ncsnv2/cifar10")             # {"training": {...}, "model": {...}, ..., "seed": 42}
    cfg = presets.merge(cfg, {"model.nf": 64, "training": {"n_iters": 1000}})
    cfg = presets.resolve(("vp/ddpm/cifar10", {"training.batch_size": 64}))

Every file under score_sde_pytorch's ``configs/`` (``ve/``, ``vp/``, ``subvp/`` and their ``ncsn``, ``ncsnv2``,
``ddpm`` sub-folders; not the ``default_*`` bases) is one preset, named by its path there without ``.py``. The
values were produced once by their own ``get_config()`` (benchmarks/score_sde_presets.py) and ship as
``score_sde_pytorch_configs.json`` beside this module; nothing of theirs is executed here. A preset has the
sections ``training``, ``sampling``, ``eval``, ``data``, ``model``, ``optim`` (dicts) and ``seed`` (int), with
their field names and values unchanged except that tuples are lists and ``device`` (a property of the machine
that wrote the file) is left out.
"""
from __future__ import annotations

import copy
import difflib
import functools
import json
from importlib import resources
from typing import Any, Dict, List, Mapping, Tuple, Union

__all__ = ["names", "get", "merge", "resolve"]

_FILE = "score_sde_pytorch_configs.json"

Config = Dict[str, Any]


@functools.lru_cache(maxsize=None)
def _presets() -> Dict[str, Config]:
    """The JSON file, read once on first use."""
    return json.loads(resources.files(__package__).joinpath(_FILE).read_text(encoding="utf-8"))


def names() -> List[str]:
    """The preset names, sorted (e.g. "subvp/cifar10_ddpm_continuous", …, "vp/ddpm/cifar10_unconditional")."""
    return sorted(_presets())


def get(name: str) -> Config:
    """A deep copy of preset ``name`` (a nested dict; changing it does not change the preset).

    Raises:
        ValueError: for an unknown name, naming the closest valid names and listing all of them.
    """
    table = _presets()
    if not isinstance(name, str) or name not in table:
        valid = sorted(table)
        close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown score_sde_pytorch config {name!r}{hint}. Valid names: {', '.join(valid)}")
    return copy.deepcopy(table[name])


def _kind(value) -> str:
    """The loose type of a config value: "number", "bool", "str", "list", "dict" or "none"."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "dict"
    return type(value).__name__


def _plain(value):
    """Tuples as lists, mappings as dicts, recursively (the form the presets are stored in)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _nested(overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """Flat dotted keys ("model.nf") turned into nested dicts; nested dicts and plain keys kept."""
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a dict (nested, or with dotted keys such as 'model.nf'); got "
                        f"{type(overrides).__name__}")
    out: Dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"override keys must be non-empty strings; got {key!r}")
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {key!r} conflicts with the value given for {'.'.join(parts[:i + 1])!r}")
            node = child
        leaf = parts[-1]
        if isinstance(value, Mapping):
            value = _nested(value)
            if isinstance(node.get(leaf), dict):
                node[leaf] = _merge_dicts(node[leaf], value)
                continue
        elif leaf in node:
            raise ValueError(f"override {key!r} is given twice")
        node[leaf] = value
    return out


def _merge_dicts(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    """Nested union of two override trees (b wins on leaves)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _apply(config: Config, overrides: Dict[str, Any], where: str) -> None:
    """Write ``overrides`` into ``config`` in place, checking names and loose types."""
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        if key not in config:
            section = f"section {where!r}" if where else "the config"
            raise ValueError(f"override {path!r}: {section} has no field {key!r}; valid fields of {section}: "
                             f"{', '.join(sorted(config))}")
        current, kind = config[key], _kind(value)
        if isinstance(current, dict):
            if kind != "dict":
                raise ValueError(f"override {path!r}: {path!r} is a section (fields {', '.join(sorted(current))}); "
                                 f"give a dict or dotted keys, not a {type(value).__name__}")
            _apply(current, value, path)
            continue
        expected = _kind(current)
        if expected != "none" and kind not in (expected, "none"):
            raise ValueError(f"override {path!r}: expected a {expected} like the preset's {current!r}; got "
                             f"{value!r} ({type(value).__name__})")
        config[key] = _plain(value)


def merge(config: Config, overrides: Mapping[str, Any]) -> Config:
    """A copy of ``config`` with ``overrides`` written in; neither argument is changed.

    Args:
        config: a nested config dict (e.g. from `get`).
        overrides: a nested dict ({"model": {"nf": 64}}), flat dotted keys ({"model.nf": 64,
            "training.sde": "vpsde"}) or both mixed. Only existing fields can be set. Types are checked loosely:
            an int or a float for a number, a bool for a bool, a str for a str, a list or tuple (stored as a list)
            for a list, anything for a field that is None; a section can only be given a dict.

    Returns:
        the merged config (a new nested dict).

    Raises:
        ValueError: an override names a field the config does not have (the message lists the valid fields of
            that section) or gives a value of the wrong kind (e.g. a str for a number).
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict; got {type(config).__name__}")
    out = copy.deepcopy(dict(config))
    _apply(out, _nested(overrides), "")
    return out


def resolve(config: Union[str, Config, Tuple[str, Mapping[str, Any]]]) -> Config:
    """The config dict meant by ``config``, one of:

    - a preset name (str): `get` (name);
    - a (name, overrides) pair: `merge` (`get` (name), overrides);
    - a dict: a deep copy of it, used as given (not checked against any preset).

    Raises:
        TypeError: for anything else; ValueError: from `get` or `merge`.
    """
    if isinstance(config, str):
        return get(config)
    if isinstance(config, tuple) and len(config) == 2 and isinstance(config[0], str):
        return merge(get(config[0]), config[1])
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    raise TypeError(f"config must be a preset name, a (name, overrides) pair or a dict; got "
                    f"{type(config).__name__}")
