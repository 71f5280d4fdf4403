"""Prove that score_sde_pytorch's networks, loaded from their checkpoints, give their scores in scoresde.

    /work/peers/venv/bin/python benchmarks/score_sde_equivalence.py                    # every published config
    /work/peers/venv/bin/python benchmarks/score_sde_equivalence.py --configs vp/cifar10_ddpmpp_continuous
    /work/peers/venv/bin/python benchmarks/score_sde_equivalence.py --tiny             # small variants, every option
    /work/peers/venv/bin/python benchmarks/score_sde_equivalence.py --make-fixtures    # tests/data/score_sde_pytorch
    /work/peers/venv/bin/python benchmarks/score_sde_equivalence.py --speed [--device cuda]

score_sde_pytorch (Song et al. 2021, commit cb1f359) is imported from its checkout (``--score-sde-pytorch``) and run
as is; nothing of it is copied here. Needs ml_collections; ``op/upfirdn2d.py`` compiles a CUDA extension at import,
so ``torch.utils.cpp_extension.load`` is stubbed while their ``models`` package is imported, which leaves their FIR
filters on their own native (pure PyTorch) path.

For each config, in float32:

1. their network is built from the config; every parameter (and every buffer but the noise table ``sigmas``) is
   perturbed with a fixed seed at its own scale (the published init zeroes the last layers, which would hide
   mistakes), one Adam step with random gradients fills a realistic optimizer state, and their own
   ``ExponentialMovingAverage`` (models/ema.py) gets shadow parameters perturbed again, so EMA ≠ model weights;
2. a checkpoint is written in their exact format (``{'optimizer', 'model', 'ema', 'step'}``, the model wrapped in
   ``torch.nn.DataParallel`` so every key starts with ``module.``) to a temporary folder;
3. their score is ``mutils.get_score_fn(sde, model, train=False, continuous=config.training.continuous)`` with
   ``sde`` built as their run_lib.py builds it (VPSDE / subVPSDE / VESDE from model.beta_min, beta_max,
   sigma_min, sigma_max, num_scales), at x ~ marginal of data-like noise (uniform pixels, centered or not as the
   config says) at times t across [eps, 1] (eps = 1e-3 for VP / sub-VP, 1e-5 for VE as in run_lib). Discrete VE
   models get t on their grid, t = 1 − i/(N − 1), and discrete VP models t = (i + ½)/(N − 1), so that their
   ``round`` / ``long`` of t (N − 1) has no ties;
4. ours is ``sd.from_score_sde_pytorch(path, config=..., ema=True)`` (and ``ema=False``); the error is
   max over samples of max|ours − theirs| / max|theirs| (each sample against its own scale, so VE's small-σ
   samples do not hide the large-σ ones). The SDE column compares our ``scale(t)``, ``std(t)`` with their
   ``marginal_prob`` mean coefficient and std at the same t.

Columns: ``err ema`` / ``err model`` (scores with the EMA / raw weights), ``err net`` (our network alone at their
labels, shown when err ema is large, to tell the network from the score wrapper), ``err sde``, parameter counts and
seconds per forward (median over the batches; on a shared machine these are indicative, ``--speed`` measures).
Expected: ≲ 1e-6 everywhere except VP / sub-VP models taken as continuous, whose score divides by their float32 std
sqrt(1 − exp(2m(t))) (sub-VP: 1 − exp(2m)), which cancels near t = 0: at t = 1e-3 their std is off by 1.2e-4 (VP)
and 2.4e-4 (sub-VP) relative to its float64 value, ours by 3e-8, and that is the whole error (err net = 0).

Until ``sd.from_score_sde_pytorch`` exists (or with ``--nets``), ours is our network class built with
``from_config`` and loaded from the checkpoint's state dict (``module.`` stripped, EMA copied onto the parameters
with requires_grad, as their ``ema.copy_to`` does), and the raw network outputs at their labels are compared.

Known problems of their code at cb1f359 on current PyTorch, worked around on their side only (`SHIMS`, `KNOWN`):
NCSN and NCSNv2 cannot be built or run as published (a bias-less conv that scales its bias, a ``None`` dilation
compared with 1, NCSN given unconditional norms, dilated convolutions with padding 1 that shrink the image) and
``layerspp.Upsample(fir=False)`` fails in every forward; the shims make them run with the meaning the code
states. ``up_or_down_sampling.upsample_conv_2d`` (FIR upsampling fused with a convolution) is not shimmed, so
NCSN++ with resblock_type 'ddpm' + fir + resamp_with_conv, or progressive 'residual' + fir, has no reference.
``ncsn`` / ``ncsnv2_*`` read ``config.data.channels``, which no config sets (``data.channels = data.num_channels``
is added to a copy; the JSON written for fixtures keeps only their published fields); ``ve/ncsn/celeba`` sets no
``training.sde`` (run_lib would stop; taken as 'vesde'); ``ve/ncsnv2/bedroom`` says ``continuous=True`` but its
network indexes ``sigmas`` by the label, which fails on continuous labels (σ); it is compared as discrete.
``vp/ddpm/cifar10_unconditional`` (``conditional=False``) fails in their DDPM constructor.

``--speed``: one training step and one score evaluation on the same (EMA) weights, batch 8, median of
``--repeats``, and the peak memory of each (CUDA: max allocated; CPU: peak RSS growth with a fixed glibc mmap
threshold). Their step: ``losses.get_sde_loss_fn`` of the config (DSM, ‖σ s + z‖², their ``get_score_fn`` in
train mode) + their Adam (``losses.get_optimizer``). Ours: ``sd.dsm_loss(weighting="sigma2", eps=1e-5)`` on the
loaded model (the same objective up to a constant factor: theirs averages over pixels) + ``torch.optim.Adam``
with the same settings. Neither clips gradients or warms up the learning rate.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import glob
import importlib
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import scoresde as sd  # noqa: E402

DEFAULT_ROOT = Path("/work/peers/score_sde_pytorch")
FIXTURES = REPO / "tests" / "data" / "score_sde_pytorch"
SEED = 0
DROPPED = ("device",)  # a property of the machine that wrote the config, as in score_sde_presets.py

KNOWN = {
    "ve/ncsn/celeba": "no training.sde in their config (run_lib stops); run as 'vesde'",
    "ve/ncsnv2/bedroom": "continuous=True, but their NCSNv2_128 indexes sigmas by the label: their score fails; "
                         "compared with training.continuous=False on both sides",
    "vp/ddpm/cifar10_unconditional": "conditional=False: their DDPM constructor fails (UnboundLocalError)",
}
HIGH_RES = ("256", "1024", "bedroom", "church", "celeba")


# --------------------------------------------------------------------------------------------------- their code

def import_theirs(root: Path) -> types.SimpleNamespace:
    """Their modules, imported from the checkout at ``root`` (the CUDA extension build stubbed during import)."""
    if not (root / "models" / "ncsnpp.py").is_file():
        raise SystemExit(f"no models/ncsnpp.py in {str(root)!r}: pass the score_sde_pytorch checkout")
    import torch.utils.cpp_extension as cpp_extension
    sys.path.insert(0, str(root))
    load = cpp_extension.load
    cpp_extension.load = lambda *args, **kwargs: types.SimpleNamespace()
    try:
        for module in ("models.ncsnpp", "models.ddpm", "models.ncsnv2"):
            importlib.import_module(module)  # registers their networks by name
        from models import utils as mutils, ncsnv2, ema
        import losses
        import sde_lib
    finally:
        cpp_extension.load = load
    from models import layers, layerspp, normalization
    _shim(layers, layerspp, ncsnv2, normalization)
    return types.SimpleNamespace(root=root, mutils=mutils, sde_lib=sde_lib, ema=ema, losses=losses)


SHIMS = (
    "ncsn_conv3x3(bias=False) scales the missing bias (AttributeError: every NCSN/NCSNv2 fails to build): "
    "built with a bias, which is then removed",
    "ConditionalResidualBlock's default dilation=None is compared with 1 (TypeError: NCSN fails to build): "
    "None becomes 1, the branch it means",
    "ncsn_conv3x3(dilation=d) keeps padding=1, so NCSNv2's dilated blocks shrink the image and their residual sum "
    "fails (RuntimeError, every NCSNv2 forward): padding=d, as in NCSNv2's own dilated_conv3x3 (ermongroup/ncsnv2)",
    "NCSN builds its blocks with the unconditional InstanceNorm2dPlus and then passes it num_classes (TypeError: "
    "NCSN fails to build): NCSN gets ConditionalInstanceNorm2dPlus (called as (features, num_scales))",
    "layerspp.Upsample(fir=False) calls F.interpolate(x, size, 'nearest') with the mode in scale_factor's place "
    "(ValueError in every forward): the third positional argument is read as the mode",
)


def _shim(layers, layerspp, ncsnv2, normalization) -> None:
    """Make their code run where it fails at cb1f359 on current PyTorch (see SHIMS), leaving what it computes
    unchanged. Not shimmed: up_or_down_sampling.upsample_conv_2d (FIR upsampling with a convolution: resblock_type
    'ddpm' with fir and resamp_with_conv, progressive 'residual' with fir) slices a tensor with a negative step
    and passes a 4-long stride to conv_transpose2d, so those combinations have no reference and are not tested."""
    conv3x3 = layers.ncsn_conv3x3

    def ncsn_conv3x3(*args, bias=True, **kwargs):
        if kwargs.get("dilation", 1) > 1 and "padding" not in kwargs:
            kwargs["padding"] = kwargs["dilation"]
        conv = conv3x3(*args, bias=True, **kwargs)
        if not bias:
            conv.register_parameter("bias", None)
        return conv
    layers.ncsn_conv3x3 = ncsnv2.ncsn_conv3x3 = ncsnv2.conv3x3 = ncsn_conv3x3

    block_init = layers.ConditionalResidualBlock.__init__

    def conditional_residual_block_init(self, *args, dilation=None, **kwargs):
        block_init(self, *args, dilation=1 if dilation is None else dilation, **kwargs)
    layers.ConditionalResidualBlock.__init__ = conditional_residual_block_init

    ncsn_init = ncsnv2.NCSN.__init__
    conditional_norms = {"InstanceNorm++": normalization.ConditionalInstanceNorm2dPlus}

    def ncsn_init_conditional(self, config):
        get_normalization = ncsnv2.get_normalization
        ncsnv2.get_normalization = lambda config, conditional=False: conditional_norms[config.model.normalization]
        try:
            ncsn_init(self, config)
        finally:
            ncsnv2.get_normalization = get_normalization
    ncsnv2.NCSN.__init__ = ncsn_init_conditional

    functional = torch.nn.functional

    class Functional(types.ModuleType):
        def __getattr__(self, name):
            return getattr(functional, name)

        @staticmethod
        def interpolate(input, size=None, scale_factor=None, mode="nearest", *args, **kwargs):
            if isinstance(scale_factor, str):
                scale_factor, mode = None, scale_factor
            return functional.interpolate(input, size, scale_factor, mode, *args, **kwargs)
    layerspp.F = Functional("torch.nn.functional (shimmed for layerspp)")


def config_names(root: Path) -> list:
    """Their config names (path under configs/ without .py), the default_* bases left out, sorted."""
    names = []
    for path in glob.glob(str(root / "configs" / "**" / "*.py"), recursive=True):
        path = Path(path)
        if path.name.startswith("default_") or path.name == "__init__.py":
            continue
        names.append(path.relative_to(root / "configs").with_suffix("").as_posix())
    return sorted(names)


def their_config(name: str, overrides: dict = None):
    """Their ConfigDict for ``name`` with dotted-key ``overrides`` applied (e.g. {"model.nf": 16})."""
    config = importlib.import_module("configs." + name.replace("/", ".")).get_config()
    for key, value in (overrides or {}).items():
        section, field = key.split(".")
        config[section][field] = value
    if "sde" not in config.training:
        config.training.sde = "vesde"
    return config


def plain_config(config) -> dict:
    """The config as a JSON-ready nested dict: tuples become lists, ``device`` is dropped."""
    def plain(value):
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items() if k not in DROPPED}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(config.to_dict())


def build_their_net(theirs, config):
    """Their network for ``config`` (their ncsn/ncsnv2 read data.channels, which no config sets: added to a copy
    as data.num_channels)."""
    if config.model.name.startswith("ncsn") and config.model.name != "ncsnpp":
        config = copy.deepcopy(config)
        config.data.channels = config.data.num_channels
    torch.manual_seed(SEED)  # their initialisation draws from the global generator
    return theirs.mutils.get_model(config.model.name)(config)


def their_sde(theirs, config):
    """Their SDE and sampling eps, as run_lib.py builds them."""
    m, kind = config.model, config.training.sde.lower()
    if kind == "vpsde":
        return theirs.sde_lib.VPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales), 1e-3
    if kind == "subvpsde":
        return theirs.sde_lib.subVPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales), 1e-3
    if kind == "vesde":
        return theirs.sde_lib.VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales), 1e-5
    raise ValueError(f"training.sde {kind!r}: expected vpsde, subvpsde or vesde")


def _scale_of(tensor: torch.Tensor) -> float:
    """The scale to perturb a tensor at: its own std, or for a constant tensor (zero-initialised last layers,
    unit norm gains) 1/sqrt(fan_in) for weights and 0.1 for vectors."""
    if tensor.numel() > 1:
        std = tensor.float().std().item()
        if std > 1e-6:
            return std
    if tensor.dim() >= 2:
        return 1.0 / math.sqrt(tensor[0].numel())
    return 0.1


@torch.no_grad()
def perturb_(tensors, generator: torch.Generator, amount: float = 1.0) -> None:
    """Add amount · scale · N(0, 1) to each tensor in place (scale from `_scale_of`)."""
    for tensor in tensors:
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32).to(tensor.dtype)
        tensor.add_(amount * _scale_of(tensor) * noise)


def make_checkpoint(theirs, config, net, path: Path, seed: int = SEED, step: int = 1000,
                    optimizer_state: bool = True):
    """Perturb ``net`` in place and write their checkpoint to ``path``; return their EMA object.

    Model weights: each parameter and each buffer but ``sigmas`` perturbed at its own scale, then one step of
    their Adam (losses.get_optimizer) with random gradients, which fills exp_avg/exp_avg_sq as a run's checkpoint
    has them. EMA: their ExponentialMovingAverage of the parameters with requires_grad, shadows perturbed again at
    half the scale."""
    generator = torch.Generator().manual_seed(seed)
    perturb_(list(net.parameters()) + [b for n, b in net.named_buffers() if not n.endswith("sigmas")], generator)
    optimizer = theirs.losses.get_optimizer(config, net.parameters())
    if optimizer_state:
        for p in net.parameters():
            if p.requires_grad:
                p.grad = 1e-3 * torch.randn(p.shape, generator=generator)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    ema = theirs.ema.ExponentialMovingAverage(net.parameters(), decay=config.model.ema_rate)
    ema.num_updates = step
    perturb_(ema.shadow_params, generator, amount=0.5)
    state = {"optimizer": optimizer.state_dict(), "model": torch.nn.DataParallel(net).state_dict(),
             "ema": ema.state_dict(), "step": step}
    torch.save(state, path)
    del state, optimizer
    return ema


def points(theirs, config, n: int, seed: int = SEED):
    """n points (x, t) for their score: t across [eps, 1] (on their grid for discrete models, see the module
    docstring), x ~ their marginal of uniform pixels (in [-1, 1] when data.centered)."""
    sde, eps = their_sde(theirs, config)
    kind, N = config.training.sde.lower(), config.model.num_scales
    generator = torch.Generator().manual_seed(seed)
    if config.training.continuous or kind == "subvpsde":
        t = torch.linspace(eps, 1.0, n)
    elif kind == "vesde":
        i = torch.linspace(0, N - 1, n).round()
        t = 1.0 - i / (N - 1)
    else:
        i = torch.linspace(0, N - 2, n).round()
        t = (i + 0.5) / (N - 1)
    c, s = config.data.num_channels, config.data.image_size
    x0 = torch.rand(n, c, s, s, generator=generator)
    if config.data.centered:
        x0 = 2 * x0 - 1
    mean, std = sde.marginal_prob(x0, t)
    x = mean + std[:, None, None, None] * torch.randn(x0.shape, generator=generator)
    return x, t


class Recorder:
    """Forward pre-hook that keeps the last (x, labels) a network was called with."""

    def __init__(self, net):
        self.args = None
        net.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.args = tuple(a.detach().clone() for a in args)


@torch.no_grad()
def their_outputs(theirs, config, net, x, t, batch: int):
    """Their score at (x, t) in batches; also the labels and raw outputs of their network; seconds per forward."""
    sde, _ = their_sde(theirs, config)
    score_fn = theirs.mutils.get_score_fn(sde, net, train=False, continuous=config.training.continuous)
    recorder = Recorder(net)
    scores, labels, raws, seconds = [], [], [], []
    for i in range(0, len(t), batch):
        start = time.perf_counter()
        scores.append(score_fn(x[i:i + batch], t[i:i + batch]))
        seconds.append(time.perf_counter() - start)
        labels.append(recorder.args[1])
        raws.append(net(*recorder.args))
    return torch.cat(scores), torch.cat(labels), torch.cat(raws), seconds


# --------------------------------------------------------------------------------------------------- our code

OUR_NETS = {"ncsnpp": ("scoresde.nets.ncsnpp", "NCSNpp"), "ddpm": ("scoresde.nets.ddpm", "DDPM"),
            "ncsn": ("scoresde.nets.ncsnv2", "NCSN"), "ncsnv2_64": ("scoresde.nets.ncsnv2", "NCSNv2"),
            "ncsnv2_128": ("scoresde.nets.ncsnv2", "NCSNv2_128"), "ncsnv2_256": ("scoresde.nets.ncsnv2", "NCSNv2_256")}


def have_loader() -> bool:
    return hasattr(sd, "from_score_sde_pytorch")


def our_net_direct(path: Path, plain: dict, ema: bool):
    """Fallback without the loader: our network class from_config, loaded from the checkpoint's state dict."""
    module, name = OUR_NETS[plain["model"]["name"]]
    cls = getattr(importlib.import_module(module), name)
    net = cls.from_config(plain)
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state["model"].items()}
    net.load_state_dict(weights)
    if ema:
        learned = [p for p in net.parameters() if p.requires_grad]
        shadows = state["ema"]["shadow_params"]
        if len(learned) != len(shadows):
            raise RuntimeError(f"{len(shadows)} EMA shadows for {len(learned)} parameters with requires_grad")
        with torch.no_grad():
            for p, s in zip(learned, shadows):
                p.copy_(s)
    return net.eval()


