"""SDE objects: derived marginals against closed forms and independent quadrature, forward simulation,
discrete-time views, and input validation."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate

import scoresde as sd
from helpers import F64, Wiggly, registered_example

CLOSED_FORM = [sd.VESDE(), sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(0.002, 80.0), sd.VPSDE(0.01, 30.0, T=2.0), sd.EDMSDE()]


def _times(T, n=4001):
    """Log-spaced near 0 (where relative accuracy is hardest) plus uniform over (0, T]."""
    return torch.cat([T * torch.logspace(-7, 0, 400, dtype=F64), torch.linspace(0, T, n, dtype=F64)[1:]])


@pytest.mark.parametrize("sde", CLOSED_FORM, ids=lambda s: f"{type(s).__name__}")
def test_derived_marginals_match_closed_forms(sde):
    # The contract: the numerical derivation from drift_coef/diffusion alone agrees with the closed
    # forms to <= 1e-6 relative in float64 over [0, T].
    t = _times(sde.T)
    derived_scale = sd.LinearSDE.scale(sde, t)
    derived_std = sd.LinearSDE.std(sde, t)
    assert torch.allclose(derived_scale, sde.scale(t), rtol=1e-6, atol=0)
    assert torch.allclose(derived_std, sde.std(t), rtol=1e-6, atol=0)
    # At t = 0 the law is the data itself.
    zero = torch.zeros(1, dtype=F64)
    assert float(sde.std(zero)) == 0.0 and abs(float(sd.LinearSDE.std(sde, zero))) < 1e-12
    assert float(sde.scale(zero)) == 1.0


def test_closed_forms_match_math_notes():
    # VE std is the exact law sqrt(sigma(t)^2 - sigma_min^2), not score_sde_pytorch's sigma(t).
    ve, vp, subvp = sd.VESDE(), sd.VPSDE(), sd.SubVPSDE()
    t = torch.tensor([0.1, 0.5, 1.0], dtype=F64)
    sigma = 0.01 * (50 / 0.01) ** t
    assert torch.allclose(ve.std(t), (sigma**2 - 0.01**2).sqrt(), rtol=1e-12)
    B = 0.1 * t + 0.5 * t**2 * 19.9
    assert torch.allclose(vp.scale(t), torch.exp(-B / 2), rtol=1e-12)
    assert torch.allclose(vp.std(t), (1 - torch.exp(-B)).sqrt(), rtol=1e-12)
    assert torch.allclose(subvp.std(t), 1 - torch.exp(-B), rtol=1e-12)
    # g^2 = d sigma^2/dt - 2 f sigma^2 for every linear SDE (variance ODE v' = 2 f v + g^2), by central
    # differences at times tc whose neighbours tc ± h stay inside [0, T] (where std is defined).
    h = 1e-6
    tc = t - h
    for sde in (ve, vp, subvp):
        v = lambda u: sde.std(u) ** 2  # noqa: E731
        dv = (v(tc + h) - v(tc - h)) / (2 * h)
        g2 = sde.diffusion(tc) ** 2
        assert torch.allclose(dv - 2 * sde.drift_coef(tc) * v(tc), g2, rtol=1e-6)


def _quad_marginals(f, g, t):
    """Independent reference: scipy adaptive quadrature of s(t) = exp(∫f) and σ² = s² ∫ g²/s²."""
    F = lambda u: integrate.quad(f, 0, u, epsabs=1e-14, epsrel=1e-13)[0]  # noqa: E731
    V = integrate.quad(lambda u: g(u) ** 2 * math.exp(-2 * F(u)), 0, t, epsabs=1e-14, epsrel=1e-13)[0]
    s = math.exp(F(t))
    return s, s * math.sqrt(V)


def test_user_linear_sde_matches_independent_quadrature():
    sde = Wiggly(T=1.5)
    f = lambda u: -1.5 + math.sin(3 * u)  # noqa: E731
    g = lambda u: 0.3 + u**2 + 0.2 * math.cos(5 * u)  # noqa: E731
    ts = [1e-4, 0.01, 0.3, 0.77, 1.2, 1.5]
    t = torch.tensor(ts, dtype=F64)
    scale, std = sde.scale(t), sde.std(t)
    for i, u in enumerate(ts):
        s_ref, std_ref = _quad_marginals(f, g, u)
        assert abs(float(scale[i]) / s_ref - 1) < 1e-8
        assert abs(float(std[i]) / std_ref - 1) < 1e-6
    # drift is f(t) x, derived from drift_coef.
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sde.drift(x, t), (-1.5 + torch.sin(3 * t))[:, None] * x)


def _euler_chain_moments(sde, t_end, dt):
    """Exact mean factor and variance of the Euler–Maruyama chain x <- (1 + f h) x + g sqrt(h) z up to t_end."""
    n = round(t_end / dt)
    grid = torch.arange(n, dtype=F64) * dt
    f, g = sde.drift_coef(grid), sde.diffusion(grid)
    m, v = 1.0, 0.0
    for fi, gi in zip(f.tolist(), g.tolist()):
        m, v = (1 + fi * dt) * m, (1 + fi * dt) ** 2 * v + gi * gi * dt
    return m, v


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(0.01, 5.0), Wiggly()],
                         ids=lambda s: type(s).__name__)
@pytest.mark.slow
def test_forward_simulation_matches_marginal(sde):
    # Simulate the forward SDE with torchsde from a fixed x0 and compare the Monte Carlo mean and variance at
    # several times with marginal(x0, t). Tolerance: 4 standard errors plus Euler–Maruyama's own bias, which is
    # known exactly for a linear SDE from the chain's moment recursion (it is O(dt) and small at dt = 1e-3).
    gen = torch.Generator().manual_seed(1)
    n, d, dt = 1000, 4, 1e-3
    x0 = torch.tensor([1.0, -0.5, 2.0, 0.0], dtype=F64).expand(n, d).contiguous()
    times = [0.0, 0.25, 0.6, sde.T]
    xs = sde.simulate(x0, times, dt=dt, generator=gen)
    for i, t in enumerate(times[1:], start=1):
        tt = torch.full((1,), t, dtype=F64)
        mean, std = sde.marginal(x0[:1], tt)
        var = float(std[0]) ** 2
        chain_m, chain_v = _euler_chain_moments(sde, t, dt)
        mean_bias = (chain_m * x0[0] - mean[0]).abs()
        var_bias = abs(chain_v - var)
        sample_mean, sample_var = xs[i].mean(0), xs[i].var(0)
        assert torch.all((sample_mean - mean[0]).abs() <= 4 * math.sqrt(chain_v / n) + mean_bias)
        assert torch.all((sample_var - var).abs() <= 4 * chain_v * math.sqrt(2 / (n - 1)) + var_bias)
        # The discretisation bias itself is small: the derived marginal is what the SDE converges to.
        assert var_bias <= 0.02 * var


def test_transition_and_discretize_give_ddpm_and_smld():
    vp = sd.VPSDE()
    times, a, b = vp.discretize(1000)
    # DDPM: alpha_i + beta_i = 1 with sqrt(alpha_i) = a_i and beta_i = b_i^2 (exact for VP).
    assert torch.allclose(a**2 + b**2, torch.ones_like(a), atol=1e-14)
    # With beta(t) = N * beta_{tN}, the default VP is DDPM's linear schedule 1e-4 -> 0.02. The exact kernel
    # has b^2 = 1 - exp(-∫beta) = beta_mid/N + O((beta/N)^2), and DDPM's grid is offset from the midpoints by
    # at most one step of beta: |difference| <= (0.02)^2/2 + 19.9/1000^2.
    betas = sd.ddpm_betas(1000, "linear")
    assert (b**2 - betas).abs().max() <= 0.02**2 / 2 + 19.9 / 1000**2
    # SNR of the chain equals the SDE's snr at the grid: prod (1 - beta_i) = s(t_N)^2.
    assert torch.allclose(sd.discrete_snr(b**2), vp.snr(times[1:]), rtol=1e-10)
    # SMLD/NCSN: a = 1 and b^2 = sigma_{i+1}^2 - sigma_i^2 exactly.
    ve = sd.VESDE()
    times, a, b = ve.discretize(10)
    sigma = 0.01 * (5000.0 ** times)
    assert torch.allclose(a, torch.ones_like(a))
    assert torch.allclose(b**2, sigma[1:] ** 2 - sigma[:-1] ** 2, rtol=1e-10)
    # The general kernel composes: two half steps equal one step.
    sub = sd.SubVPSDE()
    t0, t1, t2 = (torch.tensor([v], dtype=F64) for v in (0.2, 0.5, 0.9))
    a01, b01 = sub.transition(t0, t1)
    a12, b12 = sub.transition(t1, t2)
    a02, b02 = sub.transition(t0, t2)
    assert torch.allclose(a01 * a12, a02) and torch.allclose((a12 * b01) ** 2 + b12**2, b02**2)


def test_discrete_schedules():
    cos = sd.ddpm_betas(1000, "cosine")
    s = 0.008
    t = torch.linspace(0, 1, 1001, dtype=F64)
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f[1:] / f[0]
    ok = cos < 0.999  # unclipped entries reproduce the cosine ᾱ exactly
    assert torch.allclose(sd.alphas_cumprod(cos)[ok], alpha_bar[ok], rtol=1e-10)
    assert cos.max() <= 0.999
    sig = sd.ncsn_sigmas(10, 0.01, 50.0)
    ratios = sig[1:] / sig[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios)) and sig[0] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="schedule"):
        sd.ddpm_betas(10, "quadratic")


def test_log_snr_inverse():
    for sde in (sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(), Wiggly()):
        t = torch.tensor([1e-3, 0.1, 0.5, 0.99], dtype=F64)
        back = sde.time_from_log_snr(sde.log_snr(t))
        assert torch.allclose(back, t, rtol=1e-8, atol=1e-12)


def test_prior():
    gen = torch.Generator().manual_seed(3)
    for sde in (sd.VPSDE(), sd.VESDE(), Wiggly()):
        z = sde.prior_sample((4000, 3), generator=gen, dtype=F64)
        sigma = float(sde.std(torch.tensor([sde.T], dtype=F64)))
        assert sde.prior_std() == pytest.approx(sigma)
        # sample std within 4 standard errors (SE of a std estimate ≈ sigma / sqrt(2 n)).
        assert abs(float(z.std()) - sigma) < 4 * sigma / math.sqrt(2 * z.numel())
        from scipy.stats import norm

        ref = norm.logpdf(z[:5].numpy(), scale=sigma).sum(1)
        assert np.allclose(sde.prior_log_prob(z[:5]).numpy(), ref, rtol=1e-12)


def test_reverse_and_probability_flow_drifts():
    sde = sd.SubVPSDE()
    score = lambda x, t: -x * (1 + t[:, None])  # noqa: E731
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.rand(5, dtype=F64, generator=torch.Generator().manual_seed(1))
    g2 = sde.diffusion(t)[:, None] ** 2
    assert torch.allclose(sde.reverse(score).drift(x, t), sde.drift(x, t) - g2 * score(x, t))
    assert torch.allclose(sde.probability_flow(score).drift(x, t), sde.drift(x, t) - 0.5 * g2 * score(x, t))
    with pytest.raises(ValueError, match="shape"):
        sde.reverse(lambda x, t: x[:, :1]).drift(x, t)


class Negative(sd.LinearSDE):
    def drift_coef(self, t):
        return torch.zeros_like(t)

    def diffusion(self, t):
        return 1.0 - 2 * t  # negative for t > 1/2


class Silent(Negative):
    def diffusion(self, t):
        return torch.zeros_like(t)


def test_bad_input_errors():
    sde = sd.VPSDE()
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(4,\).*got t of shape \(3,\)"):
        sde.marginal(x, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match=r"got t of shape \(4, 1\)"):
        sde.drift(x, torch.zeros(4, 1, dtype=F64))
    with pytest.raises(ValueError, match="non-negative"):
        Negative().std(torch.tensor([0.5], dtype=F64))
    with pytest.raises(ValueError, match="adds no noise"):
        Silent().std(torch.tensor([0.5], dtype=F64))
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        sd.VESDE(sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="T must be"):
        sd.VPSDE(T=-1.0)
    # An integer x0 raised torch's NotImplementedError from randn.
    with pytest.raises(TypeError, match=r"x0 must be a floating-point tensor .* got dtype torch.int64 \(cast it"):
        sde.sample_marginal(torch.zeros(4, 2, dtype=torch.long), torch.full((4,), 0.5))


# -- the schedules of other libraries as linear SDEs -----------------------------------------------------------
NEW = {"edm": sd.EDMSDE(), "rectified_flow": sd.RectifiedFlowSDE(), "cosine_vp": sd.CosineVPSDE(),
       "discrete_vp": sd.DiscreteVPSDE(betas=sd.ddpm_betas(1000))}
#: Every registered SDE, built by its own example (the registry drives the contract, not a hand-written list).
REGISTERED = {name: registered_example(sd.SDES, name) for name in sd.SDES.names()}


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_every_registered_sde_solves_its_own_moment_equations(name):
    """s' = f s and (σ²)' = 2 f σ² + g² (the moment equations of dx = f x dt + g dw), by central differences of
    the closed forms at interior points away from the knots of the discrete table; s(0) = 1, σ(0) = 0."""
    sde = REGISTERED[name]
    t = torch.linspace(0.05, 0.9, 37, dtype=F64) * sde.T
    if name == "discrete_vp":
        t = (torch.floor(t * 1000) + 0.5) / 1000            # mid-segment: f is constant around these points
    h = 1e-6 * sde.T
    s, sigma = sde.scale(t), sde.std(t)
    ds = (sde.scale(t + h) - sde.scale(t - h)) / (2 * h)
    dvar = (sde.std(t + h) ** 2 - sde.std(t - h) ** 2) / (2 * h)
    f, g = sde.drift_coef(t), sde.diffusion(t)
    torch.testing.assert_close(ds, f * s, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(dvar, 2 * f * sigma**2 + g**2, rtol=1e-6, atol=1e-9)
    zero = torch.zeros(1, dtype=F64)
    # score_sde_pytorch's VE starts from the data already noised by σ_min (sd.ScoreSDEVESDE), the others at the data
    std0 = sde.sigma_min if isinstance(sde, sd.ScoreSDEVESDE) else 0.0
    assert float(sde.scale(zero)) == 1.0 and float(sde.std(zero)) == pytest.approx(std0, rel=1e-15)
    assert name in sd.SDES


@pytest.mark.parametrize("name", ["rectified_flow", "cosine_vp"])
def test_derived_marginals_of_the_singular_paths(name):
    """f diverges at t → 1 for these two, so the generic quadrature (made for smooth coefficients) matches the
    closed forms to 1e-6 on [0, 0.9] only; its error grows to ~2e-4 at t = 0.99. The closed forms are used."""
    sde = NEW[name]
    t = _times(0.9)
    torch.testing.assert_close(sd.LinearSDE.scale(sde, t), sde.scale(t), rtol=1e-6, atol=0)
    torch.testing.assert_close(sd.LinearSDE.std(sde, t), sde.std(t), rtol=1e-6, atol=0)


def test_discrete_vp_matches_the_table_and_converts_timesteps():
    betas = sd.ddpm_betas(1000)
    sde = sd.DiscreteVPSDE(betas=betas)
    abar = sd.alphas_cumprod(betas)
    n = torch.arange(1000, dtype=F64)
    t_n = sde.timestep_to_time(n)
    torch.testing.assert_close(t_n, (n + 1) / 1000)
    torch.testing.assert_close(sde.scale(t_n) ** 2, abar.to(F64), rtol=1e-12, atol=0)
    torch.testing.assert_close(sde.std(t_n) ** 2, 1 - abar.to(F64), rtol=1e-10, atol=0)
    torch.testing.assert_close(sde.time_to_timestep(t_n), n)
    same = sd.DiscreteVPSDE(alphas_cumprod=abar)
    torch.testing.assert_close(same.scale(t_n), sde.scale(t_n))
    # log s is linear between knots: at a midpoint it is the mean of its neighbours' values.
    mid = (t_n[:-1] + t_n[1:]) / 2
    torch.testing.assert_close(torch.log(sde.scale(mid)), 0.25 * (torch.log(abar[:-1]) + torch.log(abar[1:])).to(F64))
    # The generic derivation integrates piecewise-constant coefficients across kinks: 1e-3 relative.
    t = _times(1.0)
    torch.testing.assert_close(sd.LinearSDE.std(sde, t)[1:], sde.std(t)[1:], rtol=1e-3, atol=0)
    with pytest.raises(ValueError, match="exactly one"):
        sd.DiscreteVPSDE()
    with pytest.raises(ValueError, match="strictly decreasing"):
        sd.DiscreteVPSDE(alphas_cumprod=[0.9, 0.95])


@pytest.mark.parametrize("name", sorted(NEW))
def test_samplers_reproduce_the_oracle_on_the_new_sdes(name):
    """DPM-Solver++ and the reverse SDE with the oracle's exact score sample the eight Gaussians on each new SDE
    (the check of tests/helpers.py assert_oracle_law). On EDM's t = σ ∈ [0.002, 80] a uniform grid wastes its steps
    at large σ, so there both run on EDM's ρ = 7 grid, as EDM does."""
    from helpers import assert_oracle_law

    sde, gmm = NEW[name], sd.eight_gaussians()
    eps, grid = (sde.sigma_min, "edm") if name == "edm" else (1e-3, "uniform")
    for sampler in (sd.DPMSolver(25, order=2, eps=eps),
                    sd.ReverseSDESampler(steps=300, backend="native", eps=eps, grid=grid)):
        res = sampler.sample(sde, gmm.score(sde), (1000, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
        assert_oracle_law(res.x, gmm, key="8g")


def test_continuous_cosine_matches_the_discrete_cosine_table():
    """Nichol & Dhariwal's discrete table (sd.ddpm_betas(N, "cosine")) as DiscreteVPSDE and the continuous
    CosineVPSDE agree at the timesteps t_n = (n + 1)/N up to T (before the table's β clipping at 0.999)."""
    betas = sd.ddpm_betas(1000, "cosine")
    discrete, continuous = sd.DiscreteVPSDE(betas=betas), sd.CosineVPSDE()
    t = (torch.arange(1000, dtype=F64) + 1) / 1000
    t = t[t <= continuous.T]
    torch.testing.assert_close(continuous.scale(t), discrete.scale(t), rtol=1e-12, atol=0)
    torch.testing.assert_close(continuous.std(t), discrete.std(t), rtol=1e-10, atol=0)
