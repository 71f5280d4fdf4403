"""The ``scoresde`` command: train, sample, edit, likelihood, inpaint, compare, demo, fid-stats, evaluate.

    scoresde train --out runs/8g --steps=2000 --sde.name=subvp
    scoresde sample --checkpoint runs/8g/checkpoint.pt --sampler heun --steps=18 --n 2000
    scoresde sample --checkpoint runs/cond/checkpoint.pt --cond y.npy --guidance 2 --threshold dynamic:0.995
    scoresde edit --checkpoint runs/digits/checkpoint.pt --input photos/ --strength 0.5 --out edited
    scoresde likelihood --checkpoint runs/8g/checkpoint.pt --n 500
    scoresde inpaint --checkpoint runs/digits/checkpoint.pt --mask random:0.5 --method repaint --steps=50
    scoresde compare --oracle eight_gaussians --samplers heun:steps=18 dpm_solver:steps=20,order=3
    scoresde demo
    scoresde fid-stats --data.name=cifar10 --data.path=DIR --out cifar10.npz
    scoresde evaluate --checkpoint runs/cifar --seeds 0-49999 --sampler heun --steps=18 --reference cifar10.npz

Errors (bad paths, unknown names, wrong config keys) print one line naming the offending value and the valid
choices and exit with status 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import time
import zipfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml

from .._utils import check_device
from ..data import DATASETS, Dataset, has_split_folders, load as load_data, resolve_name
from ..evaluation.compare import compare_samplers
from ..evaluation.plot import figure, image_grid, save_samples
from ..guidance import classifier_free_guidance, conditional_score, unconditional_score
from ..guidance.condition import Cond, call_model, check_cond, cond_to, index_rows, label_count, model_null
from ..inverse import INVERSE_METHODS, solve_inverse
from ..inverse.measurement import LinearMeasurement, Mask
from ..likelihood import DIVERGENCES, evaluate_likelihood
from ..nets import NETS
from ..parameterization import PARAMETERIZATIONS
from ..sampling import SAMPLERS, ClipThreshold, DynamicThreshold, sdedit
from ..sde import SDES
from ..training import Trainer, TrainingInterrupted
from ..training.config import RESUMABLE_FIELDS
from ..training.checkpoint import read_weights
from ..training.distributed import DistributedContext, exit_process
from ..zoo import edm_training
from ..zoo.score_sde_pytorch import bits_per_dim as zoo_bits_per_dim, from_score_sde_pytorch, run_sections
from .config import (SAMPLE_SHAPE_KEY, ConfigError, RunConfig, build_data, build_evaluation_data, build_loss,
                     build_model, build_sampler,
                     build_sde, default_device, describe_keys, load_config, parse_overrides, parse_value, save_config)
from .demo import run_demo
from .evaluate import SEEDINGS
from .runs import CONFIG_NAME, load, read_run


# -- shared pieces -------------------------------------------------------------------------------------------
def _parse_sampler_spec(spec: str) -> Tuple[str, str, Dict[str, Any]]:
    """"heun:steps=18,churn=0.5" → ("heun steps=18 churn=0.5", "heun", {"steps": 18, "churn": 0.5}).

    A sampler named by import path keeps its colon: "mypkg.samplers:Mine:steps=4".
    """

    head, sep, rest = spec.rpartition(":")
    if sep and ("=" in rest or head in SAMPLERS):
        name = head
    else:
        name, rest = spec, ""
    options = {}
    for item in filter(None, rest.split(",")):
        if "=" not in item:
            raise ConfigError(f"sampler option {item!r} in {spec!r} must look like key=value")
        key, value = item.split("=", 1)
        options[key] = parse_value(value)
    label = name + ("" if not options else " " + " ".join(f"{k}={v}" for k, v in options.items()))
    return label, name, options


# -- subcommands ---------------------------------------------------------------------------------------------
#: Train settings that may change when a run is resumed: the bookkeeping (length, frequencies, device) and the
#: optimisation settings of `scoresde.training.config.RESUMABLE_FIELDS` (lr, batch_size, …; the Trainer logs a
#: change of those with its step). Everything else (data, SDE, architecture, loss) must match the run's config.yaml.
RESUMABLE = ("steps", "log_every", "sample_every", "num_samples", "eval_every", "num_eval", "eval_rtol", "eval_atol",
             "checkpoint_every", "checkpoint_seconds", "progress", "device", "out_dir") + RESUMABLE_FIELDS


def _device(name: Optional[str]) -> str:
    """A device the machine has: ``name`` checked (default: cuda when available, else cpu)."""
    if name is None:
        return default_device()
    try:
        check_device(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return str(name)


def _output_folder(path: str, what: str = "--out") -> str:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{what} {path!r} is an existing file, not a folder")
    return path


def _resumed_config(out: str, args, overrides) -> Optional[RunConfig]:
    """The run's own config.yaml with the allowed overrides applied (None when OUT holds no run to resume)."""
    config_path = os.path.join(out, CONFIG_NAME)
    if not (os.path.isfile(os.path.join(out, "checkpoint.pt")) and os.path.isfile(config_path)):
        return None
    run, _, _ = read_run(os.path.join(out, "checkpoint.pt"))
    wanted = load_config(args.config, overrides, base=run.to_dict())
    before, after = run.to_dict(), wanted.to_dict()
    changed = [f"{section}.{key}" for section in set(after) | set(before)
               for key in set(before.get(section, {})) | set(after.get(section, {}))
               if before.get(section, {}).get(key) != after.get(section, {}).get(key)
               and not (section == "train" and key in RESUMABLE)]
    if changed:
        raise ConfigError(f"--resume continues the run in {out} with its own config.yaml; these settings differ "
                          f"from it and cannot change: {', '.join(sorted(changed))} (only train."
                          f"{', train.'.join(RESUMABLE)} may; start a new run with another --out for the rest)")
    return wanted


def _show_value(value) -> str:
    """A setting as the resume line shows it (0.0005, [0.9,0.99], None)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(_show_value, value)) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def cmd_train(args, overrides) -> int:

    base = None
    if args.preset is not None:
        try:
            base = (edm_training.run_sections(args.preset) if args.preset.startswith("edm/")
                    else run_sections(args.preset))
        except ValueError as err:
            raise ConfigError(f"--preset: {err}") from None
    if args.resume and args.overwrite:
        raise ConfigError("give --resume or --overwrite, not both")
    # A resumed run's overrides are checked against its own config.yaml, not against the defaults.
    resumed = _resumed_config(_output_folder(args.out), args, overrides) if args.resume and args.out else None
    cfg = resumed or load_config(args.config, overrides, base=base)
    default_out = os.path.join("runs", "-".join(str(getattr(cfg, s)["name"]).split(":")[-1] for s in ("data", "sde")))
    out = _output_folder(args.out or cfg.train.out_dir or default_out)
    checkpoint = os.path.join(out, "checkpoint.pt")
    if os.path.isfile(checkpoint) and not (args.resume or args.overwrite):
        raise ConfigError(f"{out} already holds a run (checkpoint.pt): pass --resume to continue it, --overwrite to "
                          f"replace it, or another --out")
    if args.resume and resumed is None:
        cfg = _resumed_config(out, args, overrides) or cfg
    cfg.train.out_dir = out
    cfg.train.device = _device(cfg.train.device)
    dist = DistributedContext.from_environment(cfg.train.device)
    cfg.train.device = dist.device or cfg.train.device
    train_data = build_data(cfg, "train")
    try:
        test_data = build_data(cfg, "test")
    except ConfigError as err:
        if "no test split" not in str(err):
            raise
        test_data = None                          # a file without a held-out part: train without evaluation
        if dist.is_main:
            print(f"note: {err}; training without held-out evaluation")
    shape = tuple(train_data.x.shape[1:])
    sde = build_sde(cfg)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, sde, shape)
    if dist.enabled:
        torch.manual_seed(cfg.train.seed + dist.rank)  # model randomness (dropout) differs per rank
    if args.overwrite and dist.is_main:
        for name in ("checkpoint.pt", "metrics.jsonl"):
            if os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    trainer = Trainer(model, sde, train_data, cfg.train, eval_data=test_data, resume=args.resume,
                      distributed=dist, loss_fn=build_loss(cfg))
    if dist.is_main:                              # checked first (the checkpoint loaded), written after
        save_config(cfg, os.path.join(out, CONFIG_NAME), extra={SAMPLE_SHAPE_KEY: list(shape)})
    if trainer.global_step and dist.is_main:
        changed = "".join(f", {k} {_show_value(old)} -> {_show_value(new)}"
                          for k, (old, new) in trainer.resume_changes.items())
        print(f"resumed from {trainer.last_checkpoint} at step {trainer.global_step}"
              + (f"; from this step on{changed[1:]}" if changed else ""))
    if trainer.global_step >= cfg.train.steps:
        if dist.is_main:
            print(f"scoresde train: nothing to do: the run in {out} is at step {trainer.global_step} >= --steps="
                  f"{cfg.train.steps}; raise --steps to train further", file=sys.stderr)
        dist.close()
        return 0
    try:
        trainer.train()
    except TrainingInterrupted as stop:
        if dist.is_main:
            print(f"scoresde train: {stop}", file=sys.stderr)
        dist.close()
        return 128 + int(stop.signal)
    if dist.is_main:
        last = trainer.history[-1] if trainer.history else {}
        print(f"trained {trainer.global_step} steps; last record: {json.dumps(last)}")
        print(f"outputs in {out}")
    dist.close()
    return 0


def _label_choice(value: Optional[str], num_classes: Optional[int], allow_all: bool = True) -> Optional[Any]:
    """--label: None, "all", or a class index checked against the model's classes."""
    if value is None:
        return None
    if num_classes is None:
        raise ConfigError("--label needs a class-conditional model (trained with --model.num_classes=K); this "
                          "checkpoint's model has no classes (it is unconditional, or conditioned on vectors or "
                          "images: sample those with --cond FILE)")
    if allow_all and value == "all":
        return "all"
    try:
        label = int(value)
    except ValueError:
        raise ConfigError(f"--label must be a class index in 0 … {num_classes - 1}"
                          + (" or 'all'" if allow_all else "") + f"; got {value!r}") from None
    if not 0 <= label < num_classes:
        raise ConfigError(f"--label must be a class index in 0 … {num_classes - 1}; got {label}")
    return label


