"""The command line beyond class labels: `sample --cond FILE` (a .npy array or a .pt tensor / dict of tensors),
`--guidance` with it, the null condition of a vector-conditional run, `--threshold`, and `scoresde edit` (SDEdit)."""
import os

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.app.cli import main

TINY = ["--steps=30", "--batch_size=64", "--progress=false", "--model.hidden=32", "--model.depth=1",
        "--log_every=10", "--device=cpu"]
DDIM = ["--sampler", "ddim", "--steps=5", "--device", "cpu"]


def _one_line_error(capsys, argv, message):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory):
    """A run conditioned on 3-vectors y (x ≈ y[:2]), trained from the command line on an .npz with cond_key."""
    folder = tmp_path_factory.mktemp("vector")
    rng = np.random.default_rng(0)
    y = rng.normal(size=(400, 3)).astype(np.float32)
    x = (y[:, :2] + 0.1 * rng.normal(size=(400, 2))).astype(np.float32)
    np.savez(folder / "data.npz", x=x, y=y)
    out = str(folder / "run")
    assert main(["train", "--out", out] + TINY + ["--model.cond_dim=3", "--data.name=array",
                                                   f"--data.path={folder / 'data.npz'}", "--data.cond_key=y",
                                                   "--data.test_fraction=0.2", "--cond_dropout=0.2"]) == 0
    return out


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """An unconditional run on the 8×8 digits (a few steps: its samples leave [−1, 1] by far)."""
    out = str(tmp_path_factory.mktemp("digits"))
    assert main(["train", "--out", out, "--steps=5", "--batch_size=32", "--data.name=digits", "--model.hidden=32",
                 "--model.depth=1", "--progress=false", "--eval_every=0", "--device=cpu"]) == 0
    return out


def _sample(run, out, *extra, n=12):
    assert main(["sample", "--checkpoint", run, "--n", str(n), "--out", str(out)] + DDIM + list(extra)) == 0
    return np.load(os.path.join(out, "samples.npz"))


# -- sample --cond ---------------------------------------------------------------------------------------------
def test_vector_conditional_run_trains_from_the_command_line(vector_run):
    import yaml

    cfg = yaml.safe_load(open(os.path.join(vector_run, "config.yaml")))
    assert cfg["model"]["cond_dim"] == 3 and cfg["data"]["cond_key"] == "y" and cfg["sample_shape"] == [2]
    model = sd.load(vector_run).model
    assert tuple(model.null_cond.shape) == (3,)


