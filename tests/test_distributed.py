"""Data-parallel training: a 2-process gloo run under torchrun reproduces the single-process run, and resumes."""
import json
import os
import subprocess
import sys

import pytest
import torch

from scoresde.cli import main

ARGS = ["--steps=12", "--batch_size=64", "--data.n=512", "--progress=false", "--model.hidden=32",
        "--model.depth=1", "--log_every=3", "--device=cpu", "--lr=1e-3", "--weighting=likelihood",
        "--importance_sampling=true"]


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