# -- conditions (--cond, --guidance) and thresholds (--threshold) of sample and edit ------------------------------
#: The forms --threshold accepts, shown when a spec is malformed.
_THRESHOLD_FORMS = ("dynamic:RATIO[:MAX] (Imagen's dynamic thresholding, e.g. dynamic:0.995 or dynamic:0.995:1.0) "
                    "or clip:MAX (e.g. clip:1.0)")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _threshold_samplers() -> List[str]:
    """The registered samplers that form an x̂_0 prediction and so take ``threshold=``."""
    return [name for name in SAMPLERS.names() if getattr(SAMPLERS.get(name)[0], "takes_threshold", False)]


def _threshold(spec: Optional[str], sampler: str):
    """--threshold: ``dynamic:RATIO[:MAX]`` → `DynamicThreshold`, ``clip:MAX`` → `ClipThreshold` (None: none),
    checked against the sampler (one that forms no x̂_0 prediction refuses it, listing those that take it)."""
    if spec is None:
        return None
    kind, _, rest = spec.partition(":")
    values = rest.split(":") if rest else []
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        numbers = None
    if numbers is None or kind not in ("dynamic", "clip") or len(numbers) > (2 if kind == "dynamic" else 1):
        raise ConfigError(f"--threshold must be {_THRESHOLD_FORMS}; got {spec!r}")
    try:
        threshold = DynamicThreshold(*numbers) if kind == "dynamic" else ClipThreshold(*numbers)
    except ValueError as err:
        raise ConfigError(f"--threshold {spec!r}: {err}") from None
    try:
        target, _ = SAMPLERS.get(sampler)
    except ValueError:
        return threshold                            # build_sampler names the valid samplers
    if not getattr(target, "takes_threshold", False):
        raise ConfigError(f"--threshold: sampler {sampler!r} forms no x0 prediction to threshold; the samplers that "
                          f"take --threshold are {', '.join(_threshold_samplers())}")
    return threshold


def _model_dtype(model) -> torch.dtype:
    first = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return torch.float32 if first is None or not first.is_floating_point() else first.dtype


def _cond_leaves(cond, keys: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...], Any]]:
    """(keys, value) of every entry of a condition: () for a tensor, ("image",) for a dict's entry."""
    if isinstance(cond, Mapping):
        for k, v in cond.items():
            yield from _cond_leaves(v, keys + (k,))
    else:
        yield keys, cond


def _where(keys: Tuple[str, ...]) -> str:
    return "".join(f"[{k!r}]" for k in keys)


def _expected_shape(null, rows, shape: Tuple[int, ...]) -> str:
    """The shape of ``rows`` conditions as far as the model's null ∅ says: (rows,) for labels, (rows, D) for a
    (D,) null, (rows, C', H, W) for an image null (C', 1, 1), (rows, ...) otherwise; a dict entry by entry."""
    if isinstance(null, Mapping):
        return "{" + ", ".join(f"{k!r}: {_expected_shape(v, rows, shape)}" for k, v in null.items()) + "}"
    if isinstance(null, int) and not isinstance(null, bool):
        return f"({rows},) class indices in 0 … {null - 1}"
    if torch.is_tensor(null) and null.dim() == 1:
        return f"({rows}, {null.shape[0]})"
    if torch.is_tensor(null) and null.dim() == len(shape) == 3 and tuple(null.shape[1:]) == (1, 1):
        return f"({rows}, {int(null.shape[0])}, {int(shape[1])}, {int(shape[2])})"
    return f"({rows}, ...)"


def _null_at(null, keys: Tuple[str, ...]):
    """The part of the model's null ∅ that a condition entry at ``keys`` stands beside (None when unknown)."""
    for k in keys:
        if not isinstance(null, Mapping):
            return null if k == "cond" else None      # {"cond": c} for a net whose cond is the tensor null
        null = null.get(k)
    if isinstance(null, Mapping) and not keys:
        return null.get("cond")                       # a tensor is the net's positional cond
    return null


def _read_cond(path: str) -> Cond:
    """--cond FILE: a .npy array, or a .pt file holding a tensor or a (nested) dict of tensors, read with
    ``torch.load(weights_only=True)``; anything else is a ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError(f"--cond: no such file {path!r} (give a .npy array or a .pt tensor / dict of tensors)")
    if path.endswith(".npy"):
        try:
            cond = torch.from_numpy(np.asarray(np.load(path, allow_pickle=False), order="C"))
        except (OSError, ValueError, TypeError, EOFError) as err:
            raise ConfigError(f"--cond: cannot read {path!r} as a .npy array: {_first_line(err)}") from None
    elif path.endswith((".pt", ".pth")):
        try:
            cond = read_weights(path, map_location="cpu", what="condition file")
        except ValueError as err:
            raise ConfigError(f"--cond: {_first_line(err)}") from None
    else:
        raise ConfigError(f"--cond {path!r}: give a .npy file (one array) or a .pt file (a tensor or a dict of "
                          f"tensors, saved with torch.save)")
    if isinstance(cond, Mapping) and not cond:
        raise ConfigError(f"--cond {path!r} holds an empty dict; give a tensor or a dict of tensors")
    for keys, value in _cond_leaves(cond):
        if not torch.is_tensor(value) or any(not isinstance(k, str) for k in keys):
            raise ConfigError(f"--cond {path!r} holds {type(value).__name__} at {_where(keys) or 'its top'}; a "
                              f".pt condition file holds a tensor or a dict of tensors with string keys")
    return cond


def _unconditional_score(model, shape: Tuple[int, ...], need: str):
    """`scoresde.guidance.unconditional_score`; a null whose batch shape cannot be known (an image's, a dict's) is a
    ConfigError naming what the model is conditioned on and ending with ``need`` (what to pass instead)."""
    try:
        return unconditional_score(model)
    except ValueError:
        raise ConfigError(f"this model is conditioned on {_expected_shape(model_null(model), 'B', shape)} and its "
                          f"null condition ∅ has no batch shape to use without one: {need}") from None


def _cond_score(run, path: Optional[str], guidance: Optional[float], n: int, device: str, what: str):
    """(score, cond, description) for --cond FILE and --guidance W on ``n`` samples (``what``: "samples (--n N)").

    Without FILE: the unconditional score (`_unconditional_score`). With it: the conditions read (`_read_cond`),
    each entry (1, ...) or (n, ...) (else a ConfigError naming the expected shape), cast to the model's dtype and
    device, checked by one network call on the first row, and bound (`conditional_score`), or guided with weight W
    towards them from the model's null (`classifier_free_guidance`)."""
    model, shape = run.model, tuple(run.sample_shape)
    null = model_null(model)
    if path is None:
        if guidance is not None:
            raise ConfigError("--guidance needs --cond FILE (the conditions to guide towards)")
        return _unconditional_score(model, shape, "pass the conditions, --cond FILE"), None, ""
    if null is None:
        raise ConfigError("--cond needs a conditional model (trained with --model.cond_dim=D and --data.cond_key, "
                          "or --model.num_classes=K); this checkpoint's model is unconditional")
    cond = _read_cond(path)
    for keys, value in _cond_leaves(cond):
        if value.dim() == 0 or value.shape[0] not in (1, n):
            got = "a 0-d array" if value.dim() == 0 else f"{value.shape[0]} rows, shape {tuple(value.shape)}"
            leaf = _null_at(null, keys)
            raise ConfigError(f"--cond {path!r}{_where(keys)} has {got}, but there are {n} {what}: it must have "
                              f"shape {_expected_shape(leaf, n, shape)} (row i for sample i) or "
                              f"{_expected_shape(leaf, 1, shape)} (one condition shared by all)")
    cond = cond_to(cond, device, _model_dtype(model))
    expected = _expected_shape(null, n, shape)
    expected += "" if n == 1 or expected == f"({n}, ...)" else f" or {_expected_shape(null, 1, shape)}"
    try:
        check_cond(cond, n, model=model, num_classes=label_count(model), device=device,
                   null_allowed=guidance is None)
        probe = torch.zeros((1,) + shape, device=device, dtype=_model_dtype(model))
        t = torch.full((1,), 0.5 * float(run.sde.T), device=device, dtype=probe.dtype)
        with torch.no_grad():
            call_model(model, probe, t, index_rows(cond, slice(0, 1)))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"--cond {path!r} does not fit the model (it takes {expected}): {_first_line(err)}") from None
    rows = "one row per sample" if all(v.shape[0] == n for _, v in _cond_leaves(cond)) and n > 1 else (
        "one row shared by all" if n > 1 else "one row")
    description = f", cond {os.path.basename(path)} ({rows})"
    if guidance is None:
        return conditional_score(model, cond), cond, description
    try:
        score = classifier_free_guidance(model, cond, scale=guidance)      # ∅: the model's null_cond
        with torch.no_grad():                                               # its null fits cond: one row tried
            classifier_free_guidance(model, index_rows(cond, slice(0, 1)), scale=guidance)(probe, t)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"--guidance: {err}") from None
    return score, cond, description + f", guidance {guidance:g}"


def _cond_arrays(cond, n: int) -> Dict[str, np.ndarray]:
    """The conditions as saved next to the samples: "cond" (a tensor) or "cond_KEY" (a dict's entries), n rows."""
    if cond is None:
        return {}
    return {"_".join(("cond",) + keys): value.expand(n, *value.shape[1:]).detach().cpu().numpy()
            for keys, value in _cond_leaves(cond)}


