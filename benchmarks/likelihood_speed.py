"""Speed of ``sd.log_likelihood`` against a host-side reference, and exact vs Hutchinson cost against d.

Reference ("score_sde_pytorch style"): our own re-implementation of the algorithm described for
score_sde_pytorch's ``likelihood.py`` (no code copied): the augmented state (x, ∫div) lives in a flat float64
numpy vector integrated by ``scipy.integrate.solve_ivp(method="RK45")``; every evaluation copies the state to
a torch tensor, runs the PF drift under no_grad, then a *second* forward pass with autograd for the Hutchinson
divergence vᵀ ∂F/∂x v (one probe v fixed for the solve), and copies both back to numpy.

Ours: ``sd.log_likelihood(..., divergence="hutchinson", n_probes=1)``: torchdiffeq dopri5 on the torch state,
one forward pass + one VJP per evaluation, no host transfers.

With ``--score-sde-pytorch DIR`` (a checkout of github.com/yang-song/score_sde_pytorch, which needs only torch,
numpy and scipy for this), its real ``likelihood.get_likelihood_fn`` runs beside both on the same network, data
and probe (its VP SDE with β ∈ [0.1, 20], continuous time; the data as (B, d, 1, 1) images, since its score
wrapper expects 4-D input). Nothing of it is copied here; it is imported from DIR at run time.

Both use the same float32 score MLP (briefly fitted by denoising score matching), the same data, the same probe,
eps = 1e-5 and rtol = atol = 1e-5. Prints markdown tables; wall times are medians of ``--repeats`` runs.
A first table splits one evaluation into its parts (forward pass without and with a graph, forward + VJP).

    .venv/bin/python benchmarks/likelihood_speed.py            # ~3 min on a 2-core CPU
    .venv/bin/python benchmarks/likelihood_speed.py --score-sde-pytorch /path/to/score_sde_pytorch
    .venv/bin/python benchmarks/likelihood_speed.py --quick    # smaller, for a smoke test
"""
from __future__ import annotations

import argparse
import importlib
import math
import statistics
import sys
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

import scoresde as sd


class ScoreMLP(torch.nn.Module):
    """ε-network ε_θ(x, t) on flat data; score(x, t) = −ε_θ(x, t) / σ(t); initialised from ``seed``."""

    def __init__(self, dim: int, hidden: int = 128, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 2, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim),
        )

    def forward(self, x, t):
        features = torch.cat([x, torch.sin(2 * math.pi * t)[:, None], torch.cos(2 * math.pi * t)[:, None]], 1)
        return self.net(features)


def make_score(sde, model):
    def score(x, t):
        return -model(x, t) / sde.std(t)[:, None]
    return score


def fit(sde, model, gmm, steps: int, seed: int):
    """A brief denoising-score-matching fit (ε-prediction MSE, t ~ U(1e-5, 1))."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(steps):
        x0 = gmm.sample(512, gen).float()
        t = 1e-5 + (1 - 1e-5) * torch.rand(512, generator=gen)
        xt, z = sde.sample_marginal(x0, t, generator=gen)
        loss = (model(xt, t) - z).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.requires_grad_(False)
    return model


def reference_log_likelihood(sde, score, x, probe, rtol=1e-5, atol=1e-5, eps=1e-5):
    """score_sde_pytorch-style: scipy RK45 on host, numpy round trip and two forward passes per evaluation."""
    batch, d = x.shape
    dtype, device = x.dtype, x.device

    def pf_drift(x_t, t):
        g = sde.diffusion(t)
        return sde.drift(x_t, t) - 0.5 * (g * g)[:, None] * score(x_t, t)

    def rhs(t, y):
        x_t = torch.from_numpy(y[: batch * d].reshape(batch, d)).to(device=device, dtype=dtype)
        t_vec = torch.full((batch,), t, device=device, dtype=dtype)
        with torch.no_grad():
            drift = pf_drift(x_t, t_vec)                           # forward pass 1
        with torch.enable_grad():
            x_g = x_t.clone().requires_grad_(True)
            out = (pf_drift(x_g, t_vec) * probe).sum()             # forward pass 2, for the divergence only
            (grad,) = torch.autograd.grad(out, x_g)
        div = (grad * probe).sum(1)
        return np.concatenate([drift.cpu().numpy().reshape(-1), div.cpu().numpy()]).astype(np.float64)

    y0 = np.concatenate([x.cpu().numpy().reshape(-1), np.zeros(batch)]).astype(np.float64)
    sol = solve_ivp(rhs, (eps, sde.T), y0, rtol=rtol, atol=atol, method="RK45")
    y_end = sol.y[:, -1]
    z = torch.from_numpy(y_end[: batch * d].reshape(batch, d)).to(device=device, dtype=dtype)
    delta = torch.from_numpy(y_end[batch * d:]).to(device=device, dtype=dtype)
    return sde.prior_log_prob(z) + delta, sol.nfev


def real_score_sde_pytorch(path):
    """(likelihood module, sde_lib module) imported from a score_sde_pytorch checkout at ``path``."""
    sys.path.insert(0, path)
    try:
        return importlib.import_module("likelihood"), importlib.import_module("sde_lib")
    finally:
        sys.path.remove(path)


class ImageShaped(torch.nn.Module):
    """score_sde_pytorch calls model(x, labels) with 4-D x and labels = 999 t (VP, continuous)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, labels):
        return self.model(x.reshape(x.shape[0], -1), labels / 999).reshape(x.shape)


