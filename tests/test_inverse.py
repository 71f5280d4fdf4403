"""Posterior scores (DPS, ΠGDM, Tweedie-moment), RED and the one entry point, against the exact posterior."""
import math

import pytest
import torch

import scoresde as sd

F64 = torch.float64
SDES = [sd.VPSDE(), sd.VESDE(), sd.EDMSDE(), sd.CosineVPSDE()]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _gaussian(dim=4, full=True, std=0.7, seed=0):
    g = _gen(seed)
    mu = torch.randn(1, dim, dtype=F64, generator=g)
    if not full:
        return sd.GaussianMixture(mu, stds=[std])
    L = torch.randn(dim, dim, dtype=F64, generator=g)
    return sd.GaussianMixture(mu, covariances=(0.3 * L @ L.T + 0.1 * torch.eye(dim, dtype=F64))[None])


def _problems(dim=4, seed=1):
    g = _gen(seed)
    A = torch.randn(2, dim, dtype=F64, generator=g)
    y = torch.randn(2, dtype=F64, generator=g)
    mask = torch.tensor([True, False, True, False])
    y_mask = torch.randn(dim, dtype=F64, generator=g)
    R = torch.tensor([[0.2, 0.05], [0.05, 0.1]], dtype=F64)
    return {"matrix": sd.LinearMeasurement(A, y, 0.3), "matrix_noiseless": sd.LinearMeasurement(A, y, 0.0),
            "mask": sd.LinearMeasurement(sd.Mask(mask), y_mask, 0.3),
            "mask_noiseless": sd.LinearMeasurement(sd.Mask(mask), y_mask, 0.0),
            "general_noise": sd.LinearMeasurement(A, y, noise_cov=R)}


