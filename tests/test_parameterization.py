"""ScoreModel: ε / score / x0 / v conversions and preconditioning, checked against the Gaussian-mixture oracle."""
import math

import pytest
import torch

import scoresde as sd


F64 = torch.float64


class UserSDE(sd.LinearSDE):
    """A linear SDE given only by f(t) and g(t), neither VE, VP nor sub-VP."""

    def drift_coef(self, t):
        return -0.8 * t - 0.2

    def diffusion(self, t):
        return 0.4 + 1.5 * t


SDES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(), UserSDE()]
IDS = ["VP", "subVP", "VE", "user"]


def _mixture():
    means = torch.tensor([[1.5, -0.5], [-1.0, 1.0], [0.0, -2.0]], dtype=F64)
    stds = torch.tensor([[0.3, 0.5], [0.6, 0.2], [0.4, 0.4]], dtype=F64)
    return sd.GaussianMixture(means, stds, weights=[0.5, 0.3, 0.2])


def _posterior_mean(gmm, sde, x, t):
    """E[x_0 | x_t] from the mixture posterior directly (not via Tweedie): for component k with prior
    N(μ_k, c_k²) and x_t | x_0 ~ N(s x_0, σ²), E[x_0 | x_t, k] = μ_k + s c_k² (x_t − s μ_k) / (s² c_k² + σ²),
    averaged with the responsibilities r_k ∝ w_k N(x_t; s μ_k, s² c_k² + σ²)."""
    s, sigma = sde.scale(t)[:, None, None], sde.std(t)[:, None, None]
    mu, c2 = gmm.means[None], gmm.stds[None] ** 2
    var = s * s * c2 + sigma * sigma                                            # (B, K, D)
    diff = x[:, None, :] - s * mu
    log_r = torch.log(gmm.weights) - 0.5 * (diff * diff / var + torch.log(2 * math.pi * var)).sum(-1)
    r = torch.softmax(log_r, dim=1)                                             # (B, K)
    comp = mu + s * c2 * diff / var
    return (r[..., None] * comp).sum(1)


def _speeds(sde, t, h=1e-6):
    """(ṡ, σ̇) by central differences of scale and std: independent of drift_coef and diffusion (at t = T the
    difference is taken at T − h, an O(h) = 1e-6 relative offset)."""
    hi = torch.clamp(t + h, max=sde.T)
    lo = hi - 2 * h
    return ((sde.scale(hi) - sde.scale(lo)) / (2 * h), (sde.std(hi) - sde.std(lo)) / (2 * h))


def _targets(gmm, sde, x, t):
    """Exact ε, score, x0, v and the flow velocity u = E[ṡ x_0 + σ̇ z | x_t] at (x, t), built from their
    definitions in shared/MATH.md."""
    s, sigma = sde.scale(t)[:, None], sde.std(t)[:, None]
    x0 = _posterior_mean(gmm, sde, x, t)
    eps = (x - s * x0) / sigma                                                  # E[z | x_t]
    norm = torch.sqrt(s * s + sigma * sigma)
    v = (s / norm) * eps - (sigma / norm) * x0
    s_dot, sigma_dot = (r[:, None] for r in _speeds(sde, t))
    velocity = s_dot * x0 + sigma_dot * eps
    return {"eps": eps, "score": gmm.score_t(sde, x, t), "x0": x0, "v": v, "velocity": velocity}


def _expected_coefficients(sde, t, parameterization, sigma_data):
    """c_in, c_out, c_noise from the ScoreModel docstring, with c_noise computed through log_snr."""
    s, sigma = sde.scale(t), sde.std(t)
    c_in = 1 / torch.sqrt(s * s * sigma_data**2 + sigma * sigma)
    c_noise = -sde.log_snr(t) / 8
    if parameterization == "velocity":             # Var(ṡ x_0 + σ̇ z) per element
        s_dot, sigma_dot = _speeds(sde, t)
        return c_in, torch.sqrt(s_dot**2 * sigma_data**2 + sigma_dot**2), c_noise
    c_out = {"eps": torch.ones_like(s), "score": 1 / sigma, "x0": torch.full_like(s, sigma_data),
             "v": torch.sqrt((s * s + sigma_data**2 * sigma * sigma) / (s * s + sigma * sigma))}[parameterization]
    return c_in, c_out, c_noise


