"""score_sde_pytorch's checkpoints: their file format read safely, their score on our SDE objects (each case against
its defining formula, written here from their paper and sde_lib), the EMA's positional order, their training
objectives against the exact Gaussian truth, bits/dim by their protocol against an exact density, and training a
preset from the command line. Agreement with their own code is tests/test_zoo_score_sde_fixtures.py."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.zoo import presets
from scoresde.zoo import score_sde_pytorch as zoo

TINY = {"model.nf": 16, "model.ch_mult": [1, 2], "model.num_res_blocks": 1, "model.attn_resolutions": [4],
        "data.image_size": 8}


def tiny(name, **extra):
    return presets.merge(presets.get(name), {**TINY, **extra})


def their_checkpoint(path, cfg, seed=0, ema_offset=0.5):
    """A checkpoint in their format for the config's architecture: every parameter random (their init zeroes the
    last layers), the EMA different from the model, DataParallel's prefix."""
    net = zoo.build_network(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    # their ExponentialMovingAverage keeps the parameters that require gradients (not the fixed Fourier W)
    shadow = [p.detach().clone() + ema_offset * (i % 3 + 1) / 10
              for i, p in enumerate(p for p in net.parameters() if p.requires_grad)]
    torch.save({"optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": list(range(len(shadow)))}]},
                "model": {"module." + k: v for k, v in net.state_dict().items()},
                "ema": {"decay": 0.9999, "num_updates": 7, "shadow_params": shadow}, "step": 7}, path)
    return net, shadow


def loaded_pair(tmp_path, cfg, ema=False):
    path = tmp_path / "checkpoint_1.pth"
    net, shadow = their_checkpoint(path, cfg)
    sde, model = sd.from_score_sde_pytorch(path, config=cfg, ema=ema)
    return net.eval(), shadow, sde, model


def integrated_beta(t, b0=0.1, b1=20.0):
    return b0 * t + 0.5 * (b1 - b0) * t * t


# -- their score on our SDEs ----------------------------------------------------------------------------------
def test_vp_continuous_is_minus_the_net_at_999t_over_their_std(tmp_path):
    cfg = tiny("vp/cifar10_ddpmpp_continuous")
    net, _, sde, model = loaded_pair(tmp_path, cfg)
    assert type(sde) is sd.VPSDE and model.data_range == (-1.0, 1.0)
    net, model = net.double(), model.double()
    t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    std = torch.sqrt(-torch.expm1(-integrated_beta(t)))        # √(1 − e^{−B}) without cancellation at small t
    with torch.no_grad():
        expected = -net(x, 999 * t) / std[:, None, None, None]
        got = model(x, t)
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)
    assert torch.allclose(sde.scale(t), torch.exp(-integrated_beta(t) / 2), rtol=1e-12)
    assert torch.allclose(sde.std(t), std, rtol=1e-12)


def test_subvp_always_takes_999t_and_its_std_is_one_minus_exp(tmp_path):
    cfg = tiny("subvp/cifar10_ddpmpp_continuous", **{"training.continuous": False})
    net, _, sde, model = loaded_pair(tmp_path, cfg)
    assert type(sde) is sd.SubVPSDE
    net, model = net.double(), model.double()
    t = torch.tensor([0.01, 0.3, 0.9], dtype=torch.float64)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    std = -torch.expm1(-integrated_beta(t))
    with torch.no_grad():
        assert torch.allclose(model(x, t), -net(x, 999 * t) / std[:, None, None, None], rtol=1e-12, atol=0)