def _points(n=6, dim=4, seed=2, T=1.0):
    g = _gen(seed)
    return torch.randn(n, dim, dtype=F64, generator=g), (0.05 + 0.9 * torch.rand(n, dtype=F64, generator=g)) * T


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("name", ["matrix", "matrix_noiseless", "mask", "mask_noiseless"])
def test_pigdm_is_exact_for_an_isotropic_gaussian_prior(sde, name):
    """For x₀ ~ N(μ, σ_d² I), Cov[x₀ | x_t] = r_t² I exactly, so ΠGDM's score is ∇ log p_t(x | y)."""
    prior = _gaussian(full=False, std=0.7)
    meas = _problems()[name]
    x, t = _points(T=sde.T)
    got = sd.pigdm_score(sde, prior.score(sde), meas, data_std=0.7)(x, t)
    torch.testing.assert_close(got, prior.posterior(meas).score(sde)(x, t), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("name", ["matrix", "matrix_noiseless", "mask", "mask_noiseless", "general_noise"])
def test_tweedie_moment_guidance_is_exact_for_any_gaussian_prior(sde, name):
    """Cov[x₀ | x_t] = (σ²/s) ∂x̂₀/∂x is exact and constant in x for N(μ, Σ): the guided score is the posterior's."""
    prior = _gaussian(full=True)
    meas = _problems()[name]
    x, t = _points(T=sde.T)
    got = sd.tweedie_moment_score(sde, prior.score(sde), meas)(x, t)
    torch.testing.assert_close(got, prior.posterior(meas).score(sde)(x, t), rtol=1e-8, atol=1e-8)


def test_pigdm_is_not_exact_for_a_correlated_prior_but_tweedie_is():
    """The difference the two covariance models make: ΠGDM's r_t² I misses a full Σ."""
    sde, prior, meas = sd.VPSDE(), _gaussian(full=True), _problems()["matrix"]
    x, t = _points(T=sde.T)
    exact = prior.posterior(meas).score(sde)(x, t)
    assert float((sd.pigdm_score(sde, prior.score(sde), meas)(x, t) - exact).abs().max()) > 1e-2


def test_dps_is_the_gradient_of_the_gaussian_residual_through_the_denoiser():
    """For a Gaussian prior x̂₀ = M x + c is affine (M = ∂x̂₀/∂x from the closed form), so DPS is
    score + ζ Mᵀ Aᵀ (y − A x̂₀)/σ_y², and the normalized form score + ζ Mᵀ Aᵀ r/(‖r‖ σ²)."""
    sde, prior, meas = sd.VPSDE(), _gaussian(full=True), _problems()["matrix"]
    A, y = meas.dense()
    x, t = _points(T=sde.T)
    score = prior.score(sde)
    s, sigma = sde.scale(t), sde.std(t)
    cov, mu = prior.covariances[0], prior.means[0]
    for zeta, normalized in ((1.0, False), (0.5, True)):
        got = sd.dps_score(sde, score, meas, scale=zeta, normalized=normalized)(x, t)
        for i in range(len(t)):
            # x̂₀ = μ + s Σ (s² Σ + σ² I)⁻¹ (x − s μ)
            M = s[i] * cov @ torch.linalg.inv(s[i] ** 2 * cov + sigma[i] ** 2 * torch.eye(4, dtype=F64))
            x0 = mu + M @ (x[i] - s[i] * mu)
            r = y - A @ x0
            guidance = M.T @ A.T @ (r / meas.noise_std ** 2 if not normalized else r / (r.norm() * sigma[i] ** 2))
            torch.testing.assert_close(got[i], score(x[i:i + 1], t[i:i + 1])[0] + zeta * guidance, rtol=1e-9,
                                       atol=1e-9)


def test_guided_scores_keep_the_graph_when_the_caller_differentiates():
    """The likelihood differentiates through a score: the guided scores then keep their graph (second order)."""
    sde, prior, meas = sd.VPSDE(), _gaussian(full=True), _problems()["matrix"]
    x, t = _points(T=sde.T)
    exact = prior.posterior(meas).score(sde)
    for build in (sd.pigdm_score, sd.tweedie_moment_score):
        xr = x.clone().requires_grad_(True)
        f = build(sde, prior.score(sde), meas) if build is sd.tweedie_moment_score else build(
            sde, _gaussian(full=False).score(sde), meas, data_std=0.7)
        out = f(xr, t)
        (div,) = torch.autograd.grad(out[:, 0].sum(), xr)
        ref = exact if build is sd.tweedie_moment_score else _gaussian(full=False).posterior(meas).score(sde)
        xr2 = x.clone().requires_grad_(True)
        (div_ref,) = torch.autograd.grad(ref(xr2, t)[:, 0].sum(), xr2)
        torch.testing.assert_close(div, div_ref, rtol=1e-7, atol=1e-8)


def test_sampling_with_the_exact_posterior_score_draws_the_posterior():
    """Any sampler with a posterior score: Tweedie-moment guidance on a 2-D correlated Gaussian prior with SDE-DPM-
    Solver++ draws p(x₀ | y): mean within 5 SE and variance within 5 of its SEs (n = 4000)."""
    sde = sd.VPSDE()
    prior = sd.GaussianMixture(torch.tensor([[0.3, -0.2]], dtype=F64),
                               covariances=torch.tensor([[[0.5, 0.4], [0.4, 0.5]]], dtype=F64))
    meas = sd.LinearMeasurement(torch.tensor([[1.0, 1.0]], dtype=F64), torch.tensor([1.2], dtype=F64), 0.2)
    post = prior.posterior(meas)
    n = 4000
    res = sd.DPMSolverSDE(steps=60).sample(sde, sd.tweedie_moment_score(sde, prior.score(sde), meas), (n, 2), _gen(0),
                                           dtype=F64)
    cov = post.covariances[0]
    assert bool(((res.x.mean(0) - post.means[0]).abs() < 5 * (torch.diagonal(cov) / n).sqrt()).all())
    var_se = torch.diagonal(cov) * math.sqrt(2 / n)
    assert bool(((res.x.var(0) - torch.diagonal(cov)).abs() < 5 * var_se).all())
    assert res.network_evaluations == res.nfe * (meas.m + 2)


@pytest.mark.parametrize("method", ["fixed_point", "gradient"])
@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=lambda s: type(s).__name__)
def test_red_reaches_its_closed_form_fixed_point_for_a_gaussian_prior(method, sde):
    """x* = (AᵀA/σ_y² + λW)⁻¹ (Aᵀy/σ_y² + λWμ) with W = ν² (Σ + ν² I)⁻¹ (x − D(x) = W (x − μ))."""
    prior, meas = _gaussian(full=True), _problems()["matrix"]
    A, y = meas.dense()
    nu, lam = 0.5, 2.0
    cov, mu = prior.covariances[0], prior.means[0]
    W = nu ** 2 * torch.linalg.inv(cov + nu ** 2 * torch.eye(4, dtype=F64))
    target = torch.linalg.solve(A.T @ A / 0.09 + lam * W, A.T @ y / 0.09 + lam * W @ mu)
    res = sd.red(sde, prior.score(sde), meas, nu, shape=(3, 4), lam=lam, iterations=3000, method=method, tol=1e-13,
                 dtype=F64)
    torch.testing.assert_close(res.x, target.expand(3, 4), rtol=1e-7, atol=1e-7)
    assert res.nfe == res.iterations


