"""scoresde.zoo.edm_training: EDM's losses against their training/loss.py (fixtures written by their code, see
tests/data/edm_training/make_fixtures.py), against the formulas, the net "edm", the presets and a 2-step run."""
import math
import os

import pytest
import torch

import scoresde as sd
from scoresde.app.config import build_loss, build_model, build_sde, load_config
from scoresde.losses import LOSSES
from scoresde.nets import NETS
from scoresde.training import Trainer
from scoresde.zoo import edm_training as et

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "edm_training", "fixtures.pt")
PRECONDS = {"edm": "edm", "edm_vp": "vp", "edm_ve": "ve"}


@pytest.fixture(scope="module")
def fixtures():
    return torch.load(FIXTURES, weights_only=True)


def _sde(precond: str) -> sd.EDMSDE:
    return sd.EDMSDE(*et.SDE_RANGES[precond])


def _tiny_model(fixtures, loss_name: str, cond: bool):
    """Their fixture network as a run's model: ScoreModel("x0", no preconditioning) around EDMNet on EDMSDE."""
    kwargs = dict(fixtures["net_kwargs"])
    assert kwargs.pop("model_type") == "SongUNet"
    channels, resolution = kwargs.pop("img_channels"), kwargs.pop("img_resolution")
    precond = PRECONDS[loss_name]
    net = et.EDMNet(channels, resolution, num_classes=3 if cond else None, precond=precond, arch="ddpmpp", **kwargs)
    net.denoiser.load_state_dict(fixtures["states"]["cond" if cond else "uncond"])
    sde = _sde(precond)
    return sd.ScoreModel(net, sde, parameterization="x0", preconditioning=False).train(), sde


@pytest.mark.parametrize("loss_name", ["edm", "edm_vp", "edm_ve"])
@pytest.mark.parametrize("cond", [False, True])
def test_matches_their_loss(fixtures, loss_name, cond):
    """Same σ and n (a generator seeded as their global RNG), same weights and labels: their per-element loss, the
    number their loop backpropagates (sum / batch) and its gradient, to float32 rounding."""
    case = fixtures["cases"][f"{loss_name}-{'cond' if cond else 'uncond'}"]
    model, sde = _tiny_model(fixtures, loss_name, cond)
    loss = LOSSES.build(loss_name)
    labels = fixtures["labels"] if cond else None
    seed, images = fixtures["seed"], fixtures["images"]

    values = loss.per_element(sde, model, images, cond=labels, generator=torch.Generator().manual_seed(seed))
    ref = case["per_element"]
    assert values.shape == ref.shape
    scale = ref.reshape(ref.shape[0], -1).mean(-1).reshape(-1, 1, 1, 1)      # per-image size of the terms
    assert ((values - ref).abs() <= 1e-5 * (ref.abs() + scale)).all()

    value = loss(sde, model, images, cond=labels, generator=torch.Generator().manual_seed(seed))
    assert value.item() == pytest.approx(case["backprop"].item(), rel=2e-6)
    model.zero_grad()
    value.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.net.denoiser.parameters()])
    assert float((grad - case["grad"]).norm() / case["grad"].norm()) < 5e-6


def _draws(loss, batch, shape, seed):
    """ξ or u, then n, from a generator: the loss's order (theirs)."""
    g = torch.Generator().manual_seed(seed)
    first = (torch.randn if isinstance(loss, et.EDMLoss) else torch.rand)(batch, generator=g)
    return first, torch.randn((batch, *shape), generator=g)


@pytest.mark.parametrize("loss_name", ["edm", "edm_vp", "edm_ve"])
def test_formulas(fixtures, loss_name):
    """The per-element loss is λ(σ) (D(y + σ n; σ) − y)² with σ and λ of the paper's Table 1, D the denoiser itself
    (not through the score), written here independently."""
    model, sde = _tiny_model(fixtures, loss_name, cond=True)
    loss, images, labels = LOSSES.build(loss_name), fixtures["images"], fixtures["labels"]
    first, n = _draws(loss, images.shape[0], images.shape[1:], 7)
    if loss_name == "edm":
        sigma = torch.exp(-1.2 + 1.2 * first)
        lam = (sigma ** 2 + 0.25) / (sigma ** 2 * 0.25)
    elif loss_name == "edm_vp":
        t = 1 + first.double() * (1e-5 - 1)
        sigma = torch.sqrt(torch.exp(0.5 * 19.9 * t ** 2 + 0.1 * t) - 1).float()
        lam = 1 / sigma ** 2
    else:
        sigma = 0.02 * 5000.0 ** first
        lam = 1 / sigma ** 2
    s4 = sigma.reshape(-1, 1, 1, 1)
    onehot = torch.nn.functional.one_hot(labels, 3).float()
    D = model.net.denoiser(images + s4 * n, sigma, onehot)
    expected = lam.reshape(-1, 1, 1, 1) * (D - images) ** 2
    values = loss.per_element(sde, model, images, cond=labels, generator=torch.Generator().manual_seed(7)).detach()
    expected = expected.detach()
    assert torch.allclose(values, expected, rtol=2e-5, atol=2e-5 * expected.mean().item())