def cmd_sample(args, overrides) -> int:
    """Sample a run: unconditionally, given a class (--label) or conditions (--cond FILE), optionally guided
    (--guidance) and with the x̂_0 prediction thresholded (--threshold)."""
    device = _device(args.device)
    _output_folder(args.out)
    if args.label is not None and args.cond is not None:
        raise ConfigError("give --label (a class) or --cond FILE (conditions), not both")
    if args.n < 1:
        raise ConfigError(f"--n must be a positive integer; got {args.n}")
    threshold = _threshold(args.threshold, args.sampler)
    run = load(args.checkpoint, device=device, ema=not args.no_ema)
    sde, model, shape = run.sde, run.model, run.sample_shape
    options = {k.replace("-", "_"): v for k, v in overrides}
    if threshold is not None:
        options["threshold"] = threshold
    sampler = build_sampler(args.sampler, options)
    num_classes = getattr(model, "num_classes", None)
    label = _label_choice(args.label, num_classes)
    if args.guidance is not None and label is None and args.cond is None:
        raise ConfigError("--guidance needs --label (the class to guide towards, or 'all') or --cond FILE (the "
                          "conditions)")
    if args.save_images and len(shape) != 3:
        raise ConfigError(f"--save-images needs image samples (C, H, W); this run's samples have shape {tuple(shape)}")
    data_range = tuple(float(v) for v in run.config.data.get("data_range", (-1.0, 1.0)))
    n, labels, per_class, cond, what = args.n, None, None, None, ""
    if label == "all":
        per_class = max(1, args.n // num_classes)
        n = per_class * num_classes
        labels = torch.arange(num_classes, device=device).repeat_interleave(per_class)
    elif label is not None:
        labels = torch.full((n,), label, dtype=torch.long, device=device)
    if labels is not None:
        try:
            score = classifier_free_guidance(model, labels, scale=args.guidance or 0.0)
        except ValueError as err:
            raise ConfigError(f"--guidance: {err}") from None
        what = f", label {label}" + (f", guidance {args.guidance:g}" if args.guidance else "")
    else:       # --cond FILE (guided with --guidance), or without it the null condition: p(x)
        score, cond, what = _cond_score(run, args.cond, args.guidance, n, device, f"samples (--n {n})")
    if threshold is not None:
        what += f", threshold {args.threshold}"
    gen = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    res = sampler.sample(sde, score, (n,) + shape, generator=gen, device=device, progress=True)
    wall = time.perf_counter() - start
    os.makedirs(args.out, exist_ok=True)
    npz = os.path.join(args.out, "samples.npz")
    arrays = {"x": res.x.detach().cpu().numpy(), "nfe": res.nfe}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    arrays.update(_cond_arrays(cond, n))
    np.savez(npz, **arrays)
    png = os.path.join(args.out, "samples.png")
    x = res.x
    try:            # images clipped to the data range (save_samples → image_grid); 2-D points drawn as they are
        if per_class is not None and x.dim() == 4:        # one row per class
            save_samples(x, png, title=f"{args.sampler}, NFE {res.nfe}{what}", nrow=per_class, data_range=data_range)
        else:
            shown = slice(0, 256) if x.dim() == 4 else slice(None)
            save_samples(x[shown], png, title=f"{args.sampler}, NFE {res.nfe}{what}",
                         labels=None if labels is None else labels[shown], data_range=data_range)
    except ValueError:  # no picture for this shape (only 2-D points and images have one)
        png = "no figure for samples of shape " + str(tuple(x.shape[1:]))
    written = [npz, png]
    if args.save_images:              # scoresde evaluate's quantization: round(255 (x − a)/(b − a)), clipped
        from ..evaluation.features import save_png, to_uint8

        folder = os.path.join(args.out, "images")
        save_png(to_uint8(x.detach().cpu(), data_range), folder)
        written.append(os.path.join(folder, f"000000.png … {n - 1:06d}.png"))
    passes = f", {res.network_evaluations} network evaluations" if res.network_evaluations != res.nfe else ""
    print(f"{n} samples with {args.sampler}{what} (NFE {res.nfe}{passes}, {wall:.2f} s): {', '.join(written)}")
    if x.dim() == 4:
        lo, hi = float(x.min()), float(x.max())
        outside = float(((x < data_range[0]) | (x > data_range[1])).double().mean())
        print(f"images clipped to the data range [{data_range[0]:g}, {data_range[1]:g}] for the PNGs; samples.npz "
              f"holds the raw values ({lo:.3g} … {hi:.3g}, {100 * outside:.2g}% outside the range)")
    return 0


#: What `scoresde edit` writes into OUT (refused over an earlier edit without --overwrite).
_EDIT_OUTPUTS = ("edited.npz", "edited.png", "images")


def _image_names(folder: str) -> List[str]:
    """The image files of ``folder`` in the order the image_folder loader reads them: its own images sorted by
    name, or when it has none, those of its sub-folders (sorted) in turn."""
    from ..data import _IMAGE_SUFFIXES

    def images(path: str) -> List[str]:
        return sorted(f for f in os.listdir(path) if f.lower().endswith(_IMAGE_SUFFIXES)
                      and os.path.isfile(os.path.join(path, f)))

    own = images(folder)
    if own:
        return own
    return [os.path.join(d, f) for d in sorted(os.listdir(folder)) if os.path.isdir(os.path.join(folder, d))
            for f in images(os.path.join(folder, d))]


def _edit_inputs(path: str, run, data_range: Tuple[float, float]) -> Tuple[torch.Tensor, Optional[List[str]]]:
    """--input: the inputs (N, *D) in the data's range, and the image file names (a folder) or None.

    A folder of images is read by the image_folder loader with the run's image options (mode, image_size, crop,
    resize) when the run was trained on an image folder, else with the mode of its channels (1: L, 3: RGB) and its
    size; its 256 levels over [−1, 1] are mapped to the run's data range. A .npy array (a .npz: its array x, or its
    only one) holds samples as the model sees them; uint8 arrays are 256 levels over the data range."""
    shape = tuple(int(s) for s in run.sample_shape)
    a, b = data_range
    if os.path.isdir(path):
        if len(shape) != 3:
            raise ConfigError(f"--input {path!r} is a folder of images but this run's samples have shape {shape}; "
                              f"give a .npy file of shape (N, {', '.join(map(str, shape))})")
        if has_split_folders(path):
            raise ConfigError(f"--input {path!r} holds split folders (train/, test/, …); point --input at the "
                              f"folder of images to edit")
        run_name, _ = resolve_name(run.config.data["name"], run.config.options("data").get("path"))
        options = {}
        if run_name == "image_folder":
            options = {k: v for k, v in run.config.options("data").items()
                       if k in ("mode", "image_size", "crop", "resize") and v is not None}
        elif shape[0] not in (1, 3):
            raise ConfigError(f"--input {path!r}: this run's images have {shape[0]} channels; a folder of images "
                              f"gives 1 (L) or 3 (RGB): give a .npy file of shape (N, {', '.join(map(str, shape))})")
        else:
            options["mode"] = "L" if shape[0] == 1 else "RGB"
        if shape[1] == shape[2]:
            options.setdefault("image_size", shape[1])
        try:
            dataset = load_data("image_folder", split="train", path=path, **options)
        except (OSError, ValueError) as err:
            raise ConfigError(f"--input {path!r}: {_first_line(err)}") from None
        if tuple(dataset.shape) != shape:
            raise ConfigError(f"--input {path!r}: its images have shape {tuple(dataset.shape)} but this run's "
                              f"samples have {shape}")
        print(f"input: {dataset.summary}")
        x = dataset.x.to(torch.float64)
        x = (a + (x + 1) / 2 * (b - a)) if (a, b) != (-1.0, 1.0) else x
        names = _image_names(path)
        return x.to(torch.float32), names if len(names) == x.shape[0] else None
    if not path.endswith((".npy", ".npz")):
        raise ConfigError(f"--input {path!r}: give a folder of images or a .npy file of samples (N, "
                          f"{', '.join(map(str, shape))})")
    if not os.path.isfile(path):
        raise ConfigError(f"--input: no such file {path!r}")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if "x" not in keys and len(keys) != 1:
                    raise ConfigError(f"--input {path!r} holds arrays {keys}; give a .npy file or an .npz whose "
                                      f"samples are the array x")
                array = archive["x" if "x" in keys else keys[0]]
        else:
            array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"--input: cannot read {path!r}: {_first_line(err)}") from None
    if tuple(array.shape[1:]) != shape or array.ndim < 2 or array.shape[0] < 1:
        raise ConfigError(f"--input {path!r} has shape {tuple(array.shape)}; this run's samples need (N, "
                          f"{', '.join(map(str, shape))})")
    if array.dtype == np.uint8:
        return torch.from_numpy(a + array.astype(np.float64) / 255 * (b - a)).to(torch.float32), None
    if not np.issubdtype(array.dtype, np.floating):
        raise ConfigError(f"--input {path!r} has dtype {array.dtype}; give floating samples in the data range or "
                          f"uint8 images")
    return torch.from_numpy(np.ascontiguousarray(array)), None