class OracleNet(torch.nn.Module):
    """A 'network' that returns the exact regression target for the (x, t) it is told about, after checking
    that the ScoreModel fed it the documented inputs (c_in x, c_noise)."""

    def __init__(self, target, x, c_in, c_out, c_noise):
        super().__init__()
        self.target, self.x, self.c_in, self.c_out, self.c_noise = target, x, c_in, c_out, c_noise

    def forward(self, x_in, noise):
        torch.testing.assert_close(x_in, self.c_in[:, None] * self.x, rtol=1e-12, atol=0)
        torch.testing.assert_close(noise, self.c_noise, rtol=1e-10, atol=1e-12)
        return self.target / self.c_out[:, None]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("parameterization", sd.PARAMETERIZATIONS.names())
@pytest.mark.parametrize("preconditioning", [True, False])
def test_exact_net_gives_oracle_score_and_denoiser(sde, parameterization, preconditioning):
    gmm = _mixture()
    gen = torch.Generator().manual_seed(0)
    t = torch.cat([torch.tensor([1e-3, 0.01], dtype=F64), 0.02 + 0.98 * torch.rand(62, generator=gen, dtype=F64)])
    x = gmm.marginal(sde, t)[0][:, 0] + sde.std(t)[:, None] * torch.randn(64, 2, generator=gen, dtype=F64)
    x = x + 0.5 * torch.randn(64, 2, generator=gen, dtype=F64)      # also off the bulk of p_t
    targets = _targets(gmm, sde, x, t)
    sigma_data = 0.7
    if preconditioning:
        c_in, c_out, c_noise = _expected_coefficients(sde, t, parameterization, sigma_data)
    else:
        c_in, c_out, c_noise = torch.ones_like(t), torch.ones_like(t), t
    net = OracleNet(targets[parameterization], x, c_in, c_out, c_noise)
    model = sd.ScoreModel(net, sde, parameterization, preconditioning=preconditioning, sigma_data=sigma_data)
    # float64 throughout: the only errors are rounding, amplified at most by 1/σ² ≈ 1e6 at t = 1e-3 (VP). The
    # velocity target uses finite-difference speeds (absolute error ~1e-11), which the conversion amplifies by
    # 2/g(t)² (1e5 for sub-VP at t = 1e-3, where g² ≈ 2β²t): 1e-5 there.
    tol = 1e-5 if parameterization == "velocity" else 1e-7
    torch.testing.assert_close(model(x, t), targets["score"], rtol=tol, atol=tol)
    torch.testing.assert_close(model.denoise(x, t), targets["x0"], rtol=tol, atol=tol / 100)
    torch.testing.assert_close(model.denoise(x, t), gmm.denoiser(sde)(x, t), rtol=tol, atol=tol / 100)
    torch.testing.assert_close(model.eps(x, t), targets["eps"], rtol=tol, atol=tol / 100)
    c = model.coefficients(x, t)
    torch.testing.assert_close(c.c_out, c_out, rtol=1e-6 if parameterization == "velocity" else 1e-10, atol=0)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("parameterization", sd.PARAMETERIZATIONS.names())
def test_preconditioning_gives_unit_variance_input_and_target(sde, parameterization):
    # For data N(0, σ_d² I): Var(c_in x_t) = 1 and the net's regression target (prediction / c_out) has unit
    # variance. Monte Carlo over n = 40000 draws: the standard error of a sample variance of a unit Gaussian is
    # √(2/n) ≈ 0.007, so 0.04 is more than 5 standard errors.
    sigma_data, n = 0.6, 40000
    gen = torch.Generator().manual_seed(1)
    model = sd.ScoreModel(torch.nn.Identity(), sde, parameterization, sigma_data=sigma_data)
    for t_value in (1e-3, 0.1, 0.5, 1.0):
        t = torch.tensor([t_value], dtype=F64)
        x0 = sigma_data * torch.randn(n, 1, generator=gen, dtype=F64)
        z = torch.randn(n, 1, generator=gen, dtype=F64)
        s, sigma = sde.scale(t), sde.std(t)
        x_t = s * x0 + sigma * z
        norm = torch.sqrt(s * s + sigma * sigma)
        s_dot, sigma_dot = _speeds(sde, t)
        raw = {"eps": z, "score": -z / sigma, "x0": x0, "v": (s / norm) * z - (sigma / norm) * x0,
               "velocity": s_dot * x0 + sigma_dot * z}[parameterization]
        c = model.coefficients(x_t[:1], t)     # per-sample coefficients of one sample at time t, shape (1,)
        assert abs(float((c.c_in * x_t).var()) - 1) < 0.04
        assert abs(float((raw / c.c_out).var()) - 1) < 0.04


