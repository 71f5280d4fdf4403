"""score_sde_pytorch's checkpoints (Song et al. 2021, github.com/yang-song/score_sde_pytorch) as scoresde models.

    sde, model = sd.from_score_sde_pytorch("checkpoint_26.pth", config="vp/cifar10_ddpmpp_deep_continuous")
    x = sd.SAMPLERS.build("dpm", steps=20).sample(sde, model, (16, 3, 32, 32)).x     # data in model.data_range

Their checkpoints are ``torch.save({'optimizer', 'model', 'ema', 'step'})``; they are read with
``torch.load(weights_only=True)`` (nothing in the file is executed). ``'model'`` is the state dict of the network
inside ``torch.nn.DataParallel`` (keys start with ``module.``); ``'ema'`` holds ``shadow_params``, the averaged
parameters as a list in ``model.parameters()`` order. Their configs are Python files; scoresde ships them as
presets (`scoresde.zoo.presets`) and never runs them.

**Their score, on our SDE objects.** ``model(x, t)`` is what their ``mutils.get_score_fn(sde, net, train=False,
continuous=...)`` returns, for t in (0, T], on the SDE their ``run_lib`` builds from the config:

=============  ==========  ==================================  ============================================
training.sde   continuous  SDE returned                        score(x, t)
=============  ==========  ==================================  ============================================
vpsde          true        `VPSDE` (β_min, β_max)              −net(x, 999 t) / σ(t)
subvpsde       either      `SubVPSDE` (β_min, β_max)           −net(x, 999 t) / σ(t)
vpsde          false       `VPSDE` (β_min, β_max)              −net(x, (N−1) t) / σ_n, n = ⌊(N−1) t⌋
vesde          true        `ScoreSDEVESDE` (σ_min, σ_max)      net(x, σ(t))
vesde          false       `ScoreSDEVESDE` (σ_min, σ_max)      net(x, i), i = round((T − t)(N − 1))
=============  ==========  ==================================  ============================================

σ(t) is the SDE's ``std``: √(1 − e^{−B(t)}) (VP), 1 − e^{−B(t)} (sub-VP) with B(t) = ∫β, and σ_min
(σ_max/σ_min)^t (VE). Their VE marginals have std σ(t), not `VESDE`'s √(σ(t)² − σ_min²): the data are taken as
already noised by σ_min, hence `ScoreSDEVESDE`. A discrete-time VP model (DDPM's ε-network) divides by DDPM's
table σ_n = √(1 − ᾱ_n), ᾱ_n = Π_{k≤n}(1 − β_k), β_k = linspace(β_min/N, β_max/N, N), computed in float32 as they
train with it. A discrete VE model (NCSN, NCSNv2, the non-continuous NCSN++) is called at the index i of the
nearest of its N noise levels, largest first. Their likelihood evaluates every model as continuous
(``continuous=True`` here).

Our σ(t) is computed without cancellation; theirs, 1 − exp(2 log mean) in the input's dtype, loses relative
accuracy u/B(t) at small t (u = 2⁻²⁴ in float32: about 6e-4 at t = 1e-3), so the two scores agree to the float32
rounding of the network where B(t) is not small, and ours is the accurate one below.

The network's input is the data on their scale: [−1, 1] for ``data.centered``, else [0, 1] (the network maps it to
2x − 1 itself); ``model.data_range`` says which.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..nets import DDPM, NCSN, NETS, NCSNpp, NCSNv2, NCSNv2_128, NCSNv2_256
from ..sde import LinearSDE, ScoreSDEVESDE, SubVPSDE, VPSDE
from ..data import Dataset
from ..discrete import alphas_cumprod, ddpm_betas, ncsn_sigmas
from ..likelihood import EvaluationResult, evaluate_likelihood
from ..losses import LOSSES
from ..parameterization import ScoreModel
from ..training.checkpoint import check_state_dict, read_weights
from .._utils import expand_like
from . import presets

Tensor = torch.Tensor

#: Their ``config.model.name`` → our network class (each has ``from_config(config)``).
ARCHITECTURES = {"ncsnpp": NCSNpp, "ddpm": DDPM, "ncsn": NCSN, "ncsnv2_64": NCSNv2, "ncsnv2_128": NCSNv2_128,
                 "ncsnv2_256": NCSNv2_256}
#: The RefineNets take only integer level indices (their ``ve/ncsnv2/bedroom`` says continuous, but their net indexes
#: ``sigmas`` by the label, so it is a discrete model whatever the config says).
DISCRETE_ONLY = ("ncsn", "ncsnv2_64", "ncsnv2_128", "ncsnv2_256")
SDE_NAMES = ("vpsde", "subvpsde", "vesde")


def resolve_config(config: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """A preset name, a nested dict of their fields, or (name, overrides), as a nested dict (`presets.resolve`)."""
    if not isinstance(config, (str, Mapping, tuple)):
        raise TypeError(f"config must be a preset name (e.g. 'vp/cifar10_ddpmpp_deep_continuous') or a nested dict "
                        f"of score_sde_pytorch's config fields; got {type(config).__name__}")
    cfg = presets.resolve(config)
    missing = [k for k in ("model", "data", "training") if not isinstance(cfg.get(k), Mapping)]
    if missing:
        raise ValueError(f"a config needs the sections 'model', 'data' and 'training' of score_sde_pytorch's config; "
                         f"missing or not a dict: {missing}")
    return cfg


def _field(config: Mapping, section: str, name: str):
    try:
        return config[section][name]
    except KeyError:
        raise ValueError(f"config lacks {section}.{name}, which score_sde_pytorch's configs all set") from None


def build_sde(config: Mapping[str, Any]) -> LinearSDE:
    """The SDE ``run_lib`` builds from ``training.sde`` with their marginals (see the module's table)."""
    training = config.get("training", {})
    # their ve/ncsn/celeba config names it training.loss (their run_lib, which reads training.sde, fails on it)
    name = str(training["sde"] if "sde" in training or "loss" not in training else training["loss"]).lower()
    if name == "vpsde":
        return VPSDE(_field(config, "model", "beta_min"), _field(config, "model", "beta_max"))
    if name == "subvpsde":
        return SubVPSDE(_field(config, "model", "beta_min"), _field(config, "model", "beta_max"))
    if name == "vesde":
        return ScoreSDEVESDE(_field(config, "model", "sigma_min"), _field(config, "model", "sigma_max"))
    raise ValueError(f"training.sde must be one of {SDE_NAMES}; got {name!r}")


def _discrete_only(config: Mapping[str, Any]) -> bool:
    return config["model"].get("name") in DISCRETE_ONLY


def _continuous(config: Mapping[str, Any]) -> bool:
    """Their ``training.continuous``, except for the RefineNets, which take level indices only."""
    return bool(config["training"].get("continuous", True)) and not _discrete_only(config)


def build_network(config: Mapping[str, Any]) -> nn.Module:
    """Their ``model.name`` architecture built from the config (untrained)."""
    name = _field(config, "model", "name")
    if name not in ARCHITECTURES:
        raise ValueError(f"model.name must be one of {sorted(ARCHITECTURES)}; got {name!r}")
    return ARCHITECTURES[name].from_config(config)


def ddpm_alphas_cumprod(beta_min: float, beta_max: float, num_scales: int) -> Tensor:
    """DDPM's ᾱ_n of their VPSDE: β_k = linspace(β_min/N, β_max/N, N) (`scoresde.ddpm_betas`), the product taken in
    float32 as they train with it (N,)."""
    n = int(num_scales)
    return alphas_cumprod(ddpm_betas(n, beta_start=beta_min / n, beta_end=beta_max / n).float())


class ScoreSDEModel(nn.Module):
    """score_sde_pytorch's network ``net(x, label)`` as a score ``model(x, t)`` on ``sde`` (module docstring).

    Args:
        net: their architecture (`scoresde.nets.NCSNpp`, `DDPM`, `NCSN`, `NCSNv2`, ...).
        sde: `VPSDE`, `SubVPSDE` or `ScoreSDEVESDE`, as `build_sde` makes it.
        continuous: whether the net takes continuous noise labels (999 t or σ(t)) or discrete indices.
        num_scales: N, their number of discrete noise levels.
        centered: whether the data are in [−1, 1] (else [0, 1]).
    """

    def __init__(self, net: nn.Module, sde: LinearSDE, continuous: bool, num_scales: int, centered: bool):
        super().__init__()
        if not isinstance(sde, (VPSDE, ScoreSDEVESDE)):
            raise TypeError(f"sde must be a VPSDE, SubVPSDE or ScoreSDEVESDE; got {type(sde).__name__}")
        self.net, self.sde = net, sde
        self.variance_preserving = isinstance(sde, VPSDE)
        # their subVP score always takes the continuous label 999 t
        self.continuous = bool(continuous) or isinstance(sde, SubVPSDE)
        self.num_scales = int(num_scales)
        self.centered = bool(centered)
        if self.variance_preserving and not self.continuous:
            abar = ddpm_alphas_cumprod(sde.beta_min, sde.beta_max, self.num_scales)
            self.register_buffer("table_scale", torch.sqrt(abar), persistent=False)
            self.register_buffer("table_std", torch.sqrt(1.0 - abar), persistent=False)

    @property
    def data_range(self) -> Tuple[float, float]:
        """The data scale the network was trained on: (−1, 1) when centered, else (0, 1)."""
        return (-1.0, 1.0) if self.centered else (0.0, 1.0)

    def noise_labels(self, t: Tensor) -> Tensor:
        """What their net is called with at time t (B,): 999 t or (N−1) t (VP), σ(t) or the level index (VE)."""
        if self.variance_preserving:
            return t * (999.0 if self.continuous else float(self.num_scales - 1))
        if self.continuous:
            return self.sde.std(t)
        return torch.round((self.sde.T - t) * (self.num_scales - 1)).long()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """∇_x log p_t(x) for x (B, C, H, W) on the data scale and t (B,) in (0, T]."""
        out = self.net(x, self.noise_labels(t))
        if not self.variance_preserving:
            return out
        if self.continuous:
            std = self.sde.std(t)
        else:
            index = (t * (self.num_scales - 1)).long().clamp(0, self.num_scales - 1)
            std = self.table_std.to(t.device)[index]
        return -out / expand_like(std.to(out.dtype), out)


def _strip_prefix(state: Mapping[str, Tensor], prefix: str = "module.") -> Dict[str, Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _ema_parameters(ema: Any, net: nn.Module, what: str) -> Dict[str, Tensor]:
    """Their EMA's ``shadow_params`` as named parameters, checked: the list holds the parameters that require
    gradients, in ``net.parameters()`` order (their ``ExponentialMovingAverage`` skips the others, e.g. the fixed
    Gaussian-Fourier ``W``, which then keeps the model's value)."""
    if not isinstance(ema, Mapping) or not isinstance(ema.get("shadow_params"), (list, tuple)):
        raise ValueError(f"{what}: 'ema' must be their ExponentialMovingAverage.state_dict() with a list "
                         f"'shadow_params'; got {type(ema).__name__}")
    shadow = list(ema["shadow_params"])
    named = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    if len(shadow) != len(named):
        raise ValueError(f"{what}: the EMA holds {len(shadow)} parameters, the network {len(named)} trainable "
                         f"ones (a different architecture or config?)")
    out = {}
    for i, ((name, p), s) in enumerate(zip(named, shadow)):
        if not torch.is_tensor(s) or tuple(s.shape) != tuple(p.shape):
            got = tuple(s.shape) if torch.is_tensor(s) else type(s).__name__
            raise ValueError(f"{what}: EMA parameter {i} ({name}) has shape {got}, the network's is "
                             f"{tuple(p.shape)} (a different architecture or config?)")
        out[name] = s
    return out


def from_score_sde_pytorch(checkpoint: Union[str, os.PathLike, Mapping[str, Any]],
                           config: Union[str, Mapping[str, Any]], *, ema: bool = True,
                           continuous: Optional[bool] = None, map_location=None
                           ) -> Tuple[LinearSDE, ScoreSDEModel]:
    """Load a score_sde_pytorch checkpoint: ``sde, model = from_score_sde_pytorch(path, config=...)``.

    Args:
        checkpoint: their ``checkpoint_*.pth`` (read with ``weights_only=True``), or its loaded dict, or a bare
            state dict of the network (with or without DataParallel's ``module.`` prefix; then ``ema=False``).
        config: the name of one of their configs (`scoresde.zoo.presets.names`, e.g.
            "vp/cifar10_ddpmpp_deep_continuous", "ve/ncsnv2/cifar10") or a nested dict of their fields.
        ema: load the EMA weights (what they sample and evaluate with) instead of the raw model's.
        continuous: override ``training.continuous`` (their likelihood evaluates every model with True); NCSN and
            NCSNv2 take level indices only and stay discrete.
        map_location: where the tensors go (default: where they were saved).

    Returns:
        (sde, model): the SDE with their marginals and the score module in eval mode (see the module docstring).
    """
    cfg = resolve_config(config)
    name = cfg["model"].get("name", "?") if isinstance(config, Mapping) else config
    if isinstance(checkpoint, Mapping):
        payload, what = checkpoint, "checkpoint"
    else:
        what = f"score_sde_pytorch checkpoint {os.fspath(checkpoint)!r}"
        payload = read_weights(checkpoint, map_location, what="score_sde_pytorch checkpoint")
    if not isinstance(payload, Mapping):
        raise ValueError(f"{what}: expected a dict (their {{'optimizer', 'model', 'ema', 'step'}} or a state dict); "
                         f"got {type(payload).__name__}")
    net = build_network(cfg)
    if "model" in payload and isinstance(payload["model"], Mapping):
        state = _strip_prefix(payload["model"])
    elif payload and all(torch.is_tensor(v) for v in payload.values()):
        state = _strip_prefix(payload)
    else:
        raise ValueError(f"{what}: expected their checkpoint dict with keys 'model' and 'ema' (or a state dict); "
                         f"got keys {sorted(payload)[:8]}")
    check_state_dict(net.state_dict(), state, what=f"{type(net).__name__} of config {name!r}")
    if ema:
        if "ema" not in payload:
            raise ValueError(f"{what} has no 'ema' entry; pass ema=False to load the raw model weights")
        state.update(_ema_parameters(payload["ema"], net, what))
    net.load_state_dict(state, strict=True)
    if map_location is not None:
        net.to(map_location)
    sde = build_sde(cfg)
    is_continuous = _continuous(cfg) if continuous is None else bool(continuous) and not _discrete_only(cfg)
    model = ScoreSDEModel(net, sde, is_continuous, int(_field(cfg, "model", "num_scales")),
                          bool(_field(cfg, "data", "centered")))
    model.config = cfg
    return sde, model.eval()


#: Their likelihood protocol (likelihood.get_likelihood_fn defaults): one Rademacher probe per solve, RK45 at
#: rtol = atol = 1e-5 (dopri5 here), integrated in t from eps = 1e-5 to T.
PROTOCOL = dict(divergence="hutchinson", probe="rademacher", n_probes=1, solver="dopri5", rtol=1e-5, atol=1e-5,
                eps=1e-5, time_variable="t")


def bits_per_dim(model: ScoreSDEModel, data: Dataset, *, n: Optional[int] = None, batch_size: Optional[int] = None,
                 repeats: int = 1, generator: Optional[torch.Generator] = None, device=None,
                 dtype: Optional[torch.dtype] = None, **overrides) -> EvaluationResult:
    """Bits/dim of 8-bit images under their model by score_sde_pytorch's protocol (``run_lib.evaluate``).

    The images (a quantized `Dataset`, e.g. ``sd.data.load("cifar10", split="test", path=DIR)``) are put on the
    model's scale ([0, 1] or, centered, [−1, 1]) and uniformly dequantized: pixel k becomes (k + u)/256, u ~ U(0, 1)
    (times 2 minus 1 when centered). Each point's −log p comes from the probability-flow ODE with the `PROTOCOL`
    settings, and bpd = −log p/(d ln 2) + log₂(1/Δ): + 8 for [0, 1] data (Δ = 1/256), + 7 for centered data
    (Δ = 2/256), their offset 7 − inverse_scaler(−1). ``repeats`` passes over the data with fresh dequantization
    noise and probes (they use 5 for the test set, 1 for the training set). Load the model with ``continuous=True``,
    as their likelihood evaluates every model. ``overrides`` change `PROTOCOL` entries (e.g. ``time_variable=
    "sigma"``: the same density, fewer evaluations).

    Returns:
        `scoresde.EvaluationResult` (``bpd`` ± ``bpd_stderr`` over the images; ``values`` (n, repeats)).
    """
    if not isinstance(data, Dataset) or data.levels is None or data.data_range is None:
        raise ValueError("data must be a quantized Dataset (levels and data_range set), e.g. sd.data.load('cifar10')")
    if data.levels != 256:
        raise ValueError(f"their protocol is for 8-bit images (256 levels); got {data.levels} levels")
    unknown = sorted(set(overrides) - set(PROTOCOL))
    if unknown:
        raise TypeError(f"unknown protocol settings {unknown}; valid: {sorted(PROTOCOL)}")
    (a, b), (lo, hi) = data.data_range, model.data_range
    x = (data.x - a) * ((hi - lo) / (b - a)) + lo
    scaled = Dataset(x, name=data.name, split=data.split, data_range=(lo, hi), levels=256)
    settings = {**PROTOCOL, **overrides}
    return evaluate_likelihood(model.sde, model, scaled, n=n, batch_size=batch_size, n_dequant=int(repeats),
                               generator=generator, device=device, dtype=dtype, **settings)


# -- training their models here ------------------------------------------------------------------------------
def _score_sde_model(model) -> ScoreSDEModel:
    """The ScoreSDEModel inside ``model`` (itself, a ScoreModel around a ScoreSDENet, or DDP around either)."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    inner = inner.net if isinstance(inner, ScoreModel) else inner
    if not isinstance(inner, ScoreSDEModel):
        raise TypeError(f"ScoreSDELoss trains a score_sde_pytorch model (ScoreSDEModel, or the net "
                        f"'score_sde_pytorch' in a ScoreModel); got {type(inner).__name__}")
    return inner


@LOSSES.register("score_sde")
class ScoreSDELoss:
    """score_sde_pytorch's training objective (their ``losses.get_step_fn``), for their models: the batch mean of

        continuous:  ℓ = R((σ_t s(x_t, t) + z)²)                  t ~ U(eps, T), x_t = s_t x0 + σ_t z
                     ℓ = R((s(x_t, t) + z/σ_t)²) g(t)²            with ``likelihood_weighting``
        DDPM (VP, discrete):  ℓ = R((net(x_n, n) − z)²)           n ~ U{0 … N−1}, x_n = √ᾱ_n x0 + √(1 − ᾱ_n) z
        SMLD (VE, discrete):  ℓ = R((net(x_i, i) + z/σ_i)²) σ_i²  i ~ U{0 … N−1}, x_i = x0 + σ_i z

    where R is the mean over the data dimensions (``reduce_mean``) or half their sum. ``random_flip`` mirrors each
    image left–right with probability ½ first (their data pipeline's augmentation). The DDPM and SMLD objectives
    call the network directly, so they do not run under DistributedDataParallel (the continuous ones do).

    Args:
        continuous: their ``training.continuous``.
        reduce_mean: their ``training.reduce_mean``.
        likelihood_weighting: their ``training.likelihood_weighting`` (continuous only).
        eps: the smallest training time (their 1e-5).
        random_flip: their ``data.random_flip``.
    """

    def __init__(self, continuous: bool = True, reduce_mean: bool = False, likelihood_weighting: bool = False,
                 eps: float = 1e-5, random_flip: bool = True):
        for name, value in (("continuous", continuous), ("reduce_mean", reduce_mean),
                            ("likelihood_weighting", likelihood_weighting), ("random_flip", random_flip)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false; got {value!r}")
        if likelihood_weighting and not continuous:
            raise ValueError("likelihood_weighting needs continuous=True (as in score_sde_pytorch)")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"eps must be a number in (0, 1); got {eps!r}")
        self.continuous, self.reduce_mean = continuous, reduce_mean
        self.likelihood_weighting, self.eps, self.random_flip = likelihood_weighting, float(eps), random_flip

    @classmethod
    def from_config(cls, config: Union[str, Mapping[str, Any]]) -> "ScoreSDELoss":
        """The objective of one of their configs (a preset name or nested dict)."""
        cfg = resolve_config(config)
        training = cfg["training"]
        return cls(_continuous(cfg), bool(training.get("reduce_mean", False)),
                   bool(training.get("likelihood_weighting", False)) and _continuous(cfg),
                   random_flip=bool(cfg["data"].get("random_flip", True)))

    def _reduce(self, values: Tensor) -> Tensor:
        flat = values.reshape(values.shape[0], -1)
        return flat.mean(-1) if self.reduce_mean else 0.5 * flat.sum(-1)

    def __call__(self, sde, model, x0: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        inner = _score_sde_model(model)
        if self.random_flip:
            flip = torch.rand(x0.shape[0], generator=generator, device=x0.device) < 0.5
            x0 = torch.where(expand_like(flip, x0), x0.flip(-1), x0)
        batch = x0.shape[0]
        if self.continuous:
            t = torch.rand(batch, generator=generator, device=x0.device, dtype=x0.dtype) * (sde.T - self.eps) + self.eps
            z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            s, std = expand_like(sde.scale(t), x0), expand_like(sde.std(t), x0)
            score = model(s * x0 + std * z, t)
            if self.likelihood_weighting:
                return (self._reduce((score + z / std) ** 2) * sde.diffusion(t) ** 2).mean()
            return self._reduce((score * std + z) ** 2).mean()
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise ValueError("score_sde_pytorch's discrete-time objectives (DDPM, SMLD) call the network directly "
                             "and do not run under DistributedDataParallel; train on one process or continuously")
        n = torch.randint(0, inner.num_scales, (batch,), generator=generator, device=x0.device)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if inner.variance_preserving:
            if isinstance(inner.sde, SubVPSDE):
                raise ValueError("score_sde_pytorch has no discrete-time objective for the sub-VP SDE")
            std = inner.table_std.to(x0.device)[n].to(x0.dtype)
            scale = inner.table_scale.to(x0.device)[n].to(x0.dtype)
            out = inner.net(expand_like(scale, x0) * x0 + expand_like(std, x0) * z, n)
            return self._reduce((out - z) ** 2).mean()
        # SMLD's levels, largest first (`scoresde.ncsn_sigmas` reversed)
        sigma = ncsn_sigmas(inner.num_scales, inner.sde.sigma_min, inner.sde.sigma_max).flip(0)
        sigma = sigma.to(device=x0.device, dtype=x0.dtype)[n]
        out = inner.net(x0 + expand_like(sigma, x0) * z, n)
        return (self._reduce((out + z / expand_like(sigma, x0)) ** 2) * sigma ** 2).mean()

    def __repr__(self) -> str:
        return (f"ScoreSDELoss(continuous={self.continuous}, reduce_mean={self.reduce_mean}, likelihood_weighting="
                f"{self.likelihood_weighting}, eps={self.eps:g}, random_flip={self.random_flip})")


class ScoreSDENet(ScoreSDEModel):
    """One of their models built from a preset, untrained: the net ``score_sde_pytorch`` of scoresde's runs.

    ``scoresde train --preset NAME`` wraps it in a `ScoreModel` with the "score" parameterization and no
    preconditioning, so the run's model is exactly their score; `ScoreSDELoss` trains it.

    Args:
        preset: the name of their config (`scoresde.zoo.presets.names`).
        overrides: changes to it, as dotted keys ({"model.nf": 64}) or nested dicts (`presets.merge`).
    """

    def __init__(self, preset: str = "vp/cifar10_ddpmpp_continuous", overrides: Optional[Dict[str, Any]] = None):
        cfg = presets.merge(presets.get(preset), overrides or {})
        super().__init__(build_network(cfg), build_sde(cfg), _continuous(cfg),
                         int(_field(cfg, "model", "num_scales")), bool(_field(cfg, "data", "centered")))
        self.preset, self.config = preset, cfg


NETS.register("score_sde_pytorch", ScoreSDENet)

#: Their ``data.dataset`` → our data set name (the others are image folders: ``--data.name=image_folder``).
DATASET_NAMES = {"CIFAR10": "cifar10"}


def run_sections(preset: str, overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Dict[str, Any]]:
    """The sections of a scoresde run (data, sde, model, loss, train) that train preset ``preset`` as they do.

    Their Adam (lr, β₁, ε = 1e-8, weight decay), linear warm-up, gradient clipping, EMA rate (with the
    (1 + n)/(10 + n) ramp), batch size, number of iterations, snapshot and log frequencies, seed and objective
    (`ScoreSDELoss`: continuity, ``reduce_mean``, likelihood weighting, random flips) come from the preset. Their
    warm-up is lr · min(n/warmup, 1) at step n = 0, 1, …; ours is lr · min((n + 1)/warmup, 1), one step ahead.
    """
    cfg = presets.merge(presets.get(preset), dict(overrides or {}))
    sde = build_sde(cfg)
    if isinstance(sde, ScoreSDEVESDE):
        sde_section = {"name": "ve_score_sde", "sigma_min": sde.sigma_min, "sigma_max": sde.sigma_max}
    else:
        sde_section = {"name": "subvp" if isinstance(sde, SubVPSDE) else "vp", "beta_min": sde.beta_min,
                       "beta_max": sde.beta_max}
    data = cfg["data"]
    data_section = {"name": DATASET_NAMES.get(str(data.get("dataset")), "image_folder")}
    if data_section["name"] == "cifar10":
        data_section["data_range"] = [-1.0, 1.0] if data["centered"] else [0.0, 1.0]
    optim, training = cfg["optim"], cfg["training"]
    clip = float(optim.get("grad_clip", -1.0))
    train = {"steps": int(training["n_iters"]), "batch_size": int(training["batch_size"]), "lr": float(optim["lr"]),
             "warmup_steps": int(optim.get("warmup", 0)), "grad_clip": clip if clip >= 0 else None,
             "adam_betas": [float(optim.get("beta1", 0.9)), 0.999], "weight_decay": float(optim.get("weight_decay", 0)),
             "ema_decay": float(cfg["model"].get("ema_rate", 0.999)), "ema_warmup": True,
             "log_every": int(training.get("log_freq", 50)),
             "checkpoint_every": int(training.get("snapshot_freq_for_preemption", 10000)),
             "seed": int(cfg.get("seed", 42))}
    if str(optim.get("optimizer", "Adam")) != "Adam" or float(optim.get("eps", 1e-8)) != 1e-8:
        raise ValueError(f"preset {preset!r} uses optimizer {optim.get('optimizer')} with eps {optim.get('eps')}; "
                         f"scoresde's trainer runs Adam with eps 1e-8")
    loss = ScoreSDELoss.from_config(cfg)
    return {"data": data_section, "sde": sde_section,
            "model": {"net": "score_sde_pytorch", "parameterization": "score", "preconditioning": False,
                      "preset": preset, "overrides": dict(overrides or {})},
            "loss": {"name": "score_sde", "continuous": loss.continuous, "reduce_mean": loss.reduce_mean,
                     "likelihood_weighting": loss.likelihood_weighting, "eps": loss.eps,
                     "random_flip": loss.random_flip},
            "train": train}