def cmd_edit(args, overrides) -> int:
    """SDEdit every input: noise it to t0 = strength · T and sample back (`scoresde.sdedit`), given --cond and
    guided by --guidance, the x̂_0 prediction thresholded by --threshold."""
    from ..evaluation.features import save_png, to_uint8

    device = _device(args.device)
    if not (math.isfinite(args.strength) and 0 < args.strength <= 1):
        raise ConfigError(f"--strength must be in (0, 1] (t0 = strength · T: small keeps the input, 1 samples "
                          f"afresh); got {args.strength:g}")
    out = _output_folder(args.out)
    present = [name for name in _EDIT_OUTPUTS if os.path.exists(os.path.join(out, name))]
    if present and not args.overwrite:
        raise ConfigError(f"{out} already holds an edit ({', '.join(present)}): pass --overwrite to replace it, or "
                          f"another --out")
    threshold = _threshold(args.threshold, args.sampler)
    run = load(args.checkpoint, device=device, ema=not args.no_ema)
    sde, model, shape = run.sde, run.model, tuple(run.sample_shape)
    data_range = tuple(float(v) for v in run.config.data.get("data_range", (-1.0, 1.0)))
    inputs, names = _edit_inputs(args.input, run, data_range)
    n = inputs.shape[0]
    options = {k.replace("-", "_"): v for k, v in overrides}
    if threshold is not None:
        options["threshold"] = threshold
    sampler = build_sampler(args.sampler, options)
    score, cond, what = _cond_score(run, args.cond, args.guidance, n, device, "inputs (--input)")
    if threshold is not None:
        what += f", threshold {args.threshold}"
    x0 = inputs.to(device=device, dtype=_model_dtype(model))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    res = sdedit(sde, score, x0, args.strength, sampler, gen, progress=True)
    wall = time.perf_counter() - start
    x = res.x.detach()
    if args.overwrite:                 # the earlier edit's files, and only them
        for name in ("edited.npz", "edited.png"):
            if os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        folder = os.path.join(out, "images")
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if len(name) == 10 and name.endswith(".png") and name[:6].isdigit():
                    os.remove(os.path.join(folder, name))
    os.makedirs(out, exist_ok=True)
    npz = os.path.join(out, "edited.npz")
    arrays = {"x": x.cpu().numpy(), "input": x0.detach().cpu().numpy(), "strength": args.strength, "nfe": res.nfe}
    if names is not None:
        arrays["names"] = np.array(names)
    arrays.update(_cond_arrays(cond, n))
    np.savez(npz, **arrays)
    png = os.path.join(out, "edited.png")
    title = f"SDEdit, strength {args.strength:g}, {args.sampler}, NFE {res.nfe}{what}"
    try:
        if x.dim() == 4:                                   # the inputs above their edits
            shown = min(n, 16)
            save_samples(torch.cat([x0[:shown], x[:shown]]), png, title=title + "\ninputs (top), edits (bottom)",
                         nrow=shown, data_range=data_range)
        else:
            save_samples(x, png, title=title, reference=x0, data_range=data_range)
    except ValueError:  # no picture for this shape (only 2-D points and images have one)
        png = "no figure for samples of shape " + str(shape)
    written = [npz, png]
    if x.dim() == 4:          # scoresde evaluate's quantization: round(255 (x − a)/(b − a)), clipped
        folder = os.path.join(out, "images")
        save_png(to_uint8(x.cpu(), data_range), folder)
        written.append(os.path.join(folder, f"000000.png … {n - 1:06d}.png"))
    change = float((x - x0).reshape(n, -1).pow(2).mean(dim=1).sqrt().mean())
    passes = f", {res.network_evaluations} network evaluations" if res.network_evaluations != res.nfe else ""
    print(f"{n} inputs edited with {args.sampler} at strength {args.strength:g}{what} (NFE {res.nfe}{passes}, "
          f"{wall:.2f} s; RMS change per input {change:.3g}): {', '.join(written)}")
    return 0


def _load_score_sde_pytorch(args, device, continuous=None):
    """``sd.from_score_sde_pytorch`` for ``--checkpoint`` and ``--config`` (a preset name or a .json/.yaml file of
    their config's fields), ``--no-ema``; a missing file is a ConfigError."""
    config = args.config
    if config.endswith((".json", ".yaml", ".yml")):            # their config as a nested dict in a file
        if not os.path.isfile(config):
            raise ConfigError(f"config file {config!r} does not exist")
        with open(config) as fh:
            config = yaml.safe_load(fh)                       # JSON is YAML
    try:
        return from_score_sde_pytorch(args.checkpoint, config=config, ema=not args.no_ema, continuous=continuous,
                                      map_location=device)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None


def _likelihood_score_sde_pytorch(args, overrides, device) -> int:
    """Bits/dim of a score_sde_pytorch checkpoint by their protocol (`scoresde.zoo.score_sde_pytorch.bits_per_dim`)."""
    if args.config is None:
        raise ConfigError("--from score_sde_pytorch needs --config NAME (one of their configs, e.g. "
                          "vp/cifar10_ddpmpp_deep_continuous)")
    data = {"name": args.data}
    for key, value in overrides:
        section, _, name = key.replace("-", "_").rpartition(".")
        if section not in ("", "data") or name not in ("name", "path"):
            raise ConfigError(f"--from score_sde_pytorch takes --data.name and --data.path; got --{key}")
        data[name] = value
    if data.get("name") is None:
        raise ConfigError("name the data: --data.name=cifar10 --data.path=DIR")
    repeats = args.repeats if args.repeats is not None else (5 if args.split == "test" else 1)
    if repeats < 1:
        raise ConfigError(f"--repeats must be a positive integer; got {repeats}")
    sde, model = _load_score_sde_pytorch(args, device, continuous=True)
    name, path = resolve_name(data["name"], data.get("path"))
    try:
        dataset = load_data(name, split=args.split, **({"path": path} if path is not None else {}))
    except (OSError, EOFError) as err:
        raise ConfigError(f"data: cannot read {path or name!r}: {err}") from None
    size = model.config["data"].get("image_size")
    if dataset.shape[-1] != size:
        raise ConfigError(f"the data are {dataset.shape[-2]}×{dataset.shape[-1]} images but config {args.config!r} "
                          f"is for {size}×{size}")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    res = zoo_bits_per_dim(model, dataset, n=args.n, batch_size=args.batch_size, repeats=repeats, generator=gen,
                           device=device)
    n = res.values.shape[0]
    print(f"{n} {args.split} images of {name} × {repeats} repeats (fresh dequantization and probe each), "
          f"score_sde_pytorch's protocol: Hutchinson (1 Rademacher probe), dopri5 rtol = atol = 1e-5, eps = 1e-5")
    print(f"bits/dim: {res.bpd:.4f} ± {res.bpd_stderr:.4f} (standard error over the {n} images; offset "
          f"{'7, centered data' if model.centered else '8, data in [0, 1]'}); NFE {res.nfe}")
    return 0


def cmd_likelihood(args, overrides) -> int:

    device = _device(args.device)
    for name in ("n", "batch_size", "n_probes"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)}")
    if args.source == "score_sde_pytorch":
        return _likelihood_score_sde_pytorch(args, overrides, device)
    run = load(args.checkpoint, device=device)
    sde, model, cfg, shape = run.sde, run.model, run.config, run.sample_shape
    dataset, evaluated = build_evaluation_data(cfg, args.data, args.split)
    if tuple(dataset.shape) != tuple(shape):
        raise ConfigError(f"data has per-sample shape {tuple(dataset.shape)} but the model was trained on {shape}")
    num_classes = getattr(model, "num_classes", None)
    label = _label_choice(args.label, num_classes)
    score, labelled, what = model, False, ""
    if label is not None and dataset.labels is None:
        raise ConfigError(f"--label needs labelled data; the {evaluated} have no labels")
    if label == "all":                            # each point under its own label: −log p(x | c)
        labelled, what = True, ", each under its own label: −log p(x | c)"
    elif label is not None:                       # the points of one class under that class
        keep = dataset.labels == label
        if not bool(keep.any()):
            raise ConfigError(f"no points of class {label} in the {evaluated}")
        dataset = Dataset(dataset.x[keep], name=dataset.name, split=dataset.split, data_range=dataset.data_range,
                          levels=dataset.levels, dequantize=dataset.dequantize, oracle=dataset.oracle)
        score, what = conditional_score(model, label), f", class {label}: −log p(x | c = {label})"
    elif num_classes is not None:                 # a conditional model without --label: p(x), the null label
        score, what = _unconditional_score(model, tuple(shape), ""), ", no label (∅): −log p(x)"
    elif model_null(model) is not None:           # conditioned on vectors: p(x) under the null condition ∅
        score = _unconditional_score(model, tuple(shape), "scoresde likelihood takes no conditions")
        what = ", no condition (∅): −log p(x)"
    gen = torch.Generator(device=device).manual_seed(args.seed)
    divergence = None if args.divergence == "auto" else args.divergence
    res = evaluate_likelihood(sde, score, dataset, n=args.n, batch_size=args.batch_size, generator=gen,
                              divergence=divergence, n_probes=args.n_probes, rtol=args.rtol, atol=args.atol,
                              device=device, labels=labelled)
    n, d = res.values.shape[0], dataset.dim
    divergence = divergence or ("exact" if d <= 16 else "hutchinson")
    print(f"{n} {evaluated}{what}, d = {d}, divergence = {divergence}")
    print(f"NLL: {res.nll:.4f} ± {res.nll_stderr:.4f} nats per sample")
    print(f"bits/dim: {res.bpd:.4f} ± {res.bpd_stderr:.4f}"
          + (f" (dequantized, {dataset.levels} levels over {dataset.data_range})" if res.quantized else
             " (continuous data: −log p / (d ln 2))"))
    oracle = dataset.oracle
    if oracle is not None and (label is None or oracle.labels is not None):
        g = torch.Generator().manual_seed(args.seed)
        if label is None:
            h, h_se = oracle.entropy_mc(100_000, g)
        elif label == "all":                      # H(x | c) = Σ_c p(c) H(x | c)
            parts = [oracle.conditional(c).entropy_mc(100_000, g) for c in range(oracle.num_classes)]
            mass = [float(oracle.weights[oracle.labels == c].sum()) for c in range(oracle.num_classes)]
            h = sum(p * e for p, (e, _) in zip(mass, parts))
            h_se = math.sqrt(sum((p * se) ** 2 for p, (_, se) in zip(mass, parts)))
        else:
            h, h_se = oracle.conditional(label).entropy_mc(100_000, g)
        print(f"true cross-entropy of the data (lower bound): {h:.4f} ± {h_se:.4f} nats")
    return 0