@torch.no_grad()
def our_outputs(model, x, t, batch: int, labels=None):
    """Our score at (x, t) (or, with labels, our raw network at their labels) in batches; seconds per forward."""
    outputs, seconds = [], []
    for i in range(0, len(x), batch):
        start = time.perf_counter()
        second = t[i:i + batch] if labels is None else labels[i:i + batch]
        outputs.append(model(x[i:i + batch], second))
        seconds.append(time.perf_counter() - start)
    return torch.cat(outputs), seconds


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max over samples of max|ours − theirs| / max|theirs|."""
    diff = (ours.double() - theirs.double()).flatten(1).abs().amax(1)
    scale = theirs.double().flatten(1).abs().amax(1).clamp_min(1e-30)
    return (diff / scale).max().item()


def sde_error(our_sde, their, t) -> float:
    """max relative error of our (scale(t), std(t)) against their marginal_prob's mean coefficient and std."""
    mean, std = their.marginal_prob(torch.ones(len(t), 1, 1, 1, dtype=torch.float64), t.double())
    scale = mean.flatten()
    ours_scale, ours_std = our_sde.scale(t.double()), our_sde.std(t.double())
    return max(((ours_scale - scale).abs() / scale.abs()).max().item(),
               ((ours_std - std).abs() / std.abs()).max().item())


