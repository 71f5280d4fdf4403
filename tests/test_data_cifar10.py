"""CIFAR-10 from the python-version batches: folder and .tar.gz, splits, labels and class names, pixel layout,
and a restricted unpickler that refuses a hostile file without running it. The files are tiny ones written here
byte for byte as the originals were (Python 2 cPickle, protocol 2)."""
import io
import os
import pickle
import pickletools
import struct
import tarfile

import numpy as np
import pytest
import torch

import scoresde as sd

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


# -- a Python 2 style pickle writer: str as byte strings, numpy arrays as numpy 1.x under Python 2 reduced them ---
def _py2(obj) -> bytes:
    if obj is None:
        return b"N"
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        if 0 <= obj < 256:
            return b"K" + bytes([obj])
        if 0 <= obj < 65536:
            return b"M" + struct.pack("<H", obj)
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, (str, bytes)):                   # a Python 2 str: SHORT_BINSTRING / BINSTRING
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<I", len(raw))) + raw
    if isinstance(obj, tuple):
        return b"(" + b"".join(_py2(v) for v in obj) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(_py2(v) for v in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, np.ndarray):
        assert obj.dtype == np.uint8
        dtype = (b"cnumpy\ndtype\n" + _py2(("u1", 0, 1)) + b"R"
                 + _py2((3, "|", None, None, None, -1, -1, 0)) + b"b")
        state = b"(" + _py2(1) + _py2(tuple(obj.shape)) + dtype + _py2(False) + _py2(obj.tobytes()) + b"t"
        return (b"cnumpy.core.multiarray\n_reconstruct\n" + _py2((np.ndarray, (0,), "b"))
                + b"R" + state + b"b")
    if obj is np.ndarray:
        return b"cnumpy\nndarray\n"
    raise TypeError(type(obj))


def _dumps(obj) -> bytes:
    return b"\x80\x02" + _py2(obj) + b"."


def _batch(seed: int, n: int):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    return data, labels


def _files(n_train: int = 2, n_test: int = 3):
    """{file name: bytes} of a tiny CIFAR-10 and the arrays in it."""
    files, arrays = {}, {}
    for i, name in enumerate(TRAIN + ["test_batch"]):
        data, labels = _batch(i, n_test if name == "test_batch" else n_train)
        arrays[name] = (data, labels)
        files[name] = _dumps({"batch_label": f"{name} of 1", "labels": labels, "data": data,
                              "filenames": [f"img_{i}_{k}.png" for k in range(len(labels))]})
    files["batches.meta"] = _dumps({"num_cases_per_batch": n_train, "label_names": CLASSES, "num_vis": 3072})
    return files, arrays


def _write_folder(root, files):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def _write_archive(root, files):
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return archive


def test_the_writer_matches_the_original_format():
    # The globals are those of the original files; the plain unpickler reads it back as the same arrays.
    files, arrays = _files()
    raw = files["data_batch_1"]
    for name in (b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n", b"cnumpy\ndtype\n"):
        assert name in raw
    opcodes = {op.name for op, _, _ in pickletools.genops(raw)}
    assert "SHORT_BINSTRING" in opcodes and "BINSTRING" in opcodes and "BINUNICODE" not in opcodes
    assert b"_codecs" not in raw                     # Python 3's protocol 2 would encode bytes by calling it
    back = pickle.loads(raw, encoding="latin1")
    assert np.array_equal(back["data"], arrays["data_batch_1"][0]) and back["labels"] == arrays["data_batch_1"][1]


@pytest.mark.parametrize("layout", ["parent", "folder", "archive_parent", "archive"])
def test_folder_and_archive_give_the_same_sets(tmp_path, layout):
    files, arrays = _files()
    if layout.startswith("archive"):
        archive = _write_archive(tmp_path, files)
        path = archive if layout == "archive" else tmp_path
    else:
        folder = _write_folder(tmp_path, files)
        path = folder if layout == "folder" else tmp_path
    train = sd.data.load("cifar10", path=str(path))
    test = sd.data.load("cifar10", path=path, split="test")
    assert train.x.shape == (10, 3, 32, 32) and test.x.shape == (3, 3, 32, 32) and train.x.dtype == torch.float32
    assert train.split == "train" and test.split == "test" and train.name == "cifar10"
    values = np.concatenate([arrays[f][0] for f in TRAIN])               # train: batches 1..5 in file order
    expected = torch.from_numpy(values).reshape(-1, 3, 32, 32).double() / 255 * 2 - 1
    torch.testing.assert_close(train.x.double(), expected, rtol=0, atol=1e-6)
    labels = [y for f in TRAIN for y in arrays[f][1]]
    assert train.labels.tolist() == labels and test.labels.tolist() == arrays["test_batch"][1]
    assert train.num_classes == 10 and train.class_names == CLASSES and test.class_names == CLASSES
    assert train.data_range == (-1.0, 1.0) and train.levels == 256
    if layout.startswith("archive"):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]     # nothing extracted


