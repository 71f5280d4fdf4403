"""scoresde.zoo.edm_augment: EDM's augmentation pipeline against their training/augment.py (fixtures written by
their code: benchmarks/edm_fixtures.py --what augment), its generator, and its use by EDM's losses and presets."""
import os

import pytest
import torch
import yaml

import scoresde as sd
from scoresde.zoo import edm_training as et
from scoresde.zoo.edm_augment import CIFAR10, EDMAugment

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "edm_augment", "fixtures.pt")
_DATA = torch.load(FIXTURES, weights_only=True)
#: The resampling (12-tap filters up and down along each axis, 4 bilinear weights) rounds in float32: a bound of
#: 64 ulp of max |x| for a different summation order; the same torch on the same CPU gives equal bits.
TOLERANCE = 64 * torch.finfo(torch.float32).eps


def _name(case) -> str:
    return f"p{case['p']:g}-{'+'.join(case['kwargs']) if len(case['kwargs']) < 6 else 'train.py'}-{case['batch']}"


@pytest.mark.parametrize("case", _DATA["cases"], ids=[_name(c) for c in _DATA["cases"]])
def test_matches_their_pipeline(case):
    """A generator seeded like their global RNG: their images and labels to float32 rounding (measured here: equal
    bits, except p = 0, where theirs resamples through the identity map: 2.4e-6)."""
    x = _DATA["images"][case["batch"]]
    y, labels = EDMAugment(p=case["p"], **case["kwargs"])(x, torch.Generator().manual_seed(case["seed"]))
    # the labels hold float32 sines and cosines: a few units of rounding of another CPU's vectorised sin/cos
    torch.testing.assert_close(labels, case["labels"], rtol=0, atol=8 * torch.finfo(torch.float32).eps)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert (y - case["images"]).abs().max() <= TOLERANCE * x.abs().max()


def test_p0_is_the_identity_with_zero_labels():
    x = _DATA["images"]["rgb"]
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    y, labels = EDMAugment(p=0, **CIFAR10)(x, g)
    assert torch.equal(y, x) and torch.equal(labels, torch.zeros(4, 9)) and torch.equal(g.get_state(), state)
    y, labels = EDMAugment(p=1)(x, g)                 # their defaults: every multiplier 0
    assert torch.equal(y, x) and labels.shape == (4, 0)


def test_determinism_global_rng_and_rows():
    """The same generator seed gives the same result, and the global RNG seeded alike too (their protocol);
    ``rows`` (a shard) are the rows of the whole batch's result."""
    x = _DATA["images"]["gray"].repeat(3, 1, 1, 1)
    augment = EDMAugment(p=0.6, **CIFAR10)
    y, labels = augment(x, torch.Generator().manual_seed(9))
    y2, labels2 = augment(x, torch.Generator().manual_seed(9))
    assert torch.equal(y, y2) and torch.equal(labels, labels2)
    torch.manual_seed(9)
    y3, labels3 = augment(x)
    assert torch.equal(y, y3) and torch.equal(labels, labels3)
    y4, _ = augment(x, torch.Generator().manual_seed(10))
    assert not torch.equal(y, y4)
    for r in range(3):
        part, part_labels = augment(x, torch.Generator().manual_seed(9), rows=slice(r, None, 3))
        assert torch.equal(part_labels, labels[r::3])
        assert (part - y[r::3]).abs().max() <= TOLERANCE * x.abs().max()
    assert augment.label_dim == 9


def test_label_meaning():
    """The labels say what was done: with only x-flips at p = 1 the images labelled 1 are the mirrored ones."""
    x = _DATA["images"]["rgb"]
    y, labels = EDMAugment(p=1, xflip=1)(x, torch.Generator().manual_seed(1))
    flipped = labels[:, 0] == 1
    assert torch.equal(y[flipped], x[flipped].flip(-1)) and torch.equal(y[~flipped], x[~flipped])
    assert 0 < int(flipped.sum()) < 4


