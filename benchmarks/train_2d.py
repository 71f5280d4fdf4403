"""Train a score model on the 8-Gaussian oracle and compare its held-out NLL with the true cross-entropy.

    .venv/bin/python benchmarks/train_2d.py [--cpu-seconds 300] [--sde vp] [--runs 1]

Training stops after ``--cpu-seconds`` of process CPU time (all threads counted; torch is limited to
``--threads``). The NLL is −log p_eps(x) of the probability-flow ODE with the EMA weights, exact divergence
(d = 2), dopri5 at rtol = atol = 1e-5, on held-out points drawn from the mixture. It is compared with

- the mixture's cross-entropy H = −E_p log p (Monte Carlo, 10⁶ samples, with its standard error): the lower
  bound any model's expected NLL approaches;
- the exact −log p of the same held-out points: the paired gap NLL_model − NLL_true has a much smaller standard
  error than either mean, and it is the number the 0.05-nat target applies to.

Prints a markdown table and saves a scatter plot of samples under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import torch

import scoresde as sd

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def build(args):
    sde = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE}[args.sde]()
    net = sd.nets.MLP(2, hidden=args.hidden, depth=args.depth, fourier_scale=args.fourier_scale)
    model = sd.ScoreModel(net, sde, parameterization=args.parameterization)
    config = sd.TrainConfig(steps=10**9, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup,
                            grad_clip=1.0, ema_decay=args.ema, weighting=args.weighting,
                            importance_sampling=args.importance_sampling, eps=1e-5, seed=args.seed,
                            log_every=500, progress=False)
    return sde, model, config


def run(args, seed):
    args.seed = seed
    torch.manual_seed(seed)
    sde, model, config = build(args)
    data = sd.data.load("eight_gaussians", seed=seed)
    # Step decay of the learning rate over the last 20% of the budget sharpens the EMA solution. The Trainer sets
    # the rate from its schedule at every step, so the decay lives in the schedule (a switch flipped below).
    warm = sd.training.trainer.warmup_schedule(args.lr, args.warmup)
    decayed = {"on": False}
    trainer = sd.Trainer(model, sde, data, config,
                         lr_schedule=lambda n: warm(n) * (0.1 if decayed["on"] else 1.0))
    start = time.process_time()
    wall = time.perf_counter()
    while time.process_time() - start < args.cpu_seconds:
        trainer.train(num_steps=100)
        remaining = args.cpu_seconds - (time.process_time() - start)
        if remaining < 0.2 * args.cpu_seconds:
            decayed["on"] = True
    cpu, wall = time.process_time() - start, time.perf_counter() - wall

    mixture = data.oracle
    test = sd.data.load("eight_gaussians", split="test", n=args.n_test, seed=seed, dtype=torch.float32).x
    model.eval()
    with trainer.ema.average_parameters():
        res = sd.log_likelihood(sde, model, test, divergence="exact", rtol=1e-5, atol=1e-5, eps=1e-5)
    nll = -res.log_prob.double()
    true = -mixture.log_prob(test.double())
    gap = nll - true
    n = len(nll)
    return {"steps": trainer.global_step, "cpu_s": cpu, "wall_s": wall, "nll": float(nll.mean()),
            "nll_se": float(nll.std() / math.sqrt(n)), "true": float(true.mean()),
            "gap": float(gap.mean()), "gap_se": float(gap.std() / math.sqrt(n)), "nfe": res.nfe,
            "trainer": trainer}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-seconds", type=float, default=300.0)
    p.add_argument("--sde", choices=["vp", "subvp"], default="vp")
    p.add_argument("--weighting", default="likelihood")
    p.add_argument("--no-importance-sampling", dest="importance_sampling", action="store_false")
    p.add_argument("--parameterization", default="eps")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--fourier-scale", type=float, default=16.0,
                   help="MLP time-embedding scale (16: the setting of the documented table)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    entropy, entropy_se = sd.eight_gaussians().entropy_mc(1_000_000, torch.Generator().manual_seed(123))
    seeds = list(range(args.first_seed, args.first_seed + args.runs))
    rows = [run(args, seed) for seed in seeds]
    os.makedirs(RESULTS, exist_ok=True)
    png = sd.plot.save_samples(rows[0]["trainer"].sample(2000),
                               os.path.join(RESULTS, f"train_2d_samples_seed{seeds[0]}.png"),
                               title="8 Gaussians, EMA samples")

    print(f"## 8 Gaussians: held-out NLL after {args.cpu_seconds:.0f} CPU s ({args.sde}, {args.weighting} weighting, "
          f"importance sampling {args.importance_sampling}, MLP {args.hidden}x{args.depth}, batch {args.batch_size}, "
          f"lr {args.lr}, EMA {args.ema}, {args.threads} thread(s))\n")
    print(f"True cross-entropy H = −E log p (MC, 10⁶ samples): {entropy:.4f} ± {entropy_se:.4f} nats\n")
    print("| seed | steps | CPU s | wall s | model NLL (nats) | true NLL same points | gap model − true | NFE |")
    print("|---|---|---|---|---|---|---|---|")
    for seed, r in zip(seeds, rows):
        print(f"| {seed} | {r['steps']} | {r['cpu_s']:.0f} | {r['wall_s']:.0f} | {r['nll']:.4f} ± {r['nll_se']:.4f} | "
              f"{r['true']:.4f} | {r['gap']:.4f} ± {r['gap_se']:.4f} | {r['nfe']} |")
    gaps = sorted(r["gap"] for r in rows)
    median = gaps[len(gaps) // 2] if len(gaps) % 2 else 0.5 * (gaps[len(gaps) // 2 - 1] + gaps[len(gaps) // 2])
    print(f"\nMedian gap over {len(rows)} run(s): {median:.4f} nats (target ≤ 0.05). Samples: {png}")


if __name__ == "__main__":
    main()
