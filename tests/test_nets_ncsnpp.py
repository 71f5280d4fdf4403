"""NCSN++ / DDPM++ (scoresde.nets.ncsnpp) and the score_sde layers: embeddings and blocks against their formulas,
invariants, and the state_dict structure of score_sde_pytorch's NCSNpp (digests of its key/shape/dtype list and
parameter order, taken from its code at commit cb1f359)."""
import hashlib
import math

import numpy as np
import pytest
import torch

from scoresde.nets import score_sde_layers as L
from scoresde.nets.ncsnpp import NCSNpp, read_config

TINY = dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_scales=10, image_size=8)


def structure_digest(model):
    """(sha256 prefix of the state_dict's key:shape:dtype lines and the parameter names in order, #entries,
    #parameters)."""
    lines = [f"{k}:{tuple(v.shape)}:{str(v.dtype)[6:]}" for k, v in model.state_dict().items()]
    lines += ["param:" + n for n, _ in model.named_parameters()]
    return (hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16], len(model.state_dict()),
            sum(p.numel() for p in model.parameters()))


# Computed from score_sde_pytorch's NCSNpp built with the same options (its configs, then TINY).
THEIR_DIGESTS = [
    ({}, ("856f23f6684932d9", 158, 190835)),  # ve/cifar10_ncsnpp_continuous
    (dict(fir=False, progressive_input="none", embedding_type="positional", scale_by_sigma=False, centered=True),
     ("7cc898d2b9d76e26", 155, 189347)),  # vp/cifar10_ddpmpp_continuous
    (dict(progressive="output_skip", progressive_input="input_skip", progressive_combine="cat"),
     ("c900f95c2a95ec8d", 160, 200630)),
    (dict(resblock_type="ddpm", progressive="residual", progressive_input="residual", conditional=False),
     ("eb2e1f805d907616", 140, 182291)),
]


