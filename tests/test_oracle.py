"""The Gaussian-mixture oracle: density, score, samples, and its push-forward through linear SDEs."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import scoresde as sd

F64 = torch.float64


def _mixture(dim=3, k=4, seed=0, diagonal=True):
    gen = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(k, dim, generator=gen, dtype=F64)
    stds = 0.2 + torch.rand((k, dim) if diagonal else (k,), generator=gen, dtype=F64)
    weights = 0.5 + torch.rand(k, generator=gen, dtype=F64)
    return sd.GaussianMixture(means, stds, weights)


def test_log_prob_matches_scipy():
    gmm = _mixture()
    x = torch.randn(7, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    ref = 0
    for w, m, s in zip(gmm.weights.numpy(), gmm.means.numpy(), gmm.stds.numpy()):
        ref = ref + w * multivariate_normal(m, np.diag(s**2)).pdf(x.numpy())
    assert np.allclose(gmm.log_prob(x).numpy(), np.log(ref), rtol=1e-12)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()], ids=lambda s: type(s).__name__)
def test_log_prob_t_is_the_pushed_mixture(sde):
    gmm = _mixture(diagonal=False)
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.0, 1e-4, 0.1, 0.4, 0.8, 1.0], dtype=F64)
    lp = gmm.log_prob_t(sde, x, t)
    # Independent construction with scipy: component k at time t is N(s mu_k, (s^2 c_k^2 + sigma^2) I).
    for i in range(6):
        s, sig = float(sde.scale(t[i : i + 1])), float(sde.std(t[i : i + 1]))
        dens = sum(
            float(w) * multivariate_normal(s * m.numpy(), (s**2 * float(c) ** 2 + sig**2) * np.eye(3)).pdf(x[i].numpy())
            for w, m, c in zip(gmm.weights, gmm.means, gmm.stds[:, 0])
        )
        assert float(lp[i]) == pytest.approx(math.log(dens), rel=1e-10)
    # At t = 0 the pushed density is the data density.
    zero = torch.zeros(6, dtype=F64)
    assert torch.allclose(gmm.log_prob_t(sde, x, zero), gmm.log_prob(x), rtol=1e-13)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()], ids=lambda s: type(s).__name__)
def test_score_is_gradient_of_log_prob_t(sde):
    gmm = _mixture()
    gen = torch.Generator().manual_seed(3)
    x = 3 * torch.randn(16, 3, dtype=F64, generator=gen)
    t = torch.rand(16, dtype=F64, generator=gen).clamp_min(1e-4)
    x.requires_grad_(True)
    grad, = torch.autograd.grad(gmm.log_prob_t(sde, x, t).sum(), x)
    assert torch.allclose(gmm.score(sde)(x.detach(), t), grad, rtol=1e-10, atol=1e-12)


def test_denoiser_is_tweedie():
    # For a single Gaussian N(m, c^2) under any linear SDE, E[x0 | x_t] is the linear-Gaussian posterior mean
    # m + s c^2 / (s^2 c^2 + sigma^2) (x_t - s m).
    gmm = sd.GaussianMixture(torch.tensor([[1.0, -2.0]], dtype=F64), torch.tensor([0.7], dtype=F64))
    sde = sd.SubVPSDE()
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    t = torch.full((5,), 0.3, dtype=F64)
    s, sig = sde.scale(t)[:, None], sde.std(t)[:, None]
    expected = gmm.means + s * 0.49 / (s**2 * 0.49 + sig**2) * (x - s * gmm.means)
    assert torch.allclose(gmm.denoiser(sde)(x, t), expected, rtol=1e-12)


def test_sample_moments():
    gmm = _mixture(dim=2, k=3, seed=5)
    n = 20000
    x = gmm.sample(n, torch.Generator().manual_seed(6))
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    second = (gmm.weights[:, None] * (gmm.means**2 + gmm.stds**2)).sum(0)
    var = second - mean**2
    # sample mean within 4 standard errors; the mixture variance as well (SE of a variance ≈ sqrt(m4 - var^2)/√n,
    # bounded here by 2 * second / √n via m4 ≤ 3 E[x^4]-style moments of a Gaussian mixture).
    assert torch.all((x.mean(0) - mean).abs() < 4 * (var / n).sqrt())
    m4 = (gmm.weights[:, None] * ((gmm.means - mean) ** 4 + 6 * (gmm.means - mean) ** 2 * gmm.stds**2
                                  + 3 * gmm.stds**4)).sum(0)
    assert torch.all((x.var(0) - var).abs() < 4 * ((m4 - var**2) / n).sqrt())


def test_device_and_dtype_follow_input():
    gmm = sd.eight_gaussians()
    x32 = torch.randn(4, 2)
    t32 = torch.full((4,), 0.5)
    out = gmm.score(sd.VPSDE())(x32, t32)
    assert out.dtype == torch.float32 and out.shape == (4, 2)
    assert gmm.to(dtype=torch.float32).sample(3).dtype == torch.float32


def test_bad_input():
    with pytest.raises(ValueError, match=r"means must have shape \(K, D\)"):
        sd.GaussianMixture(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="stds must have shape"):
        sd.GaussianMixture(torch.zeros(3, 2), torch.ones(2))
    with pytest.raises(ValueError, match="weights must have shape"):
        sd.GaussianMixture(torch.zeros(3, 2), torch.ones(3), torch.ones(4))
    gmm = sd.eight_gaussians()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        gmm.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="shape"):
        gmm.log_prob_t(sd.VPSDE(), torch.zeros(4, 2), torch.zeros(5))


def test_energy_distance_against_closed_form():
    # 1-D N(0,1) vs N(mu,1): D = 2 E|N(mu,2)| - 2 E|N(0,2)|, with E|N(m, v)| = sqrt(2v/pi) exp(-m^2/2v)
    # + m (1 - 2 Phi(-m/sqrt v)). The U-statistic is unbiased: the mean of repeats is within 4 SE of D.
    mu = 0.5
    v = 2.0
    phi = 0.5 * (1 + math.erf(-mu / math.sqrt(v) / math.sqrt(2)))
    e_xy = math.sqrt(2 * v / math.pi) * math.exp(-mu**2 / (2 * v)) + mu * (1 - 2 * phi)
    truth = 2 * e_xy - 2 * math.sqrt(2 * v / math.pi)
    gen = torch.Generator().manual_seed(7)
    vals = torch.stack([sd.energy_distance(torch.randn(500, 1, generator=gen, dtype=F64),
                                           mu + torch.randn(500, 1, generator=gen, dtype=F64)) for _ in range(30)])
    assert abs(float(vals.mean()) - truth) < 4 * float(vals.std()) / math.sqrt(30)


# -- full covariances and the exact posterior ------------------------------------------------------------------
def _full_mixture(dim=3, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    L = torch.randn(k, dim, dim, generator=gen, dtype=F64)
    cov = 0.3 * L @ L.transpose(1, 2) + 0.05 * torch.eye(dim, dtype=F64)
    means = 2 * torch.randn(k, dim, generator=gen, dtype=F64)
    return sd.GaussianMixture(means, weights=[0.2, 0.3, 0.5][:k], covariances=cov)


def test_full_covariance_density_matches_scipy():
    gmm = _full_mixture()
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    ref = sum(w * multivariate_normal(m, c).pdf(x.numpy()) for w, m, c in
              zip(gmm.weights.numpy(), gmm.means.numpy(), gmm.covariances.numpy()))
    assert np.allclose(gmm.log_prob(x).numpy(), np.log(ref), rtol=1e-12)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE(), sd.EDMSDE()], ids=lambda s: type(s).__name__)
def test_full_covariance_pushed_density_and_score(sde):
    """p_t = Σ w_k N(s μ_k, s² Σ_k + σ² I) (scipy), and the score is the autograd gradient of log p_t."""
    gmm = _full_mixture()
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.01, 0.1, 0.3, 0.6, 0.9], dtype=F64) * sde.T
    lp = gmm.log_prob_t(sde, x, t)
    for i in range(5):
        s, sig = float(sde.scale(t[i:i + 1])), float(sde.std(t[i:i + 1]))
        dens = sum(w * multivariate_normal(s * m, s * s * c + sig ** 2 * np.eye(3)).pdf(x[i].numpy())
                   for w, m, c in zip(gmm.weights.numpy(), gmm.means.numpy(), gmm.covariances.numpy()))
        assert float(lp[i]) == pytest.approx(math.log(dens), rel=1e-11)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob_t(sde, xr, t).sum(), xr)
    torch.testing.assert_close(gmm.score(sde)(x, t), grad, rtol=1e-10, atol=1e-12)


def test_full_covariance_samples_have_the_mixture_moments():
    gmm = _full_mixture()
    n = 100_000
    x = gmm.sample(n, torch.Generator().manual_seed(3))
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    second = (gmm.weights[:, None, None] * (gmm.covariances + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0)
    cov = second - torch.outer(mean, mean)
    assert bool(((x.mean(0) - mean).abs() < 5 * (torch.diagonal(cov) / n).sqrt()).all())
    se = ((cov ** 2 + torch.outer(torch.diagonal(cov), torch.diagonal(cov))) / n).sqrt()
    # the mixture's fourth moments make the covariance's spread larger than the Gaussian one: 10 SE is a loose bound
    assert bool(((torch.cov(x.T) - cov).abs() < 10 * se).all())


def test_diagonal_covariances_give_the_diagonal_mixture_exactly():
    gmm = _mixture(diagonal=True)
    full = sd.GaussianMixture(gmm.means, weights=gmm.weights, covariances=torch.diag_embed(gmm.stds ** 2))
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    t = torch.full((6,), 0.3, dtype=F64)
    torch.testing.assert_close(full.log_prob(x), gmm.log_prob(x), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(full.score(sd.VPSDE())(x, t), gmm.score(sd.VPSDE())(x, t), rtol=1e-12, atol=1e-12)


def _grid_posterior(prior, log_lik, lo=-5.0, hi=5.0, n=801):
    u = torch.linspace(lo, hi, n, dtype=F64)
    X, Y = torch.meshgrid(u, u, indexing="ij")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)
    lp = prior.log_prob(pts) + log_lik(pts)
    return pts, (lp - torch.logsumexp(lp, 0) - 2 * math.log(float(u[1] - u[0]))).exp()


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["isotropic", "general"])
def test_posterior_equals_a_brute_force_grid_posterior(noise):
    """p(x₀ | y) ∝ p(y | x₀) p(x₀) on a fine 2-D grid (the Riemann sum's error at spacing 0.0125 is far below
    1e-6 for these smooth densities) against the closed-form mixture."""
    prior = sd.eight_gaussians(std=0.3)
    A = torch.tensor([[1.0, 0.5], [0.2, -0.4]], dtype=F64)
    y = torch.tensor([0.7, -0.3], dtype=F64)
    R = torch.tensor([[0.09, 0.03], [0.03, 0.16]], dtype=F64) if noise == "general" else 0.09 * torch.eye(2, dtype=F64)
    meas = (sd.LinearMeasurement(A, y, noise_cov=R) if noise == "general" else sd.LinearMeasurement(A, y, 0.3))
    Rinv = torch.linalg.inv(R)

    def log_lik(pts):
        r = y - pts @ A.T
        return -0.5 * ((r @ Rinv) * r).sum(1)

    pts, dens = _grid_posterior(prior, log_lik)
    post = prior.posterior(meas)
    assert float((post.log_prob(pts).exp() - dens).abs().max()) < 1e-6 * float(dens.max())
    assert prior.log_evidence(meas) == pytest.approx(
        float(torch.logsumexp(prior.log_prob(pts) + log_lik(pts), 0)) + 2 * math.log(10 / 800)
        - 0.5 * float(torch.logdet(2 * math.pi * R)), abs=1e-6)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=lambda s: type(s).__name__)
def test_posterior_score_is_the_gradient_of_its_density(sde):
    prior = sd.eight_gaussians(std=0.3)
    meas = sd.LinearMeasurement(torch.tensor([[1.0, 0.5]], dtype=F64), torch.tensor([0.7], dtype=F64), 0.2)
    post = prior.posterior(meas)
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    t = torch.linspace(0.05, 0.9, 6, dtype=F64)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(post.log_prob_t(sde, xr, t).sum(), xr)
    torch.testing.assert_close(post.score(sde)(x, t), grad, rtol=1e-10, atol=1e-12)


def test_noiseless_mask_posterior_conditions_each_component():
    """Observing x₁ = 1 exactly: each component's law of x₂ given x₁ (Gaussian conditioning), weights ∝ w_k N(1; μ_k1,
    Σ_k11); the same as the noisy posterior's limit σ_y → 0."""
    cov = torch.tensor([[[1.0, 0.6], [0.6, 0.8]], [[0.5, -0.2], [-0.2, 0.3]]], dtype=F64)
    prior = sd.GaussianMixture(torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=F64), weights=[0.4, 0.6],
                               covariances=cov)
    meas = sd.LinearMeasurement(sd.Mask(torch.tensor([True, False])), torch.tensor([1.0, 0.0], dtype=F64), 0.0)
    post = prior.posterior(meas)
    for k in range(2):
        mu, c = prior.means[k], cov[k]
        assert float(post.means[k, 1]) == pytest.approx(float(mu[1] + c[1, 0] / c[0, 0] * (1 - mu[0])), rel=1e-12)
        assert float(post.covariances[k, 1, 1]) == pytest.approx(float(c[1, 1] - c[1, 0] ** 2 / c[0, 0]), rel=1e-12)
        assert float(post.covariances[k, 0, 0]) == pytest.approx(0, abs=1e-14)
    w = prior.weights * torch.exp(-0.5 * (1 - prior.means[:, 0]) ** 2 / cov[:, 0, 0]) / cov[:, 0, 0].sqrt()
    torch.testing.assert_close(post.weights, w / w.sum(), rtol=1e-12, atol=1e-14)
    x = post.sample(100, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x[:, 0], torch.ones(100, dtype=F64), rtol=0, atol=1e-12)
    nearly = prior.posterior(sd.LinearMeasurement(sd.Mask(torch.tensor([True, False])),
                                                  torch.tensor([1.0, 0.0], dtype=F64), 1e-7))
    torch.testing.assert_close(nearly.means, post.means, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="singular"):
        post.log_prob(x)
    assert bool(torch.isfinite(post.log_prob_t(sd.VPSDE(), x, torch.full((100,), 0.1, dtype=F64))).all())


