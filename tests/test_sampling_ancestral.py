"""Euler-ancestral and DPM-Solver++(2S)-ancestral: η = 0 is the ODE solver, η = 1 samples the oracle's law
(k-diffusion's sample_euler_ancestral / sample_dpmpp_2s_ancestral are reproduced to 1e-14 with the same noise,
measured with benchmarks/kdiffusion_crosscheck.py's loader)."""
import pytest
import torch

import scoresde as sd
from helpers import F64, SDES, CountingScore, assert_oracle_law, run
from scoresde.sampling.ancestral import ancestral_split


def test_the_split_keeps_the_next_noise_level():
    for eta in (0.0, 0.5, 1.0, 3.0):
        down, up = ancestral_split(2.0, 1.0, eta)
        assert down ** 2 + up ** 2 == pytest.approx(1.0) and up <= 1.0
    assert ancestral_split(2.0, 1.0, 0.0) == (1.0, 0.0)
    # η = 1: σ_↑² is DDPM's posterior variance in σ̃ (σ̃'² (σ̃² − σ̃'²)/σ̃²)
    assert ancestral_split(2.0, 1.0, 1.0)[1] == pytest.approx((1 * (4 - 1) / 4) ** 0.5)


def test_eta_zero_order_one_is_euler_in_sigma():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    x_T = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = sd.AncestralSampler(12, eta=0.0, denoise=False).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T).x
    b = sd.HeunSampler(steps=12, order=1, grid="edm").sample(sde, gmm.score(sde), x_T.shape, x_T=x_T).x
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["vp", "ve"])
@pytest.mark.parametrize("order, steps", [(1, 200), (2, 50)])
def test_ancestral_sampling_draws_the_oracle(name, order, steps):
    res = run(sd.AncestralSampler(steps=steps, order=order), SDES[name](), sd.eight_gaussians())
    assert res.nfe == order * steps + 1
    assert_oracle_law(res.x, sd.eight_gaussians(), key="8g")


def test_seeding_nfe_and_bad_input():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    counting = CountingScore(gmm.score(sde))
    sampler = sd.AncestralSampler(steps=5, order=2)
    a = sampler.sample(sde, counting, (8, 2), torch.Generator().manual_seed(1), dtype=F64)
    b = sampler.sample(sde, counting, (8, 2), torch.Generator().manual_seed(1), dtype=F64)
    assert torch.equal(a.x, b.x) and a.nfe == sampler.nfe() == 11 and counting.calls == 22
    with pytest.raises(ValueError, match="valid choices: 1, 2"):
        sd.AncestralSampler(order=3)
    with pytest.raises(ValueError, match="eta must be"):
        sd.AncestralSampler(eta=-1.0)
