"""NCSN / NCSNv2 RefineNets (scoresde.nets.ncsnv2) and their layers: math, layout pinned to score_sde_pytorch's."""
import hashlib
import inspect

import pytest
import torch

from scoresde.nets.ncsnv2 import NCSN, NCSNv2, NCSNv2_128, NCSNv2_256, SCORE_SDE_NAMES
from scoresde.nets.refinenet_layers import (ConditionalInstanceNorm2dPlus, ConvMeanPool, InstanceNorm2dPlus,
                                            ResidualBlock, VarianceNorm2d)

TINY = dict(nf=4, num_scales=7)


def _perturb(model, seed=0):
    """Move every parameter off its initial value (γ = 1, β = 0 would hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


# ---------------------------------------------------------------- normalizations against their defining formulas

def _instance_norm_plus_reference(x, gamma, alpha, beta):
    """InstanceNorm++ written out per sample and channel with explicit sums (Song & Ermon 2019, Appendix A)."""
    B, C, H, W = x.shape
    n = H * W
    out = torch.empty_like(x)
    for b in range(B):
        mu = [x[b, c].sum() / n for c in range(C)]
        m = sum(mu) / C
        s2 = sum((u - m) ** 2 for u in mu) / (C - 1)  # unbiased spread of the channel means
        for c in range(C):
            var = ((x[b, c] - mu[c]) ** 2).sum() / n  # biased, as instance norm
            h = (x[b, c] - mu[c]) / torch.sqrt(var + 1e-5) + alpha[b, c] * (mu[c] - m) / torch.sqrt(s2 + 1e-5)
            out[b, c] = gamma[b, c] * h + beta[b, c]
    return out


def test_instance_norm_plus_matches_its_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64) * 3 + torch.arange(5.0, dtype=torch.float64)[:, None, None]
    norm = _perturb(InstanceNorm2dPlus(5).double())
    expand = lambda v: v.expand(2, 5)  # noqa: E731
    ref = _instance_norm_plus_reference(x, expand(norm.gamma), expand(norm.alpha), expand(norm.beta))
    torch.testing.assert_close(norm(x), ref)
    # Without bias there is no beta and the formula drops it.
    nobias = InstanceNorm2dPlus(5, bias=False).double()
    assert [n for n, _ in nobias.named_parameters()] == ["alpha", "gamma"]
    ref = _instance_norm_plus_reference(x, expand(nobias.gamma), expand(nobias.alpha), torch.zeros(2, 5).double())
    torch.testing.assert_close(nobias(x), ref)


def test_instance_norm_plus_keeps_the_spread_of_channel_means():
    """Plain instance norm erases each channel's mean; InstanceNorm++ puts back α times its standardized value."""
    x = torch.randn(1, 3, 8, 8) + torch.tensor([0.0, 1.0, 2.0])[:, None, None]
    norm = InstanceNorm2dPlus(3)
    with torch.no_grad():
        norm.gamma.fill_(1.0), norm.alpha.fill_(1.0), norm.beta.zero_()
    means = norm(x).mean(dim=(2, 3))[0]
    mu = x.mean(dim=(2, 3))[0]
    torch.testing.assert_close(means, (mu - mu.mean()) / torch.sqrt(mu.var() + 1e-5), atol=1e-5, rtol=1e-5)


def test_conditional_instance_norm_plus_looks_up_gamma_alpha_beta_per_sample():
    torch.manual_seed(1)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    norm = _perturb(ConditionalInstanceNorm2dPlus(4, num_classes=6).double())
    y = torch.tensor([5, 0, 2])
    rows = norm.embed.weight[y]  # (3, 12) = [γ | α | β]
    ref = _instance_norm_plus_reference(x, rows[:, :4], rows[:, 4:8], rows[:, 8:])
    torch.testing.assert_close(norm(x, y), ref)
    assert norm.embed.weight.shape == (6, 12)