def test_pixel_layout_is_red_green_blue_planes_row_major(tmp_path):
    # A row of 'data' is 1024 red, then 1024 green, then 1024 blue values, each plane row by row: value 255 at
    # offset c·1024 + r·32 + col is the pixel (channel c, row r, column col) of image (N, 3, 32, 32).
    files, _ = _files()
    data = np.zeros((2, 3072), dtype=np.uint8)
    data[1, 1 * 1024 + 5 * 32 + 7] = 255                 # image 1, green, row 5, column 7
    data[0, 2 * 1024 + 31 * 32 + 0] = 51                 # image 0, blue, row 31, column 0
    files["test_batch"] = _dumps({"batch_label": "test", "labels": [3, 9], "data": data, "filenames": ["a", "b"]})
    _write_folder(tmp_path, files)
    x = sd.data.load("cifar10", path=tmp_path, split="test", dtype=torch.float64).x
    assert x[1, 1, 5, 7] == 1.0 and x[0, 2, 31, 0] == 51 / 255 * 2 - 1
    assert int((x > -1).sum()) == 2


def test_dequantized_batches_stay_in_their_bins(tmp_path):
    files, arrays = _files()
    _write_folder(tmp_path, files)
    ds = sd.data.load("cifar10", path=tmp_path, split="test", dequantize=True, dtype=torch.float64)
    x, y = next(ds.batches(3, seed=0))
    v = torch.from_numpy(arrays["test_batch"][0].astype(np.int64)).reshape(-1, 3, 32, 32)
    bins = torch.floor((x + 1) / 2 * 256).long()                  # (x̃ + 1)/2 = (v + u)/256
    order = [int(torch.nonzero(torch.all((bins[i] == v).flatten(1), dim=1))[0]) for i in range(3)]
    assert sorted(order) == [0, 1, 2]


class _Hostile:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("archive", [False, True])
def test_a_hostile_pickle_is_refused_without_running_anything(tmp_path, archive):
    marker = tmp_path / "marker"
    files, _ = _files()
    files["data_batch_3"] = pickle.dumps({"data": _Hostile(f"touch {marker}"), "labels": []}, protocol=2)
    (_write_archive if archive else _write_folder)(tmp_path / "d", files)
    with pytest.raises(ValueError) as info:
        sd.data.load("cifar10", path=tmp_path / "d")
    assert f"'{os.system.__module__}.system'" in str(info.value) and "data_batch_3" in str(info.value)
    assert not marker.exists()
    sd.data.load("cifar10", path=tmp_path / "d", split="test")           # the other split does not read it


def test_other_globals_and_malformed_files_are_refused(tmp_path):
    files, _ = _files()
    files["test_batch"] = pickle.dumps({"data": print}, protocol=2)       # a builtin that is harmless, still refused
    _write_folder(tmp_path, files)
    with pytest.raises(ValueError, match=r"'__builtin__\.print'"):     # the name as the file spells it
        sd.data.load("cifar10", path=tmp_path, split="test")
    files["test_batch"] = files["test_batch"][:20]
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(files["test_batch"])
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        sd.data.load("cifar10", path=tmp_path, split="test")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(_dumps({"data": np.zeros((2, 10), np.uint8),
                                                                          "labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        sd.data.load("cifar10", path=tmp_path, split="test")


def test_missing_data_says_what_is_expected_and_where_it_comes_from(tmp_path):
    for options in ({"path": tmp_path / "nowhere"}, {"path": tmp_path}, {}):
        with pytest.raises(ValueError) as info:
            sd.data.load("cifar10", **options)
        message = str(info.value)
        assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message and "cifar-10-python.tar.gz" in message
        if options:
            assert "data_batch_1" in message and "batches.meta" in message
    files, _ = _files()
    del files["test_batch"]
    _write_archive(tmp_path, files)
    with pytest.raises(ValueError, match="lacks test_batch"):
        sd.data.load("cifar10", path=tmp_path, split="test")
