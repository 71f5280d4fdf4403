"""Accuracy against cost of every sampler on the 2-D oracle (eight Gaussians, exact score).

For each sampler and a range of NFE (about 10 to 1000) it reports the energy distance and the sliced
2-Wasserstein distance from its samples to fresh samples of the true data distribution, with wall time. All
samplers start from the same prior draws (common random numbers); each figure is the median over ``--seeds``
seeds, next to the noise floor (the same distance between two independent sets of true samples). It writes a
markdown table and a PNG plot to ``benchmarks/results/``.

Target (issue 3): the best sampler at ≤ 20 NFE comes within 10% of Euler–Maruyama at 1000 NFE.

    python benchmarks/sampler_accuracy.py [--n 5000] [--seeds 3] [--sde vp|subvp|ve] [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import scoresde as sd

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def families(quick: bool):
    em = [10, 20, 50, 100, 200, 500, 1000]
    ode = [5, 10, 20, 50, 100]
    if quick:
        em, ode = [10, 100, 1000], [5, 10, 20]
    fam = {
        "Euler–Maruyama": [(sd.ReverseSDESampler(steps=s, backend="native"), s) for s in em],
        "PC reverse diffusion + Langevin": [(sd.PCSampler(steps=s), s) for s in [s // 2 for s in em if s >= 20]],
        "PC ancestral (DDPM)": [(sd.PCSampler("ancestral", None, steps=s), s) for s in em],
        "PF-ODE dopri5": [(sd.ProbabilityFlowSampler(rtol=r, atol=r), r) for r in (1e-2, 1e-3, 1e-4, 1e-5)],
        "EDM Heun": [(sd.HeunSampler(steps=s), s) for s in ode],
        "DDIM": [(sd.DPMSolver(steps=2 * s, order=1), 2 * s) for s in ode],
        "DPM-Solver++ 2M": [(sd.DPMSolver(steps=2 * s, order=2), 2 * s) for s in ode],
        "DPM-Solver++ 3M": [(sd.DPMSolver(steps=2 * s, order=3), 2 * s) for s in ode],
        "DPM-Solver 3M (ε form)": [(sd.DPMSolver(steps=2 * s, order=3, prediction="eps"), 2 * s) for s in ode],
        "DPM-Solver++ 2S": [(sd.DPMSolver(steps=s, order=2, multistep=False), s) for s in ode],
    }
    return fam


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sde", default="vp", choices=("vp", "subvp", "ve"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer NFE values (a smoke run)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    device, dtype, n = args.device, torch.float64, args.n
    sde = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE()}[args.sde]
    gmm = sd.eight_gaussians(device=device)
    score = gmm.score(sde)

    gens = [torch.Generator(device=device).manual_seed(100 + s) for s in range(args.seeds)]
    priors = [sde.prior_sample((n, 2), generator=g, device=device, dtype=dtype) for g in gens]
    refs = [gmm.sample(n, g) for g in gens]
    proj = torch.Generator(device=device).manual_seed(7)
    floor_e = statistics.median(float(sd.energy_distance(gmm.sample(n, g), r)) for g, r in zip(gens, refs))
    floor_w = statistics.median(float(sd.sliced_wasserstein(gmm.sample(n, g), r, generator=proj))
                                for g, r in zip(gens, refs))

    rows = []
    for family, runs in families(args.quick).items():
        for sampler, setting in runs:
            e, w, walls, nfe = [], [], [], 0
            for g, x_T, ref in zip(gens, priors, refs):
                start = time.perf_counter()
                res = sampler.sample(sde, score, (n, 2), generator=g, x_T=x_T)
                walls.append(time.perf_counter() - start)
                nfe = res.nfe
                e.append(float(sd.energy_distance(res.x, ref)))
                w.append(float(sd.sliced_wasserstein(res.x, ref, generator=proj)))
            rows.append((family, setting, nfe, statistics.median(e), statistics.median(w), statistics.median(walls)))
            print(f"{family:34s} {str(setting):>7s}  NFE {nfe:5d}  energy {rows[-1][3]: .3e}  SW {rows[-1][4]:.4f}"
                  f"  {rows[-1][5]:.2f} s", flush=True)

    lines = [f"Oracle: eight Gaussians (radius 2, std 0.1) under {type(sde).__name__}, exact score, float64, "
             f"n = {n}, median over {args.seeds} seeds, device {device}.",
             f"Noise floor (true vs true): energy {floor_e:.3e}, sliced W2 {floor_w:.4f}.", "",
             "| sampler | setting | NFE | energy distance | sliced W2 | wall (s) |", "|---|---:|---:|---:|---:|---:|"]
    for family, setting, nfe, e, w, wall in rows:
        lines.append(f"| {family} | {setting} | {nfe} | {e:.3e} | {w:.4f} | {wall:.2f} |")
    em1000 = [r for r in rows if r[0] == "Euler–Maruyama" and r[1] == 1000]
    cheap = [r for r in rows if r[2] <= 20]
    if em1000 and cheap:
        ref = em1000[0]
        best_w = min(cheap, key=lambda r: r[4])
        best_e = min(cheap, key=lambda r: r[3])
        lines += ["", f"Euler–Maruyama at {ref[2]} NFE: sliced W2 {ref[4]:.4f}, energy {ref[3]:.3e}.",
                  f"Best at ≤ 20 NFE by sliced W2: {best_w[0]} ({best_w[1]}, NFE {best_w[2]}): {best_w[4]:.4f} = "
                  f"{best_w[4] / ref[4]:.2f}× Euler–Maruyama's (target ≤ 1.10×).",
                  f"Best at ≤ 20 NFE by energy distance: {best_e[0]} ({best_e[1]}, NFE {best_e[2]}): {best_e[3]:.3e}; "
                  f"excess over Euler–Maruyama {best_e[3] - ref[3]:+.3e} (noise floor {floor_e:.1e})."]
    table = "\n".join(lines)
    print()
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"sampler_accuracy_{args.sde}.md"), "w") as fh:
        fh.write(table + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family in dict.fromkeys(r[0] for r in rows):
        pts = sorted((r[2], r[4]) for r in rows if r[0] == family)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=family)
    ax.axhline(floor_w, color="grey", linestyle="--", linewidth=1, label="noise floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel("sliced W2 to true samples")
    ax.set_title(f"eight Gaussians, {type(sde).__name__}, n={n}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(args.out, f"sampler_accuracy_{args.sde}.png")
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