def test_sample_cond_npy_and_pt_reach_the_model(vector_run, tmp_path, capsys):
    n = 12
    a = np.random.default_rng(1).normal(size=(n, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    saved = _sample(vector_run, tmp_path / "a", "--cond", str(tmp_path / "a.npy"), n=n)
    assert saved["x"].shape == (n, 2) and np.array_equal(saved["cond"], a)
    assert "cond a.npy (one row per sample)" in capsys.readouterr().out
    # The same rows as a .pt dict {"cond": tensor} (spread as the keyword cond=) and as a float64 .pt tensor (cast
    # to the model's float32): the same samples.
    torch.save({"cond": torch.from_numpy(a)}, tmp_path / "a.pt")
    torch.save(torch.from_numpy(a).double(), tmp_path / "a64.pt")
    from_dict = _sample(vector_run, tmp_path / "d", "--cond", str(tmp_path / "a.pt"), n=n)
    from_tensor = _sample(vector_run, tmp_path / "t", "--cond", str(tmp_path / "a64.pt"), n=n)
    np.testing.assert_array_equal(from_dict["x"], saved["x"])
    np.testing.assert_allclose(from_tensor["x"], saved["x"], rtol=0, atol=1e-6)
    assert np.array_equal(from_dict["cond_cond"], a)
    # Other conditions, same seed: other samples (the condition reaches the network).
    np.save(tmp_path / "b.npy", a + 1.0)
    other = _sample(vector_run, tmp_path / "b", "--cond", str(tmp_path / "b.npy"), n=n)
    assert np.abs(other["x"] - saved["x"]).max() > 1e-3
    # One row (1, 3) shared by all n samples is n repeated rows.
    np.save(tmp_path / "row.npy", a[:1])
    np.save(tmp_path / "rows.npy", np.repeat(a[:1], n, axis=0))
    shared = _sample(vector_run, tmp_path / "r1", "--cond", str(tmp_path / "row.npy"), n=n)
    repeated = _sample(vector_run, tmp_path / "rn", "--cond", str(tmp_path / "rows.npy"), n=n)
    np.testing.assert_allclose(shared["x"], repeated["x"], rtol=0, atol=1e-6)
    assert shared["cond"].shape == (n, 3) and "(one row shared by all)" in capsys.readouterr().out


def test_guidance_with_cond_is_classifier_free_guidance_from_the_models_null(vector_run, tmp_path, capsys):
    n = 10
    cond = np.random.default_rng(2).normal(size=(n, 3)).astype(np.float32)
    np.save(tmp_path / "c.npy", cond)
    guided = _sample(vector_run, tmp_path / "g", "--cond", str(tmp_path / "c.npy"), "--guidance", "2", n=n)
    assert "guidance 2 (NFE 5, 10 network evaluations" in capsys.readouterr().out
    run = sd.load(vector_run)
    score = sd.classifier_free_guidance(run.model, torch.from_numpy(cond), scale=2.0)   # null: model.null_cond
    expected = sd.SAMPLERS.build("ddim", steps=5).sample(run.sde, score, (n, 2),
                                                         generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(guided["x"], expected.x.numpy(), rtol=0, atol=1e-5)
    plain = _sample(vector_run, tmp_path / "p", "--cond", str(tmp_path / "c.npy"), n=n)
    zero = _sample(vector_run, tmp_path / "z", "--cond", str(tmp_path / "c.npy"), "--guidance", "0", n=n)
    np.testing.assert_array_equal(zero["x"], plain["x"])                 # w = 0: the conditional model alone
    assert np.abs(guided["x"] - plain["x"]).max() > 1e-3


def test_a_vector_conditional_run_without_cond_samples_from_its_null(vector_run, tmp_path, capsys):
    free = _sample(vector_run, tmp_path / "u")
    assert free["x"].shape == (12, 2) and np.isfinite(free["x"]).all() and "cond" not in free
    null = sd.load(vector_run).model.null_cond.detach().numpy()[None]    # the learned ∅, (1, 3)
    np.save(tmp_path / "null.npy", null)
    given = _sample(vector_run, tmp_path / "n", "--cond", str(tmp_path / "null.npy"))
    np.testing.assert_array_equal(free["x"], given["x"])
    capsys.readouterr()
    # likelihood and inpaint of such a run use the same null condition (p(x)).
    assert main(["likelihood", "--checkpoint", vector_run, "--n", "8", "--rtol", "1e-3", "--atol", "1e-3",
                 "--device", "cpu"]) == 0
    assert "no condition (∅): −log p(x)" in capsys.readouterr().out
    assert main(["inpaint", "--checkpoint", vector_run, "--method", "replacement", "--steps=3", "--n", "4", "--out",
                 str(tmp_path / "i"), "--device", "cpu"]) == 0
    assert main(["compare", "--checkpoint", vector_run, "--samplers", "ddim:steps=3", "--n", "20", "--out",
                 str(tmp_path / "c"), "--device", "cpu"]) == 0


def test_cond_holds_labels_for_a_class_conditional_run(tmp_path, capsys):
    run = str(tmp_path / "classes")
    assert main(["train", "--out", run] + TINY + ["--data.n=400", "--data.num_classes=4", "--model.num_classes=4",
                                                   "--cond_dropout=0.2"]) == 0
    labels = np.full(8, 2, dtype=np.int32)                 # cast to long: the same as --label 2
    np.save(tmp_path / "labels.npy", labels)
    given = _sample(run, tmp_path / "c", "--cond", str(tmp_path / "labels.npy"), "--guidance", "1.5", n=8)
    named = _sample(run, tmp_path / "l", "--label", "2", "--guidance", "1.5", n=8)
    np.testing.assert_array_equal(given["x"], named["x"])
    np.save(tmp_path / "bad.npy", np.full(8, 4))           # 4 is ∅ (no guidance towards it) of K = 4 classes
    _one_line_error(capsys, ["sample", "--checkpoint", run, "--cond", str(tmp_path / "bad.npy"), "--guidance", "1",
                             "--n", "8", "--out", str(tmp_path / "x")] + DDIM,
                    "(it takes (8,) class indices in 0 … 3 or (1,) class indices in 0 … 3): cond must hold class "
                    "indices in 0 … 3; got values in [4, 4]")


@pytest.fixture(scope="module")
def image_cond_run(tmp_path_factory):
    """An (untrained) run of a U-Net conditioned on an image, written as `scoresde train` writes runs: its null
    condition is a dict {"image": (1, 1, 1)} whose batch shape the command cannot know."""
    from scoresde.app.config import SAMPLE_SHAPE_KEY, build_model, build_sde, load_config, save_config
    from scoresde.training.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    out = tmp_path_factory.mktemp("image_cond")
    cfg = load_config(None, [("data.name", "digits"), ("model.net", "unet"), ("model.channels", 8),
                             ("model.channel_mults", [1]), ("model.attention_resolutions", []),
                             ("model.time_embedding_dim", 16), ("model.cond_channels", 1)])
    torch.manual_seed(0)
    model = build_model(cfg, build_sde(cfg), (1, 8, 8))
    save_config(cfg, str(out / "config.yaml"), extra={SAMPLE_SHAPE_KEY: [1, 8, 8]})
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "step": 0}, str(out / "checkpoint.pt"))
    return str(out)


def test_an_image_conditional_run_needs_cond_and_takes_a_pt_dict(image_cond_run, tmp_path, capsys):
    _one_line_error(capsys, ["sample", "--checkpoint", image_cond_run, "--n", "3", "--out", str(tmp_path / "x")]
                    + DDIM, "conditioned on {'image': (B, 1, 8, 8)} and its null condition ∅ has no batch shape to "
                            "use without one: pass the conditions, --cond FILE")
    image = torch.rand(3, 1, 8, 8) * 2 - 1
    torch.save({"image": image}, tmp_path / "y.pt")
    plain = _sample(image_cond_run, tmp_path / "s", "--cond", str(tmp_path / "y.pt"), n=3)
    assert plain["x"].shape == (3, 1, 8, 8) and np.array_equal(plain["cond_image"], image.numpy())
    guided = _sample(image_cond_run, tmp_path / "g", "--cond", str(tmp_path / "y.pt"), "--guidance", "1", n=3)
    assert np.isfinite(guided["x"]).all() and np.abs(guided["x"] - plain["x"]).max() > 1e-4
    torch.save({"image": image[:, :, :4]}, tmp_path / "half.pt")
    _one_line_error(capsys, ["sample", "--checkpoint", image_cond_run, "--n", "3", "--out", str(tmp_path / "x"),
                             "--cond", str(tmp_path / "half.pt")] + DDIM,
                    "does not fit the model (it takes {'image': (3, 1, 8, 8)} or {'image': (1, 1, 8, 8)})")


def _error_cases(tmp_path):
    np.save(tmp_path / "c7.npy", np.ones((7, 3), np.float32))
    np.save(tmp_path / "c4.npy", np.ones((10, 4), np.float32))
    np.save(tmp_path / "scalar.npy", np.float32(1.0))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "c.txt").write_text("1 2 3")
    torch.save([torch.ones(3)], tmp_path / "list.pt")
    torch.save({"colour": torch.ones(10, 3)}, tmp_path / "key.pt")
    takers = [name for name in sd.SAMPLERS.names() if getattr(sd.SAMPLERS.get(name)[0], "takes_threshold", False)]
    return [
        (["--cond", "c7.npy"], "--cond 'c7.npy' has 7 rows, shape (7, 3), but there are 10 samples (--n 10): it must "
                               "have shape (10, 3) (row i for sample i) or (1, 3) (one condition shared by all)"),
        (["--cond", "scalar.npy"], "has a 0-d array, but there are 10 samples (--n 10): it must have shape (10, 3)"),
        (["--cond", "c4.npy"], "--cond 'c4.npy' does not fit the model (it takes (10, 3) or (1, 3)): cond must have "
                               "shape (B, cond_dim)"),
        (["--cond", "junk.npy"], "--cond: cannot read 'junk.npy' as a .npy array"),
        (["--cond", "junk.pt"], "--cond: 'junk.pt' is not a valid condition file"),
        (["--cond", "missing.npy"], "--cond: no such file 'missing.npy'"),
        (["--cond", "c.txt"], "--cond 'c.txt': give a .npy file (one array) or a .pt file"),
        (["--cond", "list.pt"], "--cond 'list.pt' holds list at its top; a .pt condition file holds a tensor or a "
                                "dict of tensors"),
        (["--cond", "key.pt"], "has keys ['colour'] that"),
        (["--cond", "c4.npy", "--label", "1"], "give --label (a class) or --cond FILE (conditions), not both"),
        (["--guidance", "2"], "--guidance needs --label (the class to guide towards, or 'all') or --cond FILE"),
        (["--threshold", "dynamic:x"], "--threshold must be dynamic:RATIO[:MAX] (Imagen's dynamic thresholding, "
                                       "e.g. dynamic:0.995 or dynamic:0.995:1.0) or clip:MAX (e.g. clip:1.0); got "
                                       "'dynamic:x'"),
        (["--threshold", "clip:1:2"], "or clip:MAX (e.g. clip:1.0); got 'clip:1:2'"),
        (["--threshold", "imagen"], "got 'imagen'"),
        (["--threshold", "dynamic:1.5"], "--threshold 'dynamic:1.5': ratio must be a number in (0, 1]; got 1.5"),
        (["--threshold", "clip:-1"], "max_value must be a finite number > 0"),
        (["--threshold", "clip:1.0", "--sampler", "euler_maruyama"],
         "--threshold: sampler 'euler_maruyama' forms no x0 prediction to threshold; the samplers that take "
         f"--threshold are {', '.join(takers)}"),
    ]