def real_log_likelihood(likelihood_module, sde_lib, model, x, seed, rtol=1e-5, atol=1e-5, eps=1e-5):
    """score_sde_pytorch's own likelihood_fn; returns (log p in nats per sample, nfe).

    Its Rademacher probe comes from the global RNG: ``torch.manual_seed(seed)`` makes it the probe ours draws
    from ``Generator().manual_seed(seed)``. It reports bits/dim plus an offset 7 − inverse_scaler(−1) = 8 for
    the identity scaler, undone here.
    """
    sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    fn = likelihood_module.get_likelihood_fn(sde, lambda v: v, rtol=rtol, atol=atol, eps=eps)
    d = x[0].numel()
    torch.manual_seed(seed)
    bpd, _, nfe = fn(ImageShaped(model), x.reshape(x.shape[0], -1, 1, 1))
    return -(bpd.double() - 8.0) * d * math.log(2), nfe


def per_evaluation(score, x, repeats=200):
    """ms for a forward pass without graph, with graph, and forward + one VJP (median of 5 blocks)."""
    t = torch.full((x.shape[0],), 0.5, device=x.device, dtype=x.dtype)
    v = torch.ones_like(x)

    def no_grad():
        with torch.no_grad():
            score(x, t)

    def with_graph():
        score(x.detach().requires_grad_(True), t)

    def with_vjp():
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(score(xg, t), xg, v)

    out = []
    for fn in (no_grad, with_graph, with_vjp):
        for _ in range(20):
            fn()
        blocks = []
        for _ in range(5):
            sync(x.device)
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            sync(x.device)
            blocks.append((time.perf_counter() - start) / repeats * 1e3)
        out.append(statistics.median(blocks))
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats):
    """(median wall time, median CPU time of this process, last output) over ``repeats`` runs."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus), out


def interleaved(fns, repeats):
    """Run ``fns`` (name → callable) in turn after one warm-up call each, ``repeats`` rounds, so slow drifts of a shared machine hit all alike.

    Returns name → (median wall, median CPU, last output, per-round walls).
    """
    walls = {name: [] for name in fns}
    cpus = {name: [] for name in fns}
    outs = {}
    for fn in fns.values():         # warm-up: first calls build tables and caches
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu, outs[name] = timed(fn, 1)
            walls[name].append(wall)
            cpus[name].append(cpu)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name]), outs[name], walls[name])
            for name in fns}


def bpd(log_prob, d):
    """Continuous-data negative log-likelihood in bits/dim, mean and standard error over the batch."""
    v = -log_prob.double() / (d * math.log(2))
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def mixture(d, seed):
    gen = torch.Generator().manual_seed(seed)
    k = 8 if d == 2 else 4
    if d == 2:
        return sd.eight_gaussians(radius=1.0, std=0.1)
    return sd.GaussianMixture(torch.randn(k, d, generator=gen, dtype=torch.float64) * 0.8,
                              torch.full((k,), 0.3, dtype=torch.float64))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is steadier on a shared 2-core machine)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--score-sde-pytorch", metavar="DIR", default=None,
                        help="checkout of yang-song/score_sde_pytorch: also run its real likelihood_fn")
    args = parser.parse_args()
    real = real_score_sde_pytorch(args.score_sde_pytorch) if args.score_sde_pytorch else None
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sde = sd.VPSDE()
    fit_steps = 100 if args.quick else 400
    repeats = 1 if args.quick else args.repeats
    tol = dict(rtol=1e-5, atol=1e-5, eps=1e-5)
    print(f"device {device}, torch threads {torch.get_num_threads()}, VP SDE, eps = 1e-5, rtol = atol = 1e-5, "
          f"float32 MLP, median of {repeats} runs\n")

    # -- ours vs the reference --------------------------------------------------------------------------
    dims = (2,) if args.quick else (2, 16)
    setups = {}         # d → (fitted model, data)
    for d in dims:
        gmm = mixture(d, seed=d)
        model = fit(sde, ScoreMLP(d, seed=d), gmm, fit_steps, seed=d).to(device)
        setups[d] = (model, gmm.sample(args.batch, torch.Generator().manual_seed(100 + d)).float().to(device))

    print(f"## one evaluation, in ms (batch {args.batch}; median of 5 blocks of 200)\n")
    print("| d | forward, no graph | forward, with graph | forward + VJP | reference: 2 forwards + VJP | "
          "ours: forward + VJP | bound on the speed-up at equal NFE |")
    print("|---|---|---|---|---|---|---|")
    for d in dims:
        model, x = setups[d]
        plain, graph, vjp = per_evaluation(make_score(sde, model), x)
        print(f"| {d} | {plain:.3f} | {graph:.3f} | {vjp:.3f} | {plain + vjp:.3f} | {vjp:.3f} | "
              f"{(plain + vjp) / vjp:.2f}× |")

    print(f"\n## ours vs score_sde_pytorch (Hutchinson, one fixed Rademacher probe, batch {args.batch})\n")
    print("| d | method | wall time (s) | CPU time (s) | NFE | forward passes | NLL (bits/dim) ± s.e. | "
          "speed-up of ours: ratio of medians (median of per-round ratios) |")
    print("|---|---|---|---|---|---|---|---|")
    for d in dims:
        model, x = setups[d]
        score = make_score(sde, model)
        gen = torch.Generator(device=device).manual_seed(7)
        probe = (2 * torch.randint(0, 2, x.shape, generator=gen, device=device) - 1).float()
        # Ours draws the same probe from the same generator state.
        fns = {
            "ours": lambda: sd.log_likelihood(sde, score, x, divergence="hutchinson", probe="rademacher",
                                              generator=torch.Generator(device=device).manual_seed(7), **tol),
            "reference": lambda: reference_log_likelihood(sde, score, x, probe, **tol),
        }
        if real is not None:
            fns["real"] = lambda: real_log_likelihood(*real, model, x, seed=7, **tol)
        runs = interleaved(fns, repeats)
        t_ours, c_ours, res, walls_ours = runs["ours"]
        m_ours, s_ours = bpd(res.log_prob, d)
        names = {"reference": "reference (ours, written from the description: scipy RK45, numpy, 2 forwards)",
                 "real": "score_sde_pytorch `likelihood.py` (the real one)"}
        for key in [k for k in ("reference", "real") if k in runs]:
            wall, cpu, (lp, nfe), walls = runs[key]
            m, se = bpd(lp, d)
            diff = (res.log_prob.double() - lp.double().to(res.log_prob.device)) / (d * math.log(2))
            paired = statistics.median(w / o for w, o in zip(walls, walls_ours))
            print(f"| {d} | {names[key]} | {wall:.2f} | {cpu:.2f} | {nfe} | {2 * nfe} | {m:.4f} ± {se:.4f} "
                  f"(ours − it: mean {float(diff.mean()):+.1e}, max abs {float(diff.abs().max()):.1e}) | "
                  f"{wall / t_ours:.2f}× (paired {paired:.2f}×) |")
        print(f"| {d} | ours (torchdiffeq dopri5, 1 forward + 1 VJP) | {t_ours:.2f} | {c_ours:.2f} | {res.nfe} | "
              f"{res.nfe} | {m_ours:.4f} ± {s_ours:.4f} | 1.00× |")

    # -- exact vs Hutchinson against d ------------------------------------------------------------------
    sweep_batch = 64
    dims = (2, 16) if args.quick else (2, 16, 64, 256)
    print(f"\n## exact vs Hutchinson (1 Rademacher probe) against d (ours, batch {sweep_batch})\n")
    print("Exact: d VJPs per evaluation, batched into one backward pass (default) or one at a time "
          "(`vjp_batch=1`).\n")
    print("| d | exact batched: s/solve | exact one at a time: s/solve | exact: NFE | exact: VJPs | "
          "Hutchinson: s/solve | Hutchinson: NFE | exact batched / Hutchinson | "
          "Hutch − exact (bits/dim): mean ± s.e. | mean abs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d in dims:
        gmm = mixture(d, seed=d)
        model = fit(sde, ScoreMLP(d, seed=d), gmm, fit_steps // 4, seed=d).to(device)
        score = make_score(sde, model)
        x = gmm.sample(sweep_batch, torch.Generator().manual_seed(200 + d)).float().to(device)
        reps = 1 if d >= 64 else repeats
        t_exact, _, exact = timed(lambda: sd.log_likelihood(sde, score, x, divergence="exact", **tol), reps)
        t_loop, _, loop = timed(lambda: sd.log_likelihood(sde, score, x, divergence="exact", vjp_batch=1,
                                                          **tol), reps)
        t_hutch, _, hutch = timed(lambda: sd.log_likelihood(
            sde, score, x, divergence="hutchinson", generator=torch.Generator(device=device).manual_seed(3),
            **tol), repeats)
        gap = (exact.log_prob - hutch.log_prob).double() / (d * math.log(2))    # bits/dim: −log p / (d ln 2)
        print(f"| {d} | {t_exact:.2f} | {t_loop:.2f} | {exact.nfe} | {exact.nfe * d} | {t_hutch:.2f} | "
              f"{hutch.nfe} | {t_exact / t_hutch:.1f}× | "
              f"{float(gap.mean()):+.3f} ± {float(gap.std()) / math.sqrt(gap.numel()):.3f} | "
              f"{float(gap.abs().mean()):.3f} |")


if __name__ == "__main__":
    main()