def test_v_with_unit_sigma_data_is_edm_preconditioning():
    # Karras et al. 2022, Table 1, in the VE-equivalent variables x̂ = x/s, σ̂ = σ/s with σ_d = 1:
    # D(x̂) = c_skip x̂ + c_out F(c_in x̂, ¼ ln σ̂), c_skip = 1/(1 + σ̂²), c_out = σ̂/√(1 + σ̂²), c_in = 1/√(1 + σ̂²).
    # The v model equals it with F ↦ −F, for any network output.
    sde = UserSDE()
    gen = torch.Generator().manual_seed(2)
    t = 0.01 + 0.99 * torch.rand(16, generator=gen, dtype=F64)
    x = torch.randn(16, 3, generator=gen, dtype=F64)
    W = torch.randn(3, 3, generator=gen, dtype=F64)
    net = lambda x_in, c_noise: torch.tanh(x_in @ W) * (1 + c_noise[:, None])  # noqa: E731
    model = sd.ScoreModel(net, sde, "v", sigma_data=1.0)
    s, sigma = sde.scale(t)[:, None], sde.std(t)[:, None]
    x_hat, sigma_hat = x / s, sigma / s
    c_skip, c_out = 1 / (1 + sigma_hat**2), sigma_hat / torch.sqrt(1 + sigma_hat**2)
    c_in, c_noise = 1 / torch.sqrt(1 + sigma_hat**2), 0.25 * torch.log(sigma_hat[:, 0])
    edm = c_skip * x_hat - c_out * net(c_in * x_hat, c_noise)
    torch.testing.assert_close(model.denoise(x, t), edm, rtol=1e-10, atol=1e-12)


def test_score_model_wraps_a_network_and_backpropagates():
    torch.manual_seed(0)
    net = sd.nets.MLP(2, hidden=16, depth=1, time_embedding_dim=8)
    model = sd.ScoreModel(net, sd.VPSDE(), "v")
    x, t = torch.randn(8, 2), torch.rand(8) * 0.9 + 0.1
    out = model(x, t)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert set(dict(model.named_parameters())) == {f"net.{k}" for k, _ in net.named_parameters()}


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="'eps', 'score', 'x0', 'v'"):
        sd.ScoreModel(torch.nn.Identity(), sd.VPSDE(), "epsilon")
    with pytest.raises(ValueError, match="sigma_data"):
        sd.ScoreModel(torch.nn.Identity(), sd.VPSDE(), sigma_data=0.0)
    with pytest.raises(TypeError, match="net"):
        sd.ScoreModel(3, sd.VPSDE())
    model = sd.ScoreModel(lambda x, t: x[:, :1], sd.VPSDE())
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        model(torch.randn(4, 2), torch.rand(4))
    with pytest.raises(ValueError, match="shape"):
        sd.ScoreModel(torch.nn.Identity(), sd.VPSDE())(torch.randn(4, 2), torch.rand(3))


def test_velocity_on_rectified_flow_is_z_minus_x0_and_its_loss_is_weighted_dsm():
    """On s = 1 − t, σ = t the velocity target is z − x_0; the flow-matching MSE ‖û − (z − x_0)‖² of a model equals
    dsm_loss with the "flow_matching" weighting λ = g⁴/4 on the same draws (û − u = −½ g² (score + z/σ))."""
    sde = sd.RectifiedFlowSDE()
    gmm = _mixture()
    x0 = gmm.sample(256, torch.Generator().manual_seed(0))
    score = gmm.score(sde)
    gen = torch.Generator().manual_seed(4)
    t = 1e-5 + (sde.T - 1e-5) * torch.rand(256, generator=gen, dtype=F64)          # dsm_loss draws t, then z
    z = torch.randn(x0.shape, generator=gen, dtype=F64)
    x_t = (1 - t)[:, None] * x0 + t[:, None] * z
    f, g2 = -1 / (1 - t)[:, None], (2 * t / (1 - t))[:, None]
    u_hat = sd.conversions.score_to_velocity(x_t, score(x_t, t), f, g2)
    fm = (u_hat - (z - x0)).pow(2).sum(1)
    dsm = sd.dsm_loss(sde, score, x0, weighting="flow_matching", generator=torch.Generator().manual_seed(4),
                      reduce="none")
    torch.testing.assert_close(dsm, fm, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sd.conversions.velocity_to_score(x_t, u_hat, f, g2), score(x_t, t))
    with pytest.raises(TypeError, match="drift_coef"):
        class NoCoefficients:
            T = 1.0
        sd.conversions.rates(NoCoefficients(), t, x_t)