def test_conditional_instance_norm_plus_initialization():
    norm = ConditionalInstanceNorm2dPlus(8, num_classes=100)
    w = norm.embed.weight
    assert torch.all(w[:, 16:] == 0)  # β starts at 0
    assert abs(w[:, :16].mean().item() - 1) < 0.01 and abs(w[:, :16].std().item() - 0.02) < 0.005


def test_variance_norm_matches_its_formula():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64) * 5 + 7
    norm = _perturb(VarianceNorm2d(3).double())
    var = ((x - x.mean(dim=(2, 3), keepdim=True)) ** 2).sum(dim=(2, 3), keepdim=True) / (16 - 1)  # unbiased
    torch.testing.assert_close(norm(x), norm.alpha[:, None, None] * x / torch.sqrt(var + 1e-5))


# ---------------------------------------------------------------- convolution blocks

def test_conv_mean_pool_is_conv_then_2x2_average():
    torch.manual_seed(3)
    block = ConvMeanPool(3, 5, kernel_size=3)
    x = torch.randn(2, 3, 8, 6)
    torch.testing.assert_close(block(x), torch.nn.functional.avg_pool2d(block.conv(x), 2))
    padded = ConvMeanPool(3, 5, kernel_size=3, adjust_padding=True)
    assert padded(torch.randn(1, 3, 7, 7)).shape == (1, 5, 4, 4)
    assert [n for n, _ in padded.named_parameters()] == ["conv.1.weight", "conv.1.bias"]


@pytest.mark.parametrize("resample, dilation, size", [(None, 1, 8), ("down", 1, 4), ("down", 2, 8), (None, 4, 8)])
def test_residual_block_shapes(resample, dilation, size):
    block = ResidualBlock(3, 6, resample=resample, dilation=dilation, normalization=InstanceNorm2dPlus)
    assert block(torch.randn(2, 3, 8, 8)).shape == (2, 6, size, size)
    identity = ResidualBlock(4, 4, normalization=InstanceNorm2dPlus)
    assert not hasattr(identity, "shortcut")


# ---------------------------------------------------------------- layout pinned to score_sde_pytorch's models

def _layout_digest(model):
    rows = [f"P {n} {tuple(p.shape)} {p.dtype}" for n, p in model.named_parameters()]
    rows += [f"S {n} {tuple(t.shape)} {t.dtype}" for n, t in model.state_dict().items()]
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16], len(rows)


# Digests of (parameters in order, state_dict keys in order) with shapes and dtypes, taken from
# score_sde_pytorch cb1f359's own classes at nf=4, num_scales=7 (built with the fixes described in the module).
PINNED_LAYOUTS = [
    (NCSN, {}, ("f7a4f34f58aa51ca", 346)),
    (NCSNv2, {}, ("969b69d4aa311048", 307)),
    (NCSNv2, {"normalization": "InstanceNorm"}, ("2dac901ce0638efd", 205)),
    (NCSNv2, {"normalization": "VarianceNorm"}, ("061925a3f64afbe0", 239)),
    (NCSNv2_128, {}, ("99d1281730069784", 383)),
    (NCSNv2_256, {}, ("0c6ed56f8ca7f50d", 459)),
]


@pytest.mark.parametrize("cls, extra, digest", PINNED_LAYOUTS)
def test_state_dict_and_parameter_order_match_score_sde(cls, extra, digest):
    assert _layout_digest(cls(**TINY, **extra)) == digest


def test_named_layout_landmarks():
    net = NCSNv2(**TINY)
    keys = list(net.state_dict())
    assert keys[:3] == ["sigmas", "begin_conv.weight", "begin_conv.bias"]
    for key in ["normalizer.beta", "res2.0.conv2.conv.weight", "res2.0.shortcut.conv.weight",
                "res3.0.shortcut.weight", "refine1.adapt_convs.0.2_2_conv.weight", "refine2.msf.convs.1.bias",
                "refine4.output_convs.3_2_conv.weight", "refine3.crp.convs.1.weight"]:
        assert key in keys, key
    assert "refine1.msf.convs.0.weight" not in keys  # the deepest block has a single input
    ncsn_keys = list(NCSN(**TINY).state_dict())
    assert "sigmas" not in ncsn_keys
    assert ncsn_keys.index("refine1.adapt_convs.0.1_1_norm.embed.weight") + 1 == \
        ncsn_keys.index("refine1.adapt_convs.0.1_1_conv.weight")


