"""`make demo` / `scoresde demo`: train on eight Gaussians for about two CPU minutes, then sample and measure.

It trains an MLP score model by denoising score matching on the eight-Gaussian mixture (whose density is known
exactly) until its wall-clock budget is spent, writes the run (``checkpoint.pt`` and ``config.yaml``, so
``scoresde sample --checkpoint demo_output/checkpoint.pt`` works), then
- saves a figure of samples next to the data (``samples.png``) and of reverse-time trajectories
  (``trajectories.png``),
- prints the held-out NLL (probability-flow ODE, exact divergence) next to the data's true entropy, the lower
  bound any model can reach,
- prints a small sampler comparison (NFE, wall time, energy distance to held-out data, NLL under the true density).
"""
from __future__ import annotations

import copy
import os
import time
from typing import Sequence, Tuple

import torch

from ..evaluation import compare_samplers, plot
from ..likelihood import evaluate_likelihood
from ..sampling import DPMSolver, HeunSampler, ProbabilityFlowSampler, ReverseSDESampler
from ..training import Trainer
from .config import SAMPLE_SHAPE_KEY, build_data, build_model, build_sde, load_config, save_config
from .runs import CONFIG_NAME

#: Settings of the demo run (any can be overridden on the command line: ``scoresde demo --train.lr=1e-3``).
DEMO_CONFIG = {
    "data": {"name": "eight_gaussians", "n": 20000},
    "sde": {"name": "vp"},
    "model": {"net": "mlp", "parameterization": "eps", "hidden": 128, "depth": 3, "sigma_data": 1.4},
    "train": {"steps": 100000, "log_every": 100, "progress": True},   # the rest: TrainConfig's defaults
}


def run_demo(out: str = "demo_output", seconds: float = 120.0, seed: int = 0,
             overrides: Sequence[Tuple[str, object]] = ()) -> int:

    torch.manual_seed(seed)
    cfg = load_config(None, list(overrides), base=DEMO_CONFIG)
    cfg.train.seed = seed
    cfg.train.out_dir = out
    os.makedirs(out, exist_ok=True)
    train = build_data(cfg, "train", seed=seed)
    test = build_data(cfg, "test", n=2000, seed=seed)
    oracle = train.oracle
    sde = build_sde(cfg)
    model = build_model(cfg, sde, train.shape)
    trainer = Trainer(model, sde, train, cfg.train)

    print(f"training an MLP score model on {cfg.data['name']} under {type(sde).__name__} for {seconds:.0f} s ...")
    start = time.perf_counter()
    trainer.train(max_seconds=seconds)                # stops at the wall-clock budget
    elapsed = time.perf_counter() - start
    print(f"{trainer.global_step} steps in {elapsed:.0f} s ({trainer.global_step / elapsed:.0f} steps/s)")
    trainer.save_checkpoint()
    save_config(cfg, os.path.join(out, CONFIG_NAME), extra={SAMPLE_SHAPE_KEY: list(train.shape)})
    print(f"checkpoint: {trainer.checkpoint_path} (scoresde sample --checkpoint {trainer.checkpoint_path})")

    # Evaluate a float64 copy of the EMA model; the trained model itself is left as it is.
    score = copy.deepcopy(model)
    trainer.ema.copy_to(score)
    score = score.double().eval()
    gen = torch.Generator().manual_seed(seed + 1)

    # Samples and reverse trajectories, drawn by the table's FIGURE_SAMPLER row.
    _save_figures(sde, score, test.x, out, gen)

    # Held-out NLL against the truth.
    x = test.x[:500].double()
    lik = evaluate_likelihood(sde, score, x, divergence="exact", rtol=1e-5, atol=1e-5)
    h, h_se = oracle.entropy_mc(200_000, torch.Generator().manual_seed(seed + 2))
    cross = float(-oracle.log_prob(x).mean())
    print(f"\nheld-out NLL (PF-ODE, exact divergence, {len(x)} points): {lik.nll:.4f} ± {lik.nll_stderr:.4f} nats")
    print(f"true entropy of the data (lower bound):             {h:.4f} ± {h_se:.4f} nats "
          f"(same {len(x)} points under the true density: {cross:.4f})")

    # A small sampler comparison on the trained model.
    table = compare_samplers(sde, score, comparison_samplers(), n=2000, reference=oracle, dtype=torch.float64,
                             seed=seed)
    print("\nsampler comparison (trained model, 2000 samples; distance to fresh samples of the true mixture):")
    print(table)
    print(f"\nfigures: {os.path.join(out, 'samples.png')}, {os.path.join(out, 'trajectories.png')}")
    return 0


#: The row of the comparison whose samples and paths the figures show.
FIGURE_SAMPLER = "DPM-Solver++ 3M, 10 steps"


def comparison_samplers():
    """The samplers of the demo's table, by row name."""
    return {
        "Euler–Maruyama, 200 steps": ReverseSDESampler(steps=200, backend="native"),
        "EDM Heun, 10 steps": HeunSampler(steps=10),
        "DDIM, 20 steps": DPMSolver(steps=20, order=1),
        FIGURE_SAMPLER: DPMSolver(steps=10, order=3),
        "PF-ODE dopri5": ProbabilityFlowSampler(),
    }


def _save_figures(sde, score, data: torch.Tensor, out: str, generator: torch.Generator, n: int = 2000):
    """``samples.png`` (samples over the held-out data in grey) and ``trajectories.png`` (paths from the prior draw
    x_T to the samples), both by FIGURE_SAMPLER; returns the figures by file name."""
    x_T = sde.prior_sample((n, 2), generator=generator, dtype=torch.float64)
    res = comparison_samplers()[FIGURE_SAMPLER].sample(sde, score, (n, 2), generator=generator, x_T=x_T,
                                                       trajectory=True)
    figures = {}
    for name, draw in [
        ("samples.png", lambda ax: plot.samples(res.x, ax=ax, reference=data, title=(
            f"{FIGURE_SAMPLER} (NFE {res.nfe}):\n{n} samples (blue) over held-out data (grey)"))),
        ("trajectories.png", lambda ax: plot.trajectories(res, ax=ax, n=60, x_T=x_T, title=(
            f"{FIGURE_SAMPLER}:\npaths from prior draw (grey) to sample (black)"))),
    ]:
        fig = plot.figure((4.5, 4.5))
        draw(fig.add_subplot(1, 1, 1))
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=100)
        figures[name] = fig
    return figures
