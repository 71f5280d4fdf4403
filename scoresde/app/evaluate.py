"""``scoresde fid-stats`` and ``scoresde evaluate``: reference statistics, and FID/KID/IS/precision-recall of a run's
samples (or of a folder of images), sampled in shards that survive preemption.

    scoresde fid-stats --data.name=cifar10 --data.path=DIR --out cifar10-train.npz [--weights FILE]
    scoresde evaluate --checkpoint runs/cifar --seeds 0-49999 --sampler heun --steps=18 \
        --reference cifar10-train.npz --metrics fid,kid,isc,prc [--weights FILE]

Evaluation protocol. Sample i of the seed range belongs to shard ⌊(i − first)/shard_size⌋; each shard is drawn in
one batch, sample i from x_T drawn with seed i (EDM's per-sample seeds; `sample_images`), quantized to uint8 as a
PNG would hold it (`scoresde.evaluation.features.to_uint8`), its features computed, and images + features written atomically to
``OUT/shards/shard_NNNNN.pt``. A SIGTERM/SIGINT finishes the current shard and stops (exit 128 + signal);
running the same command again resumes with the next missing shard, and the final features are bit for bit those
of an uninterrupted run. ``OUT/manifest.json`` records what determines the samples (checkpoint, sampler, seeds,
shard size, extractor); a resume with other settings is refused.
"""
from __future__ import annotations

import importlib
import json
import os
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .._utils import write_atomically
from ..evaluation import image_metrics as im
from ..evaluation.features import (INCEPTION, clip, dinov2, extract, inception, load_reference, to_uint8,
                                   weights_fingerprint)
from ..training.checkpoint import save_checkpoint
from ..training.signals import StopOnSignal

METRICS = ("fid", "kid", "isc", "prc")
MANIFEST = "manifest.json"


class EvaluationInterrupted(Exception):
    """A stop signal arrived: the shards so far are on disk; run the same command again to resume."""

    def __init__(self, message: str, signal: int, done: int, total: int):
        super().__init__(message)
        self.signal, self.done, self.total = signal, done, total


def parse_seeds(text: str) -> Tuple[int, int]:
    """"0-49999" → (0, 50000) (first seed, end exclusive); "7" → (7, 8)."""
    try:
        first, _, last = str(text).partition("-")
        first, last = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"--seeds must look like FIRST-LAST (inclusive, e.g. 0-49999); got {text!r}") from None
    if first < 0 or last < first:
        raise ValueError(f"--seeds needs 0 <= FIRST <= LAST; got {text!r}")
    return first, last + 1


def parse_metrics(text: str) -> List[str]:
    names = [m.strip() for m in str(text).split(",") if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise ValueError(f"--metrics: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(METRICS)}")
    return names


def build_extractor(name: str = "inception", weights: Optional[str] = None, device: str = "cpu",
                    dinov2_repo: Optional[str] = None, metrics: Sequence[str] = ()):
    """The feature extractor ``name`` (`scoresde.evaluation.features`), refused before it is built when it cannot
    give what ``metrics`` need.

    - ``inception`` / ``inception-v3-compat``: torch-fidelity's Inception-v3 compat (features and logits);
    - ``dinov2-vit-{s,b,l,g}-14``: torch-fidelity's DINOv2 (FD-DINOv2 is FID's formula on ``dinov2-vit-l-14``),
      its code from ``dinov2_repo`` (a local clone) or torch.hub's GitHub source;
    - ``clip-vit-b-32``, ``clip-vit-l-14``, … (torch-fidelity's names): its CLIP image tower, ``weights`` a state
      dict;
    - ``package.module:function``: called as ``function(weights=..., device=...)``, returning a module that maps
      uint8 images (N, 3, H, W) to {"features": (N, F), optionally "logits": (N, K)} and has a ``name``.

    ``weights``: the network's local weights (offline machines), or None for torch's hub cache / a download.
    """
    name = str(name)
    family = "dinov2" if name.startswith("dinov2-") else "clip" if name.startswith("clip-") else None
    if dinov2_repo is not None and family != "dinov2":
        raise ValueError(f"--dinov2-repo is for the DINOv2 extractors (dinov2-vit-l-14, ...), not {name!r}")
    if family is not None and "isc" in metrics:
        raise ValueError(f"isc (the Inception score) needs class logits, which only --extractor inception gives; "
                         f"{name} gives features only (fid, kid, prc apply)")
    if name in ("inception", INCEPTION):
        return inception(weights, device=device)
    if family == "dinov2":
        return dinov2(name, repo=dinov2_repo, weights=weights, device=device)
    if family == "clip":
        return clip(name, weights=weights, device=device)
    module, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"--extractor must be inception, dinov2-vit-{{s,b,l,g}}-14, clip-vit-b-32 (or another of "
                         f"torch-fidelity's CLIP names) or an import path package.module:factory; got {name!r}")
    factory = getattr(importlib.import_module(module), attr)
    return factory(weights=weights, device=device)