# --------------------------------------------------------------------------------------------------- one config

def compare(theirs, label: str, config, config_arg, *, batch: int, n_points: int, workdir: Path,
            use_loader: bool, model_weights: bool = True, optimizer_state: bool = True,
            warmup: bool = False) -> dict:
    """One row of the table for ``config`` (``config_arg`` is what our loader is given: a name or a dict)."""
    row = {"config": label}
    plain = plain_config(config)
    net = build_their_net(theirs, config).eval()
    row["params_theirs"] = sum(p.numel() for p in net.parameters())
    path = workdir / (label.replace("/", "_") + ".pth")
    ema = make_checkpoint(theirs, config, net, path, optimizer_state=optimizer_state)
    x, t = points(theirs, config, n_points)
    if model_weights:
        xm, tm_ = x[:batch], t[:batch]
        model_score, model_labels, model_raw, _ = their_outputs(theirs, config, net, xm, tm_, batch)
    ema.copy_to(net.parameters())
    if warmup:
        their_outputs(theirs, config, net, x[:batch], t[:batch], batch)
    ema_score, ema_labels, ema_raw, seconds = their_outputs(theirs, config, net, x, t, batch)
    row["time_theirs"] = statistics.median(seconds)
    del net, ema
    gc.collect()

    if use_loader:
        try:
            our_sde, model = sd.from_score_sde_pytorch(path, config=config_arg, ema=True)
        except Exception as error:  # keep the network comparison; the row says the loader failed
            row["loader_error"] = f"{type(error).__name__}: {str(error)[:300]}"
            use_loader = False
    if use_loader:
        row["params_ours"] = sum(p.numel() for p in model.parameters())
        if warmup:
            our_outputs(model, x[:batch], t[:batch], batch)
        ours, seconds = our_outputs(model, x, t, batch)
        row["err_ema"] = relative_error(ours, ema_score)
        row["time_ours"] = statistics.median(seconds)
        row["err_sde"] = sde_error(our_sde, their_sde(theirs, config)[0], t)
        if row["err_ema"] > (1e-5 if warmup else 1e-3) and isinstance(getattr(model, "net", None), torch.nn.Module):
            # Tell the network from the wrapper: our raw network at their labels against theirs.
            row["err_net"] = relative_error(our_outputs(model.net, x, t, batch, labels=ema_labels)[0], ema_raw)
        del model
        if model_weights:
            _, model = sd.from_score_sde_pytorch(path, config=config_arg, ema=False)
            row["err_model"] = relative_error(our_outputs(model, xm, tm_, batch)[0], model_score)
            del model
    else:  # our network alone, at their labels
        net = our_net_direct(path, plain, ema=True)
        row["params_ours"] = sum(p.numel() for p in net.parameters())
        ours, seconds = our_outputs(net, x, t, batch, labels=ema_labels)
        row["err_ema"] = row["err_net"] = relative_error(ours, ema_raw)
        row["time_ours"] = statistics.median(seconds)
        del net
        if model_weights:
            net = our_net_direct(path, plain, ema=False)
            row["err_model"] = relative_error(our_outputs(net, xm, tm_, batch, labels=model_labels)[0], model_raw)
            del net
    path.unlink()
    gc.collect()
    return row