def perturbed(model, seed=0, scale=0.3):
    """The model with every parameter moved at random (its init zeroes the last layers)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


@pytest.mark.parametrize("options, expected", THEIR_DIGESTS)
def test_state_dict_structure_matches_score_sde(options, expected):
    torch.manual_seed(0)
    model = NCSNpp(**{**TINY, **options})
    assert structure_digest(model) == expected
    assert model.sigmas.dtype == torch.float64
    assert all(name.startswith("all_modules.") for name, _ in model.named_parameters())


@pytest.mark.slow
@pytest.mark.parametrize("options, expected", [
    ({}, ("cc04674e3e46ca11", 572, 62758915)),
    (dict(fir=False, progressive_input="none", embedding_type="positional", scale_by_sigma=False, centered=True),
     ("9fbf5c661e7a5dfa", 565, 61804419))])
def test_full_size_cifar10_structure_matches_score_sde(options, expected):
    assert structure_digest(NCSNpp(**options)) == expected


def test_sigmas_are_the_geometric_noise_levels():
    model = NCSNpp(**{**TINY, "sigma_min": 0.01, "sigma_max": 50.0, "num_scales": 7})
    expected = np.exp(np.linspace(np.log(50.0), np.log(0.01), 7))
    assert model.sigmas.dtype == torch.float64
    np.testing.assert_array_equal(model.sigmas.numpy(), expected)
    ratios = model.sigmas[1:] / model.sigmas[:-1]
    torch.testing.assert_close(ratios, torch.full((6,), (0.01 / 50) ** (1 / 6), dtype=torch.float64))


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    dim = 10
    emb = L.timestep_embedding(t, dim, dtype=torch.float64)
    half = dim // 2
    for b, tb in enumerate(t.tolist()):
        for i in range(half):
            w = 10000 ** (-i / (half - 1))
            assert emb[b, i].item() == pytest.approx(math.sin(tb * w), abs=1e-9)
            assert emb[b, half + i].item() == pytest.approx(math.cos(tb * w), abs=1e-9)
    odd = L.timestep_embedding(t, 11)
    assert odd.shape == (4, 11) and (odd[:, -1] == 0).all() and odd.dtype == torch.float32
    torch.testing.assert_close(odd[:, :10], emb.float())


def test_gaussian_fourier_projection_formula_and_parameter():
    torch.manual_seed(0)
    proj = L.GaussianFourierProjection(embedding_size=6, scale=16.0)
    assert [n for n, _ in proj.named_parameters()] == ["W"] and not proj.W.requires_grad
    s = torch.tensor([-1.0, 0.3])
    out = proj(s)
    angles = 2 * math.pi * s[:, None] * proj.W[None, :]
    torch.testing.assert_close(out, torch.cat([angles.sin(), angles.cos()], dim=1))


def test_variance_scaling_init_has_the_fan_avg_variance():
    torch.manual_seed(0)
    w = L.default_init(2.0)((64, 32, 3, 3))
    fan_avg = (32 * 9 + 64 * 9) / 2
    bound = math.sqrt(3 * 2.0 / fan_avg)
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert w.var().item() == pytest.approx(2.0 / fan_avg, rel=0.05)  # 18k draws: var's relative s.e. ≈ 1 %
    assert L.default_init(0.0)((4, 4)).abs().max() <= math.sqrt(3e-10 / 4)
    conv = L.conv3x3(4, 8, init_scale=0.0)
    assert (conv.bias == 0).all() and conv.weight.abs().max() < 1e-4


def test_nin_is_a_per_pixel_linear_map():
    torch.manual_seed(1)
    nin = L.NIN(3, 5)
    x = torch.randn(2, 3, 4, 4)
    expected = torch.einsum("bchw,cu->buhw", x, nin.W) + nin.b[None, :, None, None]
    torch.testing.assert_close(nin(x), expected)


def test_attention_is_identity_at_init_and_equivariant_to_pixel_permutations():
    torch.manual_seed(2)
    attn = L.AttnBlock(8, skip_rescale=True, init_scale=0.0).double()
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(attn(x), x / math.sqrt(2), atol=1e-4, rtol=0)  # NIN₃ starts at scale 1e-10
    perturbed(attn)
    perm = torch.randperm(16)
    shuffled = x.reshape(2, 8, 16)[:, :, perm].reshape(2, 8, 4, 4)
    torch.testing.assert_close(attn(shuffled), attn(x).reshape(2, 8, 16)[:, :, perm].reshape(2, 8, 4, 4))
    # the softmax weights over positions: out − x = NIN₃(Σ_j a_ij v_j) with Σ_j a_ij = 1
    h = attn.GroupNorm_0(x)
    q, k, v = (n(h).reshape(2, 8, 16) for n in (attn.NIN_0, attn.NIN_1, attn.NIN_2))
    a = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(8), dim=-1)
    mixed = torch.einsum("bij,bcj->bci", a, v).reshape(2, 8, 4, 4)
    torch.testing.assert_close(attn(x), (x + attn.NIN_3(mixed)) / math.sqrt(2))


@pytest.mark.parametrize("up, down", [(False, False), (True, False), (False, True)])
def test_biggan_block_starts_as_its_skip_path(up, down):
    torch.manual_seed(3)
    act = torch.nn.SiLU()
    block = L.ResnetBlockBigGANpp(act, 8, 16, temb_dim=12, up=up, down=down, fir=True, init_scale=0.0).double()
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    temb = torch.randn(2, 12, dtype=torch.float64)
    skip = x
    if up:
        skip = L._fir.upsample_2d(x, (1, 3, 3, 1))
    if down:
        skip = L._fir.downsample_2d(x, (1, 3, 3, 1))
    torch.testing.assert_close(block(x, temb), block.Conv_2(skip) / math.sqrt(2), atol=1e-4, rtol=0)
    side = 16 if up else 4 if down else 8
    assert block(x, temb).shape == (2, 16, side, side)


def test_ddpmpp_block_adds_the_time_embedding_as_a_channel_bias():
    torch.manual_seed(4)
    act = torch.nn.SiLU()
    block = perturbed(L.ResnetBlockDDPMpp(act, 8, 8, temb_dim=6, dropout=0.0).double())
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    temb = torch.randn(2, 6, dtype=torch.float64)
    h = block.Conv_0(act(block.GroupNorm_0(x))) + block.Dense_0(act(temb))[:, :, None, None]
    h = block.Conv_1(act(block.GroupNorm_1(h)))
    torch.testing.assert_close(block(x, temb), x + h)


def tiny(**options):
    torch.manual_seed(0)
    return perturbed(NCSNpp(**{**TINY, **options}).double())


@pytest.mark.parametrize("options", [
    dict(),
    dict(resblock_type="ddpm", progressive="output_skip", progressive_input="input_skip", fir=False),
    dict(progressive="residual", progressive_input="input_skip", progressive_combine="cat", nonlinearity="elu"),
    dict(resblock_type="ddpm", progressive="residual", progressive_input="residual", embedding_type="positional",
         nonlinearity="lrelu", conditional=False),
])
def test_ncsnpp_shapes_and_time_dependence(options):
    model = tiny(**options)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.5, 3.0], dtype=torch.float64)
    out = model(x, t)
    assert out.shape == x.shape and out.dtype == torch.float64 and torch.isfinite(out).all()
    if model.conditional:
        assert not torch.allclose(out, model(x, t * 1.7))


def test_centered_and_scale_by_sigma_semantics():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.1, 20.0], dtype=torch.float64)
    plain = tiny(scale_by_sigma=False, centered=True)
    scaled = tiny(scale_by_sigma=True, centered=True)
    uncentered = tiny(scale_by_sigma=False, centered=False)
    torch.testing.assert_close(scaled(x, sigma), plain(x, sigma) / sigma[:, None, None, None])
    torch.testing.assert_close(uncentered(x, sigma), plain(2 * x - 1, sigma))
    # positional: the σ divided by is looked up from the integer part of the label
    pos = tiny(embedding_type="positional", scale_by_sigma=True, centered=True)
    pos_plain = tiny(embedding_type="positional", scale_by_sigma=False, centered=True)
    labels = torch.tensor([2.0, 7.6], dtype=torch.float64)
    torch.testing.assert_close(pos(x, labels), pos_plain(x, labels) / pos.sigmas[[2, 7]][:, None, None, None])


def test_scalar_time_is_broadcast_and_float32_output_stays_float32():
    torch.manual_seed(0)
    model = perturbed(NCSNpp(**TINY))
    x = torch.rand(2, 3, 8, 8)
    out = model(x, 0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(x, torch.full((2,), 0.5)))


def test_from_config_reads_model_and_data_fields_and_ignores_the_rest():
    config = {"model": dict(TINY, name="ncsnpp", ema_rate=0.999, normalization="GroupNorm", beta_min=0.1,
                            image_size=999, embedding_type="positional", resblock_type="DDPM"),
              "data": {"image_size": 8, "num_channels": 1, "centered": True, "dataset": "CIFAR10"},
              "training": {"continuous": True}}
    del config["model"]["image_size"]
    model = NCSNpp.from_config(config)
    assert (model.num_channels, model.image_size, model.centered) == (1, 8, True)
    assert (model.embedding_type, model.resblock_type, model.nf) == ("positional", "ddpm", 16)
    assert model.all_modules[0].weight.shape == (64, 16)  # no Fourier projection first: positional
    assert read_config(NCSNpp, {"model": {}, "data": {"image_size": 16}}, NCSNpp._data_fields) == {"image_size": 16}
    with pytest.raises(TypeError, match="mapping"):
        NCSNpp.from_config([("model", {})])


@pytest.mark.parametrize("option, value, message", [
    ("resblock_type", "resnet", "resblock_type must be one of 'ddpm', 'biggan'; got 'resnet'"),
    ("progressive", "skip", "progressive must be one of"),
    ("progressive_input", "output_skip", "progressive_input must be one of"),
    ("progressive_combine", "mean", "progressive_combine must be one of 'sum', 'cat'"),
    ("embedding_type", "learned", "embedding_type must be one of"),
    ("nonlinearity", "gelu", "nonlinearity must be one of"),
    ("attention_type", "legacy", "attention_type must be one of 'ddpm'"),
    ("conv_size", 5, "conv_size must be 3"),
    ("image_size", 7, "divisible by"),
    ("ch_mult", (), "ch_mult"),
    ("dropout", 1.5, "dropout"),
])
def test_invalid_options_raise_value_errors_naming_them(option, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        NCSNpp(**{**TINY, option: value})


def test_forward_validates_shapes():
    model = NCSNpp(**TINY)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\)"):
        model(torch.zeros(2, 1, 8, 8), torch.ones(2))
    with pytest.raises(ValueError, match=r"time_cond must have shape \(B,\) = \(2,\)"):
        model(torch.zeros(2, 3, 8, 8), torch.ones(3))