# -- metrics from features -------------------------------------------------------------------------------------
def compute_metrics(features: torch.Tensor, logits: Optional[torch.Tensor], reference: Optional[Dict[str, Any]],
                    metrics: Sequence[str], kid_subsets: int = 100, kid_subset_size: int = 1000,
                    prc_k: int = 3) -> Tuple[Dict[str, Any], List[str]]:
    """Every asked metric of (N, F) features (and (N, K) logits for the Inception score) against ``reference``
    (`load_reference`'s dict); returns (numbers, warnings)."""
    out: Dict[str, Any] = {}
    notes: List[str] = []
    n = features.shape[0]
    feats = im.as_features(features, "generated features")
    needs_ref = [m for m in metrics if m in ("fid", "kid", "prc")]
    if needs_ref and reference is None:
        raise ValueError(f"{', '.join(needs_ref)} need reference statistics (--reference FILE from `scoresde fid-stats`)")
    if "fid" in metrics:
        out["fid"] = im.fid_from_stats(*im.feature_statistics(feats), reference["mu"], reference["sigma"])
        if n < im.FID_MIN_SAMPLES:
            slope = None
            if n >= 16:
                out["fid_inf"], slope = im.fid_extrapolated(feats, reference["mu"], reference["sigma"])
                out["fid_bias_slope"] = slope
            notes.append(im.fid_bias_note(n, out["fid"], slope))
    for name in ("kid", "prc"):
        if name in metrics and reference.get("features") is None:
            raise ValueError(f"{name} needs the reference's features, not only mu and sigma: write the reference with "
                             f"`scoresde fid-stats ... --keep-features`")
    if "kid" in metrics:
        size = min(int(kid_subset_size), n, reference["features"].shape[0])
        if size < kid_subset_size:
            notes.append(f"KID subsets of {size} samples (fewer than the {kid_subset_size} asked for)")
        out["kid_mean"], out["kid_std"] = im.kid(feats, reference["features"], subsets=kid_subsets, subset_size=size)
        out["kid_subset_size"] = size
    if "prc" in metrics:
        out["precision"], out["recall"] = im.precision_recall(feats, reference["features"], k=prc_k)
    if "isc" in metrics:
        if logits is None:
            raise ValueError("isc needs class logits; this extractor gives only features")
        out["isc_mean"], out["isc_std"] = im.inception_score(logits, splits=min(10, n))
    return out, notes


# -- reference statistics -------------------------------------------------------------------------------------
def fid_stats(images: torch.Tensor, out: str, extractor, batch_size: int = 100, keep_features: bool = False,
              progress: bool = False) -> Dict[str, Any]:
    """Features of uint8 images (N, C, H, W) → reference ``.npz`` at ``out`` (`save_reference`); returns a summary."""
    from ..evaluation.features import save_reference

    if images.shape[0] < 2:
        raise ValueError(f"reference statistics need at least 2 images; got {images.shape[0]}")
    start = time.perf_counter()
    feats = extract(extractor, images, batch_size=batch_size, progress=progress)
    fingerprint = weights_fingerprint(extractor)
    save_reference(out, feats["features"], extractor.name, image_size=tuple(images.shape[-2:]),
                   keep_features=keep_features, weights=fingerprint)
    return {"out": out, "n": int(images.shape[0]), "extractor": extractor.name,
            "extractor_weights": fingerprint, "image_size": list(images.shape[-2:]),
            "feature_dim": int(feats["features"].shape[1]), "seconds": round(time.perf_counter() - start, 2)}


