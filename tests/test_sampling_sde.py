"""ReverseSDESampler against the Gaussian-mixture oracle (float64).

Oracle-law checks (``assert_oracle_law``), two of them:

1. Energy distance. For an exact sampler, ED(samples, fresh oracle samples) has the same law as ED between
   two independent oracle sets of the same size: mean 0 (the U-statistic is unbiased) and a spread we call
   the noise floor, estimated as the RMS over 8 repeats (±25% relative error from 8 draws). The statistic is
   a degenerate U-statistic (a weighted χ² minus its mean) whose right tail is heavier than a Gaussian one;
   5 × the RMS floor leaves room for that tail and for the floor's estimation error.
2. ED is dominated by the large-scale geometry (mode positions and weights) and does not see a 1.5× error
   in the width of the components at n = 1000 (measured). So we also compare the mean oracle log-density
   log p_0 of the samples with that of the fresh oracle samples: equal in expectation when the laws agree,
   tested at 5 standard errors of the difference (a two-sample z-test; false alarm ≈ 6e-7). The O(σ(eps)²)
   shrinkage of Tweedie's estimate (σ(1e-3)² ≈ 1e-4 ≪ 0.01 = the component variance) moves it by < 1 SE.

``test_oracle_checks_have_power`` shows that each check fails for a slightly wrong score.
"""
import contextlib
import math

import pytest
import torch

import scoresde as sd
from helpers import (FLOOR_FACTOR, N, SDES, CountingScore, assert_oracle_law, mixture_16d_isotropic, oracle_statistics,
                     run)
from scoresde._adapters import entropy_from
from scoresde.sampling.reverse_sde import _torchsde_dt, euler_maruyama


# -- the law of the samples ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["native", "torchsde"])
@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "user"])
def test_euler_maruyama_matches_oracle_2d(name, backend):
    gmm = sd.eight_gaussians()
    res = run(sd.ReverseSDESampler(steps=500, backend=backend), SDES[name](), gmm)
    assert_oracle_law(res.x, gmm, "8g")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_native_matches_oracle_16d(name):
    gmm = mixture_16d_isotropic()
    res = run(sd.ReverseSDESampler(steps=300, backend="native"), SDES[name](), gmm, n=500)
    assert_oracle_law(res.x, gmm, "16d")


@pytest.mark.slow
@pytest.mark.parametrize("solver, steps, adaptive", [
    ("milstein", 250, False), ("heun", 200, False), ("srk", 100, False),
    ("euler", 100, True),
])
def test_torchsde_solvers_match_oracle(solver, steps, adaptive):
    gmm = sd.eight_gaussians()
    sampler = sd.ReverseSDESampler(solver, steps=steps, adaptive=adaptive, rtol=1e-2, atol=1e-2)
    with pytest.warns(UserWarning) if adaptive else contextlib.nullcontext():  # torchsde warns about adaptive EM
        res = run(sampler, sd.VPSDE(), gmm)
    assert_oracle_law(res.x, gmm, "8g")


