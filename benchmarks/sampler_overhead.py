"""Per-step overhead of every fixed-step sampler: wall time / (NFE × time of one score evaluation).

A small MLP score network at batch 4096 (2-D data, float32). The time of one bare evaluation and every
sampler's wall time are measured in the same run; each figure is the median of ``--repeats`` runs. Target:
≤ 1.10 for every sampler (the ratio of 1.00 means the sampler adds nothing to the network's own cost).

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


def timed(fn, device, repeats):
    out = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        out.append(time.perf_counter() - start)
    return statistics.median(out), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
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

        def evals():
            for _ in range(200):
                score(x, t)

        t_eval = timed(evals, device, args.repeats)[0] / 200

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
    }
    print(f"device {device}, batch {args.batch}, MLP hidden {args.hidden}; one score evaluation "
          f"{t_eval * 1e3:.3f} ms (median of {args.repeats}×200 calls); torch threads {torch.get_num_threads()}")
    print()
    print("| sampler | NFE | wall (ms) | NFE × eval (ms) | ratio |")
    print("|---|---:|---:|---:|---:|")
    worst = 0.0
    for name, sampler in samplers.items():
        gen = torch.Generator(device=device).manual_seed(0)
        x_T = sde.prior_sample((args.batch, 2), generator=gen, device=device)

        def run():
            return sampler.sample(sde, score, (args.batch, 2), generator=gen, x_T=x_T)

        run()  # warm-up
        wall, res = timed(run, device, args.repeats)
        ratio = wall / (res.nfe * t_eval)
        worst = max(worst, ratio)
        print(f"| {name} | {res.nfe} | {wall * 1e3:.1f} | {res.nfe * t_eval * 1e3:.1f} | {ratio:.2f} |")
    print()
    print(f"worst ratio {worst:.2f} (target ≤ 1.10)")


if __name__ == "__main__":
    main()