#: What `scoresde.solve_inverse` passes every method itself: not options.
_INVERSE_ARGUMENTS = ("sde", "score", "measurement", "shape", "generator")


def _inverse_method_options(name: str):

    return [p for p in INVERSE_METHODS.parameters(name) if p not in _INVERSE_ARGUMENTS]


def _inverse_options(method: str, overrides) -> Dict[str, Any]:
    """The method options given as --key=value, checked against the method's own; ``--sampler=heun:steps=18``
    (for dps, pigdm, tweedie_moment) builds that sampler."""

    INVERSE_METHODS.get(method)                            # an unknown name fails before the checkpoint loads
    options = {k.replace("-", "_"): v for k, v in overrides}
    if method in INVERSE_METHODS:
        valid = _inverse_method_options(method)
        unknown = [k for k in options if k not in valid]
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} for inverse-problem method {method!r}; "
                              f"valid options: {', '.join(valid)}")
    if isinstance(options.get("sampler"), str):
        _, name, sampler_options = _parse_sampler_spec(options["sampler"])
        options["sampler"] = build_sampler(name, sampler_options)
    return options


def cmd_inpaint(args, overrides) -> int:


    device = _device(args.device)
    _output_folder(args.out)
    options = _inverse_options(args.method, overrides)
    if args.n < 1:
        raise ConfigError(f"--n must be a positive integer; got {args.n}")
    if not (math.isfinite(args.noise_std) and args.noise_std >= 0):
        raise ConfigError(f"--noise-std must be a finite number >= 0; got {args.noise_std}")
    run = load(args.checkpoint, device=device, ema=not args.no_ema)
    sde, model, cfg, shape = run.sde, run.model, run.config, run.sample_shape
    if args.data is not None:
        cfg.set("data.name", args.data)
    dataset = build_data(cfg, "test")
    if tuple(dataset.shape) != tuple(shape):
        raise ConfigError(f"data has per-sample shape {tuple(dataset.shape)} but the model was trained on {shape}")
    num_classes = getattr(model, "num_classes", None)
    label = _label_choice(args.label, num_classes)
    if label is not None and dataset.labels is None:
        raise ConfigError(f"--label needs labelled data; {cfg.data['name']!r} has no labels")
    x, labels = dataset.x, None if label is None else dataset.labels
    if label is not None and label != "all":              # the points of one class under that class
        x, labels = x[labels == label], labels[labels == label]
        if x.shape[0] == 0:
            raise ConfigError(f"no test points of class {label} in {cfg.data['name']!r}")
    n = min(args.n, x.shape[0])                            # the first n test points
    true = x[:n].to(device)
    labels = None if labels is None else labels[:n].to(device)
    if label == "all":                                     # each point under its own label
        score = conditional_score(model, labels)
    elif label is not None:
        score = conditional_score(model, label)
    else:                                                  # the model, or its null condition ∅: the prior p(x)
        score = _unconditional_score(model, tuple(shape), "scoresde inpaint takes no conditions")
    data_gen = torch.Generator().manual_seed(args.seed)    # the random mask and the observation noise
    mask = Mask.from_spec(args.mask, shape, generator=data_gen)
    noise = torch.randn(true.shape, generator=data_gen, dtype=true.dtype).to(device)
    keep = mask.mask.to(device)[None]
    observed = (true + args.noise_std * noise) * keep     # y = mask ⊙ (x + σ_y n), one per sample
    measurement = LinearMeasurement(mask, observed, noise_std=float(args.noise_std))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    res = solve_inverse(args.method, sde, score, measurement, (n,) + tuple(shape), gen, **options)
    wall = time.perf_counter() - start
    sampled = res.x.detach()
    hidden = ~keep.expand_as(true)
    mse = float(((sampled - true)[hidden] ** 2).mean()) if bool(hidden.any()) else math.nan
    os.makedirs(args.out, exist_ok=True)
    npz = os.path.join(args.out, "inpaint.npz")
    arrays = {"true": true.cpu().numpy(), "observed": observed.cpu().numpy(), "sampled": sampled.cpu().numpy(),
              "mask": mask.mask.cpu().numpy(), "nfe": res.nfe}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    np.savez(npz, **arrays)
    png = os.path.join(args.out, "inpaint.png")
    noisy = f", noise_std {args.noise_std:g}" if args.noise_std > 0 else ""
    title = f"{args.method}, mask {args.mask} ({mask.observed} of {measurement.dim} observed{noisy}), NFE {res.nfe}"
    try:
        _save_inpainting(png, true, observed, sampled, mask.mask, title, dataset.data_range)
    except ValueError:  # no picture for this shape (only 2-D points and images have one)
        png = "no figure for samples of shape " + str(tuple(shape))
    passes = f", {res.network_evaluations} network evaluations" if res.network_evaluations != res.nfe else ""
    what = "" if label is None else (", each under its own label" if label == "all" else f", class {label}")
    error = "n/a (everything observed)" if math.isnan(mse) else f"{mse:.4g}"
    print(f"{n} test samples of {cfg.data['name']}{what} inpainted with {args.method} (mask {args.mask}: "
          f"{mask.observed} of {measurement.dim} entries observed{noisy}; NFE {res.nfe}{passes}, {wall:.2f} s); "
          f"MSE on the unobserved entries {error}: {npz}, {png}")
    return 0


def _save_inpainting(path: str, true, observed, sampled, mask, title: str, data_range) -> None:
    """observed / sampled / true: three image rows (unobserved pixels blue), or three scatter panels of 2-D points
    (an observed coordinate drawn as a line); a ValueError for other shapes."""

    true, observed, sampled = (v.detach().cpu().to(torch.float64) for v in (true, observed, sampled))
    mask = mask.cpu()
    rows = (("observed", observed), ("sampled", sampled), ("true", true))
    if true.dim() == 4:
        shown = min(true.shape[0], 32)
        nrow = min(shown, 16)
        lo, hi = data_range if data_range is not None else (float(true.min()), float(true.max()))
        hidden = image_grid(mask.to(torch.float64).expand((shown,) + tuple(mask.shape)), nrow=nrow,
                            data_range=(0.0, 1.0)).amin(dim=-1) < 0.5          # the padding (1) is not hidden
        grids = []
        for name, x in rows:
            grid = image_grid(x[:shown], nrow=nrow, data_range=(lo, hi))
            grid = grid[..., :3] if grid.shape[-1] >= 3 else grid[..., :1].expand(grid.shape[:2] + (3,))
            if name == "observed":
                grid = grid.clone()
                grid[hidden] = torch.tensor([0.25, 0.45, 0.85], dtype=grid.dtype)
            grids.append((name, grid))
        height, width = grids[0][1].shape[:2]
        fig_width = max(4.0, 0.45 * nrow)
        fig = figure((fig_width, 3 * fig_width * height / width + 1.2))
        for k, (name, grid) in enumerate(grids):
            ax = fig.add_subplot(3, 1, k + 1)
            ax.imshow(grid.numpy(), interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(name if k else f"{title}\n{name}", fontsize=9)
    elif true.dim() == 2 and true.shape[1] == 2:
        both = torch.cat([true, sampled])
        lo, hi = both.min(dim=0).values, both.max(dim=0).values
        pad = 0.1 * (hi - lo).clamp_min(1e-6)
        colors = [f"C{i % 10}" for i in range(true.shape[0])]
        fig = figure((11.0, 4.0))
        first = None
        for k, (name, x) in enumerate(rows):
            ax = fig.add_subplot(1, 3, k + 1, sharex=first, sharey=first)
            first = first or ax
            if name == "observed" and not bool(mask.all()):       # one coordinate known: a line per sample
                for i in range(x.shape[0]):
                    line = ax.axvline if bool(mask[0]) else ax.axhline
                    line(float(x[i, 0] if bool(mask[0]) else x[i, 1]), color=colors[i], alpha=0.5, lw=1)
            else:
                ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=12, c=colors)
            ax.set_xlim(float(lo[0] - pad[0]), float(hi[0] + pad[0]))
            ax.set_ylim(float(lo[1] - pad[1]), float(hi[1] + pad[1]))
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("x₁")
        first.set_ylabel("x₂")
        fig.suptitle(title, fontsize=9)
    else:
        raise ValueError(f"no inpainting figure for samples of shape {tuple(true.shape[1:])}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def cmd_compare(args, overrides) -> int:

    device = _device(args.device)
    _output_folder(args.out)
    if (args.checkpoint is None) == (args.oracle is None):
        raise ConfigError("give exactly one of --checkpoint PATH or --oracle NAME")
    if args.oracle is not None and args.data is not None:
        raise ConfigError(f"--data goes with --checkpoint; --oracle names the data itself; got --oracle "
                          f"{args.oracle} --data {args.data}")
    if args.oracle is not None:
        try:
            dataset = load_data(args.oracle, "test")
        except (ValueError, FileNotFoundError, OSError) as err:
            raise ConfigError(f"data: {err}") from None
        oracle = dataset.oracle
        if oracle is None:
            raise ConfigError(f"--oracle needs a data set with an exact density (eight_gaussians, rings); got {args.oracle!r}")
        sde = build_sde(load_config(None, [(k, v) for k, v in overrides if k.startswith("sde.")]))
        score, reference = oracle.score(sde), oracle.to(device=device)
        dtype = torch.float64
    else:
        run = load(args.checkpoint, device=device)
        sde, cfg = run.sde, run.config      # a conditional model: its null condition, p(x), as sample without one
        score = _unconditional_score(run.model, tuple(run.sample_shape), "scoresde compare takes no conditions")
        test, evaluated = build_evaluation_data(cfg, args.data, args.split)
        if tuple(test.shape) != tuple(run.sample_shape):
            raise ConfigError(f"data has per-sample shape {tuple(test.shape)} but the model was trained on "
                              f"{tuple(run.sample_shape)}")
        print(f"reference: {len(test)} {evaluated}")
        dtype = test.x.dtype
        # A data set with an exact density gives the noise floor and the cross-entropy column too.
        reference = test.oracle.to(device=device) if test.oracle is not None else test.x.to(device)
    samplers = {}
    for spec in args.samplers:
        label, name, options = _parse_sampler_spec(spec)
        samplers[label] = build_sampler(name, options)
    table = compare_samplers(sde, score, samplers, n=args.n, reference=reference, dtype=dtype, device=device,
                             seed=args.seed)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "comparison.md"), "w") as fh:
        fh.write(table.to_markdown() + "\n")

    fig = figure((6.0, 4.0))
    table.plot(ax=fig.add_subplot(1, 1, 1))
    fig.savefig(os.path.join(args.out, "comparison.png"), dpi=100)
    print(f"wrote {os.path.join(args.out, 'comparison.md')} and comparison.png")
    return 0


