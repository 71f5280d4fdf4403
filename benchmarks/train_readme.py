"""The README's training snippet as stated (library defaults, ``TrainConfig(steps=5000)``) against the truth.

    model = sd.ScoreModel(sd.nets.MLP(2), sde); sd.Trainer(model, sde, sd.data.load("eight_gaussians"),
    sd.TrainConfig(steps=5000)).train()

Reports, per seed, the held-out NLL (PF-ODE, exact divergence, 1000 test points) next to the data's entropy
(the lower bound any model can reach) and the cross-entropy of 4000 samples (DPM-Solver++ 2M, 50 steps) under
the true density. Target (issue 19): NLL within 0.1 nats of the entropy.

    python benchmarks/train_readme.py [--steps 5000] [--seeds 1]
"""
from __future__ import annotations

import argparse
import time

import torch

import scoresde as sd


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, test = sd.data.load("eight_gaussians"), sd.data.load("eight_gaussians", split="test")
    h, h_se = data.oracle.entropy_mc(200_000, torch.Generator().manual_seed(2))
    print(f"eight_gaussians, VP, README snippet with the library defaults, {args.steps} steps, "
          f"{args.threads} thread(s); entropy {h:.3f} ± {h_se:.3f} nats\n")
    print("| seed | train s | held-out NLL (nats) | NLL − entropy | samples' cross-entropy | within 0.1 nats |")
    print("|---:|---:|---:|---:|---:|---|")
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        sde = sd.VPSDE()
        model = sd.ScoreModel(sd.nets.MLP(2), sde)
        config = sd.TrainConfig(steps=args.steps, seed=seed, progress=False)
        start = time.perf_counter()
        trainer = sd.Trainer(model, sde, data, config)
        trainer.train()
        wall = time.perf_counter() - start
        with trainer.ema.average_parameters():
            model.eval()
            ev = sd.evaluate_likelihood(sde, model, test, n=1000)
            x = sd.DPMSolver(steps=50, denoise=True).sample(sde, model, (4000, 2),
                                                          generator=torch.Generator().manual_seed(1)).x
        cross = float(-data.oracle.log_prob(x.double()).mean())
        gap = ev.nll - h
        print(f"| {seed} | {wall:.0f} | {ev.nll:.3f} ± {ev.nll_stderr:.3f} | {gap:+.3f} | {cross:.3f} | "
              f"{'yes' if gap < 0.1 else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