def test_sigma_above_T_is_evaluated_at_T(fixtures):
    """EDM's log-normal σ above the SDE's T is clamped to T (σ, noise and weight). At σ = T = 80 the residual
    D − y = σ (n + σ score) carries the float32 rounding of D − x with |x| ≈ 80 |n|: a few ulp of 80 |n|."""
    model, sde = _tiny_model(fixtures, "edm", cond=False)
    loss = et.EDMLoss(P_mean=8.0, P_std=0.1)            # every σ ≈ e⁸ ≫ T = 80
    images = fixtures["images"]
    _, n = _draws(loss, images.shape[0], images.shape[1:], 3)
    T = torch.full((images.shape[0],), sde.T)
    D = model.net.denoiser(images + sde.T * n, T)
    expected = (sde.T ** 2 + 0.25) / (sde.T ** 2 * 0.25) * (D - images) ** 2
    with torch.no_grad():
        values = loss.per_element(sde, model, images, generator=torch.Generator().manual_seed(3))
    lam = (sde.T ** 2 + 0.25) / (sde.T ** 2 * 0.25)
    rounding = 8 * torch.finfo(torch.float32).eps * sde.T * (n.abs() + 1)
    assert ((values / lam).sqrt() - (expected.detach() / lam).sqrt()).abs().le(rounding).all()


def test_shards_and_null_labels(fixtures):
    """Shards draw for the whole batch and evaluate their rows (mean over shards = the whole mean); the label ∅ = K
    is their zero class vector."""
    model, sde = _tiny_model(fixtures, "edm", cond=True)
    model.eval().requires_grad_(False)
    loss, images, labels = et.EDMLoss(), fixtures["images"], fixtures["labels"]
    whole = loss.per_element(sde, model, images, cond=labels, generator=torch.Generator().manual_seed(5))
    parts = [loss.per_element(sde, model, images, cond=labels, generator=torch.Generator().manual_seed(5),
                              shard=(r, 3)) for r in range(3)]
    for r, part in enumerate(parts):
        assert torch.allclose(part, whole[r::3], rtol=1e-6, atol=1e-7)
    means = [loss(sde, model, images, cond=labels, generator=torch.Generator().manual_seed(5), shard=(r, 3))
             for r in range(3)]
    assert float(sum(means) / 3) == pytest.approx(float(loss(sde, model, images, cond=labels,
                                                             generator=torch.Generator().manual_seed(5))), rel=1e-6)
    net, x, sigma = model.net, images, torch.full((images.shape[0],), 0.7)
    null = torch.full_like(labels, 3)
    assert torch.equal(net(x, sigma, null), net.denoiser(x, sigma, torch.zeros(x.shape[0], 3)))
    assert torch.equal(net(x, sigma, labels), net.denoiser(x, sigma, labels))
    with pytest.raises(ValueError, match="cond must be integer labels"):
        net(x, sigma, torch.full_like(labels, 4))


def test_refuses_other_sdes_and_bad_settings(fixtures):
    model, _ = _tiny_model(fixtures, "edm", cond=False)
    vp = sd.VPSDE()
    with pytest.raises(ValueError, match="EDMSDE"):
        et.EDMLoss()(vp, model, fixtures["images"])
    with pytest.raises(ValueError, match="P_std"):
        et.EDMLoss(P_std=0)
    with pytest.raises(ValueError, match="epsilon_t"):
        et.VPLoss(epsilon_t=1.5)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        et.VELoss(sigma_min=5, sigma_max=1)
    with pytest.raises(ValueError, match="unknown precond"):
        et.EDMNet(precond="iddpm")
    with pytest.raises(ValueError, match="unknown arch"):
        et.EDMNet(arch="unet")


def test_registry_entries():
    assert LOSSES.get("edm")[0] is et.EDMLoss and LOSSES.get("edm_vp")[0] is et.VPLoss
    assert LOSSES.get("edm_ve")[0] is et.VELoss and NETS.get("edm")[0] is et.EDMNet
    assert et.EDMNet.shape_arguments((3, 32, 32)) == {"img_channels": 3, "img_resolution": 32}
    with pytest.raises(ValueError, match="square"):
        et.EDMNet.shape_arguments((3, 32, 16))


