"""PCSampler against the Gaussian-mixture oracle and the discrete DDPM / NCSN recursions (float64).

Oracle-law checks as in tests/test_sampling_sde.py: the energy distance to fresh oracle samples must stay
below 5 × the noise floor (RMS of the same statistic between two independent oracle sets, 8 repeats), and the
mean oracle log-density of the samples must match that of the oracle samples within 5 standard errors
(ED alone does not see the width of the components).
"""
import math

import pytest
import torch

import scoresde as sd
from helpers import SDES, CountingScore, assert_oracle_law, mixture_16d_isotropic, run


# -- the law of the samples ----------------------------------------------------------------------------
# The snr-Langevin corrector is checked with langevin_norm="batch" (score_sde_pytorch's batch-mean norms).
# With per-sample norms (the default) its step 2α(snr‖z‖/‖S‖)² is correlated with its own noise z and with
# x, which widens the samples measurably (2-D and 16-D, snr = 0.16, 200-500 steps: log-density z ≈ −5 to −12,
# see the PCSampler docstring); its formula is checked exactly in test_langevin_step_size instead.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "user"])
@pytest.mark.parametrize("predictor, corrector, steps", [
    ("reverse_diffusion", "langevin", 300),
    # The ancestral step's posterior variance β̃ ignores the uncertainty of Tweedie's x̂_0, an O(h)
    # under-dispersion (measured at 300 steps on VP: log-density z ≈ +5), so it gets more steps.
    ("ancestral", None, 1000),
])
def test_pc_matches_oracle_2d(name, predictor, corrector, steps):
    gmm = sd.eight_gaussians()
    sampler = sd.PCSampler(predictor, corrector, steps=steps, snr=0.16, langevin_norm="batch")
    assert_oracle_law(run(sampler, SDES[name](), gmm).x, gmm, "8g")


@pytest.mark.slow
@pytest.mark.parametrize("name, predictor", [("vp", "euler_maruyama"), ("ve", "reverse_diffusion")])
def test_predictor_only_matches_oracle_2d(name, predictor):
    gmm = sd.eight_gaussians()
    assert_oracle_law(run(sd.PCSampler(predictor, None, steps=500), SDES[name](), gmm).x, gmm, "8g")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_pc_matches_oracle_16d(name):
    gmm = mixture_16d_isotropic()
    sampler = sd.PCSampler("reverse_diffusion", "langevin", steps=200, snr=0.16, langevin_norm="batch")
    res = run(sampler, SDES[name](), gmm, n=500)
    assert_oracle_law(res.x, gmm, "16d")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ve", "subvp"])
def test_annealed_langevin_matches_oracle(name):
    # NCSN: L = 20 noise levels on the log-SNR grid, K = 50 Langevin steps each, ε_i = 0.2 σ_i² (NCSN's
    # δ/σ_L² = 2e-5/0.01²). Annealed Langevin is limited by mixing, not by the step: fewer steps or a
    # smaller ratio leave the samples measurably too spread between the modes (log-density z < −5).
    gmm = sd.eight_gaussians()
    sampler = sd.PCSampler(None, "annealed_langevin", steps=20, corrector_steps=50, grid="log_snr")
    res = run(sampler, SDES[name](), gmm)
    assert res.nfe == 20 * 50 + 1
    assert_oracle_law(res.x, gmm, "8g")


# -- DDPM and NCSN ancestral sampling are configurations of PCSampler -----------------------------------
def test_ancestral_is_ddpm_on_vp():
    # DDPM (Ho et al. 2020, eq. 11 and the posterior variance β̃ of eq. 7) written in its ε form on the
    # chain of VPSDE.discretize: α_i = a_i², β_i = b_i² = 1 − α_i, ᾱ(t) = s(t)², ε = −√(1 − ᾱ) score.
    gmm, sde, steps, eps = sd.eight_gaussians(), sd.VPSDE(), 6, 1e-3
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = sd.PCSampler("ancestral", None, steps=steps, eps=eps, denoise=False).sample(
        sde, gmm.score(sde), x_T.shape, generator=torch.Generator().manual_seed(1), x_T=x_T)
    times, a, b = sde.discretize(steps, eps)
    alpha, beta, alpha_bar = a**2, b**2, sde.scale(times) ** 2
    torch.testing.assert_close(alpha + beta, torch.ones_like(alpha))
    g = torch.Generator().manual_seed(1)
    x = x_T
    for i in range(steps, 0, -1):  # from t_N = T down to t_0 = eps
        t = torch.full((5,), float(times[i]), dtype=torch.float64)
        epsilon = -(1 - alpha_bar[i]).sqrt() * gmm.score_t(sde, x, t)
        mean = (x - beta[i - 1] / (1 - alpha_bar[i]).sqrt() * epsilon) / alpha[i - 1].sqrt()
        beta_tilde = beta[i - 1] * (1 - alpha_bar[i - 1]) / (1 - alpha_bar[i])
        x = mean + beta_tilde.sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(res.x, x, rtol=1e-12, atol=1e-12)


