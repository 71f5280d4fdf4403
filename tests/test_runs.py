"""Runs a user can load: sd.load round trip, the demo's run sampled by the CLI, training to a wall-clock budget,
a resume with nothing to do, the --threads option, and results that print as short summaries."""
import os

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.app.cli import main

SMALL = ["--batch_size=32", "--data.n=256", "--progress=false", "--model.hidden=16", "--model.depth=1",
         "--model.time_embedding_dim=8", "--device=cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "run")
    assert main(["train", "--out", out, "--steps=6"] + SMALL) == 0
    return out


def test_load_rebuilds_the_model_with_ema_or_raw_weights(run):
    state = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)
    for path in (run, os.path.join(run, "checkpoint.pt")):
        loaded = sd.load(path)
        assert isinstance(loaded.sde, sd.VPSDE) and loaded.sample_shape == (2,) and loaded.step == 6
        assert not loaded.model.training
        for key, value in loaded.model.state_dict().items():
            assert torch.equal(value, state["ema"]["shadow"][key]), key
    raw = sd.load(run, ema=False)
    for key, value in raw.model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key
    assert any(not torch.equal(state["model"][k], state["ema"]["shadow"][k]) for k in state["model"])
    res = sd.DPMSolver(steps=4).sample(raw.sde, raw.model, (5,) + raw.sample_shape)
    assert res.x.shape == (5, 2) and bool(torch.isfinite(res.x).all())


def test_a_resume_with_nothing_to_do_says_so(run, capsys):
    assert main(["train", "--out", run, "--resume", "--steps=3"]) == 0
    err = capsys.readouterr().err
    assert "nothing to do" in err and "at step 6 >= --steps=3" in err


def test_train_stops_at_its_wall_clock_budget(tmp_path):
    torch.manual_seed(0)
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, time_embedding_dim=8), sde)
    config = sd.TrainConfig(steps=10**9, batch_size=16, progress=False, out_dir=str(tmp_path), log_every=10**6)
    trainer = sd.Trainer(model, sde, sd.data.load("eight_gaussians", n=64), config)
    trainer.train(max_seconds=0.3)
    assert 0 < trainer.global_step < 10**9
    # It ended normally: the last step was logged and checkpointed.
    assert trainer.history[-1]["step"] == trainer.global_step == trainer.checkpoint_step


@pytest.mark.slow
def test_the_demo_writes_a_run_the_cli_can_sample(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["demo", "--out", out, "--seconds", "1"]) == 0
    assert "scoresde sample --checkpoint" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", os.path.join(out, "checkpoint.pt"), "--steps=4", "--n", "16",
                 "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    assert np.load(str(tmp_path / "s" / "samples.npz"))["x"].shape == (16, 2)


def test_threads_option_on_every_command(run, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        assert main(["sample", "--threads", "1", "--checkpoint", os.path.join(run, "checkpoint.pt"), "--steps=2",
                     "--n", "4", "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["likelihood", "--threads", "0", "--checkpoint", os.path.join(run, "checkpoint.pt")]) == 2
        assert "--threads must be a positive integer" in capsys.readouterr().err
        for command in ("train", "sample", "likelihood", "compare", "demo"):
            with pytest.raises(SystemExit):
                main([command, "--help"])
            assert "--threads" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)


def test_results_print_as_short_summaries():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    x = gmm.sample(500, torch.Generator().manual_seed(0))
    res = sd.log_likelihood(sde, gmm.score(sde), x, divergence="exact", rtol=1e-3, atol=1e-3)
    text = repr(res)
    assert len(text) < 400 and "log_prob=tensor(shape=(500,)" in text and f"nfe={res.nfe}" in text
    sample = sd.DPMSolver(steps=3).sample(sde, gmm.score(sde), (500, 2), trajectory=True)
    assert len(repr(sample)) < 400 and "trajectory=tensor(shape=(3, 500, 2)" in repr(sample)