def test_reversible_heun_on_a_gaussian():
    # Reversible Heun has a small linear-stability region: on the sharp 8-Gaussian mixture (component std
    # 0.1) it diverges at 500 steps, so it is checked on N(0, 0.5² I), whose law at eps is N(0, v(eps) I)
    # with v = s²c² + σ². Sample std of n = 4000 × 2 values has standard error std/√(2·8000) ≈ 0.8%.
    sde, c = sd.VPSDE(), 0.5

    def score(x, t):
        return -x / (sde.scale(t) ** 2 * c**2 + sde.std(t) ** 2)[:, None]

    res = sd.ReverseSDESampler("reversible_heun", steps=400, denoise=False).sample(
        sde, score, (4000, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = torch.tensor([1e-3], dtype=torch.float64)
    target = float((sde.scale(eps) ** 2 * c**2 + sde.std(eps) ** 2).sqrt())
    assert abs(float(res.x.std()) / target - 1) < 4 * 0.008 + 0.01  # 4 standard errors + O(h) bias


def test_oracle_checks_have_power():
    # The score of a mixture with 1.5x wider components fails the log-density check, and the score of a
    # mixture on a 10% larger circle fails the energy-distance check.
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    sampler = sd.ReverseSDESampler(steps=200, backend="native")
    g = torch.Generator().manual_seed(0)
    wide = sampler.sample(sde, sd.eight_gaussians(std=0.15).score(sde), (N, 2), generator=g, dtype=torch.float64)
    assert abs(oracle_statistics(wide.x, gmm, "8g")[2]) > 5
    large = sampler.sample(sde, sd.eight_gaussians(radius=2.2).score(sde), (N, 2), generator=g,
                           dtype=torch.float64)
    ed, floor, _ = oracle_statistics(large.x, gmm, "8g")
    assert ed > FLOOR_FACTOR * floor


# -- native backend == torchsde euler for the same Brownian increments -----------------------------------
def test_native_loop_equals_torchsde_euler_for_the_same_brownian_path():
    import torchsde

    gmm, sde, steps, eps = sd.eight_gaussians(), sd.VPSDE(), 50, 1e-3
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sampler = sd.ReverseSDESampler("euler", steps=steps, eps=eps, denoise=False, backend="torchsde")
    res = sampler.sample(sde, gmm.score(sde), x_T.shape, generator=torch.Generator().manual_seed(5), x_T=x_T)

    # Rebuild torchsde's Brownian interval from the same generator, and its time points s = −t exactly as
    # torchsde steps them (s ← min(s + dt, s_end)); query the increments in the same order.
    entropy = entropy_from(torch.Generator().manual_seed(5))
    dt = _torchsde_dt(sde.T, eps, steps, torch.float64)
    bm = torchsde.BrownianInterval(t0=-sde.T, t1=-eps, size=x_T.shape, dtype=torch.float64, entropy=entropy,
                                   dt=dt, levy_area_approximation="none")
    s = [torch.tensor(-sde.T, dtype=torch.float64)]
    end = torch.tensor(-eps, dtype=torch.float64)
    while s[-1] < end:
        s.append(torch.minimum(s[-1] + dt, end))
    assert len(s) == steps + 1  # exactly `steps` steps, no rounding leftover
    times = -torch.stack(s)
    x = euler_maruyama(sde, gmm.score(sde), x_T, times, lambda k, x: bm(s[k], s[k + 1]))
    torch.testing.assert_close(res.x, x, rtol=0, atol=1e-12)  # float64 round-off over 50 steps


def test_native_sampler_uses_sqrt_h_normal_increments():
    # The native backend is euler_maruyama on the uniform grid with ΔW = √h z, z drawn from the generator.
    gmm, sde, steps = sd.eight_gaussians(), sd.SubVPSDE(), 20
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = sd.ReverseSDESampler(steps=steps, denoise=False, backend="native").sample(
        sde, gmm.score(sde), x_T.shape, generator=torch.Generator().manual_seed(2), x_T=x_T)
    g = torch.Generator().manual_seed(2)
    times = torch.linspace(sde.T, 1e-3, steps + 1, dtype=torch.float64)
    h = (sde.T - 1e-3) / steps
    x = x_T
    for k in range(steps):  # the update written out independently
        t = torch.full((32,), float(times[k]), dtype=torch.float64)
        gk = sde.diffusion(t)[:, None]
        x = x - (sde.drift(x, t) - gk**2 * gmm.score_t(sde, x, t)) * h + gk * math.sqrt(h) * torch.randn(
            x.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(res.x, x, rtol=0, atol=1e-12)


# -- bookkeeping ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver, steps, backend, denoise, expected", [
    ("euler", 30, "native", True, 31),
    ("euler", 30, "native", False, 30),
    ("euler", 30, "torchsde", True, 32),      # torchsde evaluates the drift once to check shapes
    ("milstein", 30, "torchsde", False, 31),
    ("heun", 30, "torchsde", False, 61),
])
def test_nfe_is_exact(solver, steps, backend, denoise, expected):
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    score = CountingScore(gmm.score(sde))
    res = sd.ReverseSDESampler(solver, steps=steps, denoise=denoise, backend=backend).sample(
        sde, score, (16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert res.nfe == score.calls == expected


def test_adaptive_nfe_is_counted():
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    score = CountingScore(gmm.score(sde))
    res = sd.ReverseSDESampler("milstein", steps=20, adaptive=True, rtol=1e-2, atol=1e-2).sample(
        sde, score, (16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert res.nfe == score.calls > 20


@pytest.mark.parametrize("backend", ["native", "torchsde"])
def test_same_generator_same_samples(backend):
    gmm, sde = sd.eight_gaussians(), sd.VESDE()
    sampler = sd.ReverseSDESampler(steps=20, backend=backend)
    a, b, c = (run(sampler, sde, gmm, n=16, seed=s).x for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_trajectory_and_callback():
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    seen = []
    for backend in ("native", "torchsde"):
        seen.clear()
        res = sd.ReverseSDESampler(steps=10, backend=backend, denoise=False).sample(
            sde, gmm.score(sde), (8, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64,
            trajectory=True, callback=lambda i, t, x: seen.append(t))
        assert res.trajectory.shape == (10, 8, 2) and len(seen) == 10
        torch.testing.assert_close(res.times, torch.linspace(1, 1e-3, 11, dtype=torch.float64)[1:])
        torch.testing.assert_close(res.trajectory[-1], res.x)


def test_float32_runs_exactly_steps():
    gmm, sde = sd.eight_gaussians(dtype=torch.float32), sd.VPSDE()
    score = CountingScore(gmm.score(sde))
    res = sd.ReverseSDESampler(steps=500, denoise=False).sample(
        sde, score, (4, 2), generator=torch.Generator().manual_seed(0))
    assert res.x.dtype == torch.float32 and score.calls == 501  # 500 steps + torchsde's shape check


# -- bad input -----------------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match="valid choices.*'euler'.*'milstein'"):
        sd.ReverseSDESampler("rk45")
    with pytest.raises(ValueError, match="valid choices.*'native'"):
        sd.ReverseSDESampler(backend="jax")
    with pytest.raises(ValueError, match="native"):
        sd.ReverseSDESampler("milstein", backend="native")
    with pytest.raises(ValueError, match="Itô"):
        sd.ReverseSDESampler("heun", adaptive=True)
    with pytest.raises(ValueError, match="steps"):
        sd.ReverseSDESampler(steps=0)
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="eps"):
        sd.ReverseSDESampler(eps=2.0).sample(sde, lambda x, t: -x, (4, 2))
    for backend in ("native", "torchsde"):
        with pytest.raises(ValueError, match=r"x's shape \(4, 2\)"):
            sd.ReverseSDESampler(steps=5, backend=backend).sample(sde, lambda x, t: x[:, :1], (4, 2))
