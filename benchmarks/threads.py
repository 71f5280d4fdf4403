"""Training and sampling speed against the number of torch threads on this machine (CPU).

For the README's 2-D model (``MLP(2)`` on eight_gaussians, batch 128) and the digits U-Net (batch 64), each in a
fresh process per thread count: training steps per second over ``--steps`` steps after a warm-up, and the wall
time of one 50-step DPM-Solver++ draw of 2000 (2-D) or 64 (digits) samples. "default" is torch's own choice
(``torch.get_num_threads()`` at start-up: the number of cores). Medians over ``--repeats`` processes.

    python benchmarks/threads.py [--steps 300] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
import scoresde as sd
threads, kind, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
if threads != "default":
    torch.set_num_threads(int(threads))
torch.manual_seed(0)
sde = sd.VPSDE()
if kind == "mlp":
    data, batch, shape = sd.data.load("eight_gaussians"), 128, (2000, 2)
    net = sd.nets.MLP(2)
else:
    data, batch, shape = sd.data.load("digits", dequantize=True), 64, (64, 1, 8, 8)
    net = sd.nets.UNet(in_channels=1, channels=16, image_size=8)
model = sd.ScoreModel(net, sde)
trainer = sd.Trainer(model, sde, data, sd.TrainConfig(steps=10**9, batch_size=batch, progress=False, log_every=10**9))
trainer.train(num_steps=20)
start = time.perf_counter()
trainer.train(num_steps=steps)
rate = steps / (time.perf_counter() - start)
model.eval()
start = time.perf_counter()
with torch.no_grad():
    sd.DPMSolver(steps=50).sample(sde, model, shape, generator=torch.Generator().manual_seed(0))
print(json.dumps({"threads": torch.get_num_threads(), "steps_per_sec": rate,
                  "sample_s": time.perf_counter() - start}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    print(f"{os.cpu_count()} cores; torch's default is {os.cpu_count()} threads; medians of {args.repeats} processes\n")
    print("| model | threads | train steps/s | sample 50 steps (s) |")
    print("|---|---:|---:|---:|")
    for kind in ("mlp", "unet"):
        for threads in ("1", "2", "default"):
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, "-c", CHILD, threads, kind, str(args.steps)], env=env,
                                     capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            rate = statistics.median(r["steps_per_sec"] for r in runs)
            sample = statistics.median(r["sample_s"] for r in runs)
            label = f"{threads} ({runs[0]['threads']})" if threads == "default" else threads
            print(f"| {kind} | {label} | {rate:.1f} | {sample:.3f} |", flush=True)


if __name__ == "__main__":
    main()
