"""Built-in data sets: laws of the 2-D generators, the digits' levels and split, files, and the batch iterator."""
import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.data import Batches, Dataset


def _within(mean, expected, se, k=4.0):
    """|mean − expected| < k standard errors (k = 4: a false alarm has probability < 1e-4)."""
    return abs(float(mean) - float(expected)) < k * float(se)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        sd.data.load("mnist")
    for name in sd.data.names():
        assert name in str(info.value)
    with pytest.raises(ValueError, match="split"):
        sd.data.load("moons", split="valid")
    with pytest.raises(ValueError, match="dequantize"):
        sd.data.load("moons", dequantize=True)


def test_2d_sets_are_seeded_and_splits_differ():
    for name in ["eight_gaussians", "rings", "checkerboard", "swiss_roll", "moons"]:
        a, b = sd.data.load(name, n=100, seed=1), sd.data.load(name, n=100, seed=1)
        test = sd.data.load(name, split="test", n=100, seed=1)
        assert a.x.shape == (100, 2) and a.x.dtype == torch.float32
        assert torch.equal(a.x, b.x) and not torch.equal(a.x, test.x)


def test_eight_gaussians_oracle_and_moments():
    # Second moment of the mixture: E‖x‖² = r² + 2 c² with r = 2, c = 0.1; 4 standard errors.
    ds = sd.data.load("eight_gaussians", n=20_000, dtype=torch.float64)
    assert isinstance(ds.oracle, sd.GaussianMixture)
    sq = (ds.x**2).sum(1)
    assert _within(sq.mean(), 4 + 2 * 0.01, sq.std() / math.sqrt(len(sq)))
    for k in range(2):
        assert _within(ds.x[:, k].mean(), 0.0, ds.x[:, k].std() / math.sqrt(len(ds)))


def test_rings_mass_proportional_to_circumference():
    # Radii 1 and 2: a uniform density along the curves puts 1/3 of the mass on the inner ring (binomial SE).
    ds = sd.data.load("rings", n=20_000)
    assert isinstance(ds.oracle, sd.GaussianMixture)
    inner = (ds.x.norm(dim=1) < 1.5).double().mean()
    assert _within(inner, 1 / 3, math.sqrt(1 / 3 * 2 / 3 / 20_000))


