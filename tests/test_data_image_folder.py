"""Image folders: split sub-folders are splits (never classes), and every resize, crop, conversion and skipped
file is stated in one summary line."""
import logging

import numpy as np
import pytest
import torch

import scoresde as sd

Image = pytest.importorskip("PIL.Image")


def _grey(folder, names, size=(4, 4), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 256, size=size[::-1], dtype=np.uint8), mode="L").save(folder / name)


def test_split_folders_are_splits_not_classes(tmp_path, caplog):
    _grey(tmp_path / "train", ["a.png", "b.png", "c.png"])
    _grey(tmp_path / "test", ["d.png", "e.png"], seed=1)
    with caplog.at_level(logging.INFO, logger="scoresde.data"):
        train = sd.data.load(str(tmp_path))
    test = sd.data.load(str(tmp_path), split="test")
    assert len(train) == 3 and len(test) == 2 and train.labels is None and test.labels is None
    held_out = -1 + torch.from_numpy(np.asarray(Image.open(tmp_path / "test" / "d.png"))).float() * (2 / 255)
    torch.testing.assert_close(test.x[0, 0], held_out, rtol=0, atol=1e-6)
    assert not any(torch.equal(row, test.x[0]) for row in train.x)            # no held-out image in training
    assert "3 images, no classes" in train.summary and "split train" in train.summary
    assert train.summary in caplog.text


def test_val_folder_is_the_test_split_and_classes_agree_across_splits(tmp_path):
    _grey(tmp_path / "train" / "cat", ["0.png", "1.png"])
    _grey(tmp_path / "train" / "dog", ["0.png"])
    _grey(tmp_path / "validation" / "dog", ["0.png", "1.png"])
    train = sd.data.load(str(tmp_path))
    test = sd.data.load(str(tmp_path), split="test")
    assert train.class_names == test.class_names == ["cat", "dog"]
    assert train.labels.tolist() == [0, 0, 1] and test.labels.tolist() == [1, 1]
    assert "2 classes" in test.summary and "validation" in test.summary


def test_ambiguous_split_folders_are_refused_with_the_way_out(tmp_path):
    _grey(tmp_path / "train", ["a.png"])
    _grey(tmp_path / "cats", ["a.png"])
    with pytest.raises(ValueError, match=r"split folders \(train\) beside other sub-folders \(cats\).*path="):
        sd.data.load(str(tmp_path))
    _grey(tmp_path / "b" / "test", ["a.png"])
    _grey(tmp_path / "b" / "val", ["a.png"])
    with pytest.raises(ValueError, match=r"several held-out folders \(test, val\).*path="):
        sd.data.load(str(tmp_path / "b"), split="test")
    _grey(tmp_path / "c" / "train", ["a.png", "b.png"])
    with pytest.raises(ValueError, match="no test split"):       # `scoresde train` then trains without evaluation
        sd.data.load(str(tmp_path / "c"), split="test")


def _mixed_folder(folder):
    """Four 32×32-target images of mixed size and mode, and a text file."""
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 10, np.uint8), mode="RGB").save(folder / "a_rgb.png")
    Image.fromarray(np.full((32, 32), 20, np.uint8), mode="L").save(folder / "b_grey.png")
    Image.fromarray(np.full((32, 32, 4), 30, np.uint8), mode="RGBA").save(folder / "c_rgba.png")
    wide = np.zeros((48, 64, 3), np.uint8)
    wide[:, 8:56] = 200                                  # the centre 48×48 is 200; the side bands are 0
    Image.fromarray(wide, mode="RGB").save(folder / "d_wide.png")
    big = np.full((64, 64, 3), 90, np.uint8)
    Image.fromarray(big, mode="RGB").save(folder / "e_big.png")
    (folder / "notes.txt").write_text("not an image")


def test_mixed_sizes_modes_and_files_are_stated_and_aspect_changes_refused(tmp_path):
    _mixed_folder(tmp_path / "mixed")
    path = str(tmp_path / "mixed")
    with pytest.raises(ValueError, match=r"d_wide.png is 64×48.*crop=True.*resize=True"):
        sd.data.load("image_folder", path=path, mode="RGB", image_size=32)
    ds = sd.data.load("image_folder", path=path, mode="RGB", image_size=32, crop=True)
    assert ds.x.shape == (5, 3, 32, 32)
    torch.testing.assert_close(ds.x[3], torch.full((3, 32, 32), -1 + 200 * 2 / 255), rtol=0, atol=1e-6)
    assert ds.summary.endswith("5 images, no classes; 2 scaled to 32×32 (1 centre-cropped to a square first); "
                               "2 converted to RGB (L: 1, RGBA: 1, alpha dropped); 1 file skipped (notes.txt)")
    stretched = sd.data.load("image_folder", path=path, mode="RGB", image_size=32, resize=True)
    assert float(stretched.x[3].min()) == -1.0                     # the side bands survive a stretch
    assert "2 scaled to 32×32 (1 stretched to a new aspect ratio)" in stretched.summary
    with pytest.raises(ValueError, match="crop=True or resize=True, not both"):
        sd.data.load("image_folder", path=path, image_size=32, crop=True, resize=True)
    with pytest.raises(ValueError, match="need image_size="):
        sd.data.load("image_folder", path=path, crop=True)
