"""Inverse problems on the exact oracle: every method's samples against exact posterior samples.

    .venv/bin/python benchmarks/inverse_problems.py [--n 2000] [--floor-repeats 10] [--seed 0] [--quick]

The prior is a Gaussian mixture, so the posterior p(x₀ | y) under a linear-Gaussian measurement is an exact
mixture too (``gmm.posterior(meas)``), and each method runs on the exact prior score ``gmm.score(sde)`` (VP SDE,
float64): what is left is the method's own error, not a model's. Three tasks:

- ``inpaint-2d``: eight Gaussians (radius 2, std 0.3); observe x[0] exactly (``sd.Mask``, σ_y = 0);
- ``denoise-2d``: the same prior, A = I, σ_y = 0.5 (the noise draw's seed was chosen for a posterior with three
  unequal modes: most draws give one dominant mode);
- ``project-16d``: 8 components with full covariances in 16-D, in 4 pairs whose two members differ only in the
  null space of A (so y cannot tell them apart and the posterior splits its mass between them); A a random
  (4, 16) matrix with N(0, 1/16) entries, σ_y = 0.1.

x_true is one prior draw (seeded), y = A x_true + σ_y n is shared by all samples. For every method the script
draws ``--n`` samples and reports:

- the energy distance (``sd.energy_distance``, an unbiased U-statistic: 0 in expectation for exact samples) and the
  sliced 2-Wasserstein distance (``sd.sliced_wasserstein``, 256 fixed directions) to a reference set of ``--n``
  exact posterior samples;
- the noise floor: the same two distances from ``--floor-repeats`` further independent exact sets to the reference
  (median and largest). A method is "within the floor" when both its distances are at most the largest floor
  value; otherwise the verdict gives its sliced W2 as a multiple of the floor's median;
- the posterior-mean error ‖mean(samples) − E[x₀ | y]‖ (the floor: the same for exact sets);
- the posterior mass per mixture component: each sample's exact responsibilities r_k(x) = w'_k N(x; m_k, C_k) /
  Σ_j w'_j N(x; m_j, C_j) under the posterior's own components, averaged over the samples, against the exact
  posterior weights w'_k; reported as the total-variation distance ½ Σ_k |w'_k − mean r_k|. For exact samples
  E[r_k(x)] = w'_k exactly (soft assignment is unbiased even where components overlap). The noiseless inpainting
  posterior has singular covariances (no spread in the observed coordinate), so there its responsibilities are
  computed on the unobserved coordinates only, where every C_k is non-singular;
- the data fit: the mean ‖y − A x‖ over the samples, next to that of exact samples (below it: the method trusts y
  more than the posterior does; above it: less);
- NFE (score calls), network evaluations (a guided call costs a forward and a backward pass: 2; Tweedie-moment
  guidance m + 2) and wall time (one run; the 2-core machine may be shared, so wall times are rough).

Methods (``sd.solve_inverse`` on the exact prior score; the settings column of the table gives each row's
options): DPS in both forms — "Gaussian" (``normalized=False``: ζ ∇ log N(y; A x̂₀, σ_y² I), noisy tasks only) and
"normalized" (the library's default, −(ζ/σ(t)²) ∇ ‖y − A x̂₀‖) — over a sweep of ζ; ΠGDM with σ_d the prior's
per-coordinate std and σ_d = 1; Tweedie-moment guidance; replacement and RePaint (mask task only); split Gibbs
with ρ annealed geometrically (SDE-DPM-Solver++(2M) prior steps); RED. The guided samplers take DDPM ancestral
steps (DDIM η = 1). The best setting of each guided family (smallest sliced W2 in its sweep) is run again with
1000 steps, to tell the method's bias from its discretization error. The first row samples the exact posterior's
own score (``post.score(sde)``) with the same 200 DDPM steps: the share of the error that the sampler alone makes.

RED returns a point estimate (every row the same): only its mean error means anything, its distances are
printed as "–". The "split Gibbs, fixed ρ" rows (ρ = 0.5 and 2) are a sanity check of the sampler against its
own exact target, the posterior under the inflated noise σ_y² I + ρ² A Aᵀ (``meas.inflated(ρ)``), with its own
reference and floor. A last table gives each method's best row per task (its cheapest row within the floor, else
its smallest sliced W2). A figure of the 2-D tasks (exact posterior density and each method's best samples) is
saved under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch

import scoresde as sd

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
F64 = torch.float64


# -- tasks ---------------------------------------------------------------------------------------------------
def mixture_16d(A: torch.Tensor, seed: int = 0) -> sd.GaussianMixture:
    """8 components in 16-D with full covariances (eigenvalues in [0.05, 0.3], random axes): 4 random base
    means (N(0, I)), each split into a pair ± 1.5 u along a random unit vector u of A's null space."""
    g = torch.Generator().manual_seed(1000 + seed)
    m, D = A.shape
    K = 8
    null = torch.linalg.svd(A, full_matrices=True)[2][m:].T                  # (D, D − m)
    base = torch.randn((K // 2, D), generator=g, dtype=F64)
    offset = null @ torch.randn((D - m, K // 2), generator=g, dtype=F64)
    offset = 1.5 * offset / offset.norm(dim=0, keepdim=True)
    means = torch.stack([base + offset.T, base - offset.T], 1).reshape(K, D)
    Q = torch.linalg.qr(torch.randn((K, D, D), generator=g, dtype=F64))[0]
    lam = 0.05 + 0.25 * torch.rand((K, D), generator=g, dtype=F64)
    covariances = Q @ (lam[..., None] * Q.transpose(1, 2))
    weights = torch.softmax(0.5 * torch.randn(K, generator=g, dtype=F64), 0)
    return sd.GaussianMixture(means, covariances=covariances, weights=weights)


def make_task(name: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    if name in ("inpaint-2d", "denoise-2d"):
        prior = sd.eight_gaussians(std=0.3)
        x_true = prior.sample(1, torch.Generator().manual_seed(1 + seed))[0]
        if name == "inpaint-2d":
            meas = sd.LinearMeasurement(sd.Mask(torch.tensor([True, False])), x_true.clone(), 0.0)
            text = f"eight Gaussians (std 0.3), observe x[0] = {float(x_true[0]):.3f} exactly"
        else:                                        # noise seed 4: a posterior with three unequal modes
            y = x_true + 0.5 * torch.randn(2, generator=torch.Generator().manual_seed(4 + seed), dtype=F64)
            meas = sd.LinearMeasurement(torch.eye(2, dtype=F64), y, 0.5)
            text = f"eight Gaussians (std 0.3), A = I, σ_y = 0.5, y = ({float(y[0]):.3f}, {float(y[1]):.3f})"
    else:
        D, m = 16, 4
        A = torch.randn((m, D), generator=torch.Generator().manual_seed(2000 + seed), dtype=F64) / math.sqrt(D)
        prior = mixture_16d(A, seed)
        x_true = prior.sample(1, torch.Generator().manual_seed(3000 + seed))[0]
        y = A @ x_true + 0.1 * torch.randn(m, generator=g, dtype=F64)
        meas = sd.LinearMeasurement(A, y, 0.1)
        text = "16-D mixture of 8 full-covariance Gaussians, A random (4, 16), σ_y = 0.1"
    return prior, meas, text


def data_std(prior: sd.GaussianMixture) -> float:
    """The prior's per-coordinate standard deviation √(tr Cov[x₀] / D), for ΠGDM's σ_d."""
    w = prior.weights
    mean = w @ prior.means
    second = (w[:, None, None] * (prior.covariances + prior.means[:, :, None] * prior.means[:, None, :])).sum(0)
    return math.sqrt(float(torch.trace(second - torch.outer(mean, mean))) / prior.dim)


# -- metrics -------------------------------------------------------------------------------------------------
class Target:
    """An exact posterior with its reference sample set, noise floor and component responsibilities."""

    def __init__(self, post: sd.GaussianMixture, meas, free: torch.Tensor, n: int, repeats: int, seed: int):
        self.post, self.free, self.n = post, free, n
        self.A, self.y = meas.dense()
        self.mean = post.weights @ post.means
        cov = post.covariances[:, free][:, :, free]
        self.components = torch.distributions.MultivariateNormal(post.means[:, free],
                                                                 covariance_matrix=(cov + cov.transpose(1, 2)) / 2)
        self.ref = post.sample(n, torch.Generator().manual_seed(10_000 + seed))
        floors = [self.distances(post.sample(n, torch.Generator().manual_seed(20_000 + seed + r)))
                  for r in range(repeats)]
        self.floor = {key: (statistics.median(f[key] for f in floors), max(f[key] for f in floors))
                      for key in floors[0]}

    def masses(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over samples of the exact responsibilities r_k(x) (on the free coordinates)."""
        log = self.components.log_prob(x[:, None, self.free]) + torch.log(self.post.weights)
        return torch.softmax(log, dim=1).mean(0)

    def distances(self, x: torch.Tensor) -> dict:
        x = x.to(F64)
        return {"energy": float(sd.energy_distance(x, self.ref)),
                "sw2": float(sd.sliced_wasserstein(x, self.ref, generator=torch.Generator().manual_seed(7))),
                "mean": float((x.mean(0) - self.mean).norm()),
                "tv": 0.5 * float((self.masses(x) - self.post.weights).abs().sum()),
                "fit": float((x @ self.A.T - self.y).norm(dim=1).mean())}

    def verdict(self, d: dict) -> str:
        if d["energy"] <= self.floor["energy"][1] and d["sw2"] <= self.floor["sw2"][1]:
            return "within"
        return f"{d['sw2'] / self.floor['sw2'][0]:.1f}× floor"


# -- methods -------------------------------------------------------------------------------------------------
def methods(meas, prior, quick: bool):
    """(label, settings text, solve_inverse name, options, kind, family) rows. kind is "sample", "point" or a ρ
    (the fixed-ρ split-Gibbs sanity rows); rows of one family are a scale sweep whose best (smallest sliced W2)
    is run again at 1000 steps."""
    steps = 100 if quick else 200
    noisy = meas.noise_std > 0
    rows = [("exact posterior score (reference)", f"{steps} DDPM steps", None, dict(steps=steps), "sample", None)]
    if noisy:
        for scale in (0.1, 0.3, 1.0, 3.0):
            rows.append(("DPS, Gaussian", f"{steps} DDPM steps, ζ = {scale:g}", "dps",
                         dict(steps=steps, scale=scale, normalized=False), "sample", "dps"))
    for scale in (0.3, 1.0, 3.0, 10.0):
        rows.append(("DPS, normalized", f"{steps} DDPM steps, ζ = {scale:g}", "dps",
                     dict(steps=steps, scale=scale, normalized=True), "sample", "dps_normalized"))
    for sigma_d in (data_std(prior), 1.0):
        rows.append(("ΠGDM", f"{steps} DDPM steps, σ_d = {sigma_d:.2f}", "pigdm",
                     dict(steps=steps, data_std=sigma_d), "sample", "pigdm"))
    rows.append(("Tweedie moment", f"{steps} DDPM steps", "tweedie_moment", dict(steps=steps), "sample",
                 "tweedie_moment"))
    if meas.mask is not None:
        rows.append(("replacement", f"{steps} DDPM steps", "replacement", dict(steps=steps), "sample", None))
        rows.append(("RePaint", "50 steps, r = 10, j = 10", "repaint",
                     dict(steps=50, resamplings=10, jump_length=10), "sample", None))
    sweeps = 10 if quick else 20
    rows.append(("split Gibbs", f"ρ 1 → 0.05, {sweeps} sweeps × 10 steps", "split_gibbs",
                 dict(rho=1.0, rho_min=0.05, iterations=sweeps, steps=10), "sample", None))
    if not quick:
        rows.append(("split Gibbs", "ρ 3 → 0.05, 100 sweeps × 10 steps", "split_gibbs",
                     dict(rho=3.0, rho_min=0.05, iterations=100, steps=10), "sample", None))
    for rho in (0.5, 2.0):
        rows.append(("split Gibbs, fixed ρ (sanity)", f"ρ = {rho:g}, {sweeps} sweeps × 20 steps", "split_gibbs",
                     dict(rho=rho, rho_min=None, iterations=sweeps, steps=20), rho, None))
    level = 0.1
    rows.append(("RED", f"fixed point, ν = {level:g}, λ = 1/ν², 100 iterations", "red",
                 dict(noise_level=level, lam=1 / level ** 2, iterations=100), "point", None))
    return rows


# -- figure --------------------------------------------------------------------------------------------------
def figure(panels, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(p["samples"]) for p in panels)
    fig, axes = plt.subplots(len(panels), cols, figsize=(1.9 * cols, 2.0 * len(panels)), squeeze=False)
    for row, panel in zip(axes, panels):
        post, meas = panel["post"], panel["meas"]
        for ax, (label, x) in zip(row, panel["samples"]):
            x = x.detach().cpu()
            if meas.mask is not None:                # the posterior lies on the line x[0] = y: plot x[1]
                grid = torch.linspace(-3.2, 3.2, 400, dtype=F64)
                density = sum(float(w) * torch.exp(-0.5 * (grid - mu[1]) ** 2 / c[1, 1])
                              / math.sqrt(2 * math.pi * c[1, 1])
                              for w, mu, c in zip(post.weights, post.means, post.covariances))
                ax.hist(x[:, 1].numpy(), bins=60, range=(-3.2, 3.2), density=True, color="tab:blue", alpha=0.6)
                ax.plot(grid.numpy(), density.numpy(), color="k", lw=0.8)
                ax.set_yticks([])
            else:                                    # log-density contours 0.5, 2, 4, 6 nats below the top
                ref = panel["samples"][0][1]
                lo, hi = ref.min(0).values - 0.5, ref.max(0).values + 0.5
                half = float((hi - lo).max()) / 2
                mid = (lo + hi) / 2
                u = torch.linspace(float(mid[0]) - half, float(mid[0]) + half, 160, dtype=F64)
                v = torch.linspace(float(mid[1]) - half, float(mid[1]) + half, 160, dtype=F64)
                X, Y = torch.meshgrid(u, v, indexing="xy")
                logp = post.log_prob(torch.stack([X.reshape(-1), Y.reshape(-1)], 1)).reshape(X.shape)
                top = float(logp.max())
                ax.contour(X.numpy(), Y.numpy(), logp.numpy(), levels=[top - 6, top - 4, top - 2, top - 0.5],
                           colors="k", linewidths=0.5, linestyles="solid")
                ax.scatter(x[:1000, 0].numpy(), x[:1000, 1].numpy(), s=0.5, color="tab:blue", alpha=0.5)
                ax.set_xlim(float(u[0]), float(u[-1]))
                ax.set_ylim(float(v[0]), float(v[-1]))
                ax.set_aspect("equal")
                ax.set_yticks([])
            ax.set_xticks([])
            ax.set_title(label, fontsize=6)
        for ax in row[len(panel["samples"]):]:
            ax.axis("off")
        row[0].set_ylabel(panel["task"], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------------------
def run_task(task: str, args, sde):
    prior, meas, text = make_task(task, args.seed)
    D = prior.dim
    n = args.n
    free = torch.ones(D, dtype=torch.bool)
    if meas.mask is not None and meas.noise_std == 0:
        free = ~meas.mask.mask.reshape(-1)
    post = prior.posterior(meas)
    target = Target(post, meas, free, n, args.floor_repeats, args.seed)
    score = prior.score(sde)
    weights = ", ".join(f"{w:.3f}" for w in post.weights.tolist() if w > 5e-4)
    print(f"\n### {task}: {text}\n")
    print(f"Exact posterior weights above 5e-4: {weights}. Noise floor (exact vs exact, median / largest of "
          f"{args.floor_repeats}): energy {target.floor['energy'][0]:.2e} / {target.floor['energy'][1]:.2e}, "
          f"sliced W2 {target.floor['sw2'][0]:.4f} / {target.floor['sw2'][1]:.4f}, mean error "
          f"{target.floor['mean'][0]:.4f} / {target.floor['mean'][1]:.4f}, mass TV {target.floor['tv'][0]:.4f} / "
          f"{target.floor['tv'][1]:.4f}; data fit ‖y − A x‖ of exact samples {target.floor['fit'][0]:.3f}.\n")
    print("| method | settings | NFE | network evals | energy distance | sliced W2 | mean error | mass TV | "
          "data fit | verdict | wall (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    samples = [("exact", "i.i.d. posterior draws", 0.0, target.ref)]
    best, summary = {}, {}

    def run(label, settings, name, options, kind):
        g = torch.Generator().manual_seed(args.seed + 1)
        start = time.perf_counter()
        if name is None:                            # the exact posterior's own score: the sampler's share of error
            res = sd.DDIMSampler(steps=options["steps"], eta=1.0).sample(sde, post.score(sde), (n, D), g)
        else:
            res = sd.solve_inverse(name, sde, score, meas, (n, D), g, **options)
        wall = time.perf_counter() - start
        x = res.x.detach().to(F64).cpu()
        head = f"| {label} | {settings} | {res.nfe} | {res.network_evaluations} |"
        if not bool(torch.isfinite(x).all()) or float(x.abs().max()) > 1e3:
            print(f"{head} diverged | | | | | diverged | {wall:.1f} |", flush=True)
            return None
        against = target
        if not isinstance(kind, str):               # fixed ρ: the inflated posterior is the exact target
            against = Target(prior.posterior(meas.inflated(kind)), meas, torch.ones(D, dtype=torch.bool), n,
                             args.floor_repeats, args.seed + 1)
        d = against.distances(x)
        base = label.replace(" (best, more steps)", "")
        if kind == "point":
            cells = f"– | – | {d['mean']:.4f} | – | {d['fit']:.3f} | point estimate"
            summary[base] = f"point estimate, mean error {d['mean']:.3f}"
        else:
            cells = (f"{d['energy']:.2e} | {d['sw2']:.4f} | {d['mean']:.4f} | {d['tv']:.4f} | {d['fit']:.3f} | "
                     f"{against.verdict(d)}{' of p(x₀ ∣ y′)' if against is not target else ''}")
            if against is target:
                samples.append((label, settings, d["sw2"], x))
                verdict = against.verdict(d)        # the summary: the cheapest row within the floor, else the
                rank = (0, res.nfe) if verdict == "within" else (1, d["sw2"])          # smallest sliced W2
                if base not in summary or rank < summary[base][0]:
                    summary[base] = (rank, f"{verdict} (TV {d['tv']:.3f}, {res.nfe} NFE)")
        print(f"{head} {cells} | {wall:.1f} |", flush=True)
        return d

    for label, settings, name, options, kind, family in methods(meas, prior, args.quick):
        d = run(label, settings, name, options, kind)
        if family is not None and d is not None and (family not in best or d["sw2"] < best[family][0]):
            best[family] = (d["sw2"], label, settings, name, options)
    if not args.quick:
        for _, label, settings, name, options in best.values():
            settings = settings.replace(f"{options['steps']} DDPM steps", "1000 DDPM steps")
            run(label + " (best, more steps)", settings, name, dict(options, steps=1000), "sample")
    chosen = {}                                     # the figure: each method's best setting (smallest sliced W2)
    for label, settings, sw2, x in samples:
        label = label.replace(" (best, more steps)", "")
        if label not in chosen or sw2 < chosen[label][0]:
            chosen[label] = (sw2, f"{label}\n{settings}", x)
    summary = {k: v if isinstance(v, str) else v[1] for k, v in summary.items()}
    return {"task": task, "post": post, "meas": meas, "samples": [(t, x) for _, t, x in chosen.values()],
            "summary": summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per method (and per exact set)")
    parser.add_argument("--floor-repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default="inpaint-2d,denoise-2d,project-16d")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer steps and rows (a smoke run)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.n, args.floor_repeats = min(args.n, 500), min(args.floor_repeats, 4)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(F64)                    # solve_inverse draws its samples in the default dtype
    sde = sd.VPSDE()
    print(f"VPSDE, exact mixture score, float64, n = {args.n}, seed {args.seed}, CPU, "
          f"torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s).")
    start = time.perf_counter()
    panels = [run_task(task, args, sde) for task in args.tasks.split(",")]
    print("\n### Summary: each method at its best setting (its cheapest row within the floor, else its smallest "
          "sliced W2)\n")
    print("| method | " + " | ".join(p["task"] for p in panels) + " |")
    print("|---|" + "---|" * len(panels))
    order = ["exact posterior score (reference)", "DPS, Gaussian", "DPS, normalized", "ΠGDM", "Tweedie moment",
             "replacement", "RePaint", "split Gibbs", "RED"]
    labels = sorted(dict.fromkeys(label for p in panels for label in p["summary"]),
                    key=lambda label: order.index(label) if label in order else len(order))
    for label in labels:
        print(f"| {label} | " + " | ".join(p["summary"].get(label, "–") for p in panels) + " |")
    print(f"\nTotal wall time {time.perf_counter() - start:.0f} s.")
    flat = [p for p in panels if p["post"].dim == 2]
    if flat:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"inverse_problems_seed{args.seed}.png")
        figure(flat, path)
        print(f"Figure: {path}")


if __name__ == "__main__":
    main()