# -- sharded sampling ---------------------------------------------------------------------------------------------
def _check_manifest(folder: str, manifest: Dict[str, Any], overwrite: bool) -> None:
    path = os.path.join(folder, MANIFEST)
    if os.path.isfile(path) and not overwrite:
        with open(path) as fh:
            before = json.load(fh)
        old = {k for k in ("extractor_weights",) if k not in before}        # a manifest from before the record
        changed = sorted(k for k in (set(before) | set(manifest)) - old if before.get(k) != manifest.get(k))
        if changed:
            raise ValueError(f"{folder} holds an evaluation with other settings ({', '.join(changed)} differ: "
                             + "; ".join(f"{k} {before.get(k)!r} there, {manifest.get(k)!r} now" for k in changed)
                             + "); pass another --out, or --overwrite to start again")
        return
    if overwrite and os.path.isdir(os.path.join(folder, "shards")):
        for name in os.listdir(os.path.join(folder, "shards")):
            os.remove(os.path.join(folder, "shards", name))
    os.makedirs(folder, exist_ok=True)
    write_atomically(path, lambda fh: json.dump(manifest, fh, indent=1, sort_keys=True), binary=False)


def sample_shards(folder: str, make_images: Callable[[int, int], Tuple[torch.Tensor, int]], extractor,
                  seeds: Tuple[int, int], shard_size: int, manifest: Dict[str, Any], batch_size: int = 100,
                  overwrite: bool = False, stop=None, progress: bool = False) -> Dict[str, Any]:
    """Sample the seed range [first, end) in shards of ``shard_size``, resuming from the shards already in
    ``folder/shards``; returns {"features", "logits" (or None), "nfe", "resumed" (shards found on disk)}.

    Args:
        make_images: ``make_images(first_seed, count) -> (uint8 images (count, C, H, W), nfe)``; it must be a
            function of its arguments only (a generator seeded by ``first_seed``), so shards are reproducible.
        stop: an object with ``requested`` (`StopOnSignal`); when it turns true the current shard is finished and
            written, then `EvaluationInterrupted` is raised.
    """
    first, end = seeds
    shard_size = int(shard_size)
    if shard_size < 1:
        raise ValueError(f"shard size must be positive; got {shard_size}")
    manifest = {**manifest, "seeds": [first, end - 1], "shard_size": shard_size, "extractor": extractor.name,
                "extractor_weights": manifest.get("extractor_weights") or weights_fingerprint(extractor)}
    _check_manifest(folder, manifest, overwrite)
    shard_dir = os.path.join(folder, "shards")
    starts = list(range(first, end, shard_size))
    parts: Dict[str, List[torch.Tensor]] = {}
    nfe, resumed = None, 0
    bar = None
    if progress:
        from .._progress import progress_bar

        bar = progress_bar(total=end - first, desc="evaluate", unit="sample")
    try:
        for j, s in enumerate(starts):
            count = min(shard_size, end - s)
            path = os.path.join(shard_dir, f"shard_{j:05d}.pt")
            if os.path.isfile(path):
                shard = torch.load(path, map_location="cpu", weights_only=True)
                if int(shard["first_seed"]) != s or shard["features"].shape[0] != count:
                    raise ValueError(f"{path} does not hold seeds {s}..{s + count - 1}; remove it or pass --overwrite")
                resumed += 1
            else:
                images, shard_nfe = make_images(s, count)
                if images.dtype != torch.uint8 or images.shape[0] != count:
                    raise ValueError(f"make_images must return {count} uint8 images; got {images.shape[0]} "
                                     f"{images.dtype}")
                shard = {"first_seed": s, "images": images.cpu(), "nfe": int(shard_nfe)}
                shard.update(extract(extractor, images, batch_size=batch_size))
                save_checkpoint(shard, path)
            nfe = int(shard["nfe"])
            for key in ("features", "logits"):
                if key in shard:
                    parts.setdefault(key, []).append(shard[key])
            if bar is not None:
                bar.update(count)
            if stop is not None and stop.requested and j + 1 < len(starts):
                raise EvaluationInterrupted(f"stopped after shard {j + 1} of {len(starts)} ({s + count - first} of "
                                            f"{end - first} samples in {shard_dir}); run the same command again to "
                                            f"resume", getattr(stop, "signum", 15) or 15, j + 1, len(starts))
    finally:
        if bar is not None:
            bar.close()
    return {"features": torch.cat(parts["features"]),
            "logits": torch.cat(parts["logits"]) if "logits" in parts else None, "nfe": nfe, "resumed": resumed}