def test_vp_discrete_divides_by_ddpms_table_at_the_floor_index(tmp_path):
    cfg = tiny("vp/cifar10_ddpmpp")
    assert cfg["training"]["continuous"] is False
    net, _, sde, model = loaded_pair(tmp_path, cfg)
    n = torch.tensor([100, 400, 998])
    t = (n.double() + 0.5) / 999                      # between grid points: their label 999 t, their index ⌊999 t⌋
    betas = torch.linspace(0.1 / 1000, 20 / 1000, 1000, dtype=torch.float64)
    std = torch.sqrt(1 - torch.cumprod(1 - betas, 0))[n]
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = -net(x, (999 * t).float()) / std.float()[:, None, None, None]
        got = model(x, t.float())
    # their table is float32: the cumulative product of n ≤ 1000 factors is within n·u of ᾱ_n relative, so 1 − ᾱ_n
    # within n·u·ᾱ/(1 − ᾱ) ≤ 100·6e-8/0.05 ≈ 1.2e-4 at n ≥ 100 and its square root half that; plus the net's
    # float32 rounding (≪ 1e-5)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_ve_continuous_takes_sigma_and_its_std_starts_at_sigma_min(tmp_path):
    cfg = tiny("ve/cifar10_ncsnpp_continuous")
    net, _, sde, model = loaded_pair(tmp_path, cfg)
    assert type(sde) is sd.ScoreSDEVESDE and model.data_range == (0.0, 1.0)
    net, model = net.double(), model.double()
    t = torch.tensor([1e-5, 0.2, 0.7, 1.0], dtype=torch.float64)
    sigma = 0.01 * (50 / 0.01) ** t
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(model(x, t), net(x, sigma), rtol=1e-12, atol=0)
    assert torch.allclose(sde.std(t), sigma, rtol=1e-12) and torch.all(sde.scale(t) == 1)
    assert sde.prior_std() == pytest.approx(50.0, rel=1e-12)


def test_ve_discrete_calls_the_net_at_the_nearest_level_index(tmp_path):
    cfg = tiny("ve/cifar10_ncsnpp", **{"model.num_scales": 20})
    assert cfg["training"]["continuous"] is False
    net, _, sde, model = loaded_pair(tmp_path, cfg)
    i = torch.tensor([0, 7, 19])
    t = 1 - i.double() / 19 + torch.tensor([0.01, -0.02, 0.0], dtype=torch.float64)   # within half a level
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(model(x, t.float()), net(x, i))


def test_the_score_sde_ve_marginals_are_a_linear_sde_with_std_sigma():
    sde = sd.ScoreSDEVESDE(0.01, 50.0)
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    assert torch.allclose(sde.std(t), 0.01 * 5000 ** t, rtol=1e-12)
    a, b = sde.transition(t[:-1], t[1:])                  # the VE kernel: variance σ(t)² − σ(s)²
    assert torch.allclose(b ** 2, sde.std(t[1:]) ** 2 - sde.std(t[:-1]) ** 2, rtol=1e-10)
    lam = sde.log_snr(t[1:])
    assert torch.allclose(sde.time_from_log_snr(lam), t[1:], atol=1e-12)
    assert torch.allclose(sde.diffusion(t) ** 2, 2 * math.log(5000) * sde.std(t) ** 2, rtol=1e-12)


# -- the file -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp/cifar10_ddpmpp_continuous", "ve/cifar10_ncsnpp_continuous"])
def test_ema_weights_are_read_in_the_order_of_the_trainable_parameters(tmp_path, name):
    cfg = tiny(name)
    net, shadow, _, raw = loaded_pair(tmp_path, cfg, ema=False)
    _, ema = sd.from_score_sde_pytorch(tmp_path / "checkpoint_1.pth", config=cfg, ema=True)
    averaged = iter(shadow)
    for (name, p), p_raw, p_ema in zip(net.named_parameters(), raw.net.parameters(), ema.net.parameters()):
        assert torch.equal(p_raw, p), name
        assert torch.equal(p_ema, next(averaged) if p.requires_grad else p), name     # Fourier W: the model's
    assert next(averaged, None) is None
    assert torch.equal(ema.net.state_dict()["sigmas"], net.state_dict()["sigmas"])