@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp"])
@pytest.mark.parametrize("cond", [False, True])
def test_preset_networks_have_their_size(fixtures, arch, cond):
    """The presets' networks have their train.py networks' parameter counts (counted by their code)."""
    with torch.device("meta"):
        net = et.EDMNet(3, 32, num_classes=10 if cond else None, precond="edm", arch=arch)
    count = sum(p.numel() for p in net.parameters())
    assert count == fixtures["parameter_counts"][f"{arch}-{'cond' if cond else 'uncond'}"]


def test_preset_table():
    assert len(et.names()) == 18 and "edm/cifar10-ddpmpp-edm-cond" in et.names()
    sections = et.run_sections("edm/cifar10-ddpmpp-edm-cond")
    train = sections["train"]
    assert train["steps"] == 390625 and train["batch_size"] == 512 and train["lr"] == 1e-3
    assert train["warmup_steps"] == 19531 and train["ema_half_life"] == 500_000 and train["ema_rampup"] == 0.05
    assert train["grad_clip"] is None and train["cond_dropout"] == 0.0 and train["checkpoint_every"] == 4883
    assert sections["model"]["num_classes"] == 10 and sections["model"]["augment_dim"] == 9
    assert sections["loss"]["augment_p"] == 0.12                    # their train.py's --augment=0.12
    assert sections["model"]["dropout"] == 0.13 and sections["sde"] == {"name": "edm", "sigma_min": 0.002,
                                                                       "sigma_max": 80.0}
    assert sections["data"] == {"name": "cifar10", "data_range": [-1.0, 1.0]}
    vp = et.run_sections("edm/cifar10-ddpmpp-vp")
    assert vp["sde"]["sigma_max"] == pytest.approx(math.sqrt(math.expm1(10.05)))
    assert vp["loss"]["name"] == "edm_vp" and vp["model"]["num_classes"] is None
    ve = et.run_sections("edm/cifar10-ncsnpp-ve", {"batch": 256, "duration": 1})
    assert ve["sde"]["sigma_max"] == 100.0 and ve["train"]["steps"] == 3907 and ve["train"]["warmup_steps"] == 39062
    for name in et.names():
        config = load_config(None, [], base=et.run_sections(name))
        assert config.model["net"] == "edm" and config.train.ema_half_life == 500_000
    off = et.run_sections("edm/cifar10-ddpmpp-edm", {"augment": 0})
    assert off["model"]["augment_dim"] == 0 and off["loss"]["augment_p"] == 0.0
    with pytest.raises(ValueError, match="augment must be a probability"):
        et.run_sections("edm/cifar10-ddpmpp-edm", {"augment": 1.5})
    with pytest.raises(ValueError, match="unknown option"):
        et.run_sections("edm/cifar10-ddpmpp-edm", {"arch": "adm"})
    with pytest.raises(ValueError, match="unknown EDM preset"):
        et.run_sections("edm/cifar10-ddpmpp")


TINY = [("model.model_channels", 8), ("model.channel_mult", [1, 1]), ("model.num_blocks", 1),
        ("model.attn_resolutions", [4]), ("train.steps", 2), ("train.batch_size", 4), ("train.progress", False),
        ("train.checkpoint_every", 0), ("train.checkpoint_seconds", 0)]


@pytest.mark.parametrize("preset, extra", [("edm/cifar10-ddpmpp-edm-cond", []), ("edm/cifar10-ncsnpp-vp", []),
                                           ("edm/cifar10-adm-ve", []),
                                           ("edm/cifar10-ddpmpp-edm", [("train.accumulate", 2)])])
def test_trainer_runs_two_steps(preset, extra):
    """A tiny variant of a preset trains 2 steps through the run config's builders on an 8×8 tensor data set
    (micro-batches too: the losses take shard=)."""
    torch.manual_seed(0)
    config = load_config(None, TINY + extra, base=et.run_sections(preset))
    sde, loss = build_sde(config), build_loss(config)
    model = build_model(config, sde, (3, 8, 8))
    assert isinstance(model.net, et.EDMNet) and model.parameterization == "x0" and not model.preconditioning
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    data = sd.data.Dataset(x, labels=torch.arange(16) % 10, num_classes=10)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, sde, data, config.train, loss_fn=loss, hooks=[])
    trainer.train()
    assert trainer.global_step == 2
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert (model.num_classes == 10) == preset.endswith("-cond")