SEEDINGS = ("sample", "shard")


def sample_images(sde, score, shape: Sequence[int], sampler, device: str = "cpu",
                  data_range: Sequence[float] = (-1.0, 1.0), seeding: str = "sample", label_dim: int = 0,
                  score_for_labels: Optional[Callable[[torch.Tensor], Any]] = None):
    """``make_images(first_seed, count)`` for `sample_shards`: ``count`` samples of ``score`` on ``sde`` (one image
    of shape ``shape`` = (C, H, W) each), mapped from ``data_range`` to pixels and quantized to uint8.

    Seeding (EDM's generate.py protocol for ``"sample"``):
        - ``"sample"``: sample i starts from x_T drawn by a CPU generator seeded with i (and, for a class-conditional
          model, its label drawn next from the same generator), so ``--seeds 0-49999`` names the same starting
          points whatever the shard size or device. The noise a stochastic sampler draws on the way comes from the
          same generator, row by row (per-sample generators), so every sampler's sample i is the same whatever the
          shard size — except the batch-coupled ones (PC with batch-mean Langevin norms, adaptive step sizes).
        - ``"shard"``: one generator seeded by the shard's first seed draws the whole shard.
        Either way a shard is a function of (first_seed, count) only, so a resumed run is bit for bit the same.

    Args:
        label_dim: number of classes of a conditional model (0: unconditional); then ``score_for_labels(labels)``
            returns the score for integer labels (count,), drawn uniformly as their generate.py does.
    """
    if seeding not in SEEDINGS:
        raise ValueError(f"seeding must be one of {', '.join(SEEDINGS)}; got {seeding!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"evaluate needs image samples (C, H, W); got samples of shape {shape}")
    if label_dim and score_for_labels is None:
        raise ValueError("a conditional model (label_dim > 0) needs score_for_labels")

    def make_images(first_seed: int, count: int):
        gen = torch.Generator(device=device).manual_seed(int(first_seed))
        x_T, labels = None, None
        if seeding == "sample":
            gens = [torch.Generator().manual_seed(int(first_seed) + i) for i in range(count)]
            x_T = torch.cat([sde.prior_sample((1,) + shape, generator=g) for g in gens]).to(device)
            if label_dim:
                labels = torch.cat([torch.randint(int(label_dim), (1,), generator=g) for g in gens])
        elif label_dim:
            labels = torch.randint(int(label_dim), (count,), generator=gen, device=device)
        fn = score if not label_dim else score_for_labels(labels.to(device))
        # seeding "sample": each sample's path noise from its own generator too, so a stochastic sampler's sample
        # is the same whatever shard it falls in
        res = sampler.sample(sde, fn, (count,) + shape, generator=gens if seeding == "sample" else gen, x_T=x_T,
                             device=device)
        return to_uint8(res.x.detach(), data_range), res.nfe

    return make_images


def run_sampler(run, sampler, device: str = "cpu", data_range: Sequence[float] = (-1.0, 1.0),
                seeding: str = "sample"):
    """`sample_images` for a scoresde run: its model (the null condition for a conditional one: the null label, or
    a vector model's null embedding as one row shared by the batch)."""
    from ..guidance import unconditional_score

    try:
        score = unconditional_score(run.model)
    except ValueError:
        raise ValueError("evaluate samples a conditional run from its null condition, and this run's (an image's or "
                         "a dict's) has no batch shape to use; sample it with `scoresde sample --cond` and evaluate "
                         "the folder of images") from None
    if len(run.sample_shape) != 3:
        raise ValueError(f"evaluate needs image runs (C, H, W); this run's samples have shape {run.sample_shape}")
    return sample_images(run.sde, score, run.sample_shape, sampler, device, data_range, seeding)


def evaluate(make_images, extractor, out: str, seeds: Tuple[int, int], reference: Optional[str] = None,
             metrics: Sequence[str] = ("fid",), shard_size: int = 500, batch_size: int = 100,
             manifest: Optional[Dict[str, Any]] = None, overwrite: bool = False, stop=None, progress: bool = False,
             kid_subsets: int = 100, kid_subset_size: int = 1000,
             image_size: Optional[Tuple[int, int]] = None,
             bpd: Optional[Callable[[], Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Sample (sharded, resumable; `sample_shards`), then every metric against the reference; writes
    ``OUT/metrics.json`` and returns the same record: the numbers, n, the seed range, NFE, the extractor, warnings.
    ``bpd()``, when given, returns test-set bits/dim entries (``bpd``, ``bpd_stderr``, …) added to the record."""
    fingerprint = weights_fingerprint(extractor)               # a SHA-256 of every weight: once per call
    ref = None
    if reference is not None:
        ref = load_reference(reference, extractor=extractor.name, image_size=image_size, weights=fingerprint)
    start = time.perf_counter()
    got = sample_shards(out, make_images, extractor, seeds, shard_size,
                        {**(manifest or {}), "extractor_weights": fingerprint}, batch_size=batch_size,
                        overwrite=overwrite, stop=stop, progress=progress)
    numbers, notes = compute_metrics(got["features"], got["logits"], ref, metrics, kid_subsets, kid_subset_size)
    if bpd is not None:
        numbers.update(bpd())
    record = {**(manifest or {}), **numbers, "n": int(got["features"].shape[0]), "seeds": [seeds[0], seeds[1] - 1],
              "nfe": got["nfe"], "extractor": extractor.name, "extractor_weights": fingerprint,
              "reference": reference,
              "resumed_shards": got["resumed"], "seconds": round(time.perf_counter() - start, 2), "warnings": notes}
    for note in notes:
        warnings.warn(note, stacklevel=2)
    write_atomically(os.path.join(out, "metrics.json"), lambda fh: json.dump(record, fh, indent=1), binary=False)
    return record


def evaluate_images(images: torch.Tensor, extractor, reference: Optional[str] = None,
                    metrics: Sequence[str] = ("fid",), batch_size: int = 100, progress: bool = False,
                    kid_subsets: int = 100, kid_subset_size: int = 1000) -> Dict[str, Any]:
    """The metrics of uint8 images (N, C, H, W) already at hand (e.g. a folder read by `read_images`)."""
    ref = None if reference is None else load_reference(reference, extractor=extractor.name,
                                                        weights=weights_fingerprint(extractor),
                                                        image_size=tuple(images.shape[-2:]))
    feats = extract(extractor, images, batch_size=batch_size, progress=progress)
    numbers, notes = compute_metrics(feats["features"], feats.get("logits"), ref, metrics, kid_subsets,
                                     kid_subset_size)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return {**numbers, "n": int(images.shape[0]), "extractor": extractor.name, "reference": reference,
            "warnings": notes}


__all__ = ["evaluate", "evaluate_images", "fid_stats", "sample_shards", "sample_images", "run_sampler", "SEEDINGS", "build_extractor",
           "compute_metrics", "parse_seeds", "parse_metrics", "EvaluationInterrupted", "StopOnSignal", "METRICS"]