def test_a_bare_state_dict_and_a_loaded_dict_work(tmp_path):
    cfg = tiny("vp/cifar10_ddpmpp_continuous")
    net, _, _, model = loaded_pair(tmp_path, cfg)
    _, bare = sd.from_score_sde_pytorch(net.state_dict(), config=cfg, ema=False)
    payload = torch.load(tmp_path / "checkpoint_1.pth", weights_only=True)
    _, same = sd.from_score_sde_pytorch(payload, config=cfg, ema=False)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.6])
    with torch.no_grad():
        assert torch.equal(bare(x, t), model(x, t)) and torch.equal(same(x, t), model(x, t))
    with pytest.raises(ValueError, match="no 'ema' entry"):
        sd.from_score_sde_pytorch({"model": net.state_dict()}, config=cfg, ema=True)


def test_a_checkpoint_of_another_config_names_the_mismatch(tmp_path):
    their_checkpoint(tmp_path / "c.pth", tiny("vp/cifar10_ddpmpp_continuous"))
    with pytest.raises(ValueError, match=r"shape mismatches: .*checkpoint \(16.*model \(32"):
        sd.from_score_sde_pytorch(tmp_path / "c.pth", config=tiny("vp/cifar10_ddpmpp_continuous", **{"model.nf": 32}))
    with pytest.raises(ValueError, match="unexpected keys"):
        sd.from_score_sde_pytorch(tmp_path / "c.pth", config=tiny("vp/cifar10_ddpmpp_continuous",
                                                                 **{"model.attn_resolutions": []}))


def test_truncated_and_hostile_files_are_refused_without_running_anything(tmp_path):
    cfg = tiny("vp/cifar10_ddpmpp_continuous")
    their_checkpoint(tmp_path / "c.pth", cfg)
    raw = (tmp_path / "c.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a valid score_sde_pytorch checkpoint"):
        sd.from_score_sde_pytorch(tmp_path / "cut.pth", config=cfg)
    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Hostile()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused without executing anything"):
        sd.from_score_sde_pytorch(tmp_path / "evil.pth", config=cfg)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        sd.from_score_sde_pytorch(tmp_path / "none.pth", config=cfg)


def test_an_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"closest: vp/cifar10_ddpmpp_deep_continuous.*Valid names"):
        sd.from_score_sde_pytorch({}, config="vp/cifar10_ddpmpp_deep_continous")
    with pytest.raises(ValueError, match="training.sde must be one of"):
        zoo.build_sde(presets.merge(presets.get("vp/cifar10_ddpmpp"), {"training.sde": "edm"}))


def test_every_preset_builds_its_sde_and_names_a_known_architecture():
    for name in presets.names():
        cfg = presets.get(name)
        assert cfg["model"]["name"] in zoo.ARCHITECTURES, name
        sde = zoo.build_sde(cfg)
        t = torch.tensor([1e-3, 1.0], dtype=torch.float64)
        assert torch.all(sde.std(t) > 0), name


# -- their training objectives against the Gaussian truth ------------------------------------------------------
def ddpm_abar(n):
    """DDPM's ᾱ_n for their β_k = linspace(0.1/N, 20/N, N), in float64 (theirs rounds in float32: ≪ the tests' SE)."""
    return torch.cumprod(1 - torch.linspace(0.1 / n, 20.0 / n, n, dtype=torch.float64), 0)


def smld_levels(sde, n):
    """SMLD's σ_i, largest first: σ_max (σ_min/σ_max)^{i/(N−1)}."""
    i = torch.arange(n, dtype=torch.float64)
    return sde.sigma_max * (sde.sigma_min / sde.sigma_max) ** (i / (n - 1))


