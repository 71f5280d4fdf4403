"""Per-step overhead of every fixed-step sampler: wall time / (NFE × time of one score evaluation).

A small MLP score network at batch 4096 (2-D data, float32). Two estimates of the same ratio:

- *direct*: a sampler run and NFE bare evaluations of the network on the same shapes, timed back to back,
  ``--repeats`` times; the median of the paired ratios.
- *additive*: the sampler's own cost per evaluation, measured by running it with a near-free score
  (``-x``, the score of N(0, I)), over the median time of one network evaluation: ratio = 1 + overhead / t_eval. Its absolute
  quantities are small or averaged over many calls, so it stays sharp on a noisy shared machine where
  identical runs of the network alone vary by ±30% (as on the 2-core CI machines).

Target: ≤ 1.10 for every sampler (1.00: the sampler adds nothing to the network's own cost).

    python benchmarks/sampler_overhead.py [--batch 4096] [--steps 100] [--repeats 5] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import scoresde as sd


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def clock(device):
    """Wall clock on an accelerator; on the CPU, this process's CPU time (with one thread it equals the wall
    time of an idle machine, and it excludes the time other tenants of a shared machine take)."""
    return time.perf_counter() if torch.device(device).type != "cpu" else time.process_time()


def timed(fn, device, repeats):
    out = []
    for _ in range(repeats):
        sync(device)
        start = clock(device)
        result = fn()
        sync(device)
        out.append(clock(device) - start)
    return statistics.median(out), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU time is only comparable "
                        "to wall time with 1; 0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    torch.manual_seed(0)
    net = sd.nets.MLP(2, hidden=args.hidden, depth=3).to(device).eval()
    sde = sd.VPSDE()

    def score(x, t):
        return net(x, t)

    x = torch.randn(args.batch, 2, device=device)
    t = torch.full((args.batch,), 0.5, device=device)
    with torch.no_grad():
        for _ in range(20):
            score(x, t)

    n = args.steps
    samplers = {
        "Euler–Maruyama (native loop)": sd.ReverseSDESampler(steps=n, backend="native", denoise=False),
        "Euler–Maruyama (torchsde euler)": sd.ReverseSDESampler(steps=n, backend="torchsde", denoise=False),
        "PC: reverse diffusion, no corrector": sd.PCSampler("reverse_diffusion", None, steps=n, denoise=False),
        "PC: ancestral, no corrector": sd.PCSampler("ancestral", None, steps=n, denoise=False),
        "PC: reverse diffusion + Langevin": sd.PCSampler("reverse_diffusion", "langevin", steps=n, denoise=False),
        "PF-ODE euler (torchdiffeq)": sd.ProbabilityFlowSampler("euler", steps=n),
        "PF-ODE rk4 (torchdiffeq)": sd.ProbabilityFlowSampler("rk4", steps=n // 4),
        "EDM Heun": sd.HeunSampler(steps=n // 2),
        "DDIM (DPM-Solver order 1)": sd.DPMSolver(steps=n, order=1),
        "DPM-Solver++ 2M": sd.DPMSolver(steps=n, order=2),
        "DPM-Solver++ 3M": sd.DPMSolver(steps=n, order=3),
        "DPM-Solver++ 2S": sd.DPMSolver(steps=n // 2, order=2, multistep=False),
        "UniPC o3 bh2": sd.UniPCSampler(steps=n, order=3),
        "LMS o4": sd.LMSSampler(steps=n, order=4),
        "DEIS tAB o3": sd.DEISSampler(steps=n, order=3),
        "SDE-DPM-Solver++ 2M": sd.DPMSolverSDE(steps=n, order=2, denoise=False),
        "SDE-DPM-Solver++ 3M": sd.DPMSolverSDE(steps=n, order=3, denoise=False),
        "SDE-DPM-Solver++ 2S (path noise)": sd.DPMSolverSDE(steps=n // 2, multistep=False, denoise=False),
        "Euler ancestral": sd.AncestralSampler(steps=n),
    }
    what = "process CPU time" if torch.device(device).type == "cpu" else "wall time"

    def free(x, t):
        # The score of N(0, I): one elementwise kernel, like the network's cheapest possible stand-in, but never
        # zero (a zero score makes the Langevin step ‖z‖/‖S‖ infinite, which the samplers now report).
        return -x

    def one_eval():
        with torch.no_grad():
            for _ in range(50):
                score(x, t)

    t_eval = statistics.median(timed(one_eval, device, 1)[0] / 50 for _ in range(max(5, args.repeats)))
    print(f"device {device}, batch {args.batch}, MLP hidden {args.hidden}, torch threads {torch.get_num_threads()}; "
          f"{what}; one network evaluation {t_eval * 1e3:.3f} ms (median of {max(5, args.repeats)}×50); "
          f"medians of {args.repeats} runs")
    print()
    print("| sampler | NFE | own overhead per evaluation (ms) | ratio, additive | ratio, direct (paired) |")
    print("|---|---:|---:|---:|---:|")
    worst = 0.0
    for name, sampler in samplers.items():
        gen = torch.Generator(device=device).manual_seed(0)
        x_T = sde.prior_sample((args.batch, 2), generator=gen, device=device)

        def run(fn=score):
            return sampler.sample(sde, fn, (args.batch, 2), generator=gen, x_T=x_T)

        nfe = run().nfe  # warm-up, and the exact NFE
        run(free)

        def bare():
            with torch.no_grad():
                for _ in range(nfe):
                    score(x, t)

        overheads, ratios = [], []
        for _ in range(args.repeats):
            overheads.append(timed(lambda: run(free), device, 1)[0] / nfe)
            wall = timed(run, device, 1)[0]
            ratios.append(wall / timed(bare, device, 1)[0])
        overhead = statistics.median(overheads)
        additive = 1 + overhead / t_eval
        worst = max(worst, additive)
        print(f"| {name} | {nfe} | {overhead * 1e3:.3f} | {additive:.3f} | {statistics.median(ratios):.3f} |",
              flush=True)
    print()
    print(f"worst additive ratio {worst:.3f} (target ≤ 1.10)")


if __name__ == "__main__":
    main()
