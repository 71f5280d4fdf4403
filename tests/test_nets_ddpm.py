"""DDPM (scoresde.nets.ddpm): the state_dict structure of score_sde_pytorch's DDPM (digests of its
key/shape/dtype list and parameter order, from its code at commit cb1f359), and its forward semantics."""
import math

import pytest
import torch

from scoresde.nets import score_sde_layers as L
from scoresde.nets.ddpm import DDPM
from test_nets_ncsnpp import perturbed, structure_digest

TINY = dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_scales=10, image_size=8)


def tiny(**options):
    torch.manual_seed(0)
    return perturbed(DDPM(**{**TINY, **options}).double())


def test_state_dict_structure_matches_score_sde():
    torch.manual_seed(0)
    model = DDPM(**TINY)
    assert structure_digest(model) == ("826609b9031e2b9a", 135, 685731)  # vp/ddpm/cifar10 with TINY
    assert model.sigmas.dtype == torch.float64


@pytest.mark.slow
def test_full_size_cifar10_structure_matches_score_sde():
    assert structure_digest(DDPM()) == ("c4e9ba76b4a9575c", 309, 35218947)


def test_blocks_are_ddpm_blocks():
    model = DDPM(**TINY)
    kinds = [type(m).__name__ for m in model.all_modules]
    assert kinds[:3] == ["Linear", "Linear", "Conv2d"] and kinds[-2:] == ["GroupNorm", "Conv2d"]
    assert kinds.count("AttnBlock") == 1 + 1 + 1  # down level 1, middle, up level 1
    block = next(m for m in model.all_modules if isinstance(m, L.ResnetBlockDDPM))
    assert block.GroupNorm_0.num_groups == 32 and not block.skip_rescale


def test_forward_is_the_unet_with_sinusoidal_time():
    model = tiny()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([3, 900])
    out = model(x, labels)
    assert out.shape == x.shape and out.dtype == torch.float64 and torch.isfinite(out).all()
    assert not torch.allclose(out, model(x, torch.tensor([4, 901])))
    # The first dense layer sees the sinusoidal embedding [sin(t ω_i), cos(t ω_i)], ω_i = 10⁴^(−i/15).
    seen = []
    model.all_modules[0].register_forward_hook(lambda module, args, output: seen.append(args[0]))
    model(x, labels)
    omega = 10000.0 ** (-torch.arange(16, dtype=torch.float64) / 15)
    angles = labels.double()[:, None] * omega
    torch.testing.assert_close(seen[0], torch.cat([angles.sin(), angles.cos()], dim=1))


def test_centered_and_scale_by_sigma_semantics():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 7])
    centered = tiny(centered=True, scale_by_sigma=False)
    torch.testing.assert_close(tiny(centered=False, scale_by_sigma=False)(x, labels), centered(2 * x - 1, labels))
    scaled = tiny(centered=True, scale_by_sigma=True)
    torch.testing.assert_close(scaled(x, labels), centered(x, labels) / scaled.sigmas[labels][:, None, None, None])


def test_unconditional_net_ignores_the_labels():
    model = tiny(conditional=False)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(model(x, torch.tensor([1, 2])), model(x, torch.tensor([5, 9])))


def test_from_config_and_validation():
    model = DDPM.from_config({"model": dict(TINY, name="ddpm", normalization="GroupNorm", fir=True),
                              "data": {"image_size": 8, "num_channels": 1, "centered": False}})
    assert (model.num_channels, model.centered, model.nf) == (1, False, 32)
    with pytest.raises(ValueError, match="multiples of 32"):
        DDPM(**{**TINY, "nf": 16})
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        DDPM(**{**TINY, "nonlinearity": "tanh"})
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\)"):
        DDPM(**TINY)(torch.zeros(1, 3, 7, 7), torch.zeros(1, dtype=torch.long))
    assert math.isclose(DDPM(**TINY).sigmas[0].item(), 50.0)