class GaussianNet(torch.nn.Module):
    """The exact network output for data N(0, v0 I) under each of their labelings: ε̂ = σ x/V (VP; V = s² v0 + σ²),
    or the score −x/V (VE), given only what their net receives (x and the label)."""

    def __init__(self, kind, v0, sde, num_scales):
        super().__init__()
        self.kind, self.v0, self.sde, self.num_scales = kind, v0, sde, num_scales
        self.weight = torch.nn.Parameter(torch.zeros(()))   # something to train

    def forward(self, x, label):
        if self.kind == "vp_continuous":
            t = label / 999
            s, sigma = self.sde.scale(t), self.sde.std(t)
        elif self.kind == "vp_discrete":
            abar = ddpm_abar(self.num_scales)[label]
            s, sigma = abar.sqrt(), (1 - abar).sqrt()
        else:
            sigma = smld_levels(self.sde, self.num_scales)[label]
            s = torch.ones_like(sigma)
        v = (s * s * self.v0 + sigma * sigma)[:, None, None, None]
        if self.kind == "ve_discrete":
            return -x / v + self.weight
        return sigma[:, None, None, None] * x / v + self.weight


@pytest.mark.parametrize("kind", ["vp_continuous", "vp_discrete", "ve_discrete"])
def test_their_objectives_match_the_exact_expected_loss(kind):
    # For data N(0, v0 I) and the exact score, every one of their objectives has per-element expectation
    # E[s² v0 / (s² v0 + σ²)] over their law of the noise level (derivation: E(σ s + z)² = 1 − σ²/V = s² v0/V).
    v0, N = 0.3, 50
    sde = sd.VPSDE() if kind.startswith("vp") else sd.ScoreSDEVESDE(0.01, 5.0)
    net = GaussianNet(kind, v0, sde, N).double()
    model = zoo.ScoreSDEModel(net, sde, continuous=kind == "vp_continuous", num_scales=N, centered=True)
    loss = zoo.ScoreSDELoss(continuous=kind == "vp_continuous", reduce_mean=True, random_flip=True)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([loss(sde, model, v0 ** 0.5 * torch.randn(64, 1, 2, 2, generator=g, dtype=torch.float64),
                              generator=g).detach() for _ in range(200)])
    if kind == "vp_continuous":
        t = torch.linspace(1e-5, 1, 200_001, dtype=torch.float64)
        s2 = torch.exp(-integrated_beta(t))
        expected = float(torch.trapezoid(s2 * v0 / (s2 * v0 + 1 - s2), t) / (1 - 1e-5))
    elif kind == "vp_discrete":
        abar = ddpm_abar(N)
        expected = float((abar * v0 / (abar * v0 + 1 - abar)).mean())
    else:
        sigma = smld_levels(sde, N)
        expected = float((v0 / (v0 + sigma ** 2)).mean())
    mean, se = float(draws.mean()), float(draws.std() / math.sqrt(len(draws)))
    assert abs(mean - expected) < 4 * se, (mean, expected, se)


