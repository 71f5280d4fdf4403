"""Trainer throughput against a hand-written minimal PyTorch loop doing the same work.

Both train the same MLP score model on the same batches (eight Gaussians, batch 512) with the same loss
(`sd.dsm_loss`, the configured weighting and time distribution), Adam, gradient clipping at 1 and a weight EMA.
The minimal loop is those calls and nothing else; the Trainer adds its bookkeeping (data order, logging hooks,
signal handling, finiteness checks, the loss generator). Each configuration runs ``--steps`` steps after a
warm-up, interleaved with the minimal loop, ``--repeats`` times; the table gives the medians and the ratio.

    .venv/bin/python benchmarks/train_throughput.py              # a few minutes on a 2-core CPU
    .venv/bin/python benchmarks/train_throughput.py --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import scoresde as sd


def minimal_loop(model, sde, x, steps, batch, precision, generator):
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dtype = {"bf16": torch.bfloat16}.get(precision)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    start = 0
    for _ in range(steps):
        if start + batch > x.shape[0]:
            order, start = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1)), 0
        x0 = x[order[start:start + batch]]
        start += batch
        if dtype is None:
            loss = sd.dsm_loss(sde, model, x0, weighting="likelihood", importance_sampling=True, generator=generator)
        else:
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                loss = sd.dsm_loss(sde, model, x0, weighting="likelihood", importance_sampling=True,
                                   generator=generator).float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    ema[k].lerp_(v, 0.001)
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sde = sd.VPSDE()
    data = sd.data.load("eight_gaussians", n=20_000)
    x = data.x.to(device)
    configs = [("fp32", False), ("bf16", False), ("fp32", True)]
    print(f"| precision | compile | minimal loop steps/s | Trainer steps/s | Trainer / minimal |")
    print("|---|---|---|---|---|")
    for precision, compile_ in configs:
        ours, theirs = [], []
        for repeat in range(args.repeats):
            torch.manual_seed(0)
            model = sd.ScoreModel(sd.nets.MLP(2), sde).to(device)
            loop_model = torch.compile(model) if compile_ else model
            minimal_loop(loop_model, sde, x, 10, args.batch, precision, torch.Generator(device=device).manual_seed(2))
            start = time.perf_counter()
            minimal_loop(loop_model, sde, x, args.steps, args.batch, precision,
                         torch.Generator(device=device).manual_seed(2))
            theirs.append(args.steps / (time.perf_counter() - start))
            torch.manual_seed(0)
            model = sd.ScoreModel(sd.nets.MLP(2), sde).to(device)
            config = sd.TrainConfig(steps=args.steps + 10, batch_size=args.batch, progress=False, log_every=100,
                                    checkpoint_every=0, checkpoint_seconds=0, precision=precision,
                                    compile=compile_, device=args.device)
            trainer = sd.Trainer(model, sde, data, config)
            trainer.train(num_steps=10)
            start = time.perf_counter()
            trainer.train(num_steps=args.steps)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ours.append(args.steps / (time.perf_counter() - start))
        a, b = statistics.median(theirs), statistics.median(ours)
        print(f"| {precision} | {compile_} | {a:.1f} | {b:.1f} | {b / a:.3f} |", flush=True)


if __name__ == "__main__":
    main()
