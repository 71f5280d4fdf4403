"""`--data` of the evaluation commands: a folder given for evaluation is the evaluation set, named by its path."""
import os

import numpy as np
import pytest

from scoresde.app.cli import main

Image = pytest.importorskip("PIL.Image")
TINY = ["--steps=4", "--batch_size=8", "--progress=false", "--model.hidden=16", "--model.depth=1", "--log_every=2",
        "--device=cpu"]
FAST = ["--device", "cpu"]


def _grey(folder, count, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k in range(count):
        Image.fromarray(rng.integers(0, 256, size=(4, 4), dtype=np.uint8), mode="L").save(folder / f"{k}.png")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny run on a folder with train/ (12 images) and test/ (4), and a held-out folder of 8 without splits."""
    root = tmp_path_factory.mktemp("images")
    _grey(root / "shapes" / "train", 12, 0)
    _grey(root / "shapes" / "test", 4, 1)
    _grey(root / "held_out", 8, 2)
    out = str(root / "run")
    assert main(["train", "--out", out, "--data.name=image_folder", f"--data.path={root / 'shapes'}"] + TINY) == 0
    return os.path.join(out, "checkpoint.pt"), str(root / "shapes"), str(root / "held_out")


def test_train_reads_the_train_folder_and_says_so(image_run, capsys):
    ckpt, shapes, _ = image_run
    assert main(["likelihood", "--checkpoint", ckpt, "--n", "64", "--rtol", "1e-2", "--atol", "1e-2"] + FAST) == 0
    text = capsys.readouterr().out
    assert f"image folder {shapes!r}, split test from test/: 4 images, no classes" in text
    assert f"4 test samples of {shapes}, d = 16" in text


def test_likelihood_of_a_folder_without_splits_evaluates_all_of_it(image_run, capsys):
    ckpt, _, held_out = image_run
    for split in ([], ["--split", "train"]):
        assert main(["likelihood", "--checkpoint", ckpt, "--data", held_out, "--n", "64", "--rtol", "1e-2",
                     "--atol", "1e-2"] + split + FAST) == 0
        text = capsys.readouterr().out
        assert f"8 samples of {held_out} (all of it), d = 16" in text and "train samples" not in text


def test_compare_takes_data_like_likelihood(image_run, tmp_path, capsys):
    ckpt, _, held_out = image_run
    out = str(tmp_path / "c")
    assert main(["compare", "--checkpoint", ckpt, "--data", held_out, "--samplers", "ddim:steps=2", "--n", "16",
                 "--out", out] + FAST) == 0
    assert f"reference: 8 samples of {held_out} (all of it)" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(out, "comparison.md"))
    assert main(["compare", "--oracle", "eight_gaussians", "--data", held_out, "--out", out] + FAST) == 2
    assert "--data goes with --checkpoint" in capsys.readouterr().err