def test_half_sum_and_likelihood_weighting_are_their_reductions():
    # R = ½ Σ over the d elements is d/2 times the mean; likelihood weighting is g²/σ² times the σ²-weighted term
    sde = sd.VPSDE()
    v0 = 0.5
    net = GaussianNet("vp_continuous", v0, sde, 1000).double()
    model = zoo.ScoreSDEModel(net, sde, continuous=True, num_scales=1000, centered=True)
    x = v0 ** 0.5 * torch.randn(32, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mean = zoo.ScoreSDELoss(reduce_mean=True)(sde, model, x, generator=torch.Generator().manual_seed(9))
    half_sum = zoo.ScoreSDELoss(reduce_mean=False)(sde, model, x, generator=torch.Generator().manual_seed(9))
    assert float(half_sum.detach()) == pytest.approx(2 * float(mean.detach()), rel=1e-12)
    with pytest.raises(ValueError, match="likelihood_weighting needs continuous"):
        zoo.ScoreSDELoss(continuous=False, likelihood_weighting=True)


# -- bits/dim by their protocol --------------------------------------------------------------------------------
@pytest.mark.parametrize("centered", [True, False])
def test_bits_per_dim_protocol_on_an_exact_gaussian_model(centered):
    # A model whose score is exact for N(m, v0 I) on their data scale: their bits/dim of dequantized images must be
    # the exact −log₂ N(x̃; m, v0)/d + 8 (data in [0, 1], Δ = 1/256) or + 7 (centered, Δ = 2/256). Solved at
    # rtol = atol = 1e-10 the only errors left are p_eps ≠ p_0 (variance σ(1e-5)² ≈ 1e-6 against v0 ≥ 1/16: a
    # relative 2e-5, ~1e-5 nats per element) and the solver's; at their 1e-5 the solver alone moves it by ~2e-3.
    lo, hi = (-1.0, 1.0) if centered else (0.0, 1.0)
    # m = 0: the prior N(0, I) is then p_T up to a variance error e^{−B(1)}(1 − v0) ≈ 4e-5 (a mean m would leave
    # s(1) m ≈ 7e-3 m at T, a few 1e-3 bits/dim of prior mismatch that belongs to the model, not to the protocol)
    m, v0 = 0.0, ((hi - lo) / 4) ** 2
    sde = sd.VPSDE()

    class Exact(torch.nn.Module):
        def forward(self, x, label):
            t = label / 999
            s, sigma = sde.scale(t)[:, None, None, None], sde.std(t)[:, None, None, None]
            return sigma * (x - s * m) / (s * s * v0 + sigma * sigma)

    model = zoo.ScoreSDEModel(Exact(), sde, continuous=True, num_scales=1000, centered=centered).double()
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (6, 1, 2, 2), generator=g)
    data = sd.data.Dataset(pixels / 255 * 2 - 1, data_range=(-1.0, 1.0), levels=256)      # our loaders' scale
    assert zoo.PROTOCOL == dict(divergence="hutchinson", probe="rademacher", n_probes=1, solver="dopri5", rtol=1e-5,
                                atol=1e-5, eps=1e-5, time_variable="t")        # likelihood.get_likelihood_fn's
    res = zoo.bits_per_dim(model, data, repeats=2, generator=torch.Generator().manual_seed(1), divergence="exact",
                           dtype=torch.float64, rtol=1e-10, atol=1e-10)
    # the same dequantization draws, recomputed: pixel k → (k + u)/256 on [0, 1]
    g1 = torch.Generator().manual_seed(1)
    exact = []
    for _ in range(2):
        u = torch.rand(pixels.shape, generator=g1, dtype=torch.float64)
        x = (pixels + u) / 256 * (hi - lo) + lo
        log_p = (-0.5 * (x - m) ** 2 / v0 - 0.5 * math.log(2 * math.pi * v0)).sum((1, 2, 3))
        exact.append(-log_p / (4 * math.log(2)) + (7 if centered else 8))
    exact = torch.stack(exact, 1)
    assert res.values.shape == (6, 2)
    assert torch.allclose(res.values.double(), exact, atol=1e-4)


# -- training a preset and evaluating their checkpoint from the command line ----------------------------------
def test_run_sections_carry_their_hyperparameters():
    run = zoo.run_sections("vp/cifar10_ddpmpp_deep_continuous")
    train = run["train"]     # their configs/default_cifar10_configs.py and the deep config
    assert (train["lr"], train["warmup_steps"], train["grad_clip"], train["batch_size"]) == (2e-4, 5000, 1.0, 128)
    assert train["adam_betas"] == [0.9, 0.999] and train["ema_decay"] == 0.9999 and train["steps"] == 950001
    assert run["loss"] == {"name": "score_sde", "continuous": True, "reduce_mean": True,
                           "likelihood_weighting": False, "eps": 1e-5, "random_flip": True}
    assert run["sde"] == {"name": "vp", "beta_min": 0.1, "beta_max": 20.0}
    ve = zoo.run_sections("ve/cifar10_ncsnpp_continuous")
    assert ve["sde"]["name"] == "ve_score_sde" and ve["data"]["data_range"] == [0.0, 1.0]
    assert ve["train"]["ema_decay"] == 0.999 and ve["loss"]["reduce_mean"] is False


