"""Runs (issue 31, items 5-9): resume checks overrides against the run's own config and lets the optimisation
settings change (logged with the step), Python runs load, Ctrl-C logs the partial interval, a Run prints short."""
import json
import os

import pytest
import torch

import scoresde as sd
from scoresde.app.cli import main

UNET = ["--steps=2", "--batch_size=8", "--data.name=digits", "--model.net=unet", "--model.channels=8",
        "--model.channel_mults=[1]", "--model.num_res_blocks=1", "--progress=false", "--device=cpu"]
SMALL = ["--batch_size=32", "--data.n=256", "--progress=false", "--model.hidden=16", "--model.depth=1",
         "--model.time_embedding_dim=8", "--warmup_steps=0", "--log_every=2", "--device=cpu"]


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("unet") / "run")
    assert main(["train", "--out", out] + UNET) == 0
    return out


def test_resume_checks_overrides_against_the_runs_own_config(unet_run, capsys):
    # channels is an option of the run's U-Net: changing it is an architecture change, not an unknown MLP key.
    assert main(["train", "--out", unet_run, "--resume", "--steps=3", "--model.channels=16"]) == 2
    err = capsys.readouterr().err
    assert "model.channels" in err and "cannot change" in err and "mlp" not in err
    # A key the run's components do not have is named against them (digits, unet), not the defaults.
    assert main(["train", "--out", unet_run, "--resume", "--steps=3", "--data.path=elsewhere"]) == 2
    err = capsys.readouterr().err
    assert "digits" in err and "eight_gaussians" not in err
    assert main(["train", "--out", unet_run, "--resume", "--steps=3", "--model.hidden=4"]) == 2
    err = capsys.readouterr().err
    assert "unet" in err and "'mlp'" not in err


def test_resume_may_change_the_optimisation_settings_and_logs_the_change(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, "--steps=4"] + SMALL) == 0
    capsys.readouterr()
    assert main(["train", "--out", out, "--resume", "--steps=8", "--lr=0.0005", "--batch_size=16",
                 "--grad_clip=0.5", "--weight_decay=0.01", "--ema_decay=0.99"]) == 0
    stdout = capsys.readouterr().out
    assert "at step 4" in stdout and "lr 0.002 -> 0.0005" in stdout and "batch_size 32 -> 16" in stdout
    records = _records(out)
    change = [r for r in records if "changed" in r]
    assert len(change) == 1 and change[0]["step"] == 4
    assert change[0]["changed"] == {"lr": [0.002, 0.0005], "batch_size": [32, 16], "grad_clip": [1.0, 0.5],
                                    "weight_decay": [0.0, 0.01], "ema_decay": [0.999, 0.99]}
    assert [r["lr"] for r in records if "loss" in r] == [0.002, 0.002, 0.0005, 0.0005]
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert state["step"] == 8 and state["data"]["batch_size"] == 16 and state["ema"]["decay"] == 0.99
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0.01
    # The data and the architecture still cannot change.
    assert main(["train", "--out", out, "--resume", "--steps=9", "--sde.beta_max=10"]) == 2
    assert "sde.beta_max" in capsys.readouterr().err
    assert main(["train", "--out", out, "--resume", "--steps=9", "--ema_power=7"]) == 2
    assert "train.ema_power" in capsys.readouterr().err


def _python_run(out, net=None, steps=3):
    torch.manual_seed(0)
    sde = sd.VPSDE()
    net = net if net is not None else sd.nets.MLP(2, hidden=8, depth=1, time_embedding_dim=8)
    model = sd.ScoreModel(net, sde)
    config = sd.TrainConfig(steps=steps, batch_size=16, progress=False, out_dir=str(out), log_every=2)
    trainer = sd.Trainer(model, sde, sd.data.load("eight_gaussians", n=64), config)
    trainer.train()
    return trainer


def test_a_run_trained_from_python_loads_with_its_sde_and_model(tmp_path):
    trainer = _python_run(tmp_path)
    with pytest.raises(ValueError, match=r"sd.load\(path, sde=..., model=...\)"):
        sd.load(tmp_path)
    sde = sd.VPSDE()
    fresh = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, time_embedding_dim=8), sde)
    run = sd.load(tmp_path, sde=sde, model=fresh)
    assert run.step == 3 and run.sample_shape == (2,) and run.sde is sde and run.model is fresh
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, trainer.ema.shadow[key]), key
    with pytest.raises(ValueError, match="does not match the model"):
        sd.load(tmp_path, sde=sde, model=sd.ScoreModel(sd.nets.MLP(2, hidden=4, depth=1), sde))


def test_an_interrupted_run_logs_the_losses_of_its_last_interval(tmp_path):
    class Interrupt(sd.training.hooks.Hook):
        def after_step(self, trainer, metrics, last):
            if metrics["step"] == 5:
                trainer.stop_requested = True         # as a SIGINT seen during step 5

    torch.manual_seed(0)
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, time_embedding_dim=8), sde)
    config = sd.TrainConfig(steps=100, batch_size=16, progress=False, out_dir=str(tmp_path), log_every=4)
    trainer = sd.Trainer(model, sde, sd.data.load("eight_gaussians", n=64), config,
                         hooks=[Interrupt()] + sd.training.hooks.default_hooks(config))
    with pytest.raises(sd.training.TrainingInterrupted):
        trainer.train()
    assert [r["step"] for r in _records(str(tmp_path))] == [4, 5]
    state = torch.load(os.path.join(tmp_path, "checkpoint.pt"), weights_only=True)
    assert state["step"] == 5 and [r["step"] for r in state["history"]] == [4, 5]


def test_a_run_prints_as_a_summary(unet_run):
    run = sd.load(unet_run)
    text = repr(run)
    params = sum(p.numel() for p in run.model.parameters())
    assert text.startswith("Run(") and len(text.splitlines()) == 1 and len(text) < 300
    for part in ("VPSDE", "UNet", f"{params:,} parameters", "step 2", "digits", "(1, 8, 8)"):
        assert part in text, (part, text)
