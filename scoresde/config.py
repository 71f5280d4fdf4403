"""Run configurations: dataclasses, YAML files and ``--section.key=value`` overrides, and the builders that
turn them into an SDE, a score model and a sampler.

A run is four sections::

    data:  {name: eight_gaussians, n: 10000, ...}
    sde:   {name: vp, beta_min: 0.1, beta_max: 20.0, ...}
    model: {net: mlp, parameterization: eps, hidden: 128, ...}
    train: {steps: 2000, batch_size: 256, lr: 0.002, ...}     # scoresde.TrainConfig

An override names a key as ``section.key`` or, when unambiguous, as the bare key (``--steps=500``). Values are
parsed as YAML scalars/lists (``--channel_mults=[1,2]``, ``--grad_clip=null``).
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ._utils import check_choice
from .training import TrainConfig

SDE_NAMES = ("vp", "subvp", "ve")
NETS = ("mlp", "unet")
PARAMETERIZATIONS = ("eps", "score", "x0", "v")


class ConfigError(ValueError):
    """A configuration problem the CLI reports in one line (bad key, bad value, unknown name, bad path)."""


@dataclass
class DataConfig:
    """Which data set to train on (see :func:`scoresde.data.load`)."""

    name: str = "eight_gaussians"
    n: Optional[int] = None
    path: Optional[str] = None
    seed: int = 0
    dequantize: bool = False


@dataclass
class SDEConfig:
    """The forward SDE: "vp", "subvp" or "ve" with its parameters."""

    name: str = "vp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = 1.0


@dataclass
class ModelConfig:
    """The network and its parameterization (see :class:`scoresde.ScoreModel`, :mod:`scoresde.nets`)."""

    net: str = "mlp"
    parameterization: str = "eps"
    preconditioning: bool = True
    sigma_data: float = 1.0
    hidden: int = 128
    depth: int = 3
    time_embedding_dim: int = 64
    fourier_scale: float = 1.0
    channels: int = 32
    channel_mults: Tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_resolutions: Tuple[int, ...] = (4,)
    dropout: float = 0.0


@dataclass
class RunConfig:
    """A whole training run."""

    data: DataConfig = field(default_factory=DataConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """Plain nested dict (tuples as lists): what is written to ``config.yaml``."""
        out = {}
        for section in SECTIONS:
            values = dataclasses.asdict(getattr(self, section))
            out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """Build from a nested dict; unknown sections or keys raise a ConfigError listing the valid ones."""
        config = cls()
        for key, values in (d or {}).items():
            if key not in SECTIONS:
                raise ConfigError(f"unknown config section {key!r}; valid sections: {', '.join(SECTIONS)}")
            if not isinstance(values, Mapping):
                raise ConfigError(f"config section {key!r} must be a mapping of keys to values; got {values!r}")
            for name, value in values.items():
                config.set(f"{key}.{name}", value)
        return config.validated()

    def set(self, key: str, value: Any) -> None:
        """Set ``section.key`` (or an unambiguous bare key) to ``value``."""
        section, name = resolve_key(key)
        obj = getattr(self, section)
        current = getattr(obj, name)
        if isinstance(current, tuple) and isinstance(value, (list, tuple)):
            value = tuple(value)
        elif isinstance(current, tuple):
            value = (value,)
        setattr(obj, name, value)

    def validated(self) -> "RunConfig":
        """Check names and rebuild the TrainConfig so its own validation runs; returns self."""
        check = lambda v, c, w: _wrap(check_choice, v, c, w)  # noqa: E731
        check(self.sde.name, SDE_NAMES, "sde.name")
        check(self.model.net, NETS, "model.net")
        check(self.model.parameterization, PARAMETERIZATIONS, "model.parameterization")
        try:
            self.train = TrainConfig.from_dict(self.train.to_dict() if isinstance(self.train, TrainConfig)
                                               else dict(self.train))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"train: {err}") from None
        return self


SECTIONS = ("data", "sde", "model", "train")


def _wrap(fn, *args):
    try:
        return fn(*args)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _fields(section: str) -> List[str]:
    cls = {"data": DataConfig, "sde": SDEConfig, "model": ModelConfig, "train": TrainConfig}[section]
    return [f.name for f in dataclasses.fields(cls)]


def resolve_key(key: str) -> Tuple[str, str]:
    """Map ``section.key`` or a bare key to (section, key); a ConfigError names the valid keys otherwise."""
    key = key.replace("-", "_")
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in {key!r}; valid sections: {', '.join(SECTIONS)}")
        if name not in _fields(section):
            raise ConfigError(f"unknown config key {key!r}; valid keys of {section}: {', '.join(_fields(section))}")
        return section, name
    owners = [s for s in SECTIONS if key in _fields(s)]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(f"config key {key!r} is ambiguous; write one of: "
                          + ", ".join(f"{s}.{key}" for s in owners))
    valid = ", ".join(f"{s}.{k}" for s in SECTIONS for k in _fields(s))
    raise ConfigError(f"unknown config key {key!r}; valid keys: {valid}")


def parse_value(text: str) -> Any:
    """Parse an override's value as a YAML scalar or list ("3" → 3, "1e-3" → 0.001, "[1,2]", "null", "true")."""
    import yaml

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