@pytest.mark.slow
def test_train_a_preset_then_sample_and_evaluate_their_protocol(tmp_path, capsys):
    from scoresde.app.cli import main
    from test_data_cifar10 import _files, _write_folder

    _write_folder(tmp_path / "data", _files(n_train=4, n_test=3)[0])
    data = str(tmp_path / "data")
    out = str(tmp_path / "run")
    tiny_model = "--model.overrides={model.nf: 16, model.ch_mult: [1, 2], model.num_res_blocks: 1, " \
                 "model.attn_resolutions: [16]}"
    args = ["train", "--preset", "ve/cifar10_ncsnpp_continuous", "--out", out, f"--data.path={data}", tiny_model,
            "--steps=2", "--batch_size=4", "--log_every=1", "--checkpoint_every=1", "--progress=false"]
    assert main(args) == 0
    run = sd.load(out)
    assert isinstance(run.model.net, zoo.ScoreSDENet) and type(run.sde) is sd.ScoreSDEVESDE and run.step == 2
    assert main(["train", "--preset", "ve/cifar10_ncsnpp_continuous", "--out", out, f"--data.path={data}", tiny_model,
                 "--steps=3", "--batch_size=4", "--progress=false", "--resume"]) == 0
    assert sd.load(out).step == 3
    assert main(["sample", "--checkpoint", out, "--sampler", "dpm_solver", "--steps=3", "--n", "2", "--out",
                 str(tmp_path / "samples"), "--device", "cpu"]) == 0
    assert np.load(tmp_path / "samples" / "samples.npz")["x"].shape == (2, 3, 32, 32)
    # their checkpoint format from the run's EMA weights, evaluated by their protocol
    net = run.model.net.net
    torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()},
                "ema": {"shadow_params": [p.detach() for p in net.parameters() if p.requires_grad]}, "step": 3},
               tmp_path / "c.pth")
    capsys.readouterr()
    cfg = presets.merge(presets.get("ve/cifar10_ncsnpp_continuous"), {"model.nf": 16, "model.ch_mult": [1, 2],
                                                                      "model.num_res_blocks": 1,
                                                                      "model.attn_resolutions": [16]})
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    assert main(["likelihood", "--checkpoint", str(tmp_path / "c.pth"), "--from", "score_sde_pytorch", "--config",
                 str(tmp_path / "tiny.json"), "--data.name=cifar10", f"--data.path={data}", "--n", "2",
                 "--repeats", "1", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "2 test images of cifar10 × 1 repeats" in printed and "offset 8, data in [0, 1]" in printed
    assert main(["likelihood", "--checkpoint", str(tmp_path / "c.pth"), "--from", "score_sde_pytorch", "--config",
                 "ve/cifar10_ncsnpp_continuous", "--data.name=cifar10", f"--data.path={data}", "--n", "2",
                 "--device", "cpu"]) == 2        # the published config's net is full size: refused, keys named
    assert "shape mismatches" in capsys.readouterr().err


def test_refinenets_stay_discrete_whatever_the_config_says(tmp_path):
    # their ve/ncsnv2/bedroom sets training.continuous = True, but NCSNv2 indexes its sigmas by the label
    cfg = presets.merge(presets.get("ve/ncsnv2/bedroom"), {"model.nf": 8, "data.image_size": 32,
                                                          "model.num_scales": 10})
    assert cfg["training"]["continuous"] is True
    net, _, sde, model = loaded_pair(tmp_path, cfg)
    assert not model.continuous and not zoo.ScoreSDELoss.from_config(cfg).continuous
    _, forced = sd.from_score_sde_pytorch(tmp_path / "checkpoint_1.pth", config=cfg, ema=False, continuous=True)
    t = torch.tensor([1.0, 0.5])
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(forced(x, t), net(x, torch.tensor([0, 4])))    # round((1 − t)·9)