def test_refuses_bad_input():
    with pytest.raises(ValueError, match="finite number >= 0"):
        EDMAugment(p=-0.1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        EDMAugment(p=1, scale=1)(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="augment_p must be in"):
        et.EDMLoss(augment_p=2)


def _their_loss_model():
    f = _DATA["loss"]
    kw = f["net_kwargs"]
    net = et.EDMNet(kw["img_channels"], kw["img_resolution"], num_classes=kw["label_dim"], precond="edm",
                    arch="ddpmpp", model_channels=kw["model_channels"], channel_mult=kw["channel_mult"],
                    num_blocks=kw["num_blocks"], attn_resolutions=kw["attn_resolutions"], dropout=kw["dropout"],
                    augment_dim=kw["augment_dim"])
    net.denoiser.load_state_dict(f["state"])
    sde = sd.EDMSDE(0.002, 80.0)
    return sd.ScoreModel(net, sde, parameterization="x0", preconditioning=False).train(), sde


def test_loss_matches_their_loss_with_augmentation():
    """Their EDMLoss with their train.py's pipeline (p = 0.5): σ, the pipeline's draws, n from one generator seeded
    like their global RNG, the 9 labels through ScoreModel to the net: their per-element loss to float32 rounding
    (the score model's Tweedie round trip: 1e-5 of each image's mean term)."""
    f = _DATA["loss"]
    model, sde = _their_loss_model()
    loss = et.EDMLoss(augment_p=f["p"])
    values = loss.per_element(sde, model, f["images"], cond=f["labels"], generator=torch.Generator().manual_seed(
        f["seed"]))
    ref = f["per_element"]
    scale = ref.reshape(ref.shape[0], -1).mean(-1).reshape(-1, 1, 1, 1)
    assert ((values - ref).abs() <= 1e-5 * (ref.abs() + scale)).all()
    # without the labels (or without the pipeline) the values are not theirs
    plain = et.EDMLoss().per_element(sde, model, f["images"], cond=f["labels"],
                                     generator=torch.Generator().manual_seed(f["seed"]))
    assert (plain - ref).abs().max() > 1e-3 * ref.abs().max()


@pytest.mark.parametrize("cond", [False, True])
def test_sharded_loss_equals_the_unsharded_one(cond):
    """Augmentation drawn for the global batch before sharding: each shard's per-element rows are the unsharded
    rows, and the shards' mean loss is the unsharded loss (without labels: the net's zero class vector)."""
    f = _DATA["loss"]
    model, sde = _their_loss_model()
    model.eval().requires_grad_(False)
    images = f["images"].repeat(3, 1, 1, 1)[:6]
    labels = f["labels"].repeat(2)[:6] if cond else None
    loss = et.VPLoss(augment_p=0.7)
    whole = loss.per_element(sde, model, images, cond=labels, generator=torch.Generator().manual_seed(4))
    for r in range(3):
        part = loss.per_element(sde, model, images, cond=labels, generator=torch.Generator().manual_seed(4),
                                shard=(r, 3))
        assert torch.allclose(part, whole[r::3], rtol=1e-5, atol=1e-6 * float(whole.abs().max()))
    means = [loss(sde, model, images, cond=labels, generator=torch.Generator().manual_seed(4), shard=(r, 3))
             for r in range(3)]
    assert float(sum(means) / 3) == pytest.approx(float(loss(sde, model, images, cond=labels,
                                                             generator=torch.Generator().manual_seed(4))), rel=1e-5)


def test_preset_trains_with_augmentation(tmp_path):
    """``scoresde train --preset edm/cifar10-ddpmpp-edm`` (a tiny network, 2 steps, 8×8 images): the run's loss
    augments at p = 0.12 and its net has 9 augmentation inputs, which sampling leaves at zero."""
    import numpy as np

    from scoresde.app.cli import main
    from scoresde.app.runs import load

    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32))
    out = str(tmp_path / "run")
    assert main(["train", "--preset", "edm/cifar10-ddpmpp-edm", "--out", out, "--data.name=array",
                 f"--data.path={data}", "--model.model_channels=8", "--model.channel_mult=[1,1]",
                 "--model.num_blocks=1", "--model.attn_resolutions=[4]", "--steps=2", "--batch_size=4",
                 "--progress=false", "--device=cpu"]) == 0
    config = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert config["loss"]["augment_p"] == 0.12 and config["model"]["augment_dim"] == 9
    run = load(out)
    augment_weight = run.model.net.denoiser.model.map_augment.weight
    assert augment_weight.shape[1] == 9
    x = torch.randn(2, 3, 8, 8)
    t = torch.full((2,), 0.5)
    with torch.no_grad():                    # sampling's call: no labels, i.e. zero labels
        assert torch.equal(run.model(x, t), run.model(x, t, augment_labels=torch.zeros(2, 9)))


def test_a_net_without_augmentation_inputs_refuses_labels():
    sde = sd.EDMSDE(0.002, 80.0)
    net = et.EDMNet(3, 8, precond="edm", model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[])
    model = sd.ScoreModel(net, sde, parameterization="x0", preconditioning=False)
    with pytest.raises(ValueError, match="augment_dim=9"):
        et.EDMLoss(augment_p=0.5)(sde, model, _DATA["loss"]["images"], generator=torch.Generator().manual_seed(0))


def test_a_probability_above_one_and_rows_outside_the_batch_are_refused():
    from scoresde.zoo.edm_augment import EDMAugment

    with pytest.raises(ValueError, match="probability, in \\[0, 1\\]"):
        EDMAugment(p=5.0)
    with pytest.raises(ValueError, match="x is the global batch, rows its shard"):
        EDMAugment(p=0.5, xflip=1)(torch.zeros(2, 1, 4, 4), rows=slice(3, None, 4))