def cmd_demo(args, overrides) -> int:

    return run_demo(out=args.out, seconds=args.seconds, seed=args.seed, overrides=overrides)


# -- image metrics: fid-stats, evaluate (the logic lives in scoresde.app.evaluate) ----------------------------
def _extractor(args, device: str):
    from .evaluate import build_extractor

    metrics = [m.strip() for m in str(getattr(args, "metrics", "")).split(",")]
    return build_extractor(args.extractor, args.weights, device=device, dinov2_repo=args.dinov2_repo,
                           metrics=metrics)


def cmd_fid_stats(args, overrides) -> int:
    """Reference statistics of a data set (--data.name=..., --data.path=...) or an image folder (--images DIR)."""
    from ..evaluation.features import read_images, to_uint8
    from .evaluate import fid_stats

    device = _device(args.device)
    if args.images is not None:
        if overrides:
            raise ConfigError(f"--images takes no data options; got {', '.join('--' + k for k, _ in overrides)}")
        images = read_images(args.images)
    else:
        options = {k[len("data."):] if k.startswith("data.") else k: v for k, v in overrides}
        if "name" not in options:
            raise ConfigError("fid-stats needs --data.name=NAME (with --data.path=DIR for files) or --images DIR")
        name, path = resolve_name(options.pop("name"), options.pop("path", None))
        if path is not None:
            options["path"] = path
        data = load_data(name, split=args.split, **options)
        if data.x.dim() != 4 or data.data_range is None:
            raise ConfigError(f"fid-stats needs an image data set (N, C, H, W) with a data range; {name!r} has "
                              f"samples of shape {tuple(data.x.shape[1:])}")
        images = to_uint8(data.x, data.data_range)
    if args.n is not None:
        images = images[: args.n]
    summary = fid_stats(images, args.out, _extractor(args, device), batch_size=args.batch_size,
                        keep_features=args.keep_features, progress=True)
    print(json.dumps(summary))
    return 0


def _evaluate_model(args, device: str, sampler_options: Dict[str, Any], data_options: Dict[str, Any]):
    """What `cmd_evaluate` samples and how, by ``--from``: (make_images, manifest entries, image size, bpd or None).

    An EDM snapshot's sampler ends at ``score.edm.eps`` unless ``--eps=`` is given (added to ``sampler_options``,
    so the manifest names it). ``bpd`` is a function returning test-set bits/dim entries for the JSON record (``--bpd``)."""
    from ..interop import from_denoiser
    from ..zoo.edm import from_edm
    from .evaluate import run_sampler, sample_images

    source = args.source
    manifest: Dict[str, Any] = {"checkpoint": os.path.abspath(args.checkpoint), "from": source}
    if source != "score_sde_pytorch" and args.config is not None:
        raise ConfigError("--config is for --from score_sde_pytorch")
    if source != "score_sde_pytorch" and data_options:
        raise ConfigError(f"--data.* options are for --from score_sde_pytorch (use --data NAME_OR_PATH for a run); "
                          f"got {', '.join('--data.' + k for k in data_options)}")
    gen_seed = args.seed
    if source == "scoresde":
        run = load(args.checkpoint, device=device, ema=not args.no_ema)
        sampler = build_sampler(args.sampler, sampler_options)
        data_range = tuple(run.config.data.get("data_range", (-1.0, 1.0)))
        make = run_sampler(run, sampler, device, data_range, seeding=args.seeding)
        manifest.update(step=run.step, ema=not args.no_ema)

        def bpd():
            score = _unconditional_score(run.model, tuple(run.sample_shape), "--bpd takes no conditions")
            dataset, evaluated = build_evaluation_data(run.config, args.data, "test")
            res = evaluate_likelihood(run.sde, score, dataset, n=args.bpd_n, batch_size=args.batch_size,
                                      generator=torch.Generator(device=device).manual_seed(gen_seed), device=device)
            return {"bpd": res.bpd, "bpd_stderr": res.bpd_stderr, "bpd_n": int(res.values.shape[0]),
                    "bpd_data": evaluated, "bpd_nfe": res.nfe}

        return make, manifest, tuple(run.sample_shape[-2:]), bpd
    if source == "score_sde_pytorch":
        if args.config is None:
            raise ConfigError("--from score_sde_pytorch needs --config NAME (one of their configs, e.g. "
                              "vp/cifar10_ddpmpp_deep_continuous) or a .json/.yaml file of one")
        sde, model = _load_score_sde_pytorch(args, device)
        data = model.config["data"]
        shape = (int(data.get("num_channels", 3)), int(data["image_size"]), int(data["image_size"]))
        sampler = build_sampler(args.sampler, sampler_options)
        make = sample_images(sde, model, shape, sampler, device, model.data_range, seeding=args.seeding)
        manifest.update(config=args.config, ema=not args.no_ema)

        if args.bpd:                                      # the test data read (and checked) before sampling
            if "name" not in data_options:
                raise ConfigError("--bpd with --from score_sde_pytorch needs the test data: --data.name=cifar10 "
                                  "--data.path=DIR")
            options = {k: v for k, v in data_options.items() if k not in ("name", "path")}   # e.g. mode=RGB
            name, path = resolve_name(data_options["name"], data_options.get("path"))
            if path is not None:
                options["path"] = path
            try:
                dataset = load_data(name, split="test", **options)
            except (OSError, EOFError, TypeError) as err:
                raise ConfigError(f"data: cannot read {path or name!r}: {err}") from None
            if tuple(dataset.shape) != shape:
                raise ConfigError(f"the test data have shape {tuple(dataset.shape)} but config {args.config!r} is "
                                  f"for {shape}")

        def bpd():
            _, theirs = _load_score_sde_pytorch(args, device, continuous=True)   # their likelihood's setting
            res = zoo_bits_per_dim(theirs, dataset, n=args.bpd_n, batch_size=args.batch_size,
                                   repeats=args.bpd_repeats,
                                   generator=torch.Generator(device=device).manual_seed(gen_seed), device=device)
            return {"bpd": res.bpd, "bpd_stderr": res.bpd_stderr, "bpd_n": int(res.values.shape[0]),
                    "bpd_repeats": args.bpd_repeats, "bpd_data": f"test images of {path or name}",
                    "bpd_protocol": "score_sde_pytorch", "bpd_nfe": res.nfe}

        return make, manifest, shape[-2:], bpd
    # EDM's snapshot: images in [−1, 1], samplers end at score.edm.eps unless --eps= is given
    try:
        sde, score = from_edm(args.checkpoint, device=device)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    info = score.edm
    sampler = None
    if "eps" not in sampler_options:
        try:
            sampler = build_sampler(args.sampler, {**sampler_options, "eps": info.eps})
            sampler_options["eps"] = info.eps             # in the manifest's sampler label
        except ConfigError:
            sampler = None                                # a sampler without eps
    if sampler is None:
        sampler = build_sampler(args.sampler, sampler_options)
    make = sample_images(sde, score, info.shape, sampler, device, (-1.0, 1.0), seeding=args.seeding,
                         label_dim=info.label_dim,
                         score_for_labels=lambda labels: from_denoiser(info.denoiser, sde, cond=labels))
    manifest.update(preconditioning=info.preconditioning, label_dim=info.label_dim)
    return make, manifest, tuple(info.shape[-2:]), None


def cmd_evaluate(args, overrides) -> int:
    """FID/KID/IS/precision-recall of a run's samples (sharded, resumable) or of a folder of images: one JSON line."""
    import warnings

    from ..evaluation.features import read_images
    from ..training.signals import StopOnSignal
    from .evaluate import EvaluationInterrupted, evaluate, evaluate_images, parse_metrics, parse_seeds

    device = _device(args.device)
    metrics = parse_metrics(args.metrics)
    if (args.checkpoint is None) == (args.images is None):
        raise ConfigError("evaluate needs exactly one of --checkpoint RUN (sample it) or --images DIR")
    if args.images is not None:
        if args.bpd:
            raise ConfigError("--bpd needs a model (--checkpoint), not a folder of images")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # they are in the JSON record
            record = evaluate_images(read_images(args.images), _extractor(args, device), args.reference, metrics,
                                     batch_size=args.batch_size, progress=True, kid_subsets=args.kid_subsets)
        print(json.dumps({"images": args.images, **record}))
        return 0
    if args.seeds is not None:
        seeds = parse_seeds(args.seeds)
        if args.n is not None and args.n != seeds[1] - seeds[0]:
            raise ConfigError(f"--n {args.n} and --seeds {args.seeds} disagree; give one of them")
    else:
        n = 50_000 if args.n is None else args.n
        if n < 1:
            raise ConfigError(f"--n must be a positive integer; got {n}")
        seeds = (args.seed, args.seed + n)
    if args.bpd_n < 1 or args.bpd_repeats < 1:
        raise ConfigError(f"--bpd-n and --bpd-repeats must be positive integers; got {args.bpd_n}, "
                          f"{args.bpd_repeats}")
    options = {k.replace("-", "_"): v for k, v in overrides}
    data_options = {k[len("data."):]: v for k, v in options.items() if k.startswith("data.")}
    sampler_options = {k: v for k, v in options.items() if not k.startswith("data.")}
    make_images, manifest, image_size, bpd = _evaluate_model(args, device, sampler_options, data_options)
    if args.bpd and bpd is None:
        raise ConfigError(f"--bpd is not available for --from {args.source} (EDM publishes no likelihood protocol)")
    run_dir = args.checkpoint if os.path.isdir(args.checkpoint) else os.path.dirname(os.path.abspath(args.checkpoint))
    out = _output_folder(args.out or os.path.join(run_dir, "evaluate",
                                                  f"{args.sampler}-seeds{seeds[0]}-{seeds[1] - 1}"))
    label = args.sampler + "".join(f" {k}={v}" for k, v in sorted(sampler_options.items()))
    manifest.update(sampler=label, seeding=args.seeding)
    try:
        with StopOnSignal() as stop, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = evaluate(make_images, _extractor(args, device), out, seeds, args.reference, metrics,
                              shard_size=args.shard_size, batch_size=args.batch_size, manifest=manifest,
                              overwrite=args.overwrite, stop=stop, progress=True, kid_subsets=args.kid_subsets,
                              image_size=image_size, bpd=bpd if args.bpd else None)
    except EvaluationInterrupted as err:
        print(f"scoresde evaluate: {err}", file=sys.stderr)
        return 128 + int(err.signal)
    for note in record["warnings"]:
        print(f"scoresde evaluate: warning: {note}", file=sys.stderr)
    print(json.dumps(record))
    return 0