def test_sample_errors_are_one_line(vector_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, message in _error_cases(tmp_path):
        _one_line_error(capsys, ["sample", "--checkpoint", vector_run, "--n", "10", "--out", "x", "--steps=2",
                                 "--device", "cpu"] + argv, message)
        assert not os.path.exists(tmp_path / "x"), argv


def test_cond_on_an_unconditional_run_is_refused(image_run, tmp_path, capsys):
    np.save(tmp_path / "c.npy", np.ones((1, 3), np.float32))
    for command in ("sample", "edit"):
        _one_line_error(capsys, [command, "--checkpoint", image_run, "--cond", str(tmp_path / "c.npy"), "--out",
                                 str(tmp_path / "x"), "--device", "cpu"]
                        + (["--input", str(_write_pngs(tmp_path / "in", 2))] if command == "edit" else []),
                        "--cond needs a conditional model (trained with --model.cond_dim=D")


# -- --threshold -----------------------------------------------------------------------------------------------
def test_dynamic_threshold_keeps_denoised_samples_in_the_data_range(image_run, tmp_path):
    """DynamicThreshold maps x̂_0 to clamp(x̂_0, −s, s)/s ∈ [−1, 1] at every score evaluation (its docstring);
    with --denoise=true DDIM's last output is Tweedie's x̂_0 of that thresholded score, so it lies in [−1, 1] up
    to the round trip x̂_0 → score → x̂_0 in float32. DDIM's own last state x_eps = s x̂_0 + σ ε̂ has no such
    bound. Without the threshold this barely trained run's samples leave [−1, 1] by far: the test is not vacuous."""
    extra = ["--denoise=true", "--n", "16"]
    free = _sample(image_run, tmp_path / "free", *extra)["x"]
    assert np.abs(free).max() > 2
    for spec in ("dynamic:0.995", "dynamic:0.9:1.0", "clip:1.0"):
        x = _sample(image_run, tmp_path / spec.replace(":", "_"), "--threshold", spec, *extra)["x"]
        assert np.isfinite(x).all() and np.abs(x).max() <= 1 + 1e-4, (spec, np.abs(x).max())
        assert np.abs(x).max() > 0.5                                     # thresholded, not collapsed to 0


def test_threshold_reaches_the_sampler(vector_run, tmp_path, monkeypatch):
    import scoresde.app.cli as cli

    seen = {}
    real = cli.build_sampler

    def spy(name, options):
        seen.update(options)
        return real(name, options)
    monkeypatch.setattr(cli, "build_sampler", spy)
    _sample(vector_run, tmp_path / "s", "--threshold", "dynamic:0.99:2.5", "--n", "4")
    threshold = seen["threshold"]
    assert isinstance(threshold, sd.DynamicThreshold) and (threshold.ratio, threshold.max_value) == (0.99, 2.5)


# -- edit ------------------------------------------------------------------------------------------------------
def _write_pngs(folder, n=6):
    """n distinct 8×8 grey bars (three vertical, three horizontal) as PNGs."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        a = np.zeros((8, 8), np.uint8)
        if i % 6 < 3:
            a[1:7, 1 + 2 * (i % 3):3 + 2 * (i % 3)] = 255
        else:
            a[1 + 2 * (i % 3):3 + 2 * (i % 3), 1:7] = 255
        Image.fromarray(a).save(os.path.join(folder, f"bar{i}.png"))
    return folder


def _edit(run, inputs, out, strength, *extra):
    assert main(["edit", "--checkpoint", run, "--input", str(inputs), "--strength", str(strength), "--out", str(out),
                 "--sampler", "ddim", "--steps=10", "--device", "cpu"] + list(extra)) == 0
    return np.load(os.path.join(out, "edited.npz"))


def test_edit_a_folder_of_images(image_run, tmp_path, capsys):
    from PIL import Image

    inputs = _write_pngs(tmp_path / "in")
    edits = {s: _edit(image_run, inputs, tmp_path / f"s{s}", s) for s in (1.0, 0.3)}
    text = capsys.readouterr().out
    assert "input: image folder" in text and "6 inputs edited with ddim at strength 0.3" in text
    pixels = np.stack([np.asarray(Image.open(inputs / f"bar{i}.png")) for i in range(6)])[:, None]
    for s, saved in edits.items():
        x, given = saved["x"], saved["input"]
        assert x.shape == given.shape == (6, 1, 8, 8) and float(saved["strength"]) == s
        np.testing.assert_array_equal(given, pixels / 255 * 2 - 1)     # 256 levels over the data range [−1, 1]
        assert saved["names"].tolist() == [f"bar{i}.png" for i in range(6)]
        assert sorted(os.listdir(tmp_path / f"s{s}" / "images")) == [f"{i:06d}.png" for i in range(6)]
        assert os.path.getsize(tmp_path / f"s{s}" / "edited.png") > 1000
    # The command is sd.sdedit with the run's SDE, model and the named sampler, seeded by --seed.
    run = sd.load(image_run)
    expected = sd.sdedit(run.sde, run.model, torch.from_numpy(edits[0.3]["input"]), 0.3,
                         sd.SAMPLERS.build("ddim", steps=10), torch.Generator().manual_seed(0))
    np.testing.assert_allclose(edits[0.3]["x"], expected.x.numpy(), rtol=0, atol=1e-5)
    # Strength 1 noises to T, where the input survives only as s(T) x0 with s(T) = exp(−½∫β) ≈ 0.0066 (VP): the
    # edit is an unrelated sample, and its distance to the input is that of one. At 0.3 (s ≈ 0.63) the input's
    # structure is kept: every edit is closer to its own input than to any other, and closer than at strength 1.
    for s, saved in edits.items():
        x, given = saved["x"].reshape(6, -1), saved["input"].reshape(6, -1)
        edits[s] = np.sqrt(((x[:, None] - given[None]) ** 2).mean(-1))   # [i, j]: edit i to input j
    near = edits[0.3]
    assert near.argmin(axis=1).tolist() == list(range(6)), near.round(2)
    assert np.diag(near).mean() < np.diag(edits[1.0]).mean()


def test_edit_an_array_of_samples_and_with_cond(vector_run, tmp_path, capsys):
    x = np.random.default_rng(3).normal(size=(5, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "c.npy", np.ones((1, 3), np.float32))
    saved = _edit(vector_run, tmp_path / "x.npy", tmp_path / "e", 0.5, "--cond", str(tmp_path / "c.npy"),
                  "--guidance", "1", "--threshold", "clip:3")
    assert saved["x"].shape == (5, 2) and np.array_equal(saved["input"], x) and saved["cond"].shape == (5, 3)
    assert "names" not in saved and not os.path.exists(tmp_path / "e" / "images")
    text = capsys.readouterr().out
    nfe = int(saved["nfe"])
    assert "5 inputs edited with ddim at strength 0.5, cond c.npy (one row shared by all), guidance 1, threshold " \
           f"clip:3 (NFE {nfe}, {2 * nfe} network evaluations" in text and 0 < nfe < 10
    # scoresde sample's samples.npz is an input too (its array x); without --cond: the null condition.
    samples = _sample(vector_run, tmp_path / "s", n=4)
    again = _edit(vector_run, tmp_path / "s" / "samples.npz", tmp_path / "e2", 0.2)
    assert np.array_equal(again["input"], samples["x"]) and "cond" not in again


def test_edit_refuses_to_overwrite_without_overwrite(image_run, tmp_path, capsys):
    inputs = _write_pngs(tmp_path / "in", 4)
    out = tmp_path / "out"
    first = _edit(image_run, inputs, out, 0.5)
    _one_line_error(capsys, ["edit", "--checkpoint", image_run, "--input", str(inputs), "--out", str(out),
                             "--device", "cpu"],
                    f"{out} already holds an edit (edited.npz, edited.png, images): pass --overwrite to replace it")
    for name in os.listdir(inputs)[:2]:
        os.remove(inputs / name)                     # fewer inputs: the earlier edit's extra PNGs go too
    second = _edit(image_run, inputs, out, 0.5, "--overwrite", "--seed", "1")
    assert first["x"].shape[0] == 4 and second["x"].shape[0] == 2
    assert sorted(os.listdir(out / "images")) == ["000000.png", "000001.png"]


def test_edit_errors_are_one_line(image_run, vector_run, tmp_path, capsys):
    inputs = _write_pngs(tmp_path / "in", 2)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 2), np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((3, 1, 8, 8), np.int64))
    (tmp_path / "splits" / "train").mkdir(parents=True)
    cases = [
        (image_run, ["--input", str(inputs), "--strength", "0"], "--strength must be in (0, 1]"),
        (image_run, ["--input", str(inputs), "--strength", "1.5"], "--strength must be in (0, 1]"),
        (image_run, ["--input", str(inputs), "--strength", "nan"], "--strength must be in (0, 1]"),
        (image_run, ["--input", str(tmp_path / "wrong.npy")], "has shape (3, 2); this run's samples need (N, 1, 8, 8)"),
        (image_run, ["--input", str(tmp_path / "ints.npy")], "has dtype int64; give floating samples"),
        (image_run, ["--input", str(tmp_path / "nothing.npy")], "--input: no such file"),
        (image_run, ["--input", str(tmp_path / "in" / "bar0.png")], "give a folder of images or a .npy file"),
        (image_run, ["--input", str(tmp_path / "splits")], "holds split folders"),
        (image_run, ["--input", str(inputs), "--threshold", "clip:1", "--sampler", "pc"],
         "--threshold: sampler 'pc' forms no x0 prediction"),
        (vector_run, ["--input", str(inputs)], "is a folder of images but this run's samples have shape (2,)"),
    ]
    for run, argv, message in cases:
        _one_line_error(capsys, ["edit", "--checkpoint", run, "--out", str(tmp_path / "x"), "--device", "cpu"] + argv,
                        message)
        assert not os.path.exists(tmp_path / "x"), argv


def test_sample_and_edit_help_name_the_new_flags(capsys):
    for command in ("sample", "edit"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--cond FILE" in text and "--threshold SPEC" in text and "dynamic:RATIO[:MAX]" in text
    assert "--strength" in text and "--overwrite" in text


def test_an_image_conditioned_unet_trains_from_the_command_line_and_samples_with_a_dict(tmp_path, capsys):
    """--data.cond_name=image passes the cond_key array as the U-Net's image= keyword (cond_channels); a .pt dict
    {"image": ...} samples it, and the condition reaches the network (two conditions, two results)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 8, 8, generator=g) * 2 - 1
    np.savez(tmp_path / "pairs.npz", x=x.numpy(), low=x.flip(-1).numpy())
    run = str(tmp_path / "superres")
    assert main(["train", "--out", run, "--steps=2", "--batch_size=8", "--data.name=array", "--data.key=x",
                 f"--data.path={tmp_path / 'pairs.npz'}", "--data.cond_key=low", "--data.cond_name=image",
                 "--model.net=unet", "--model.cond_channels=1", "--model.channels=8", "--progress=false", "--eval_every=0",
                 "--sample_every=0", "--device=cpu"]) == 0
    results = []
    for k, image in enumerate((x[:1], -x[:1])):
        torch.save({"image": image}, tmp_path / f"c{k}.pt")
        out = str(tmp_path / f"s{k}")
        assert main(["sample", "--checkpoint", run, "--cond", str(tmp_path / f"c{k}.pt"), "--n", "2", "--sampler",
                     "ddim", "--steps=2", "--out", out, "--device", "cpu"]) == 0
        results.append(np.load(os.path.join(out, "samples.npz"))["x"])
    assert results[0].shape == (2, 1, 8, 8) and not np.allclose(results[0], results[1])