# ---------------------------------------------------------------- noise levels and output scaling

def test_sigmas_are_a_float64_geometric_ladder():
    net = NCSNv2(nf=4, sigma_min=0.01, sigma_max=50.0, num_scales=232)
    s = net.sigmas
    assert s.dtype == torch.float64 and s.shape == (232,)
    assert s[0].item() == pytest.approx(50.0, rel=1e-14) and s[-1].item() == pytest.approx(0.01, rel=1e-14)
    ratios = s[1:] / s[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (0.01 / 50.0) ** (1 / 231)), rtol=1e-12, atol=0)


def test_ncsnv2_output_is_divided_by_sigma_y():
    """The unconditional body ignores y, so out(x, y) · σ_y is the same for every y."""
    torch.manual_seed(4)
    net = _perturb(NCSNv2(**TINY).double())
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64).expand(4, -1, -1, -1)
    y = torch.tensor([0, 2, 5, 6])
    out = net(x, y)
    rescaled = out * net.sigmas[y][:, None, None, None]
    torch.testing.assert_close(rescaled, rescaled[:1].expand_as(rescaled))
    assert not torch.allclose(out[0], out[1])


def test_ncsn_is_conditional_and_not_rescaled():
    torch.manual_seed(5)
    net = _perturb(NCSN(nf=4, num_scales=2))
    x = torch.rand(1, 3, 8, 8).expand(2, -1, -1, -1)
    y = torch.tensor([0, 1])
    out = net(x, y)
    assert not torch.allclose(out[0], out[1])  # different noise levels, different normalization rows
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("embed.weight"):
                p[1] = p[0]
    out = net(x, y)
    torch.testing.assert_close(out[0], out[1])  # identical rows: identical output, no 1/σ factor