# -- entry point ---------------------------------------------------------------------------------------------
def _names(registry) -> str:
    return ", ".join(registry.names())


def _help_keys(argv: Sequence[str]) -> str:
    """The ``train --help`` epilog: the config keys of the components that ``argv`` chooses (``--model.net=unet``,
    ``--data.name=digits``, ``--config FILE``), read before the help is printed; the defaults' otherwise."""
    argv = list(argv)
    names = [o for o in argv if o.startswith("--") and "=" in o and "." in o.split("=", 1)[0]]
    path = None
    for i, item in enumerate(argv):
        if item == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif item.startswith("--config="):
            path = item.split("=", 1)[1]
    try:
        overrides = [o for o in parse_overrides(names) if _is_component_name(o[0])]
        config = load_config(path, overrides)
    except (ConfigError, ValueError, TypeError, OSError) as err:
        return f"(the components named on the command line are not valid: {err}; showing the defaults)\n" + \
            describe_keys()
    chosen = ", ".join(f"{s} {getattr(config, s)['net' if s == 'model' else 'name']}" for s in ("data", "sde", "model"))
    return f"config keys of the chosen components ({chosen}) and their defaults:\n" + describe_keys(config)


def _is_component_name(key: str) -> bool:
    section, _, name = key.replace("-", "_").partition(".")
    return (section, name) in (("data", "name"), ("sde", "name"), ("model", "net"), ("loss", "name"))


def _condition_arguments(p: argparse.ArgumentParser, command: str, rows: str) -> None:
    """--cond, --guidance and --threshold of sample and edit."""
    p.add_argument("--cond", metavar="FILE",
                   help=f"conditional models: the conditions, a .npy array or a .pt tensor or dict of tensors (read "
                        f"with torch.load(weights_only=True); a dict is passed as keyword arguments), {rows} or "
                        f"one row (1, ...) shared by all; cast to the model's dtype. Default: "
                        f"a vector-conditional model is sampled from its null condition ∅ (unconditional)"
                        + ("; excludes --label" if command == "sample" else ""))
    p.add_argument("--guidance", type=float,
                   help="classifier-free guidance weight w (with " + ("--label or " if command == "sample" else "")
                        + "--cond): (1 + w) s(x, t, c) − w s(x, t, ∅), ∅ the model's null condition; default 0")
    p.add_argument("--threshold", metavar="SPEC",
                   help=f"threshold the data prediction x̂_0 at every score evaluation: {_THRESHOLD_FORMS}. Samplers "
                        f"that take it: {', '.join(_threshold_samplers())}")


