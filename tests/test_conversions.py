"""Conversions between score, ε, x0 and v, Tweedie's denoiser and the intermediate-state denoiser E[X_u | X_t],
checked against identities and against the Gaussian mixture's closed-form posterior means."""
import math

import pytest
import torch

import scoresde as sd
from scoresde import conversions as cv

F64 = torch.float64


class Wavy(sd.LinearSDE):
    """A user linear SDE with no closed-form marginals (drift and diffusion vary in time)."""

    def drift_coef(self, t):
        return -0.5 - 0.4 * torch.cos(3 * t)

    def diffusion(self, t):
        return 0.3 + 1.2 * t + 0.2 * torch.sin(5 * t)


SDES = {"VP": sd.VPSDE(), "VE": sd.VESDE(sigma_max=20.0), "subVP": sd.SubVPSDE(), "user": Wavy()}


def mixture():
    g = torch.Generator().manual_seed(3)
    means = 1.5 * torch.randn((3, 4), generator=g, dtype=F64)
    stds = 0.2 + 0.5 * torch.rand((3, 4), generator=g, dtype=F64)
    return sd.GaussianMixture(means, stds, torch.tensor([0.2, 0.3, 0.5], dtype=F64))


def exact_mean_of_earlier_state(gmm, sde, x, t, u):
    """E[X_u | X_t = x] for the mixture, from the joint Gaussian of each component (independent of the score).

    Component k: X_u ~ N(m, V) with m = s(u) μ_k, V = s(u)² c_k² + σ(u)² (diagonal); X_t = a X_u + b z, so
    E[X_u | X_t = x, k] = m + a V/(a² V + b²) (x − a m); the responsibilities are those of p_t at x.
    """
    a, b = sde.transition(u, t)
    su, sigu = sde.scale(u), sde.std(u)
    m = su[:, None, None] * gmm.means[None]                                    # (B, K, D)
    V = su[:, None, None] ** 2 * gmm.stds[None] ** 2 + sigu[:, None, None] ** 2
    a, b = a[:, None, None], b[:, None, None]
    mean_t, var_t = a * m, a * a * V + b * b
    log_comp = (torch.log(gmm.weights)[None] - 0.5 * (((x[:, None] - mean_t) ** 2 / var_t)
                                                       + torch.log(2 * math.pi * var_t)).sum(-1))
    resp = torch.softmax(log_comp, dim=1)                                      # (B, K)
    cond = m + a * V / var_t * (x[:, None] - mean_t)
    return (resp[..., None] * cond).sum(1)


@pytest.mark.parametrize("name", list(SDES))
def test_tweedie_and_intermediate_denoiser_match_the_mixture_posterior(name):
    sde, gmm = SDES[name], mixture()
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.05, 0.3, 0.6, 0.9, 1.0], dtype=F64)
    x0 = gmm.sample(5, g)
    x = sde.sample_marginal(x0, t, generator=g)[0]
    score = gmm.score(sde)
    # Tweedie (u = 0) and three intermediate times u < t.
    zero = torch.zeros_like(t)
    torch.testing.assert_close(cv.denoise(sde, score, x, t), exact_mean_of_earlier_state(gmm, sde, x, t, zero),
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sd.tweedie_denoise(sde, score, x, t), gmm.denoiser(sde)(x, t))
    for frac in (0.1, 0.5, 0.9):
        u = frac * t
        torch.testing.assert_close(cv.denoise_to(sde, score, x, t, u), exact_mean_of_earlier_state(gmm, sde, x, t, u),
                                   rtol=1e-9, atol=1e-9)
        # And back: the score from E[X_u | X_t].
        a, b = sde.transition(u, t)
        x_u = cv.denoise_to(sde, score, x, t, u)
        torch.testing.assert_close(cv.intermediate_to_score(x, x_u, a[:, None], b[:, None]), score(x, t),
                                   rtol=1e-8, atol=1e-8)


def test_denoise_to_time_zero_is_tweedie():
    sde, gmm = sd.VPSDE(), mixture()
    x = torch.randn(6, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    t = torch.full((6,), 0.4, dtype=F64)
    torch.testing.assert_close(cv.denoise_to(sde, gmm.score(sde), x, t, 0.0), cv.denoise(sde, gmm.score(sde), x, t))


def test_elementwise_conversions_are_consistent():
    g = torch.Generator().manual_seed(2)
    x0, z = torch.randn(8, 3, dtype=F64, generator=g), torch.randn(8, 3, dtype=F64, generator=g)
    s = 0.2 + torch.rand(8, 1, dtype=F64, generator=g)
    sigma = 0.05 + 2 * torch.rand(8, 1, dtype=F64, generator=g)
    x = s * x0 + sigma * z
    # The conditional score of x_t given x0 is −z/σ: every prediction of it maps back to it.
    score = -z / sigma
    torch.testing.assert_close(cv.score_to_eps(score, sigma), z)
    torch.testing.assert_close(cv.score_to_x0(x, score, s, sigma), x0)
    torch.testing.assert_close(cv.x0_to_score(x, x0, s, sigma), score)
    torch.testing.assert_close(cv.eps_to_score(z, sigma), score)
    # v = ᾱ z − σ̄ x0 by definition; ε = σ̄ x̄ + ᾱ v recovers z exactly.
    norm = torch.sqrt(s * s + sigma * sigma)
    v = (s / norm) * z - (sigma / norm) * x0
    torch.testing.assert_close(cv.score_to_v(x, score, s, sigma), v)
    torch.testing.assert_close(cv.v_to_eps(x, v, s, sigma), z)
    torch.testing.assert_close(cv.v_to_score(x, v, s, sigma), score)
    a, b = 0.7, 0.4
    torch.testing.assert_close(cv.intermediate_to_score(x, cv.to_intermediate(x, score, a, b), a, b), score)


def test_scale_std_keeps_the_dtype_and_broadcasts():
    x = torch.zeros(3, 2, 4, 4, dtype=torch.float32)
    s, sigma = cv.scale_std(sd.VPSDE(), torch.tensor([0.1, 0.5, 1.0]), x)
    assert s.shape == sigma.shape == (3, 1, 1, 1) and s.dtype == sigma.dtype == torch.float32
