"""Data-parallel training: a 2-process gloo run under torchrun reproduces the single-process run, and resumes;
gradient accumulation, other weightings and time distributions, and user losses and weightings do too."""
import json
import os
import subprocess
import sys

import pytest
import torch

from scoresde.app.cli import main

ARGS = ["--steps=12", "--batch_size=64", "--data.n=512", "--progress=false", "--model.hidden=32",
        "--model.depth=1", "--log_every=3", "--device=cpu", "--lr=1e-3", "--weighting=likelihood",
        "--time_distribution=importance"]


def torchrun(out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "scoresde", "train", "--out", out] + ARGS + list(extra)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    # Head and tail of stderr: a rank's own error message comes before torchrun's summary.
    assert proc.returncode == 0, proc.stderr[:3000] + "\n[...]\n" + proc.stderr[-3000:]
    return proc


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [r["loss"] for r in map(json.loads, fh) if "loss" in r]


def weights(out):
    return torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--model.num_classes=8", "--cond_dropout=0.3"]],
                         ids=["unconditional", "conditional"])
def test_two_process_gloo_matches_single_process_and_resumes(tmp_path, extra):
    """A conditional run also matches: the label dropout is drawn for the global batch from the loss generator
    (the same on every rank), and the labels are sharded with the data."""
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    assert main(["train", "--out", single] + ARGS + extra) == 0
    torchrun(multi, *extra)
    # Same global batch, same per-example times and noise: the logged losses agree up to float32 reduction
    # order (each rank averages 32 rows, then the two means are averaged), i.e. to ~1e-6 relative.
    ref, got = losses(single), losses(multi)
    assert len(ref) == len(got) == 4
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), rtol=1e-5, atol=1e-6)
    a, b = weights(single), weights(multi)
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-4, atol=1e-6)
    # Only rank 0 wrote: one line per record, not two.
    assert len([line for line in open(os.path.join(multi, "metrics.jsonl"))]) == 4
    # Resume under torchrun continues the same run: 12 + 6 steps equal 18 steps in one single process.
    torchrun(multi, "--resume", "--steps=18", *extra)
    straight = str(tmp_path / "straight")
    assert main(["train", "--out", straight] + ARGS + extra + ["--steps=18"]) == 0
    c, d = weights(straight), weights(multi)
    assert d["step"] == 18
    for key in c["model"]:
        torch.testing.assert_close(d["model"][key], c["model"][key], rtol=1e-4, atol=1e-6)