def print_row(r) -> None:
    if "error" in r:
        print(f"{r['config']:44s} {r['error']}", flush=True)
        return
    if "loader_error" in r:
        print(f"{r['config']:44s} sd.from_score_sde_pytorch failed, our net compared alone (err net): "
              f"{r['loader_error']}")
    fmt = lambda key, spec: format(r[key], spec) if key in r else "-"  # noqa: E731
    print(f"{r['config']:44s} {fmt('params_theirs', ',d'):>14s} {fmt('params_ours', ',d'):>12s} "
          f"{fmt('err_ema', '.1e'):>9s} {fmt('err_model', '.1e'):>9s} {fmt('err_net', '.1e'):>8s} "
          f"{fmt('err_sde', '.1e'):>8s} {fmt('time_theirs', '.3f'):>9s} {fmt('time_ours', '.3f'):>8s}", flush=True)


def print_table(rows, *, raw: bool):
    what = "raw network outputs at their labels (our nets direct)" if raw else "scores (sd.from_score_sde_pytorch)"
    print(f"\nmax relative error |ours - theirs| / max|theirs| per sample, float32, {what}; seconds per forward")
    header = (f"{'config':44s} {'params theirs':>14s} {'params ours':>12s} {'err ema':>9s} {'err model':>9s} "
              f"{'err net':>8s} {'err sde':>8s} {'s theirs':>9s} {'s ours':>8s}")
    print(header)
    print("-" * len(header))
    if not raw:
        print("(err net: our network alone at their labels against theirs, shown when err ema > 1e-5)")
    for r in rows:
        print_row(r)


