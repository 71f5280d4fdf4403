"""The CPU cost of the feature extractors: seconds per 1,000 images of 32×32 for torch-fidelity's Inception-v3
(FID, resized to 299×299) and DINOv2 ViT-S/14 and ViT-L/14 (FD-DINOv2, resized to 224×224), through
`scoresde.evaluation.features`, all with random weights (the cost does not depend on them; nothing is downloaded).

    python benchmarks/extractors.py --dinov2-repo /work/peers/dinov2 --threads 2 --n 200 --n-large 200

Each extractor runs one warm-up batch, then extracts ``--n`` images (``--n-large`` for ViT-L/14) three times; the
table gives the median, extrapolated to 1,000 images. DINOv2's code comes from a local clone of
facebookresearch/dinov2 (``--dinov2-repo``, default /work/peers/dinov2); without one only Inception is timed.
"""
import argparse
import os
import statistics
import time

import torch

from scoresde.evaluation import features as F


def _time(net, images, batch):
    F.extract(net, images[:batch], batch_size=batch)                 # warm-up
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        F.extract(net, images, batch_size=batch)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), walls


def _random_dinov2(name, repo):
    """Our DINOv2 extractor with the random weights its hub entry builds (pretrained=False)."""
    entry = {"dinov2-vit-s-14": "dinov2_vits14", "dinov2-vit-l-14": "dinov2_vitl14"}[name]
    model = torch.hub.load(repo, entry, source="local", pretrained=False)
    return F.dinov2(name, repo=repo, weights=model.state_dict())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dinov2-repo", default="/work/peers/dinov2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=200, help="images per timing (Inception, ViT-S/14)")
    parser.add_argument("--n-large", type=int, default=200, help="images per timing for ViT-L/14")
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nets = []
    path = "/tmp/benchmark_extractors_inception.pth"
    F.random_inception_weights(path)
    nets.append(("inception-v3-compat", "299×299", lambda: F.inception(weights=path), args.n))
    if os.path.isfile(os.path.join(args.dinov2_repo, "hubconf.py")):
        for name, n in (("dinov2-vit-s-14", args.n), ("dinov2-vit-l-14", args.n_large)):
            nets.append((name, "224×224", lambda name=name: _random_dinov2(name, args.dinov2_repo), n))
    else:
        print(f"no DINOv2 clone at {args.dinov2_repo!r}: timing Inception only")
    print(f"| extractor | resized to | features | images timed (batch {args.batch}) | runs (s) | "
          f"s per 1,000 images ({args.threads} threads) |")
    print("|---|---|---|---|---|---|")
    for name, size, build, n in nets:
        net = build()
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(0),
                               dtype=torch.uint8)
        dim = F.extract(net, images[:2])["features"].shape[1]
        median, walls = _time(net, images, min(args.batch, n))
        print(f"| {name} | {size} | {dim} | {n} | {', '.join(f'{w:.1f}' for w in walls)} | "
              f"{1000 * median / n:.0f} |", flush=True)
        del net


if __name__ == "__main__":
    main()