_CASES = '''
import os, sys, torch
import scoresde as sd
from scoresde.training import DistributedContext
from scoresde.training.distributed import exit_process


def capped_weighting(sde, t):
    """A user weighting (by import path "ddp_cases:capped_weighting"): σ² min(SNR, 1), SNR = s²/σ²."""
    s, sigma = sde.scale(t), sde.std(t)
    return sigma ** 2 * torch.clamp(s ** 2 / sigma ** 2, max=1.0)


def shifted_loss(sde, model, x0, weighting, eps, generator, shard=None):
    """A user loss taking shard=: the trainer may then split it across ranks and micro-batches exactly."""
    return sd.dsm_loss(sde, model, x0, weighting=weighting, eps=eps, generator=generator, shard=shard) + 1.0


CASES = {
    "accumulate_1": dict(steps=1, accumulate=1),
    "accumulate_4": dict(steps=1, accumulate=4),
    "min_snr_log_normal": dict(steps=3, accumulate=2, weighting="min_snr", time_distribution="log_normal"),
    "custom_1": dict(steps=2, accumulate=1, weighting="ddp_cases:capped_weighting", time_distribution="uniform"),
    "custom_4": dict(steps=2, accumulate=4, weighting="ddp_cases:capped_weighting", time_distribution="uniform"),
    "vector_cond_2": dict(steps=2, accumulate=2, cond_dropout=0.3),
}


def run(distributed=None):
    """Each case from the same float64 initial weights with plain SGD (lr 0.1, no clipping), so that the weights
    after a step are θ₀ − 0.1 ∇L: a wrong gradient shows (Adam's first step ≈ lr · sign(∇L) would hide it)."""
    results = {}
    data = sd.data.load("eight_gaussians", n=256)
    # a condition per point (a tensor, and the learned null embedding of the net takes the dropped rows)
    conditioned = sd.data.Dataset(data.x, cond=torch.stack([data.x[:, 0] * data.x[:, 1], data.x.norm(dim=1)], 1))
    for name, options in CASES.items():
        torch.manual_seed(0)
        sde = sd.VPSDE()
        vector = name.startswith("vector")
        model = sd.ScoreModel(sd.nets.MLP(2, hidden=16, depth=1, time_embedding_dim=8,
                                          cond_dim=2 if vector else None), sde).double()
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        config = sd.TrainConfig(batch_size=32, grad_clip=None, warmup_steps=0, progress=False, device="cpu",
                                log_every=1, seed=2, **options)
        trainer = sd.Trainer(model, sde, conditioned if vector else data, config, hooks=[], distributed=distributed,
                             optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
                             loss_fn=shifted_loss if name.startswith("custom") else None)
        losses = [trainer.step(next(trainer.batches))["loss"] for _ in range(config.steps)]
        results[name] = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "loss": losses,
                         "initial": initial}
    return results


if __name__ == "__main__":
    dist = DistributedContext.from_environment("cpu")
    torch.save(run(dist), os.path.join(sys.argv[1], f"rank{dist.rank}.pt"))
    dist.close()
    exit_process(0)  # as the CLI does: no interpreter finalization beside gloo's worker threads
'''


@pytest.mark.slow
def test_accumulation_weightings_and_custom_losses_under_two_process_ddp(tmp_path, monkeypatch):
    """Under 2-process gloo DDP (float64), one step with accumulate = 4 equals one with accumulate = 1 on the same
    global batch of 32: each rank's 16 rows are 4 micro-batches of 4 sharing the whole batch's times and noise,
    each contributes ∇(its mean)/4, and DDP averages the two ranks' sums, so the gradient is the mean over 32 rows
    whichever way it is split; only float64 rounding differs (measured ≤ 3e-17 on the weights; asserted 1e-12).
    min-SNR weighting with log-normal times, a user weighting named by import path and a user loss taking shard=
    train the same way and match a single-process run of the same seed to the same tolerance, as does a net
    conditioned on a tensor with condition dropout; the ranks' weights are identical."""
    import importlib

    (tmp_path / "ddp_cases.py").write_text(_CASES)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "ddp_cases.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[:3000] + "\n[...]\n" + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    monkeypatch.syspath_prepend(str(tmp_path))
    single = importlib.import_module("ddp_cases").run()

    def close(a, b):
        for key in a["model"]:
            torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(torch.tensor(b["loss"]), torch.tensor(a["loss"]), rtol=1e-12, atol=0)

    for name in single:
        for key, value in r0[name]["model"].items():
            assert torch.equal(value, r1[name]["model"][key]), (name, key)
        close(single[name], r0[name])
    close(r0["accumulate_1"], r0["accumulate_4"])
    close(r0["custom_1"], r0["custom_4"])
    # The step is large against the tolerance (SGD moved a weight by 0.12), so a wrong gradient would show.
    step = r0["accumulate_1"]
    assert max(float((step["model"][k] - step["initial"][k]).abs().max()) for k in step["model"]) > 0.05
    assert len(r0["min_snr_log_normal"]["loss"]) == 3
    # a tensor condition is sharded with the data, and its dropout to the learned null embedding is drawn for the
    # global batch: the ranks match the single process above, and the null embedding trained
    vector = r0["vector_cond_2"]
    assert not torch.equal(vector["model"]["net.vectors.null"], vector["initial"]["net.vectors.null"])
