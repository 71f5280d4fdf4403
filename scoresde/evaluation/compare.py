"""Compare samplers on one score: NFE, wall time, distance to reference samples, and NLL when a density is known.

    table = sd.compare_samplers(sde, score, {"heun 18": sd.HeunSampler(18), "dpm++ 2M": sd.DPMSolver(20)},
                                n=2000, reference=gmm)
    print(table)            # a markdown table
    fig = table.plot()      # distance against NFE, log-log

``reference`` is either a sampleable density (e.g. [`scoresde.GaussianMixture`][scoresde.GaussianMixture]: then the noise floor and
the NLL of the samples are reported) or a tensor of reference samples (e.g. held-out data for a trained model).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence, Union

import torch

from .._utils import NonFiniteError, check_choice
from .metrics import energy_distance, sliced_wasserstein
from .plot import error_vs_nfe

Tensor = torch.Tensor
METRICS = ("energy", "sliced_wasserstein")
#: Independent sets of true samples whose distance to the reference gives the noise floor (its RMS).
FLOOR_PAIRS = 3


@dataclass
class ComparisonRow:
    """One sampler's result: ``distance`` to the reference (median over repeats), ``nll`` in nats per sample
    under the reference density (None when no density is known), ``wall_time`` in seconds (median).
    ``diverged`` holds the message of a sampler that produced NaN or inf (then ``distance`` is nan)."""

    name: str
    nfe: int
    wall_time: float
    distance: float
    nll: Optional[float] = None
    samples: Optional[Tensor] = field(default=None, repr=False)
    diverged: Optional[str] = None


@dataclass
class Comparison:
    """The table returned by `compare_samplers`; ``str(table)`` is markdown, ``table.plot()`` a figure."""

    rows: List[ComparisonRow]
    metric: str
    n: int
    noise_floor: Optional[float] = None
    reference_nll: Optional[float] = None

    def to_markdown(self) -> str:
        """The table in markdown: sampler, NFE, wall time, distance (and cross-entropy when a density is known),
        with the noise floor and the entropy of the truth as a last row, and a note saying how to read them."""
        has_nll = any(r.nll is not None for r in self.rows)
        head = (f"| sampler | NFE | wall time (s) | {self.metric} distance |"
                + (" cross-entropy under the truth (nats) |" if has_nll else ""))
        rule = "|---|---:|---:|---:|" + ("---:|" if has_nll else "")
        lines = [head, rule]
        for r in self.rows:
            distance = "diverged (NaN or inf)" if r.diverged else f"{r.distance:.3e}"
            line = f"| {r.name} | {r.nfe} | {r.wall_time:.3f} | {distance} |"
            if has_nll:
                line += f" {r.nll:.4f} |" if r.nll is not None else " – |"
            lines.append(line)
        if self.noise_floor is not None:
            line = f"| *true samples: noise floor; entropy* | – | – | ±{self.noise_floor:.3e} |"
            if has_nll:
                line += f" {self.reference_nll:.4f} |" if self.reference_nll is not None else " – |"
            lines.append(line)
        lines.append("")
        note = (f"The {self.metric} distance is an unbiased estimate (n = {self.n}): 0 for the true law, and "
                f"negative values are noise.")
        if self.noise_floor is not None:
            note += (" The noise floor is its RMS between independent sets of true samples: a sampler within about "
                     "2 floors of 0 is indistinguishable from the truth at this n.")
        if has_nll:
            note += (" The cross-entropy is −E log p_true(samples); the true samples' value estimates the entropy. "
                     "Lower is not better: samples narrower than the truth score below the entropy.")
        lines.append(note)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def _repr_markdown_(self) -> str:  # Jupyter renders the table
        return self.to_markdown()

    def plot(self, ax=None):
        """Distance against NFE (log-log) with the noise floor: [`scoresde.evaluation.plot.error_vs_nfe`][scoresde.evaluation.plot.error_vs_nfe]. Returns the
        matplotlib Figure."""

        return error_vs_nfe(self, ax=ax)


def _distance(metric: str, x: Tensor, y: Tensor, generator) -> float:
    if metric == "energy":
        return float(energy_distance(x, y))
    m = min(x.shape[0], y.shape[0])
    return float(sliced_wasserstein(x[:m], y[:m], generator=generator))


def compare_samplers(
    sde,
    score,
    samplers: Union[Mapping[str, object], Sequence[object]],
    n: int = 2000,
    reference=None,
    *,
    shape: Optional[Sequence[int]] = None,
    metric: str = "energy",
    repeats: int = 1,
    seed: int = 0,
    dtype: Optional[torch.dtype] = None,
    device=None,
    keep_samples: bool = False,
) -> Comparison:
    """Run each sampler on ``score`` and tabulate NFE, wall time and distance to reference samples.

    Args:
        sde: the forward SDE.
        score: ``score(x, t)``: a trained model or an exact oracle score.
        samplers: a mapping name → sampler, or a sequence of samplers (named by their repr).
        n: number of samples per sampler.
        reference: a density with ``sample(n, generator)`` (and ``log_prob`` to report NLL, e.g.
            [`scoresde.GaussianMixture`][scoresde.GaussianMixture]), or a tensor (M, *D) of reference samples.
        shape: the per-sample shape (D,) or (C, H, W); default: taken from the reference.
        metric: "energy" (energy distance) or "sliced_wasserstein".
        repeats: runs per sampler (different seeds); distance and wall time are medians over them.
        seed: seeds the prior draws, the samplers' noise and the reference draws.
        dtype: of the samples (default: the reference tensor's, else torch's default dtype).
        device: as ``dtype``.
        keep_samples: keep the last run's samples in each row.

    Returns:
        a `Comparison` (markdown via ``str``, a figure via ``.plot()``). When the reference can be
        sampled, ``noise_floor`` is the RMS distance between independent reference sets of size n: a sampler
        whose distance is within a small multiple of it is indistinguishable from the truth at this n.
    """
    check_choice(metric, METRICS, "metric")
    if isinstance(samplers, Mapping):
        named = list(samplers.items())
    else:
        named = [(repr(s), s) for s in samplers]
    if not named:
        raise ValueError("samplers must name at least one sampler")
    for name, s in named:
        if not hasattr(s, "sample"):
            raise TypeError(f"sampler {name!r} has no .sample(sde, score, shape, generator) method")
    if int(n) < 2 or int(repeats) < 1:
        raise ValueError(f"need n >= 2 and repeats >= 1; got n={n}, repeats={repeats}")
    n = int(n)
    gen = torch.Generator().manual_seed(seed)

    sampleable = reference is not None and hasattr(reference, "sample") and not torch.is_tensor(reference)
    if torch.is_tensor(reference):
        ref = reference
    elif sampleable:
        ref = reference.sample(n, gen)
    elif reference is None:
        raise ValueError("reference must be a density with .sample(n, generator) or a tensor of samples")
    else:
        raise TypeError(f"reference must be a density with .sample(n, generator) or a tensor; got {type(reference).__name__}")
    if shape is None:
        shape = tuple(ref.shape[1:])
    dtype = dtype or (ref.dtype if ref.is_floating_point() else torch.get_default_dtype())
    device = device if device is not None else ref.device
    ref = ref.to(device=device, dtype=dtype)
    has_density = sampleable and hasattr(reference, "log_prob")

    noise_floor = reference_nll = None
    if sampleable:
        # The spread of the statistic when the samples come from the truth: its RMS over independent true sets.
        others = [reference.sample(n, gen).to(device=device, dtype=dtype) for _ in range(FLOOR_PAIRS)]
        noise_floor = statistics.fmean(_distance(metric, o, ref, gen) ** 2 for o in others) ** 0.5
        if has_density:
            reference_nll = float(-reference.log_prob(others[0]).mean())

    rows = []
    for name, sampler in named:
        distances, walls, nfe, x, diverged = [], [], 0, None, None
        for r in range(int(repeats)):
            run_gen = torch.Generator(device=device).manual_seed(seed + 1000 * (r + 1))
            start = time.perf_counter()
            try:
                res = sampler.sample(sde, score, (n,) + tuple(shape), generator=run_gen, device=device, dtype=dtype)
            except NonFiniteError as err:          # a diverging sampler is a row of the table, not the end of it
                diverged, walls = str(err), [time.perf_counter() - start]
                break
            if device is not None and torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - start)
            x = res.x
            nfe = int(getattr(res, "nfe", 0))
            distances.append(_distance(metric, x, ref, gen))
        if diverged is not None:
            known = sampler.nfe() if callable(getattr(sampler, "nfe", None)) else None
            rows.append(ComparisonRow(name, known or 0, walls[0], float("nan"), diverged=diverged))
            continue
        nll = float(-reference.log_prob(x).mean()) if has_density and bool(torch.isfinite(x).all()) else None
        rows.append(ComparisonRow(name, nfe, statistics.median(walls), statistics.median(distances), nll,
                                  x if keep_samples else None))
    return Comparison(rows=rows, metric=metric, n=n, noise_floor=noise_floor, reference_nll=reference_nll)