def test_ancestral_is_ncsn_on_ve():
    # NCSN ancestral step (Song et al. 2021, eq. 47 family): with σ_i = std(t_i),
    # x_{i−1} = x_i + (σ_i² − σ_{i−1}²) score + √(σ_{i−1}² (σ_i² − σ_{i−1}²) / σ_i²) z.
    gmm, sde, steps, eps = sd.eight_gaussians(), sd.VESDE(), 6, 1e-3
    x_T = 50 * torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = sd.PCSampler("ancestral", None, steps=steps, eps=eps, denoise=False).sample(
        sde, gmm.score(sde), x_T.shape, generator=torch.Generator().manual_seed(1), x_T=x_T)
    times = torch.linspace(eps, sde.T, steps + 1, dtype=torch.float64)
    sigma = sde.std(times)
    g = torch.Generator().manual_seed(1)
    x = x_T
    for i in range(steps, 0, -1):
        t = torch.full((5,), float(times[i]), dtype=torch.float64)
        d2 = sigma[i] ** 2 - sigma[i - 1] ** 2
        x = x + d2 * gmm.score_t(sde, x, t) + (sigma[i - 1] ** 2 * d2 / sigma[i] ** 2).sqrt() * torch.randn(
            x.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(res.x, x, rtol=1e-12, atol=1e-9)


def test_reverse_diffusion_is_song_discretization_on_vp():
    # Song et al.'s reverse-diffusion predictor on DDPM's chain: x' = (2 − √(1 − β)) x + β score + √β z.
    gmm, sde, steps = sd.eight_gaussians(), sd.VPSDE(), 4
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = sd.PCSampler("reverse_diffusion", None, steps=steps, denoise=False).sample(
        sde, gmm.score(sde), x_T.shape, generator=torch.Generator().manual_seed(1), x_T=x_T)
    times, _, b = sde.discretize(steps, 1e-3)
    beta = b**2
    g = torch.Generator().manual_seed(1)
    x = x_T
    for i in range(steps, 0, -1):
        t = torch.full((5,), float(times[i]), dtype=torch.float64)
        x = (2 - (1 - beta[i - 1]).sqrt()) * x + beta[i - 1] * gmm.score_t(sde, x, t) + beta[i - 1].sqrt() * \
            torch.randn(x.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(res.x, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_langevin_step_size(name):
    # One Langevin move at t_0 = T: ε = 2 α (snr ‖z‖/‖S‖)² per sample, α = a² of the kernel from t_1 to t_0
    # (α = 1 for VE, α = 1 − β for VP, and the same formula for sub-VP).
    sde, snr = SDES[name](), 0.3
    S = torch.tensor([[1.0, 2.0], [-3.0, 0.5], [0.1, 0.1]], dtype=torch.float64)
    x_T = torch.zeros(3, 2, dtype=torch.float64)
    res = sd.PCSampler(None, "langevin", steps=2, snr=snr, denoise=False, langevin_norm="sample").sample(
        sde, lambda x, t: S.clone(), x_T.shape, generator=torch.Generator().manual_seed(4), x_T=x_T,
        trajectory=True)
    times = sd.time_grid(sde, 1, "uniform", 1e-3)
    a, _ = sde.transition(times[1:], times[:1])
    if name == "ve":
        torch.testing.assert_close(a, torch.ones_like(a))
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    step = 2 * a**2 * (snr * z.norm(dim=1) / S.norm(dim=1)) ** 2
    expected = step[:, None] * S + (2 * step[:, None]).sqrt() * z
    torch.testing.assert_close(res.trajectory[0], expected, rtol=1e-12, atol=1e-12)
    # langevin_norm="batch" (the default): one step for the batch from the batch-mean norms (score_sde_pytorch).
    res = sd.PCSampler(None, "langevin", steps=2, snr=snr, denoise=False).sample(
        sde, lambda x, t: S.clone(), x_T.shape, generator=torch.Generator().manual_seed(4), x_T=x_T,
        trajectory=True)
    step = 2 * a**2 * (snr * z.norm(dim=1).mean() / S.norm(dim=1).mean()) ** 2
    torch.testing.assert_close(res.trajectory[0], step * S + (2 * step).sqrt() * z, rtol=1e-12, atol=1e-12)


# -- bookkeeping ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("predictor, corrector, steps, k, denoise, expected", [
    ("reverse_diffusion", "langevin", 10, 1, True, 21),
    ("euler_maruyama", "langevin", 10, 2, False, 30),
    ("ancestral", None, 10, 1, True, 11),
    (None, "annealed_langevin", 5, 3, False, 15),
    ("reverse_diffusion", "annealed_langevin", 10, 0, False, 10),
])
def test_nfe_is_exact(predictor, corrector, steps, k, denoise, expected):
    gmm, sde = sd.eight_gaussians(), sd.SubVPSDE()
    score = CountingScore(gmm.score(sde))
    res = sd.PCSampler(predictor, corrector, steps=steps, corrector_steps=k, denoise=denoise).sample(
        sde, score, (8, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert res.nfe == score.calls == expected


def test_same_generator_same_samples_and_trajectory():
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    sampler = sd.PCSampler(steps=20)
    a, b, c = (run(sampler, sde, gmm, n=16, seed=s).x for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    seen = []
    res = sampler.sample(sde, gmm.score(sde), (4, 2), generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64, trajectory=True, callback=lambda i, t, x: seen.append(i))
    assert res.trajectory.shape == (20, 4, 2) and seen == list(range(1, 21))
    torch.testing.assert_close(res.times, sd.time_grid(sde, 20)[1:])


def test_float32_and_grids():
    gmm, sde = sd.eight_gaussians(dtype=torch.float32), sd.VESDE()
    for grid in ("uniform", "log_snr", "edm"):
        res = sd.PCSampler(steps=10, grid=grid).sample(sde, gmm.score(sde), (8, 2),
                                                       generator=torch.Generator().manual_seed(0))
        assert res.x.dtype == torch.float32 and bool(torch.isfinite(res.x).all())


# -- bad input -----------------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match="valid choices.*'reverse_diffusion'.*'ancestral'"):
        sd.PCSampler(predictor="ddim")
    with pytest.raises(ValueError, match="valid choices.*'langevin'.*'annealed_langevin'"):
        sd.PCSampler(corrector="hmc")
    with pytest.raises(ValueError, match="both be None"):
        sd.PCSampler(None, None)
    with pytest.raises(ValueError, match="steps"):
        sd.PCSampler(None, "langevin", steps=1)
    with pytest.raises(ValueError, match="snr"):
        sd.PCSampler(snr=-1)
    with pytest.raises(ValueError, match="valid choices.*'edm'"):
        sd.PCSampler(grid="karras")
    with pytest.raises(ValueError, match="valid choices.*'batch'"):
        sd.PCSampler(langevin_norm="layer")
    with pytest.raises(ValueError, match=r"x's shape \(4, 2\)"):
        sd.PCSampler(steps=3).sample(sd.VPSDE(), lambda x, t: x[:, :1], (4, 2))


@pytest.mark.slow
def test_the_langevin_correctors_bias_is_the_derived_variance_inflation():
    """On N(0, c² I) in 16-D the unadjusted corrector at snr r inflates the variance by at most 1/(1 − r²) and costs
    at most −D r²/2 nats (PCSampler's docstring; measured −0.18 and −0.78 at r = 0.16 and 0.32 against −0.20 and
    −0.82): the gap lies between 0.6 and 1.1 times the bound (n = 10,000: a standard error of 0.02 nats)."""
    D, c = 16, 0.5
    gmm = sd.GaussianMixture(torch.zeros(1, D, dtype=torch.float64), stds=[c])
    sde = sd.VPSDE()
    neg_entropy = 0.5 * D * (1 + math.log(2 * math.pi * c * c))
    for snr in (0.16, 0.32):
        res = sd.PCSampler(steps=300, snr=snr).sample(sde, gmm.score(sde), (10_000, D),
                                                      torch.Generator().manual_seed(0), dtype=torch.float64)
        gap = float(gmm.log_prob(res.x).mean()) + neg_entropy
        bound = -D * snr ** 2 / 2
        assert 0.6 * bound > gap > 1.1 * bound, (snr, gap, bound)
        assert 1 < float(res.x.var(0).mean()) / c ** 2 < 1 / (1 - snr ** 2) + 0.01


def test_a_predictor_and_a_corrector_are_registered_classes_a_user_can_add():
    """Predictors and correctors live in registries (score_sde_pytorch's register_predictor): a user's move is one
    class and one line, and PCSampler takes its name. Here a corrector that does nothing and a predictor that is
    reverse diffusion again give the plain reverse-diffusion chain, draw for draw."""
    from scoresde.sampling import CORRECTORS, PREDICTORS, Corrector
    from scoresde.sampling.pc import ReverseDiffusion

    assert PREDICTORS.names() == ["reverse_diffusion", "euler_maruyama", "ancestral"]
    assert CORRECTORS.names() == ["langevin", "annealed_langevin"]

    class Idle(Corrector):
        def __call__(self, score, x, level, generator):
            return x

    PREDICTORS.register("mine", ReverseDiffusion)
    CORRECTORS.register("idle", Idle)
    try:
        sde, gmm, shape = sd.VPSDE(), sd.eight_gaussians(), (16, 2)
        options = dict(generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        plain = sd.PCSampler(corrector=None, steps=8).sample(sde, gmm.score(sde), shape, **options)
        options["generator"] = torch.Generator().manual_seed(0)
        mine = sd.PCSampler(predictor="mine", corrector="idle", steps=8).sample(sde, gmm.score(sde), shape, **options)
        assert torch.equal(plain.x, mine.x)
        with pytest.raises(ValueError, match="valid choices: 'reverse_diffusion', 'euler_maruyama', 'ancestral', "
                                             "'mine', None"):
            sd.PCSampler(predictor="heun")
    finally:
        PREDICTORS._entries.pop("mine")
        CORRECTORS._entries.pop("idle")
