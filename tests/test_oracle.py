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
