"""The grid search (`sd.optimize_grid`) against the fixed grids, on fresh prior draws.

For each sampler and budget: the RMS error against dopri5 at rtol = atol = 1e-9 (the exact probability-flow image of
the same draws) of every fixed grid and of the searched grid, on held-out draws (the search sees others). The exact
mixture scores under VP: the 2-D eight Gaussians and the 16-D mixture of tests/helpers.py, float64.

    .venv/bin/python benchmarks/grid_search.py            # a few minutes on a 2-core CPU
    .venv/bin/python benchmarks/grid_search.py --quick
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.sampling.optimize import rms_distance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import mixture_16d_diagonal  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", type=int, default=256, help="prior draws the search sees")
    parser.add_argument("--fresh", type=int, default=1024, help="held-out prior draws it is scored on")
    parser.add_argument("--evaluations", type=int, default=200, help="sampler runs per search")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.search, args.fresh, args.evaluations = 64, 256, 40
    torch.set_num_threads(1)
    F64 = torch.float64
    cases = [(sd.DPMSolver, dict(order=2)), (sd.DPMSolver, dict(order=3)), (sd.UniPCSampler, dict(order=2)),
             (sd.UniPCSampler, dict(order=3)), (sd.LMSSampler, dict(order=4))]
    print("| D | sampler | NFE | uniform | log_snr | edm | quadratic | searched | gain | search s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dim in (2, 16):
        gmm = sd.eight_gaussians() if dim == 2 else mixture_16d_diagonal()
        sde = sd.VPSDE()
        score = gmm.score(sde)
        g = torch.Generator().manual_seed(0)
        search = torch.randn(args.search, dim, dtype=F64, generator=g)
        fresh = torch.randn(args.fresh, dim, dtype=F64, generator=g)
        tight = sd.ProbabilityFlowSampler(rtol=1e-9, atol=1e-9, time_variable="t")
        reference = tight.sample(sde, score, fresh.shape, x_T=fresh).x
        for nfe in ((5, 10) if args.quick else (5, 10, 20)):
            for cls, options in cases:
                sampler = cls(steps=nfe, **options)
                start = time.perf_counter()
                res = sd.optimize_grid(sde, score, sampler, search, max_evaluations=args.evaluations)
                seconds = time.perf_counter() - start

                def error(times):
                    return rms_distance(sampler.sample(sde, score, fresh.shape, x_T=fresh, times=times).x, reference)

                fixed = {kind: error(sd.time_grid(sde, nfe, kind, sampler.eps)) for kind in sd.sampling.GRIDS}
                searched = error(res.times)
                best = min(v for v in fixed.values() if math.isfinite(v))
                name = cls.__name__ + " o" + str(options["order"])
                row = " | ".join(f"{fixed[k]:.3g}" for k in ("uniform", "log_snr", "edm", "quadratic"))
                print(f"| {dim} | {name} | {nfe} | {row} | **{searched:.3g}** | {best / searched:.1f}× | "
                      f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
