"""The command line's help per chosen component, progress as lines into a file, and `sample --save-images`."""
import io
import os
import re

import numpy as np
import pytest
import torch

from scoresde.app.cli import main


def _train_help(capsys, *extra):
    with pytest.raises(SystemExit):
        main(["train", *extra, "--help"])
    return capsys.readouterr().out


def test_train_help_shows_the_options_of_the_chosen_components(capsys):
    default = _train_help(capsys)
    assert "--model.hidden=128" in default and "--data.radius=2.0" in default
    text = _train_help(capsys, "--model.net=unet", "--data.name=digits", "--sde.name=ve")
    assert "--model.net=unet" in text and "--model.channels=" in text and "--model.hidden=" not in text
    assert "--data.name=digits" in text and "--data.radius=" not in text
    assert "--sde.sigma_max=" in text and "--sde.beta_max=" not in text
    assert "with the default components" not in text


def test_train_help_never_cuts_a_description_mid_sentence(capsys):
    text = _train_help(capsys)
    assert not any(line.rstrip().endswith("…") for line in text.splitlines())    # no cut-off descriptions
    epilog = text[text.index("--data.name="):]
    # every description (a key line and its continuation lines) ends a sentence or a phrase, not on "or a"
    entries = re.split(r"\n  --", epilog)
    for entry in entries:
        words = " ".join(entry.split()).rstrip()
        assert not re.search(r"\b(or a|a|the|or|and|of|to|\(e\.g\.)$", words), words[-80:]
    assert 'a name in `PARAMETERIZATIONS` ("eps", "score", "x0", "v") or a' in " ".join(epilog.split())
    assert all(len(line) <= 110 for line in epilog.splitlines())


def test_progress_into_a_file_is_lines_not_one_carriage_return_line():
    from scoresde._progress import progress_bar

    out = io.StringIO()                       # not a terminal
    bar = progress_bar(total=1000, desc="sample", file=out, min_interval=0.0)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 2 <= len(lines) <= 12 and all(len(line) < 120 for line in lines)
    assert lines[-1].startswith("sample: 1000/1000")


def test_sampler_progress_into_a_file_writes_lines(capsys):
    import scoresde as sd

    sde = sd.VPSDE()
    gmm = sd.GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), stds=[0.5])
    sd.DPMSolver(steps=10).sample(sde, gmm.score(sde), (8, 2), torch.Generator().manual_seed(0),
                                  dtype=torch.float64, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "10/10" in err


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("digits"))
    assert main(["train", "--out", run, "--steps=3", "--batch_size=32", "--data.name=digits", "--model.hidden=32",
                 "--model.depth=1", "--progress=false", "--eval_every=0", "--device=cpu"]) == 0
    return run


def test_sample_save_images_writes_one_quantized_png_per_sample(image_run, tmp_path, capsys):
    from PIL import Image

    from scoresde.evaluation.features import to_uint8

    out = str(tmp_path / "s")
    assert main(["sample", "--checkpoint", os.path.join(image_run, "checkpoint.pt"), "--sampler", "ddim",
                 "--steps=3", "--n", "5", "--out", out, "--device", "cpu", "--save-images"]) == 0
    printed = capsys.readouterr().out
    saved = np.load(os.path.join(out, "samples.npz"))["x"]
    files = sorted(os.listdir(os.path.join(out, "images")))
    assert files == [f"{i:06d}.png" for i in range(5)]
    expect = to_uint8(torch.from_numpy(saved), (-1.0, 1.0))
    for i, name in enumerate(files):
        png = np.asarray(Image.open(os.path.join(out, "images", name)))
        assert np.array_equal(png, expect[i, 0].numpy())
    assert "clipped to the data range [-1, 1]" in printed and "raw" in printed


def test_sample_grid_is_clipped_to_the_data_range(image_run, tmp_path, monkeypatch):
    import scoresde.app.cli as cli

    seen = {}

    def spy(x, path, **kwargs):
        seen.update(kwargs)
        return path
    monkeypatch.setattr(cli, "save_samples", spy)
    assert main(["sample", "--checkpoint", os.path.join(image_run, "checkpoint.pt"), "--sampler", "ddim",
                 "--steps=2", "--n", "4", "--out", str(tmp_path / "g"), "--device", "cpu"]) == 0
    assert tuple(seen["data_range"]) == (-1.0, 1.0)