def test_inflated_posterior_tends_to_the_posterior():
    prior = sd.eight_gaussians(std=0.3)
    meas = sd.LinearMeasurement(torch.tensor([[1.0, 0.5]], dtype=F64), torch.tensor([0.7], dtype=F64), 0.3)
    post, near = prior.posterior(meas), prior.posterior(meas.inflated(1e-5))
    torch.testing.assert_close(near.means, post.means, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(near.weights, post.weights, rtol=1e-8, atol=1e-10)


def test_posterior_keeps_labels_and_refuses_bad_input():
    prior = sd.eight_gaussians(num_classes=4)
    meas = sd.LinearMeasurement(torch.tensor([[1.0, 0.0]], dtype=F64), torch.tensor([2.0], dtype=F64), 0.1)
    assert torch.equal(prior.posterior(meas).labels, prior.labels)
    batched = prior.posterior(sd.LinearMeasurement(torch.tensor([[1.0, 0.0]], dtype=F64), torch.zeros(3, 1), 0.1))
    assert isinstance(batched, sd.PosteriorMixtures) and len(batched) == 3       # one posterior per observation
    assert torch.equal(batched.labels, prior.labels)
    with pytest.raises(ValueError, match="acts on 3 entries"):
        prior.posterior(sd.LinearMeasurement(torch.ones(1, 3, dtype=F64), torch.zeros(1), 0.1))
    with pytest.raises(TypeError, match="LinearMeasurement"):
        prior.posterior("y")
    with pytest.raises(ValueError, match="exactly one of stds"):
        sd.GaussianMixture(torch.zeros(1, 2), stds=[1.0], covariances=torch.eye(2)[None])
    with pytest.raises(ValueError, match="positive semi-definite"):
        sd.GaussianMixture(torch.zeros(1, 2), covariances=-torch.eye(2)[None])
    with pytest.raises(ValueError, match="symmetric"):
        sd.GaussianMixture(torch.zeros(1, 2), covariances=torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match=r"\(K, D, D\) = \(1, 2, 2\)"):
        sd.GaussianMixture(torch.zeros(1, 2), covariances=torch.eye(3)[None])
