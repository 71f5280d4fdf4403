"""Two numbers for docs/evaluation.md: the CPU cost of Inception features, and the bias of FID at small n.

    python benchmarks/fid_protocol.py speed --threads 2 --n 200      # needs torch-fidelity (random weights)
    python benchmarks/fid_protocol.py bias --reps 2

speed: torch-fidelity's Inception-v3 (random weights: the cost does not depend on them) on 32×32 uint8 images,
resized to 299×299 as torch-fidelity does; prints seconds per 1,000 images.

bias: synthetic 2048-dimensional Gaussian "features" with a power-law spectrum λ_i ∝ i^−1.5 (tr Σ = 100): FID_n of
n samples against the population statistics (what a 50k reference approximates), for a perfect model (true FID 0)
and a shifted one (true FID ≈ 2), at n = 1000, 2000, 5000, 10000 (mean over --reps draws), and the FID∞ fit of
`fid_extrapolated` from the n = 2000 set.
"""
import argparse
import time

import numpy as np
import torch

from scoresde.evaluation import features as F
from scoresde.evaluation.image_metrics import feature_statistics, fid_extrapolated, fid_from_stats


def speed(args):
    torch.set_num_threads(args.threads)
    F.random_inception_weights("/tmp/fid_protocol_random.pth")
    net = F.inception(weights="/tmp/fid_protocol_random.pth")
    images = torch.randint(0, 256, (args.n, 3, 32, 32), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    F.extract(net, images[: args.batch], batch_size=args.batch)       # warm-up
    start = time.perf_counter()
    F.extract(net, images, batch_size=args.batch)
    wall = time.perf_counter() - start
    print(f"Inception-v3 compat, {args.n} images 32x32 -> 299x299, batch {args.batch}, {args.threads} threads: "
          f"{wall:.1f} s, {1000 * wall / args.n:.0f} s per 1k images")


def bias(args):
    f = 2048
    rng = np.random.RandomState(0)
    lam = np.arange(1, f + 1) ** -1.5
    lam *= 100 / lam.sum()
    q, _ = np.linalg.qr(rng.randn(f, f))
    root = q * np.sqrt(lam)                                   # Σ = root rootᵀ
    sigma = root @ root.T
    shift = q[:, 0] * np.sqrt(2.0)                            # ‖Δμ‖² = 2: true FID 2
    print("n, FID_n perfect model (true 0), FID_n shifted model (true 2)")
    for n in (1000, 2000, 5000, 10000):
        zero, two = [], []
        for _ in range(args.reps):
            x = rng.randn(n, f) @ root.T
            zero.append(fid_from_stats(*feature_statistics(x), np.zeros(f), sigma))
            two.append(fid_from_stats(*feature_statistics(x + shift), np.zeros(f), sigma))
        print(f"{n}, {np.mean(zero):.2f}, {np.mean(two):.2f}", flush=True)
        if n == 2000:
            x = rng.randn(n, f) @ root.T + shift
            inf, slope = fid_extrapolated(x, np.zeros(f), sigma)
            print(f"  FID_inf fit from one n=2000 set: {inf:.2f} (slope c = {slope:.0f}: FID_n ≈ FID_inf + c/n)",
                  flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("speed", "bias"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    speed(args) if args.what == "speed" else bias(args)
