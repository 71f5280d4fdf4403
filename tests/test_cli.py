"""The command line: train → sample → likelihood → compare, resume, and one-line errors."""
import os

import numpy as np
import pytest
import yaml

from scoresde.app.cli import main

TINY = ["--steps=30", "--batch_size=64", "--data.n=400", "--progress=false", "--model.hidden=32",
        "--model.depth=1", "--log_every=10", "--device=cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    assert main(["train", "--out", out] + TINY) == 0
    return out


def test_train_writes_config_and_checkpoint(run_dir):
    cfg = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))
    assert cfg["train"]["steps"] == 30 and cfg["model"]["hidden"] == 32 and cfg["sample_shape"] == [2]
    assert os.path.isfile(os.path.join(run_dir, "checkpoint.pt"))


def test_resume_continues(run_dir, capsys):
    assert main(["train", "--out", run_dir, "--resume"] + TINY[1:] + ["--steps=40"]) == 0
    assert "resumed from" in capsys.readouterr().out
    import torch

    state = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    assert state["step"] == 40


def test_sample_likelihood_compare(run_dir, tmp_path, capsys):
    ckpt = os.path.join(run_dir, "checkpoint.pt")
    out = str(tmp_path / "s")
    assert main(["sample", "--checkpoint", ckpt, "--sampler", "ddim", "--steps=5", "--n", "50", "--out", out,
                 "--device", "cpu"]) == 0
    x = np.load(os.path.join(out, "samples.npz"))["x"]
    assert x.shape == (50, 2) and np.isfinite(x).all() and os.path.isfile(os.path.join(out, "samples.png"))
    assert main(["likelihood", "--checkpoint", ckpt, "--n", "32", "--rtol", "1e-3", "--atol", "1e-3",
                 "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "NLL:" in text and "bits/dim:" in text and "true cross-entropy" in text
    cmp_out = str(tmp_path / "c")
    assert main(["compare", "--oracle", "eight_gaussians", "--samplers", "heun:steps=4", "ddim:steps=8",
                 "--n", "200", "--out", cmp_out, "--device", "cpu"]) == 0
    table = open(os.path.join(cmp_out, "comparison.md")).read()
    assert "| heun steps=4 | 7 |" in table and "| ddim steps=8 | 8 |" in table
    # A trained run on a data set with an exact density gets the noise floor and the cross-entropy too.
    assert main(["compare", "--checkpoint", ckpt, "--samplers", "ddim:steps=4", "--n", "100", "--out", cmp_out,
                 "--device", "cpu"]) == 0
    table = open(os.path.join(cmp_out, "comparison.md")).read()
    assert "true samples: noise floor; entropy" in table and "cross-entropy under the truth" in table


@pytest.mark.parametrize("argv, message", [
    (["train", "--stepz=3"], "unknown config key 'stepz'; valid keys: data.name"),
    (["train", "--sde.name=vx"], "unknown SDE 'vx'; valid choices: 've', 'vp', 'subvp'"),
    (["train", "--data.name=mnist"], "unknown data set 'mnist'"),
    (["sample", "--checkpoint", "/nonexistent/ckpt.pt"], "checkpoint '/nonexistent/ckpt.pt' does not exist"),
    (["compare", "--oracle", "eight_gaussians", "--samplers", "rk9"], "unknown sampler 'rk9'; valid choices: 'reverse_sde', 'probability_flow', 'pc', 'heun', 'dpm_solver', 'ddim', 'dpm_solver_sde', 'unipc', 'lms', 'deis', 'ancestral', 'dpm_adaptive', 'euler_maruyama'"),
    (["compare", "--oracle", "eight_gaussians", "--samplers", "heun:stepz=3"], "valid options: steps"),
    (["train", "--config", "/nonexistent.yaml"], "config file '/nonexistent.yaml' does not exist"),
])
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_yaml_config_and_debug(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("sde:\n  name: ve\ntrain:\n  steps: 5\n  batchsize: 3\n")
    assert main(["train", "--config", str(path)]) == 2
    with pytest.raises(ValueError, match="batchsize"):
        main(["train", "--config", str(path), "--debug"])


def test_train_help_lists_every_config_key_with_its_default(capsys):
    import dataclasses

    import scoresde as sd

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(sd.TrainConfig):
        assert f"--train.{field.name}=" in text, field.name
    for line in ("--sde.name=vp", "--sde.beta_max=20.0", "--model.net=mlp", "--model.hidden=128",
                 "--train.adam_betas=[0.9,0.999]", "--train.out_dir=null", "--data.name=eight_gaussians"):
        assert line in text, line
    assert "width of the residual stream" in text        # descriptions come from the docstrings


# -- class-conditional runs ------------------------------------------------------------------------------------
def test_conditional_train_sample_likelihood(tmp_path, capsys):
    out = str(tmp_path / "cond")
    assert main(["train", "--out", out] + TINY + ["--data.num_classes=4", "--model.num_classes=4",
                                                   "--cond_dropout=0.2"]) == 0
    cfg = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert cfg["model"]["num_classes"] == 4 and cfg["train"]["cond_dropout"] == 0.2
    ckpt = os.path.join(out, "checkpoint.pt")
    assert main(["train", "--out", out, "--resume"] + TINY[1:] + ["--steps=35"]) == 0      # resumes conditional
    capsys.readouterr()
    s1 = str(tmp_path / "s1")
    assert main(["sample", "--checkpoint", ckpt, "--label", "2", "--guidance", "1.5", "--steps=5", "--n", "40",
                 "--out", s1, "--device", "cpu"]) == 0
    saved = np.load(os.path.join(s1, "samples.npz"))
    assert saved["x"].shape == (40, 2) and (saved["labels"] == 2).all()
    assert "label 2, guidance 1.5 (NFE 5, 10 network evaluations" in capsys.readouterr().out
    s2 = str(tmp_path / "s2")
    assert main(["sample", "--checkpoint", ckpt, "--label", "all", "--steps=5", "--n", "41", "--out", s2,
                 "--device", "cpu"]) == 0
    labels = np.load(os.path.join(s2, "samples.npz"))["labels"]
    assert labels.tolist() == [c for c in range(4) for _ in range(10)]
    for label, expected in (("1", "class 1: −log p(x | c = 1)"), ("all", "each under its own label"),
                            (None, "no label (∅): −log p(x)")):
        argv = ["likelihood", "--checkpoint", ckpt, "--n", "16", "--rtol", "1e-3", "--atol", "1e-3", "--device", "cpu"]
        assert main(argv + (["--label", label] if label else [])) == 0
        text = capsys.readouterr().out
        assert expected in text and "true cross-entropy" in text
    for label in ("1", "all"):                              # inpainting given the class, or each point's own
        out_i = str(tmp_path / f"inpaint{label}")
        assert main(["inpaint", "--checkpoint", ckpt, "--label", label, "--method", "replacement", "--steps=3",
                     "--n", "12", "--out", out_i, "--device", "cpu"]) == 0
        saved = np.load(os.path.join(out_i, "inpaint.npz"))
        assert saved["sampled"].shape == (12, 2) and np.isfinite(saved["sampled"]).all()
        assert (saved["labels"] == 1).all() if label == "1" else len(set(saved["labels"].tolist())) > 1
        assert (", class 1 inpainted" if label == "1" else ", each under its own label") in capsys.readouterr().out
    for argv, message in [
        (["sample", "--checkpoint", ckpt, "--label", "4", "--out", str(tmp_path / "x")], "0 … 3; got 4"),
        (["sample", "--checkpoint", ckpt, "--guidance", "2", "--out", str(tmp_path / "x")], "--guidance needs --label"),
        (["train", "--out", str(tmp_path / "bad")] + TINY + ["--data.name=checkerboard", "--model.num_classes=3"],
         "data set 'checkerboard' has no labels"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_label_on_an_unconditional_run_is_refused(run_dir, tmp_path, capsys):
    ckpt = os.path.join(run_dir, "checkpoint.pt")
    assert main(["sample", "--checkpoint", ckpt, "--label", "1", "--out", str(tmp_path / "x")]) == 2
    assert "needs a class-conditional model" in capsys.readouterr().err


# -- inpaint ---------------------------------------------------------------------------------------------------
def test_inpaint_points_writes_npz_and_png_and_keeps_the_observation(run_dir, tmp_path, capsys):
    import torch

    import scoresde as sd

    ckpt = os.path.join(run_dir, "checkpoint.pt")
    out = str(tmp_path / "replacement")
    assert main(["inpaint", "--checkpoint", ckpt, "--method", "replacement", "--steps=5", "--n", "20", "--out", out,
                 "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "20 test samples of eight_gaussians inpainted with replacement (mask top: 1 of 2 entries observed" in text
    assert "NFE 5" in text and "MSE on the unobserved entries" in text
    assert os.path.isfile(os.path.join(out, "inpaint.png"))
    saved = np.load(os.path.join(out, "inpaint.npz"))
    true, observed, sampled, mask = saved["true"], saved["observed"], saved["sampled"], saved["mask"]
    assert true.shape == observed.shape == sampled.shape == (20, 2) and mask.tolist() == [True, False]
    assert int(saved["nfe"]) == 5 and np.isfinite(sampled).all()
    assert np.array_equal(observed[:, mask], true[:, mask]) and (observed[:, ~mask] == 0).all()   # noiseless y
    assert np.array_equal(sampled[:, mask], observed[:, mask])          # replacement keeps y exactly
    mse = float(((sampled - true)[:, ~mask] ** 2).mean())
    assert f"MSE on the unobserved entries {mse:.4g}" in text

    # RePaint with a random mask: the NFE the sampler says, y kept exactly.
    out = str(tmp_path / "repaint")
    assert main(["inpaint", "--checkpoint", ckpt, "--mask", "random:0.5", "--seed", "3", "--steps=6",
                 "--resamplings=2", "--jump_length=2", "--n", "10", "--out", out, "--device", "cpu"]) == 0
    saved = np.load(os.path.join(out, "inpaint.npz"))
    mask = saved["mask"]
    expected = sd.InpaintingSampler(sd.LinearMeasurement(sd.Mask(torch.as_tensor(mask)), torch.zeros(2)),
                                             steps=6, resamplings=2, jump_length=2).nfe()
    assert int(saved["nfe"]) == expected > 6 and mask.any()
    assert np.array_equal(saved["sampled"][:, mask], saved["observed"][:, mask])

    # A noisy observation: y = mask ⊙ (x + σ_y n), no longer the truth; split Gibbs takes it.
    out = str(tmp_path / "noisy")
    assert main(["inpaint", "--checkpoint", ckpt, "--method", "split_gibbs", "--noise-std", "0.1", "--steps=3",
                 "--iterations=2", "--n", "6", "--out", out, "--device", "cpu"]) == 0
    saved = np.load(os.path.join(out, "inpaint.npz"))
    mask, gap = saved["mask"], saved["observed"] - saved["true"]
    assert 0 < np.abs(gap[:, mask]).max() < 0.6 and (saved["observed"][:, ~mask] == 0).all()
    assert np.isfinite(saved["sampled"]).all() and "noise_std 0.1" in capsys.readouterr().out


def test_inpaint_images_draws_observed_sampled_true(tmp_path, capsys):
    run = str(tmp_path / "digits")
    assert main(["train", "--out", run, "--steps=5", "--batch_size=32", "--data.name=digits", "--model.hidden=32",
                 "--model.depth=1", "--progress=false", "--eval_every=0", "--device=cpu"]) == 0
    out = str(tmp_path / "inpaint")
    assert main(["inpaint", "--checkpoint", os.path.join(run, "checkpoint.pt"), "--mask", "left", "--method",
                 "replacement", "--steps=3", "--n", "4", "--out", out, "--device", "cpu"]) == 0
    saved = np.load(os.path.join(out, "inpaint.npz"))
    mask = saved["mask"]
    assert saved["sampled"].shape == (4, 1, 8, 8) and mask.shape == (1, 8, 8)
    assert mask[..., :4].all() and not mask[..., 4:].any()             # the left half of each image observed
    assert np.array_equal(saved["sampled"][:, mask], saved["true"][:, mask])
    assert os.path.getsize(os.path.join(out, "inpaint.png")) > 1000
    assert "4 test samples of digits inpainted with replacement (mask left: 32 of 64" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--method", "inpaint_me"], "unknown inverse-problem method 'inpaint_me'; valid choices: 'dps', 'pigdm'"),
    (["--mask", "bottom"], "unknown mask 'bottom'; valid choices: 'top', 'left', 'random:p'"),
    (["--mask", "first:3"], "'first:k' with 1 <= k <= 2"),
    (["--mask", "random:1.5"], "'random:p' with 0 < p <= 1"),
    (["--method", "dps", "--normalized=false"], "it needs noise_std > 0; got noise_std = 0"),
    (["--method", "replacement", "--stepz=3"], "valid options: steps, eta"),
    (["--noise-std", "-1"], "--noise-std must be a finite number >= 0"),
    (["--n", "0"], "--n must be a positive integer"),
])
def test_inpaint_errors_are_one_line(run_dir, tmp_path, argv, message, capsys):
    argv = ["inpaint", "--checkpoint", os.path.join(run_dir, "checkpoint.pt"), "--steps=2", "--n", "4",
            "--out", str(tmp_path / "x"), "--device", "cpu"] + argv
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "x")


def test_inpaint_help_lists_the_methods_and_their_options(capsys):
    with pytest.raises(SystemExit):
        main(["inpaint", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "repaint (steps, resamplings, jump_length, eta)" in text
    assert "dps (steps, scale, normalized, sampler)" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "inpaint" in capsys.readouterr().out


def test_the_training_design_space_is_reachable_from_the_command_line(tmp_path):
    """Weighting, time distribution, EMA profile, schedule, accumulation and precision as --key=value."""
    out = str(tmp_path / "ds")
    assert main(["train", "--out", out, "--steps=3", "--batch_size=32", "--data.n=200", "--progress=false",
                 "--model.hidden=16", "--model.depth=1", "--device=cpu", "--weighting=min_snr",
                 "--time_distribution=log_normal", "--importance_weight=false", "--ema_power=6.94",
                 "--lr_decay=cosine", "--accumulate=2", "--precision=bf16"]) == 0
    cfg = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert cfg["train"]["time_distribution"] == "log_normal" and cfg["train"]["accumulate"] == 2
    assert cfg["train"]["precision"] == "bf16" and cfg["train"]["ema_power"] == 6.94


@pytest.mark.slow
def test_train_an_edm_preset_and_sample_a_class(tmp_path):
    # EDM's CIFAR-10 recipe (a tiny network of the same classes) on a tiny CIFAR-10 folder, then a class's samples
    from test_data_cifar10 import _files, _write_folder

    _write_folder(tmp_path / "data", _files(n_train=4, n_test=3)[0])
    out = str(tmp_path / "run")
    assert main(["train", "--preset", "edm/cifar10-ddpmpp-edm-cond", "--out", out, f"--data.path={tmp_path / 'data'}",
                 "--model.model_channels=16", "--model.channel_mult=[1,2]", "--model.num_blocks=1",
                 "--model.attn_resolutions=[16]", "--steps=2", "--batch_size=4", "--progress=false"]) == 0
    assert main(["sample", "--checkpoint", out, "--sampler", "heun", "--steps=3", "--n", "2", "--label", "3",
                 "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    assert np.load(tmp_path / "s" / "samples.npz")["x"].shape == (2, 3, 32, 32)
    assert main(["train", "--preset", "edm/cifar10-nope", "--out", str(tmp_path / "r2")]) == 2