def test_red_without_noise_satisfies_the_data_exactly():
    prior, meas = _gaussian(full=True), _problems()["matrix_noiseless"]
    A, y = meas.dense()
    res = sd.red(sd.VPSDE(), prior.score(sd.VPSDE()), meas, 0.3, shape=(2, 4), iterations=50, dtype=F64)
    torch.testing.assert_close(res.x @ A.T, y.expand(2, 2), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="noise_std > 0"):
        sd.red(sd.VPSDE(), prior.score(sd.VPSDE()), meas, 0.3, shape=(2, 4), method="gradient")


def test_bad_input_gets_a_clear_error():
    sde, prior, meas = sd.VPSDE(), _gaussian(full=True), _problems()["matrix_noiseless"]
    with pytest.raises(ValueError, match="noise_std > 0"):
        sd.dps_score(sde, prior.score(sde), meas, normalized=False)
    sd.dps_score(sde, prior.score(sde), meas)          # the paper's normalized form needs no σ_y
    with pytest.raises(TypeError, match="LinearMeasurement"):
        sd.pigdm_score(sde, prior.score(sde), torch.ones(2, 4))
    with pytest.raises(ValueError, match="scale must be"):
        sd.dps_score(sde, prior.score(sde), _problems()["matrix"], scale=-1.0)
    with pytest.raises(ValueError, match="samples must have 4 entries"):
        sd.pigdm_score(sde, prior.score(sde), meas)(torch.zeros(2, 3, dtype=F64), torch.full((2,), 0.5, dtype=F64))
    with pytest.raises(ValueError, match="noise level .* above"):
        sd.red(sde, prior.score(sde), meas, 1e6, shape=(2, 4))
    with pytest.raises(ValueError, match="unknown inverse-problem method 'dsp'; valid choices: 'dps'"):
        sd.solve_inverse("dsp", sde, prior.score(sde), meas, (2, 4))
    with pytest.raises(TypeError, match="steps"):
        sd.solve_inverse("pigdm", sde, prior.score(sde), meas, (2, 4), stepz=3)
    with pytest.raises(TypeError, match="Mask"):
        sd.solve_inverse("replacement", sde, prior.score(sde), meas, (2, 4))


#: Small settings of each method (the registry's names drive the test: a method without an entry here fails it).
SMALL = {"dps": dict(steps=3), "pigdm": dict(steps=3), "tweedie_moment": dict(steps=2), "replacement": dict(steps=3),
         "repaint": dict(steps=4, resamplings=2, jump_length=2),
         "split_gibbs": dict(steps=2, iterations=2, rho=1.0, rho_min=0.3), "red": dict(iterations=3)}


@pytest.mark.parametrize("method", sd.INVERSE_METHODS.names())
def test_every_method_runs_on_an_image_problem_with_a_unet(method):
    """(B, 1, 8, 8) digits-sized images, a tiny U-Net score model, the top half observed with noise 0.1."""
    torch.manual_seed(0)
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.nets.UNet(in_channels=1, channels=8, channel_mults=(1, 2)), sde)
    mask = sd.Mask.from_spec("top", (1, 8, 8))
    y = torch.randn(3, 1, 8, 8, generator=_gen(1))
    meas = sd.LinearMeasurement(mask, y, 0.1)
    with torch.no_grad():
        res = sd.solve_inverse(method, sde, model, meas, (3, 1, 8, 8), _gen(2), **SMALL[method])
    assert res.x.shape == (3, 1, 8, 8) and bool(torch.isfinite(res.x).all()) and res.nfe > 0
    if method in ("replacement", "repaint"):
        assert torch.equal(res.x[:, :, :4], y[:, :, :4])