def run_rows(theirs, jobs, *, batch, n_points, use_loader, tiny):
    """jobs: (label, config, config_arg); one row each, errors kept as rows."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="score_sde_equivalence_") as tmp:
        for label, config, config_arg in jobs:
            print(f"... {label}", file=sys.stderr, flush=True)
            try:
                rows.append(compare(theirs, label, config, config_arg, batch=batch, n_points=n_points,
                                    workdir=Path(tmp), use_loader=use_loader, warmup=tiny))
            except Exception as error:  # a row per failure: the table is the report
                where = traceback.extract_tb(error.__traceback__)[-1]
                rows.append({"config": label, "error": f"{type(error).__name__}: {str(error)[:150]} "
                                                       f"({Path(where.filename).name}:{where.lineno})"})
            print_row(rows[-1])
    return rows


# --------------------------------------------------------------------------------------------------- tiny variants

NCSNPP_TINY = {"model.nf": 16, "model.ch_mult": (1, 2), "model.num_res_blocks": 1, "model.attn_resolutions": (8,),
               "data.image_size": 16}
DDPM_TINY = {"model.nf": 32, "model.ch_mult": (1, 2), "model.num_res_blocks": 1, "model.attn_resolutions": (8,),
             "data.image_size": 16}  # their DDPM blocks use GroupNorm(32 groups): nf = 32 at least
NCSN_TINY = {"model.nf": 8, "data.image_size": 32}

# name: (their base config, overrides). Together: every NCSNpp option (resblock_type, progressive,
# progressive_input, progressive_combine, fir, embedding_type, attention, skip_rescale, scale_by_sigma, centered,
# nonlinearity, conditional, resamp_with_conv, channels), DDPM, NCSN, NCSNv2 (64, 128, 256 and the 28-pixel
# branch), and each of vpsde / subvpsde / vesde, continuous and not.
TINY = {
    "ncsnpp_vp_cont_ddpmpp": ("vp/cifar10_ddpmpp_continuous", {**NCSNPP_TINY}),
    "ncsnpp_vp_disc_ddpmpp": ("vp/cifar10_ddpmpp", {**NCSNPP_TINY}),
    "ncsnpp_subvp_cont_fir_inres": ("subvp/cifar10_ncsnpp_continuous", {**NCSNPP_TINY}),
    "ncsnpp_subvp_disc_ddpmpp": ("subvp/cifar10_ddpmpp_continuous", {**NCSNPP_TINY, "training.continuous": False}),
    "ncsnpp_ve_cont_fourier_sbs": ("ve/cifar10_ncsnpp_continuous", {**NCSNPP_TINY}),
    "ncsnpp_ve_disc_positional_sbs": ("ve/cifar10_ncsnpp", {**NCSNPP_TINY}),
    "ncsnpp_ve_cont_outskip_inskip": ("ve/celebahq_256_ncsnpp_continuous",
                                      {**NCSNPP_TINY, "model.fourier_scale": 4}),
    "ncsnpp_ddpmblock_res_inskip_cat": ("vp/cifar10_ncsnpp_continuous", {
        **NCSNPP_TINY, "model.resblock_type": "ddpm", "model.fir": False, "model.progressive": "residual",
        "model.progressive_input": "input_skip", "model.progressive_combine": "cat", "model.skip_rescale": False,
        "model.nonlinearity": "elu", "data.centered": False}),
    "ncsnpp_biggan_nofir_res_inskip_cat": ("ve/cifar10_ncsnpp_continuous", {
        **NCSNPP_TINY, "model.fir": False, "model.progressive": "residual",
        "model.progressive_input": "input_skip", "model.progressive_combine": "cat", "model.nonlinearity": "relu",
        "model.attn_resolutions": (), "model.scale_by_sigma": False, "model.conditional": False}),
    "ncsnpp_ddpmblock_fir_outskip_inres": ("subvp/cifar10_ncsnpp_continuous", {
        **NCSNPP_TINY, "model.resblock_type": "ddpm", "model.progressive": "output_skip",
        "model.progressive_input": "residual", "model.nonlinearity": "lrelu", "model.resamp_with_conv": False,
        "model.scale_by_sigma": True, "model.skip_rescale": False, "data.num_channels": 1}),
    "ncsnpp_ddpmblock_nofir_outskip": ("vp/cifar10_ddpmpp", {
        **NCSNPP_TINY, "model.resblock_type": "ddpm", "model.fir": False, "model.progressive": "output_skip",
        "model.progressive_input": "residual", "model.embedding_type": "positional", "data.centered": False}),
    "ddpm_vp_disc": ("vp/ddpm/cifar10", {**DDPM_TINY}),
    "ddpm_vp_cont": ("vp/ddpm/cifar10_continuous", {**DDPM_TINY, "model.resamp_with_conv": False}),
    "ddpm_subvp_cont": ("subvp/cifar10_ddpm_continuous", {**DDPM_TINY, "data.num_channels": 1}),
    "ddpm_ve_disc_sbs": ("ve/cifar10_ddpm", {**DDPM_TINY}),
    "ncsn_ve_disc": ("ve/ncsn/cifar10", {**NCSN_TINY}),
    "ncsn_ve_disc_28": ("ve/ncsn/cifar10", {**NCSN_TINY, "data.image_size": 28, "data.num_channels": 1}),
    "ncsnv2_64_ve_disc": ("ve/ncsnv2/cifar10", {**NCSN_TINY}),
    "ncsnv2_64_ve_disc_28": ("ve/ncsnv2/celeba", {**NCSN_TINY, "data.image_size": 28, "data.num_channels": 1}),
    "ncsnv2_128_ve_disc": ("ve/ncsnv2/bedroom", {"model.nf": 4, "data.image_size": 96,
                                                 "training.continuous": False}),
    "ncsnv2_256_ve_disc": ("ve/ncsnv2/bedroom", {"model.name": "ncsnv2_256", "model.nf": 4,
                                                 "data.image_size": 160, "training.continuous": False}),
}

# A handful of the variants above, chosen to cover every option and SDE case between them, small enough to commit
# (about 3.7 MB in all): nf = 4 (NCSN++), 2 (NCSN, NCSNv2), 32 at one level (DDPM: GroupNorm with 32 groups);
# 8 px (16 for NCSN/NCSNv2, which downsample 3 times). Only the first keeps Adam's moments (one step); the others
# keep a fresh optimizer's state_dict (param_groups, empty state), which halves their size.
FIXTURE_TINY = {"model.nf": 4, "data.image_size": 8, "model.attn_resolutions": (4,)}
FIXTURE_VARIANTS = {
    "ncsnpp_vp_disc_ddpmpp": {},
    "ncsnpp_subvp_cont_fir_inres": {},
    "ncsnpp_ve_cont_outskip_inskip": {},
    "ncsnpp_ve_disc_positional_sbs": {},
    "ncsnpp_ddpmblock_res_inskip_cat": {},
    "ncsnpp_biggan_nofir_res_inskip_cat": {"model.attn_resolutions": ()},
    "ncsnpp_ddpmblock_fir_outskip_inres": {},
    "ddpm_vp_cont": {"model.nf": 32, "model.ch_mult": (1,), "model.attn_resolutions": (8,)},
    "ncsn_ve_disc": {"data.image_size": 16, "model.nf": 2},
    "ncsnv2_64_ve_disc": {"data.image_size": 16, "model.nf": 2},
}
FIXTURE_WITH_OPTIMIZER_STATE = ("ncsnpp_vp_disc_ddpmpp",)


def tiny_config(name: str, extra: dict = None):
    base, overrides = TINY[name]
    return their_config(base, {**overrides, **(extra or {})})


# --------------------------------------------------------------------------------------------------- fixtures

def make_fixtures(theirs, out: Path, n_points: int = 4) -> None:
    """Write, per fixture variant: <name>.pth (their checkpoint), <name>.json (their config, every field) and
    <name>.pt (x, t, score_ema, score_model: their outputs)."""
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, extra in FIXTURE_VARIANTS.items():
        config = tiny_config(name, {**FIXTURE_TINY, **extra})
        net = build_their_net(theirs, config).eval()
        params = sum(p.numel() for p in net.parameters())
        ema = make_checkpoint(theirs, config, net, out / f"{name}.pth",
                              optimizer_state=name in FIXTURE_WITH_OPTIMIZER_STATE)
        x, t = points(theirs, config, n_points)
        score_model = their_outputs(theirs, config, net, x, t, n_points)[0]
        ema.copy_to(net.parameters())
        score_ema = their_outputs(theirs, config, net, x, t, n_points)[0]
        torch.save({"x": x, "t": t, "score_ema": score_ema, "score_model": score_model}, out / f"{name}.pt")
        (out / f"{name}.json").write_text(json.dumps(plain_config(config), indent=1, sort_keys=True) + "\n")
        size = sum((out / f"{name}{ext}").stat().st_size for ext in (".pth", ".pt", ".json"))
        total += size
        print(f"{name:36s} {params:>8,d} params {size / 1e3:8.1f} kB  max|score_ema| {score_ema.abs().max():.3g}")
    print(f"total {total / 1e6:.2f} MB in {out}")


# --------------------------------------------------------------------------------------------------- speed

def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def peak_memory(device: str, box: dict):
    """Peak memory of the block in MB: CUDA's max allocated, or on CPU the peak RSS growth, sampled every 5 ms
    by a thread (with the fixed mmap threshold set in `main`)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        yield
        torch.cuda.synchronize()
        box["mb"] = (torch.cuda.max_memory_allocated() - start) / 2**20
        return
    import threading
    start, peak, stop = _rss_mb(), [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        box["mb"] = max(peak[0], _rss_mb()) - start


def timed(fns, device: str, repeats: int):
    """Median seconds and peak memory (MB, max over runs) of each function in ``fns`` over ``repeats`` runs after
    one warm-up each; the functions take turns, so that a change in the machine's load hits them alike."""
    for fn in fns:
        fn()
    seconds, memory = [[] for _ in fns], [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            box = {}
            gc.collect()
            with peak_memory(device, box):
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                seconds[i].append(time.perf_counter() - start)
            memory[i].append(box["mb"])
    return [(statistics.median(s), max(m)) for s, m in zip(seconds, memory)]


def speed(theirs, name: str, device: str, batch: int, repeats: int, likelihood: bool = False) -> None:
    """Training step and forward, ours vs theirs, on the same weights."""
    config = tiny_config(name) if name in TINY else their_config(name)
    config_arg = plain_config(config) if name in TINY else name
    with tempfile.TemporaryDirectory(prefix="score_sde_speed_") as tmp:
        path = Path(tmp) / "checkpoint.pth"
        net = build_their_net(theirs, config)
        ema = make_checkpoint(theirs, config, net, path)
        ema.copy_to(net.parameters())
        net = net.to(device)
        sde, eps = their_sde(theirs, config)
        if have_loader():
            our_sde, model = sd.from_score_sde_pytorch(path, config=config_arg, ema=True, map_location=device)
            how = "sd.from_score_sde_pytorch"
        else:
            model, our_sde, how = our_net_direct(path, plain_config(config), ema=True).to(device), None, "net direct"
    generator = torch.Generator(device=device).manual_seed(SEED)
    x0 = torch.rand(batch, config.data.num_channels, config.data.image_size, config.data.image_size,
                    generator=generator, device=device)
    x0 = 2 * x0 - 1 if config.data.centered else x0
    _, std = sde.marginal_prob(x0, torch.full((batch,), 0.5, device=device))
    x = x0 + std[:, None, None, None] * torch.randn(x0.shape, generator=generator, device=device)
    t = torch.linspace(eps, 1.0, batch, device=device)

    score_fn = theirs.mutils.get_score_fn(sde, net, train=False, continuous=config.training.continuous)
    their_loss = theirs.losses.get_sde_loss_fn(sde, train=True, reduce_mean=config.training.reduce_mean,
                                               continuous=config.training.continuous,
                                               likelihood_weighting=config.training.likelihood_weighting)
    their_optimizer = theirs.losses.get_optimizer(config, net.parameters())
    our_optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr, betas=(config.optim.beta1, 0.999),
                                     eps=config.optim.eps)

    def their_step():
        their_optimizer.zero_grad(set_to_none=True)
        their_loss(net, x0).backward()
        their_optimizer.step()

    if our_sde is not None:                       # their objective exactly (their data pipeline flips, not their loss)
        our_loss = sd.zoo.ScoreSDELoss.from_config(config_arg)
        our_loss.random_flip = False

    def our_step():
        our_optimizer.zero_grad(set_to_none=True)
        model.train()
        our_loss(our_sde, model, x0, generator=generator).backward()
        our_optimizer.step()
        model.eval()

    def their_forward():
        with torch.no_grad():
            score_fn(x, t)

    def our_forward():
        with torch.no_grad():
            model(x, t) if our_sde is not None else model(x, t * 999)

    rows = [("forward (score)", their_forward, our_forward)]
    if our_sde is not None:
        rows.insert(0, ("training step", their_step, our_step))
    print(f"\n{name}, batch {batch} at {config.data.image_size}x{config.data.image_size}, {device}, "
          f"torch threads {torch.get_num_threads()}, median of {repeats} taking turns (ours via {how}), load average "
          f"{os.getloadavg()[0]:.1f} at start")
    header = f"{'':18s} {'s theirs':>9s} {'s ours':>9s} {'ratio':>6s} {'MB theirs':>10s} {'MB ours':>9s} {'ratio':>6s}"
    print(header)
    print("-" * len(header))
    for label, theirs_fn, ours_fn in rows:
        (s_theirs, mb_theirs), (s_ours, mb_ours) = timed((theirs_fn, ours_fn), device, repeats)
        print(f"{label:18s} {s_theirs:9.3f} {s_ours:9.3f} {s_ours / s_theirs:6.2f} {mb_theirs:10.0f} "
              f"{mb_ours:9.0f} {mb_ours / max(mb_theirs, 1e-9):6.2f}", flush=True)
    if likelihood and our_sde is not None:
        likelihood_speed(theirs, config, net, model, x0, device)


def likelihood_speed(theirs, config, net, model, x0, device: str) -> None:
    """One bits/dim solve of the same 8-bit images each way, their protocol: their ``likelihood.get_likelihood_fn``
    (scipy RK45 on the host, rtol = atol = 1e-5, eps = 1e-5, one Rademacher probe) against ours
    (`scoresde.zoo.score_sde_pytorch.bits_per_dim`: torchdiffeq dopri5 on the device, same settings, integrated in t
    as theirs, and in σ̃). Seconds, NFE and the mean bits/dim; the dequantization and probe draws differ."""
    lib = importlib.import_module("likelihood")
    their_sde_obj, _ = their_sde(theirs, config)
    pixels = torch.round((x0 + 1) / 2 * 255 if config.data.centered else x0 * 255).clamp(0, 255)
    generator = torch.Generator().manual_seed(SEED)
    u = torch.rand(pixels.shape, generator=generator)
    data = (pixels.cpu() + u) / 256
    data = (2 * data - 1 if config.data.centered else data).to(device)
    inverse_scaler = (lambda v: (v + 1) / 2) if config.data.centered else (lambda v: v)
    fn = lib.get_likelihood_fn(their_sde_obj, inverse_scaler)
    torch.manual_seed(SEED)
    start = time.perf_counter()
    bpd, _, nfe = fn(net.eval(), data)
    their_time = time.perf_counter() - start
    levels = sd.data.Dataset(pixels.cpu() / 255 * 2 - 1, data_range=(-1.0, 1.0), levels=256)
    rows = [("theirs (RK45, t)", their_time, nfe, float(bpd.mean()))]
    for variable in ("t", "sigma"):
        start = time.perf_counter()
        res = sd.zoo.score_sde_pytorch.bits_per_dim(model, levels, generator=torch.Generator().manual_seed(SEED),
                                                    device=device, time_variable=variable)
        rows.append((f"ours (dopri5, {variable})", time.perf_counter() - start, res.nfe // 1, res.bpd))
    print(f"\nbits/dim solve, batch {x0.shape[0]}, one run each (their protocol; different dequantization/probe draws)")
    print(f"{'':22s} {'s':>9s} {'NFE':>6s} {'bits/dim':>9s}")
    for label, seconds, n, value in rows:
        print(f"{label:22s} {seconds:9.2f} {n:6d} {value:9.4f}", flush=True)


# --------------------------------------------------------------------------------------------------- main

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--score-sde-pytorch", type=Path, default=DEFAULT_ROOT, help="their checkout")
    parser.add_argument("--configs", nargs="*", help="their config names (default: all) or, with --tiny, variants")
    parser.add_argument("--tiny", action="store_true", help="small variants covering every option")
    parser.add_argument("--skip-high-res", action="store_true", help="leave out the 64-1024 px configs")
    parser.add_argument("--make-fixtures", nargs="?", const=FIXTURES, type=Path, metavar="DIR")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--likelihood", action="store_true", help="--speed: also one bits/dim solve each way")
    parser.add_argument("--speed-config", default="vp/cifar10_ddpmpp_continuous", help="a config or tiny variant")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=None, help="default 2 (1 above 64 px; 8 with --speed)")
    parser.add_argument("--points", type=int, default=4, help="(x, t) points per config (EMA weights)")
    parser.add_argument("--repeats", type=int, default=5, help="--speed: runs per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nets", action="store_true", help="compare our nets directly even if the loader exists")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    theirs = import_theirs(args.score_sde_pytorch.resolve())
    use_loader = have_loader() and not args.nets

    if args.make_fixtures:
        make_fixtures(theirs, args.make_fixtures)
        return
    if args.speed:
        if args.device == "cpu" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            # Fixed glibc mmap threshold: every large tensor is mmapped and unmapped on free, so the RSS follows
            # live memory and its peak measures a step (with the default dynamic threshold freed blocks stay).
            os.execve(sys.executable, [sys.executable, *sys.argv],
                      {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
        speed(theirs, args.speed_config, args.device, args.batch or 8, args.repeats, args.likelihood)
        return
    print("their code is run with these shims (see _shim):\n- " + "\n- ".join(SHIMS), file=sys.stderr)
    print_table([], raw=not use_loader)
    if args.tiny:
        names = args.configs or list(TINY)
        jobs = []
        for name in names:
            config = tiny_config(name)
            jobs.append((name, config, plain_config(config)))
        rows = run_rows(theirs, jobs, batch=args.batch or 2, n_points=args.points, use_loader=use_loader, tiny=True)
    else:
        names = args.configs or config_names(args.score_sde_pytorch)
        if args.skip_high_res:
            names = [n for n in names if "cifar10" in n]
        rows = []
        for name in names:
            if name in KNOWN:
                print(f"note {name}: {KNOWN[name]}", file=sys.stderr)
            config, config_arg, label = their_config(name), name, name
            if name == "ve/ncsnv2/bedroom":  # their continuous score fails (see KNOWN): compare as discrete
                config = their_config(name, {"training.continuous": False})
                config_arg, label = plain_config(config), f"{name} (continuous=False)"
            batch = args.batch or (2 if config.data.image_size <= 64 else 1)
            n_points = args.points if config.data.image_size <= 64 else 2
            rows += run_rows(theirs, [(label, config, config_arg)], batch=batch, n_points=max(n_points, batch),
                             use_loader=use_loader, tiny=False)
    print_table(rows, raw=not use_loader)


if __name__ == "__main__":
    main()