def _extractor_arguments(p: argparse.ArgumentParser) -> None:
    """--extractor, --weights and --dinov2-repo of fid-stats and evaluate."""
    p.add_argument("--extractor", default="inception",
                   help="inception (torch-fidelity's Inception-v3 compat: FID, KID, PR, IS), dinov2-vit-l-14 "
                        "(FD-DINOv2; also -s-/-b-/-g-14), clip-vit-b-32 (or torch-fidelity's other CLIP names) "
                        "or package.module:factory; the name is recorded in reference files")
    p.add_argument("--weights", metavar="FILE",
                   help="the extractor's local weights for offline machines, read with weights_only=True: "
                        "torch-fidelity's weights-inception-2015-12-05-6726825d.pth, DINOv2's "
                        "dinov2_vitl14_pretrain.pth, or a CLIP state dict (see docs/evaluation.md)")
    p.add_argument("--dinov2-repo", metavar="DIR",
                   help="a local clone of facebookresearch/dinov2 for the DINOv2 extractors (its hubconf.py is "
                        "run); default: torch.hub's GitHub source")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser; the lists of valid names in the help come from the registries, and ``train --help``
    lists the options of the components that ``argv`` names (``--model.net=unet --data.name=digits``)."""

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a loaded 2-core machine 2 threads trained 3.5x slower; "
                             "see benchmarks/threads.py)")
    parser = argparse.ArgumentParser(prog="scoresde", description="Score-based diffusion models in continuous time.",
                                     epilog="Config overrides: --section.key=value or --key=value (see scoresde.app.config).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,edit,likelihood,inpaint,compare,demo,fid-stats,evaluate}")

    p = sub.add_parser("train", parents=[common], help="train a score model by denoising score matching",
                       description=textwrap.fill(
                                   "Train a score model. Any config key can be overridden: --steps=500, "
                                   "--sde.name=ve, --model.net=unet, --data.name=digits. "
                                   f"Data sets: {_names(DATASETS)}. SDEs: {_names(SDES)}. Nets: {_names(NETS)}. "
                                   f"Parameterizations: {_names(PARAMETERIZATIONS)}. A user's class works by "
                                   "import path: --sde.name=mypkg.mymodule:MySDE.", 100),
                       epilog=_help_keys(argv) + "\n\nAdd --model.net=NAME, --data.name=NAME, --sde.name=NAME "
                              "before --help to list the keys of other components.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with sections data, sde, model, train (and loss)")
    p.add_argument("--preset", help="train one of score_sde_pytorch's configs (e.g. vp/cifar10_ddpmpp_deep_continuous; "
                                    "scoresde.zoo.presets.names()) or EDM's recipes (e.g. edm/cifar10-ddpmpp-edm; "
                                    "scoresde.zoo.edm_training.names()) as they do; the data folder: --data.path=DIR")
    p.add_argument("--out", help="output folder (default: train.out_dir or runs/<data>-<sde>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT (its config.yaml and checkpoint.pt) if there is one")
    p.add_argument("--overwrite", action="store_true", help="replace the run in OUT instead of refusing")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("sample", parents=[common], help="draw samples from a checkpoint",
                       description="Sample from a trained checkpoint. Sampler options as --key=value, e.g. "
                                   "--steps=18 --order=3 (the sampler's constructor arguments).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt (its config.yaml beside it)")
    p.add_argument("--sampler", default="dpm_solver",
                   help=f"one of {_names(SAMPLERS)}, or an import path package.module:Class")
    p.add_argument("--n", type=int, default=1000, help="number of samples")
    p.add_argument("--out", default="samples", help="folder for samples.npz (the raw values, unclipped) and "
                                                   "samples.png (images clipped to the data range)")
    p.add_argument("--save-images", action="store_true",
                   help="images: also write OUT/images/000000.png … one PNG per sample, clipped to the data range "
                        "[a, b] and quantized as scoresde evaluate does: round(255 (x − a)/(b − a)) as uint8")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior draw and the sampler's noise")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--label", help="conditional models: the class to sample, or 'all' for every class (n/K each; "
                                   "images: one row per class); default: unconditional (the null label)")
    _condition_arguments(p, "sample", "one row per sample (--n rows)")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("edit", parents=[common], help="SDEdit: noise inputs part-way and sample back (image-to-image)",
                       description="Edit inputs with SDEdit (Meng et al. 2022, sd.sdedit): noise each one to t0 = "
                                   "strength · T by the SDE's marginal and sample from there to the data. A small "
                                   "strength keeps the input's coarse structure, 1 samples afresh. Sampler options "
                                   "as --key=value, e.g. --steps=50.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt (its config.yaml beside it)")
    p.add_argument("--input", required=True,
                   help="a folder of images, read as the run's data set reads images (its mode and size; 256 levels "
                        "over the data range), or a .npy file of samples (N, *D) in the data's range (a .npz with "
                        "an array x, e.g. scoresde sample's samples.npz, too)")
    p.add_argument("--strength", type=float, default=0.5, help="in (0, 1]: t0 = strength · T")
    p.add_argument("--out", default="edit", help="folder for edited.npz (x, input, ...), edited.png (inputs above "
                                                 "their edits) and, for images, images/000000.png …")
    p.add_argument("--overwrite", action="store_true", help="replace the edit already in OUT instead of refusing")
    p.add_argument("--sampler", default="dpm_solver",
                   help=f"one of {_names(SAMPLERS)}, or an import path package.module:Class")
    p.add_argument("--seed", type=int, default=0, help="seed of the noising draw and the sampler's noise")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    _condition_arguments(p, "edit", "one row per input")
    p.set_defaults(fn=cmd_edit)

    p = sub.add_parser("likelihood", parents=[common],
                       help="NLL and bits/dim of data under a checkpoint (probability-flow ODE)",
                       description="NLL (nats) and bits/dim ± standard error of held-out data under a trained "
                                   "model, through the probability-flow ODE (sd.evaluate_likelihood).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt (its config.yaml beside it), or "
                                                       "another project's checkpoint with --from")
    p.add_argument("--from", dest="source", default="scoresde", choices=("scoresde", "score_sde_pytorch"),
                   help="whose checkpoint: a scoresde run, or score_sde_pytorch's checkpoint_N.pth (with --config; "
                        "bits/dim by their protocol)")
    p.add_argument("--config", help="with --from score_sde_pytorch: the name of their config (e.g. "
                                    "vp/cifar10_ddpmpp_deep_continuous), or a .json/.yaml file of its fields")
    p.add_argument("--repeats", type=int, help="with --from score_sde_pytorch: passes over the data with fresh "
                                               "dequantization and probes (default: theirs, 5 for test, 1 for train)")
    p.add_argument("--no-ema", action="store_true", help="with --from score_sde_pytorch: the raw weights, not the EMA")
    p.add_argument("--data", help="data set name or path (default: the training data set)")
    p.add_argument("--split", default="test", choices=("train", "test"),
                   help="which split to evaluate (a folder or file given with --data that has no split folders "
                        "is the evaluation set: all of it is evaluated)")
    p.add_argument("--n", type=int, default=512, help="number of points evaluated (the first n)")
    p.add_argument("--batch-size", type=int, default=256, help="points per ODE solve")
    p.add_argument("--divergence", default="auto", choices=("auto",) + tuple(DIVERGENCES),
                   help="exact (d VJPs per evaluation) or hutchinson (unbiased, 1 VJP per probe); auto: exact for "
                        "d <= 16 elements per sample")
    p.add_argument("--n-probes", type=int, default=1, help="Hutchinson probes per point")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance of the dopri5 solve")
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance of the dopri5 solve")
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantization noise and the probes")
    p.add_argument("--label", help="conditional models: a class index (its points, −log p(x | c)) or 'all' (every "
                                   "point under its own label); default: −log p(x) with the null label")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.set_defaults(fn=cmd_likelihood)

    methods = "; ".join(f"{name} ({', '.join(_inverse_method_options(name))})" for name in INVERSE_METHODS)
    p = sub.add_parser("inpaint", parents=[common], help="fill in masked test data from a checkpoint (inverse problem)",
                       description=textwrap.fill(
                                   "Inpaint the first --n test points of the run's data: observe y = mask ⊙ x (+ "
                                   "noise) and sample x given y with an inverse-problem method (sd.solve_inverse). "
                                   "Method options as --key=value, e.g. --steps=50 --resamplings=5; dps, pigdm and "
                                   "tweedie_moment also take --sampler=NAME:key=value,... . Methods and their "
                                   f"options: {methods}.", 100),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt (its config.yaml beside it)")
    p.add_argument("--mask", default="top",
                   help="top / left (the top / left half of an image, the first half of a vector), random:p (each "
                        "entry observed with probability p, drawn with --seed), first:k (the first k entries); "
                        "default: top")
    p.add_argument("--method", default="repaint", help=f"one of {_names(INVERSE_METHODS)}; default: repaint")
    p.add_argument("--noise-std", type=float, default=0.0,
                   help="σ_y: Gaussian noise added to the observation (dps with --normalized=false needs > 0); "
                        "default: 0")
    p.add_argument("--n", type=int, default=8, help="number of test points inpainted (the first n); default: 8")
    p.add_argument("--data", help="data set name or path (default: the training data set); its test split is used")
    p.add_argument("--out", default="inpaint", help="folder for inpaint.npz and inpaint.png; default: inpaint")
    p.add_argument("--seed", type=int, default=0, help="seed of the mask, the noise and the sampler; default: 0")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--label", help="conditional models: a class index (its test points, sampled given that class) "
                                   "or 'all' (each point under its own label); default: the null label, p(x)")
    p.set_defaults(fn=cmd_inpaint)

    p = sub.add_parser("compare", parents=[common], help="distance/NLL against NFE for a list of samplers",
                       description="Compare samplers, e.g. --samplers heun:steps=18 dpm_solver:steps=20,order=3. "
                                   f"Samplers: {_names(SAMPLERS)}. With --oracle, --sde.name=... picks the SDE.")
    p.add_argument("--checkpoint")
    p.add_argument("--oracle", help="a data set with an exact density: eight_gaussians or rings")
    p.add_argument("--data", help="with --checkpoint: the reference data, a data set name or path, as likelihood's "
                                  "--data (default: the training data set)")
    p.add_argument("--split", default="test", choices=("train", "test"),
                   help="which split of the reference data (a folder or file given with --data that has no split "
                        "folders is used whole)")
    p.add_argument("--samplers", nargs="+", default=["heun:steps=10", "dpm_solver:steps=10,order=2",
                                                     "dpm_solver:steps=20,order=3", "euler_maruyama:steps=200"])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--out", default="comparison")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("demo", parents=[common], help="train on a 2-D data set for ~2 CPU minutes, then sample and compare")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--seconds", type=float, default=120.0, help="training time budget (default 120)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("fid-stats", parents=[common], help="reference statistics (mu, sigma) of a data set for FID",
                       description="Reference statistics for FID/KID/precision-recall: --data.name=cifar10 "
                                   "--data.path=DIR (any image data set and its options) or --images DIR, written as "
                                   ".npz with mu and sigma (pytorch-fid's and EDM's layout) plus the extractor's name "
                                   "and the image size.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="the .npz file to write")
    p.add_argument("--images", help="a folder of images instead of a data set")
    p.add_argument("--split", default="train", choices=("train", "test"), help="which split of the data set")
    p.add_argument("--n", type=int, help="use only the first n images (default: all)")
    p.add_argument("--keep-features", action="store_true",
                   help="store the features too (KID and precision/recall need them; 50k x 2048 float32 = 400 MB)")
    _extractor_arguments(p)
    p.add_argument("--batch-size", type=int, default=100, help="images per feature batch")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.set_defaults(fn=cmd_fid_stats)

    p = sub.add_parser("evaluate", parents=[common], help="FID, KID, Inception score, precision/recall of a run",
                       description="Sample a run in shards (resumable after SIGTERM: run the same command again), "
                                   "quantize to uint8 as PNG, and compute --metrics against --reference; or evaluate "
                                   "a folder of images (--images). Sampler options as --key=value (--steps=18). "
                                   "Prints one JSON line with every number.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", help="a run's checkpoint.pt or folder (or, with --from, their checkpoint)")
    p.add_argument("--from", dest="source", default="scoresde", choices=("scoresde", "score_sde_pytorch", "edm"),
                   help="whose checkpoint: a scoresde run, score_sde_pytorch's checkpoint_N.pth (with --config) or "
                        "EDM's network-snapshot-*.pkl")
    p.add_argument("--config", help="with --from score_sde_pytorch: the name of their config (e.g. "
                                    "vp/cifar10_ddpmpp_deep_continuous) or a .json/.yaml file of one")
    p.add_argument("--images", help="a folder of images to evaluate instead of a run")
    p.add_argument("--reference", help="reference statistics .npz (scoresde fid-stats, pytorch-fid or EDM)")
    p.add_argument("--metrics", default="fid", help="comma-separated: fid, kid, isc, prc")
    p.add_argument("--n", type=int, help="number of samples, seeds SEED .. SEED + n - 1 (default 50000)")
    p.add_argument("--seeds", help="seed range FIRST-LAST inclusive, e.g. 0-49999 (EDM's protocol: three ranges, "
                                   "report the minimum)")
    p.add_argument("--seed", type=int, default=0, help="first seed with --n")
    p.add_argument("--seeding", default="sample", choices=SEEDINGS,
                   help="sample: sample i starts from seed i (EDM's protocol; the same samples whatever the shard "
                        "size for deterministic samplers); shard: one generator per shard, seeded by its first seed")
    p.add_argument("--bpd", action="store_true", help="also test-set bits/dim (scoresde runs: sd.evaluate_likelihood; "
                                                      "score_sde_pytorch: their protocol, with --data.name/--data.path)")
    p.add_argument("--bpd-n", type=int, default=1000, help="test images for --bpd (the first n)")
    p.add_argument("--bpd-repeats", type=int, default=5,
                   help="with --from score_sde_pytorch: passes over the --bpd images (theirs: 5 for the test set)")
    p.add_argument("--data", help="with --bpd for a run: the test data, a data set name or path (default: the run's)")
    p.add_argument("--sampler", default="heun", help=f"one of {_names(SAMPLERS)}")
    p.add_argument("--shard-size", type=int, default=500, help="samples per shard (one sampling batch, one file)")
    p.add_argument("--batch-size", type=int, default=100, help="images per feature batch")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (of min(1000, n) samples)")
    p.add_argument("--out", help="folder for shards and metrics.json (default: RUN/evaluate/<sampler>-seeds<range>)")
    p.add_argument("--overwrite", action="store_true", help="discard the shards in OUT instead of resuming")
    _extractor_arguments(p)
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.set_defaults(fn=cmd_evaluate)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command and return its exit status; a torchrun rank ends here (`exit_process`)."""
    code = _command(argv)
    exit_process(code)
    return code


def _command(argv: Optional[Sequence[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv if {"-h", "--help"} & set(argv) else ())
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = args.debug or "--debug" in rest
    rest = [r for r in rest if r != "--debug"]
    try:
        if args.threads < 1:
            raise ConfigError(f"--threads must be a positive integer; got {args.threads}")
        torch.set_num_threads(args.threads)
        overrides = parse_overrides(rest)
        return int(args.fn(args, overrides) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line, never a traceback (unless --debug)
        if debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        if not isinstance(err, (ConfigError, ValueError, TypeError, KeyError, OSError, FloatingPointError)):
            message = f"{type(err).__name__}: {message}"
        print(f"scoresde {args.command}: error: {message.splitlines()[0] if message else type(err).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