def test_centered_input_skips_the_affine_map():
    torch.manual_seed(6)
    a = _perturb(NCSNv2(**TINY))
    b = NCSNv2(**TINY, centered=True)
    b.load_state_dict(a.state_dict())
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([1, 3])
    torch.testing.assert_close(a(x, y), b(2 * x - 1, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_keeps_the_input_dtype(dtype):
    net = NCSNv2(**TINY).to(dtype)
    out = net(torch.rand(2, 3, 8, 8, dtype=dtype), torch.tensor([0, 1]))
    assert out.dtype == dtype


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("cls, size, channels", [(NCSNv2, 32, 3), (NCSNv2, 64, 1), (NCSN, 32, 3),
                                                 (NCSNv2_128, 128, 3), (NCSNv2_128, 32, 3), (NCSNv2_256, 64, 3)])
def test_output_shape(cls, size, channels):
    net = cls(nf=2, num_scales=5, image_size=size, num_channels=channels)
    x = torch.rand(2, channels, size, size)
    assert net(x, torch.tensor([0, 4])).shape == x.shape


def test_output_shape_256():
    net = NCSNv2_256(nf=2, num_scales=5)
    x = torch.rand(1, 3, 256, 256)
    assert net(x, torch.tensor([2])).shape == x.shape


# ---------------------------------------------------------------- configuration

def _defaults(cls):
    return {name: p.default for name, p in inspect.signature(cls).parameters.items()}


def test_defaults_are_score_sde_configs():
    """ve/ncsnv2/cifar10, ve/ncsn/cifar10 and ve/ncsnv2/bedroom (also NCSNv2_256's, at 256 px)."""
    common = dict(nf=128, normalization="InstanceNorm++", nonlinearity="elu", interpolation="bilinear",
                  num_channels=3, centered=False)
    assert _defaults(NCSNv2) == dict(common, sigma_min=0.01, sigma_max=50.0, num_scales=232, image_size=32)
    assert _defaults(NCSN) == dict(common, num_scales=10, image_size=32)
    assert _defaults(NCSNv2_128) == dict(common, sigma_min=0.01, sigma_max=190.0, num_scales=1086, image_size=128)
    assert _defaults(NCSNv2_256) == dict(_defaults(NCSNv2_128), image_size=256)


def test_from_config_reads_their_fields_and_ignores_the_rest():
    config = {"model": {"name": "ncsnv2_64", "nf": 4, "num_scales": 9, "sigma_max": 3.0, "sigma_min": 0.1,
                        "nonlinearity": "ReLU", "normalization": "VarianceNorm", "ema_rate": 0.999,
                        "interpolation": "bilinear", "scale_by_sigma": True},
              "data": {"image_size": 16, "num_channels": 1, "centered": True, "dataset": "MNIST"},
              "training": {"batch_size": 128}}
    net = SCORE_SDE_NAMES[config["model"]["name"]].from_config(config)
    assert (net.nf, net.num_scales, net.image_size, net.num_channels, net.centered) == (4, 9, 16, 1, True)
    assert isinstance(net.act, torch.nn.ReLU) and isinstance(net.normalizer, VarianceNorm2d)
    assert net.sigmas[0].item() == pytest.approx(3.0) and net.sigmas[-1].item() == pytest.approx(0.1)
    # score_sde's classes read data.channels; either name works, and they must agree.
    assert NCSN.from_config({"model": {"nf": 2}, "data": {"channels": 1}}).num_channels == 1
    with pytest.raises(ValueError, match="num_channels and channels"):
        NCSN.from_config({"data": {"num_channels": 3, "channels": 1}})


def test_instance_norm_final_normalizer_keeps_score_sde_eps():
    """score_sde passes num_scales positionally to nn.InstanceNorm2d for the last norm, i.e. as its eps."""
    net = NCSNv2(nf=4, num_scales=7, normalization="InstanceNorm")
    assert net.normalizer.eps == 7.0 and net.res1[0].normalize1.eps == 1e-5


@pytest.mark.parametrize("kwargs, match", [
    ({"normalization": "GroupNorm"}, "normalization 'GroupNorm'.*'InstanceNorm\\+\\+'"),
    ({"nonlinearity": "gelu"}, "nonlinearity must be one of.*'elu'.*got 'gelu'"),
    ({"interpolation": "nearest"}, "interpolation 'nearest'.*'bilinear'"),
    ({"nf": 0}, "nf must be a positive integer; got 0"),
    ({"num_scales": 2.5}, "num_scales must be a positive integer"),
    ({"image_size": 31}, "divisible by 2.*got 31"),
    ({"sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min <= sigma_max"),
])
def test_invalid_options_name_the_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NCSNv2(**{"nf": 2, **kwargs})


def test_ncsn_supports_only_conditional_instance_norm_plus():
    with pytest.raises(ValueError, match="normalization 'VarianceNorm'"):
        NCSN(nf=2, normalization="VarianceNorm")
    with pytest.raises(ValueError, match="divisible by 4"):
        NCSNv2_128(nf=2, image_size=66)


def test_forward_checks_its_inputs():
    net = NCSNv2(**TINY)
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(TypeError, match="integer tensor of noise-level indices"):
        net(x, torch.tensor([0.5, 0.1]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        net(x, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="centered must be a bool"):
        NCSNv2(nf=2, centered="no")


def test_shape_arguments():
    assert NCSNv2.shape_arguments((1, 28, 28)) == {"num_channels": 1, "image_size": 28}
    with pytest.raises(ValueError, match="square"):
        NCSNv2.shape_arguments((3, 32, 16))