def load_config(path: Optional[str] = None, overrides: Sequence[Tuple[str, Any]] = (),
                base: Optional[Mapping[str, Any]] = None) -> RunConfig:
    """Defaults, then ``base`` (a nested dict), then the YAML file at ``path``, then the overrides."""
    import yaml

    config = RunConfig.from_dict(base or {})
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path!r} does not exist")
        with open(path) as fh:
            try:
                loaded = yaml.safe_load(fh) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"config file {path!r} is not valid YAML: {err}") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path!r} must hold a mapping of sections; got {type(loaded).__name__}")
        for section, values in loaded.items():
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section {section!r} in {path}; valid sections: {', '.join(SECTIONS)}")
            for name, value in (values or {}).items():
                config.set(f"{section}.{name}", value)
    for key, value in overrides:
        config.set(key, value)
    return config.validated()


def save_config(config: RunConfig, path: str) -> str:
    """Write the resolved config as YAML (atomically)."""
    import yaml

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        yaml.safe_dump(config.to_dict(), fh, sort_keys=False)
    os.replace(tmp, path)
    return path


# -- builders ------------------------------------------------------------------------------------------------
def build_sde(cfg: SDEConfig):
    """The SDE named by ``cfg``."""
    from .sde import SubVPSDE, VESDE, VPSDE

    _wrap(check_choice, cfg.name, SDE_NAMES, "sde.name")
    try:
        if cfg.name == "ve":
            return VESDE(cfg.sigma_min, cfg.sigma_max, T=cfg.T)
        cls = VPSDE if cfg.name == "vp" else SubVPSDE
        return cls(cfg.beta_min, cfg.beta_max, T=cfg.T)
    except ValueError as err:
        raise ConfigError(f"sde: {err}") from None


def build_model(cfg: ModelConfig, sde, sample_shape: Sequence[int]):
    """A :class:`scoresde.ScoreModel` around the network named by ``cfg`` for samples of ``sample_shape``."""
    from . import nets
    from .parameterization import ScoreModel

    sample_shape = tuple(int(s) for s in sample_shape)
    if cfg.net == "mlp":
        dim = 1
        for s in sample_shape:
            dim *= s
        net = nets.MLP(dim, hidden=cfg.hidden, depth=cfg.depth, time_embedding_dim=cfg.time_embedding_dim,
                       fourier_scale=cfg.fourier_scale)
    elif cfg.net == "unet":
        if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
            raise ConfigError(f"model.net='unet' needs square images (C, H, W); the data has per-sample shape "
                              f"{sample_shape}")
        net = nets.UNet(in_channels=sample_shape[0], channels=cfg.channels, channel_mults=tuple(cfg.channel_mults),
                        num_res_blocks=cfg.num_res_blocks, attention_resolutions=tuple(cfg.attention_resolutions),
                        dropout=cfg.dropout, image_size=sample_shape[1])
    else:
        raise ConfigError(f"unknown model.net {cfg.net!r}; valid choices: {', '.join(NETS)}")
    return ScoreModel(net, sde, parameterization=cfg.parameterization, preconditioning=cfg.preconditioning,
                      sigma_data=cfg.sigma_data)


def sampler_classes() -> Dict[str, Any]:
    """Sampler names accepted by the CLI → (class, fixed keyword arguments)."""
    from . import sampling

    return {
        "euler_maruyama": (sampling.ReverseSDESampler, {}),
        "reverse_sde": (sampling.ReverseSDESampler, {}),
        "probability_flow": (sampling.ProbabilityFlowSampler, {}),
        "pc": (sampling.PCSampler, {}),
        "heun": (sampling.HeunSampler, {}),
        "dpm_solver": (sampling.DPMSolver, {}),
        "ddim": (sampling.DPMSolver, {"order": 1}),
    }


def build_sampler(name: str, options: Mapping[str, Any]):
    """A sampler by CLI name with keyword options; bad names or options raise a ConfigError listing valid ones."""
    classes = sampler_classes()
    if name not in classes:
        raise ConfigError(f"unknown sampler {name!r}; valid samplers: {', '.join(classes)}")
    cls, fixed = classes[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for sampler {name!r}; valid options: "
                          f"{', '.join(valid)}")
    try:
        return cls(**{**fixed, **options})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler {name!r}: {err}") from None


def default_device() -> str:
    """"cuda" when available, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"