def test_checkerboard_occupies_black_cells_uniformly():
    ds = sd.data.load("checkerboard", n=16_000, dtype=torch.float64)
    assert float(ds.x.abs().max()) <= 2.0
    cells = torch.floor(ds.x + 2).long().clamp(0, 3)        # column j from x, row i from y
    j, i = cells[:, 0], cells[:, 1]
    assert bool(((i + j) % 2 == 0).all())                   # only the 8 black cells
    counts = torch.bincount(i * 4 + j, minlength=16).double()[((torch.arange(16) // 4 + torch.arange(16) % 4) % 2 == 0)]
    p = 1 / 8
    for c in counts:
        assert _within(c / 16_000, p, math.sqrt(p * (1 - p) / 16_000))


def test_swiss_roll_radius_law():
    # Without noise r = 2θ/(4.5π) with θ ~ U(1.5π, 4.5π): r ∈ [2/3, 2], E r = 4/3, and the angle of x equals θ.
    ds = sd.data.load("swiss_roll", n=10_000, noise=0.0, dtype=torch.float64)
    r = ds.x.norm(dim=1)
    assert float(r.min()) >= 2 / 3 - 1e-12 and float(r.max()) <= 2 + 1e-12
    assert _within(r.mean(), 4 / 3, r.std() / math.sqrt(len(r)))
    theta = r * 4.5 * math.pi / 2
    torch.testing.assert_close(ds.x, r[:, None] * torch.stack([theta.cos(), theta.sin()], 1), rtol=0, atol=1e-10)


def test_moons_lie_on_their_half_circles():
    # Without noise, u = x/1.5 + (½, ¼) lies on the unit upper half circle or on the lower one centred (1, ½).
    ds = sd.data.load("moons", n=10_000, noise=0.0, dtype=torch.float64)
    u = ds.x / 1.5 + torch.tensor([0.5, 0.25], dtype=torch.float64)
    upper = ((u.norm(dim=1) - 1).abs() < 1e-9) & (u[:, 1] >= -1e-12)
    lower = (((u - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1) - 1).abs() < 1e-9) & (u[:, 1] <= 0.5 + 1e-12)
    assert bool((upper | lower).all())
    assert _within(upper.double().mean(), 0.5, math.sqrt(0.25 / 10_000))


def test_digits_levels_split_and_dequantization():
    sklearn = pytest.importorskip("sklearn.datasets")
    raw = torch.as_tensor(sklearn.load_digits().images)
    train, test = sd.data.load("digits"), sd.data.load("digits", split="test")
    assert train.x.shape[1:] == (1, 8, 8) and len(train) + len(test) == 1797 and len(test) == 300
    assert train.levels == 17 and train.data_range == (-1.0, 1.0) and train.bin_width == pytest.approx(2 / 17)
    assert torch.equal(sd.data.load("digits", split="test").x, test.x)          # the split is fixed
    # Levels x = v/16·2 − 1 (both ends included) give back the integers v, and train ∪ test has the raw value
    # counts.
    v = (torch.cat([train.x, test.x]).double() + 1) / 2 * 16
    torch.testing.assert_close(v, v.round(), rtol=0, atol=1e-5)
    assert torch.equal(torch.bincount(v.round().long().flatten(), minlength=17),
                       torch.bincount(raw.long().flatten(), minlength=17))
    # Dequantized x = (v + u)/17·2 − 1: floor recovers v and u = frac is U(0, 1) (mean ½, var 1/12).
    batch, labels = next(sd.data.load("digits", dequantize=True).batches(256, seed=0))
    batch = batch.double()
    assert labels.shape == (256,) and labels.dtype == torch.long and 0 <= int(labels.min()) <= int(labels.max()) <= 9
    scaled = (batch + 1) / 2 * 17
    u = scaled - scaled.floor()
    centre_v = scaled.floor()
    assert float(batch.min()) >= -1 and float(batch.max()) < 1
    assert bool(((centre_v >= 0) & (centre_v <= 16)).all())
    n = u.numel()
    assert _within(u.mean(), 0.5, math.sqrt(1 / 12 / n))
    assert _within((u * u).mean(), 1 / 3, math.sqrt((1 / 5 - 1 / 9) / n))


def test_epoch_batches_visit_every_row_once_and_resume_exactly(tmp_path):
    ds = Dataset(torch.arange(10.0)[:, None])
    it = ds.batches(4, seed=3)
    first_epochs = torch.cat([next(it) for _ in range(5)]).flatten()          # 20 rows = 2 epochs
    assert sorted(first_epochs[:10].tolist()) == list(range(10))
    assert sorted(first_epochs[10:].tolist()) == list(range(10))
    again = ds.batches(4, seed=3)
    assert torch.equal(torch.cat([next(again) for _ in range(5)]).flatten(), first_epochs)
    # Save the state mid-epoch, through a weights_only round trip, and continue identically.
    it = ds.batches(3, seed=1)
    for _ in range(2):
        next(it)
    path = str(tmp_path / "state.pt")
    torch.save(it.state_dict(), path)
    restored = ds.batches(3, seed=99)
    restored.load_state_dict(torch.load(path, weights_only=True))
    for _ in range(6):
        assert torch.equal(next(it), next(restored))
    with pytest.raises(ValueError, match="batch_size"):
        ds.batches(5).load_state_dict(it.state_dict())


def test_fresh_batches_draw_new_samples_from_the_law():
    ds = sd.data.load("moons", n=10)
    it = ds.batches(64, seed=0, labels=False)
    assert it.fresh and not torch.equal(next(it), next(it))
    with pytest.raises(ValueError, match="sampler"):
        Batches(Dataset(torch.zeros(4, 2)), 2, fresh=True)


def test_arrays_from_npy_and_npz(tmp_path):
    a = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    ds = sd.data.load(str(tmp_path / "a.npy"))
    assert torch.equal(ds.x, torch.from_numpy(a)) and ds.levels is None
    np.savez(tmp_path / "b.npz", first=a, second=a[:5])
    with pytest.raises(ValueError, match="key"):
        sd.data.load(str(tmp_path / "b.npz"))
    assert len(sd.data.load("array", path=str(tmp_path / "b.npz"), key="second")) == 5
    train = sd.data.load(str(tmp_path / "a.npy"), test_fraction=0.2)
    test = sd.data.load(str(tmp_path / "a.npy"), split="test", test_fraction=0.2)
    assert len(train) == 24 and len(test) == 6
    assert sorted(torch.cat([train.x, test.x])[:, 0].tolist()) == sorted(a[:, 0].tolist())
    np.save(tmp_path / "u8.npy", np.array([[0, 255]], dtype=np.uint8))
    u8 = sd.data.load(str(tmp_path / "u8.npy"))
    assert u8.levels == 256
    torch.testing.assert_close(u8.x, torch.tensor([[-1.0, 1.0]]))
    with pytest.raises(ValueError, match="no such"):
        sd.data.load("array", path=str(tmp_path / "missing.npy"))


def test_image_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    for k, img in enumerate(pixels):
        Image.fromarray(img, mode="L").save(tmp_path / f"{k}.png")
    ds = sd.data.load(str(tmp_path))
    assert ds.x.shape == (3, 1, 4, 4) and ds.levels == 256
    expected = -1 + torch.from_numpy(pixels).double() * (2 / 255)
    torch.testing.assert_close(ds.x.double()[:, 0], expected, rtol=0, atol=1e-6)
    rgb = sd.data.load("image_folder", path=str(tmp_path), mode="RGB", image_size=2)
    assert rgb.x.shape == (3, 3, 2, 2)
    Image.fromarray(pixels[0][:2], mode="L").save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="sizes"):
        sd.data.load(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        sd.data.load("image_folder", path=str(tmp_path / "empty"))


# -- labels --------------------------------------------------------------------------------------------------
def test_labelled_sets_carry_the_right_labels():
    # eight_gaussians: the label of a point is its component's index mod num_classes; with std 0.1 on a circle of
    # radius 2 the component is the nearest mean (the neighbours are 1.5 apart: 7.5 stds).
    for k in (8, 4):
        ds = sd.data.load("eight_gaussians", n=2000, num_classes=k)
        nearest = torch.cdist(ds.x.double(), ds.oracle.means).argmin(1)
        assert ds.num_classes == k and torch.equal(ds.labels, nearest % k)
    # rings: the ring (radius 1 or 2, std 0.08).
    ds = sd.data.load("rings", n=2000)
    assert torch.equal(ds.labels, (ds.x.norm(dim=1) > 1.5).long())
    # moons (noise 0): undoing the shift and scale, the upper moon (label 0) is the unit circle around (0, 0), the
    # lower (label 1) the unit circle around (1, ½).
    ds = sd.data.load("moons", n=2000, noise=0.0, dtype=torch.float64)
    u = ds.x / 1.5 + torch.tensor([0.5, 0.25], dtype=torch.float64)
    centre = torch.tensor([[0.0, 0.0], [1.0, 0.5]], dtype=torch.float64)[ds.labels]
    assert ds.num_classes == 2 and set(ds.labels.tolist()) == {0, 1}
    torch.testing.assert_close((u - centre).norm(dim=1), torch.ones(2000, dtype=torch.float64))
    # digits: the scikit-learn targets, through the same fixed split as the images.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    test = sd.data.load("digits", split="test")
    images = torch.as_tensor(bunch.images).reshape(-1, 64).double() / 16 * 2 - 1
    rows = torch.cdist(test.x.reshape(-1, 64).double(), images).argmin(1)
    assert test.num_classes == 10 and torch.equal(test.labels, torch.as_tensor(bunch.target)[rows])


def test_labelled_batches_pair_each_row_with_its_label():
    x = torch.arange(10.0)[:, None].repeat(1, 2)
    ds = Dataset(x, labels=torch.arange(10) % 3)
    it = ds.batches(4, seed=0)
    for _ in range(5):                                        # across epochs
        xb, yb = next(it)
        assert torch.equal(yb, xb[:, 0].long() % 3) and yb.dtype == torch.long
    plain = ds.batches(4, seed=0, labels=False)
    assert torch.equal(next(plain), next(ds.batches(4, seed=0))[0])   # the same draws either way
    fresh = sd.data.load("eight_gaussians", n=10).batches(256, seed=0)
    xb, yb = next(fresh)
    nearest = torch.cdist(xb.double(), sd.eight_gaussians().means).argmin(1)
    assert torch.equal(yb, nearest)
    with pytest.raises(ValueError, match="no labels"):
        sd.data.load("checkerboard", n=10).batches(4, labels=True)
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        Dataset(x, labels=torch.arange(10) % 3, num_classes=2)
    with pytest.raises(ValueError, match="integer tensor of shape"):
        Dataset(x, labels=torch.zeros(10))


def test_labels_from_npz_and_class_folders(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    a = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.savez(tmp_path / "l.npz", x=a, y=np.arange(20) % 4)
    ds = sd.data.load(str(tmp_path / "l.npz"), key="x", label_key="y", test_fraction=0.25)
    assert ds.num_classes == 4 and torch.equal(ds.labels, (ds.x[:, 0] / 2).long() % 4)   # split keeps pairs
    assert len(ds) + len(sd.data.load(str(tmp_path / "l.npz"), split="test", key="x", label_key="y",
                                      test_fraction=0.25)) == 20
    with pytest.raises(ValueError, match="no array 'z'"):
        sd.data.load(str(tmp_path / "l.npz"), key="x", label_key="z")
    folder = tmp_path / "classes"
    rng = np.random.default_rng(0)
    for name, count in (("cat", 2), ("dog", 3)):
        (folder / name).mkdir(parents=True)
        for k in range(count):
            Image.fromarray(rng.integers(0, 256, size=(4, 4), dtype=np.uint8), mode="L").save(folder / name / f"{k}.png")
    ds = sd.data.load(str(folder))
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1, 1, 1] and ds.x.shape == (5, 1, 4, 4)
