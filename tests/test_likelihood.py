"""Likelihoods through the probability-flow ODE, checked against the Gaussian-mixture oracle (float64)."""
import math

import pytest
import torch

import scoresde as sd
from scoresde.likelihood import dequantize

F64 = torch.float64


def _mixture(dim, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(k, dim, generator=gen, dtype=F64)
    stds = 0.3 + 0.4 * torch.rand(k, generator=gen, dtype=F64)
    weights = 0.5 + torch.rand(k, generator=gen, dtype=F64)
    return sd.GaussianMixture(means, stds, weights)


def _at(value, x):
    return torch.full((x.shape[0],), float(value), dtype=x.dtype)


def _prior_mismatch_bound(gmm, sde, z):
    """Per-sample bound on |log p_T(z) − prior_log_prob(z)|.

    log p_T = log Σ_k w_k N_k(z) lies between min_k and max_k of log N_k(z), so its distance to the prior's
    log-density is at most max_k |log N_k(z) − log prior(z)|, with N_k the exact components at T.
    """
    m, v = gmm.marginal(sde, _at(sde.T, z))                      # (B, K, D) each
    diff = z[:, None, :] - m
    log_comp = -0.5 * ((diff**2 / v) + torch.log(2 * math.pi * v)).sum(-1)     # (B, K)
    return (log_comp - sde.prior_log_prob(z)[:, None]).abs().max(1).values


SDES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()]


@pytest.mark.parametrize("time_variable", ["t", "sigma"])
@pytest.mark.parametrize("dim", [2, pytest.param(8, marks=pytest.mark.slow)])
@pytest.mark.parametrize("sde", SDES + [sd.CosineVPSDE(), sd.EDMSDE()], ids=lambda s: type(s).__name__)
def test_exact_divergence_matches_oracle(sde, dim, time_variable):
    gmm = _mixture(dim, seed=dim)
    x = gmm.sample(16, torch.Generator().manual_seed(1))
    score = gmm.score(sde)
    eps = 1e-5 if not isinstance(sde, sd.EDMSDE) else sde.sigma_min
    with torch.no_grad():                                         # must work under no_grad
        res = sd.log_likelihood(sde, score, x, divergence="exact", rtol=1e-7, atol=1e-7, eps=eps,
                                time_variable=time_variable)
    assert res.log_prob.shape == res.prior_log_prob.shape == res.delta_log_prob.shape == (16,)
    assert res.z.shape == x.shape and not res.log_prob.requires_grad
    torch.testing.assert_close(res.log_prob, res.prior_log_prob + res.delta_log_prob)
    truth = gmm.log_prob_t(sde, x, eps)
    # The ODE part alone: delta = log p_eps(x) − log p_T(z) with the exact density at T for the latent. The
    # solver's local tolerance is 1e-7 relative on a state of size O(1..50) over a few hundred steps, so its
    # global error is orders below the 1e-4 nats required.
    ode_error = (res.delta_log_prob + gmm.log_prob_t(sde, res.z, _at(sde.T, x)) - truth).abs()
    assert float(ode_error.mean()) <= 1e-4
    # With the default prior the only extra error is the prior mismatch at T, bounded per sample.
    bound = _prior_mismatch_bound(gmm, sde, res.z)
    assert bool(((res.log_prob - truth).abs() <= bound + 1e-4).all())
    # The PF ODE maps data to the prior: the latent is distributed like p_T (here: a loose scale check).
    assert float(res.z.pow(2).mean().sqrt()) < 3 * sde.prior_std()


def test_one_forward_pass_per_evaluation_and_image_shapes():
    gmm = _mixture(4, seed=3)
    sde = sd.VPSDE()
    calls = []

    def score(x, t):
        calls.append(x.shape)
        return gmm.score_t(sde, x, t)

    x = gmm.sample(8, torch.Generator().manual_seed(2))
    flat = sd.log_likelihood(sde, score, x, divergence="exact", rtol=1e-6, atol=1e-6)
    # One score call per evaluation of the augmented dynamics: the divergence reuses the forward graph.
    assert flat.nfe == len(calls) > 0
    calls.clear()
    image = sd.log_likelihood(sde, score, x.reshape(8, 1, 2, 2), divergence="exact", rtol=1e-6, atol=1e-6)
    assert image.nfe == len(calls) and image.z.shape == (8, 1, 2, 2)
    # Same ODE, same solver decisions: identical up to rounding.
    torch.testing.assert_close(image.log_prob, flat.log_prob, rtol=0, atol=1e-10)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    gmm = _mixture(3, seed=4)
    sde = sd.VPSDE()
    x = gmm.sample(12, torch.Generator().manual_seed(3))
    score = gmm.score(sde)
    tol = dict(rtol=1e-5, atol=1e-5)
    exact = sd.log_likelihood(sde, score, x, divergence="exact", **tol)
    n_probes = 16
    gen = torch.Generator().manual_seed(5)
    res = sd.log_likelihood(sde, score, x, divergence="hutchinson", probe=probe, n_probes=n_probes,
                            generator=gen, **tol)
    per_probe = res.delta_log_prob_per_probe
    assert per_probe.shape == (12, n_probes)
    torch.testing.assert_close(res.delta_log_prob, per_probe.mean(1))
    # Given the trajectory (it does not depend on the probes) the probes' estimates are i.i.d. and unbiased for
    # the exact integral. The mean error over the batch has standard error sqrt(Σ_b se_b²)/B; allow 3 of those
    # plus the two solves' tolerance-level differences (1e-5 relative on O(10) nats, taken as 1e-3; the
    # standard error is ~10x larger, so the check stays sharp).
    se_b = per_probe.std(1) / math.sqrt(n_probes)
    se = float(se_b.pow(2).sum().sqrt() / 12)
    assert se > 0
    error = float((res.delta_log_prob - exact.delta_log_prob).mean())
    assert abs(error) <= 3 * se + 1e-3
    # The latent does not depend on the divergence estimator.
    torch.testing.assert_close(res.z, exact.z, rtol=1e-4, atol=1e-4)
    # Reproducible from the generator.
    again = sd.log_likelihood(sde, score, x, divergence="hutchinson", probe=probe, n_probes=n_probes,
                              generator=torch.Generator().manual_seed(5), **tol)
    torch.testing.assert_close(again.log_prob, res.log_prob, rtol=0, atol=0)


class Wavy(sd.LinearSDE):
    """A user SDE with no closed form: f(t) = −(1 + sin 3t)/2, g(t)² = 1 + t²."""

    def drift_coef(self, t):
        return -0.5 * (1 + torch.sin(3 * t))

    def diffusion(self, t):
        return torch.sqrt(1 + t**2)


@pytest.mark.slow
@pytest.mark.parametrize("time_variable", ["t", "sigma"])
def test_user_linear_sde_defined_by_drift_coef_and_diffusion(time_variable):
    sde = Wavy(T=2.0)
    gmm = _mixture(2, seed=6)
    x = gmm.sample(16, torch.Generator().manual_seed(7))
    eps = 1e-3
    res = sd.log_likelihood(sde, gmm.score(sde), x, divergence="exact", rtol=1e-7, atol=1e-7, eps=eps,
                            time_variable=time_variable)
    truth = gmm.log_prob_t(sde, x, eps)
    # The oracle's marginals use the SDE's numerically derived scale/std (relative error << 1e-6), the ODE its
    # drift and diffusion: agreement checks that both views of the user SDE are the same process.
    ode_error = (res.delta_log_prob + gmm.log_prob_t(sde, res.z, _at(sde.T, x)) - truth).abs()
    assert float(ode_error.mean()) <= 1e-4
    bound = _prior_mismatch_bound(gmm, sde, res.z)
    assert bool(((res.log_prob - truth).abs() <= bound + 1e-4).all())


def test_fixed_step_solver_agrees_with_dopri5():
    gmm = _mixture(2, seed=8)
    sde = sd.SubVPSDE()
    x = gmm.sample(8, torch.Generator().manual_seed(9))
    ref = sd.log_likelihood(sde, gmm.score(sde), x, divergence="exact", rtol=1e-7, atol=1e-7, eps=1e-3)
    rk4 = sd.log_likelihood(sde, gmm.score(sde), x, divergence="exact", solver="rk4", step_size=1e-2, eps=1e-3)
    # rk4's global error is O(h^4 · max|d^5 y/dt^5|); at h = 1e-2 on this smooth flow it is below 1e-3 nats.
    assert float((rk4.log_prob - ref.log_prob).abs().max()) < 1e-3
    assert rk4.nfe == 4 * math.ceil((1 - 1e-3) / 1e-2)


class ExactPrior(sd.VPSDE):
    """VP SDE whose prior is the exact marginal p_T of a given mixture, so log_prob has no prior error."""

    def __init__(self, gmm):
        super().__init__()
        self.gmm = gmm

    def prior_log_prob(self, z):
        return self.gmm.log_prob_t(self, z, _at(self.T, z))


@pytest.mark.parametrize("levels", [8, 17], ids=["3-bit", "17-levels"])
def test_bits_per_dim_matches_hand_computation(levels):
    # Model: data ~ N(0, c² I) under VP, so p_eps = N(0, v I) with v = s(eps)² c² + σ(eps)², and the exact
    # prior makes the PF-ODE likelihood exactly that Gaussian. Data: 3-bit levels in [a, b] = [-1, 1], or 17
    # levels (the 8×8 digits' 0…16) through `levels=`; either way Δ = (b − a)/L.
    c, d, bits, a, b = 0.6, 3, 3, -1.0, 1.0
    gmm = sd.GaussianMixture(torch.zeros(1, d, dtype=F64), torch.tensor([c], dtype=F64))
    sde = ExactPrior(gmm)
    eps = 1e-5
    delta = (b - a) / levels
    quantization = dict(bits=bits) if levels == 2**bits else dict(levels=levels)
    index = torch.randint(0, levels, (10, d), generator=torch.Generator().manual_seed(10)).to(F64)
    x = a + index * (b - a) / (levels - 1)
    n_dequant = 8
    res = sd.bits_per_dim(sde, gmm.score(sde), x, data_range=(a, b), n_dequant=n_dequant,
                          generator=torch.Generator().manual_seed(11), divergence="exact", rtol=1e-6, atol=1e-6,
                          eps=eps, **quantization)
    assert res.values.shape == (10, n_dequant) and res.per_sample.shape == (10,)
    # Hand computation. Dequantized x̃ = m + Δ w with bin centre m = a + (i + ½)Δ and w ~ U(−½, ½), so
    #   E x̃² = m² + Δ²/12,  Var x̃² = m² Δ²/3 + Δ⁴/180,
    #   bpd = [ Σ_j x̃_j² / (2v) + (d/2) log(2π v) ] / (d ln 2) + log2(1/Δ).
    t = torch.tensor([eps], dtype=F64)
    v = float(sde.scale(t) ** 2 * c**2 + sde.std(t) ** 2)
    m = a + (index + 0.5) * delta
    expected = ((m**2 + delta**2 / 12).sum(1) / (2 * v) + d / 2 * math.log(2 * math.pi * v)) / (d * math.log(2))
    expected = expected + math.log2(1 / delta)
    var = (m**2 * delta**2 / 3 + delta**4 / 180).sum(1) / (2 * v * d * math.log(2)) ** 2
    se = float(var.sum().sqrt()) / (10 * math.sqrt(n_dequant))     # of the mean over samples and draws
    # 3 standard errors of the dequantization noise + the ODE error (1e-4 nats → 1e-4/(d ln 2) bits).
    assert abs(res.mean - float(expected.mean())) <= 3 * se + 1e-4 / (d * math.log(2))
    assert res.stderr > 0 and math.isfinite(res.stderr)
    # The per-sample values carry that sample's noise only: each within 4 of its own standard errors.
    se_b = (var / n_dequant).sqrt()
    assert bool(((res.per_sample - expected).abs() <= 4 * se_b + 1e-3).all())


def test_bits_per_dim_range_and_shape_convention():
    # The same 8-bit images stored in [-1, 1] (flat) and in [0, 1] (as (B, 1, 2, 2)) under models related by
    # y = (x + 1)/2: log p_y = log p_x + d log 2 and log2(1/Δ) drops by 1 bit, so bits/dim agree exactly.
    d, c = 4, 0.5
    gmm_x = sd.GaussianMixture(torch.zeros(1, d, dtype=F64), torch.tensor([c], dtype=F64))
    gmm_y = sd.GaussianMixture(torch.full((1, d), 0.5, dtype=F64), torch.tensor([c / 2], dtype=F64))
    sde_x, sde_y = ExactPrior(gmm_x), ExactPrior(gmm_y)
    index = torch.randint(0, 256, (6, d), generator=torch.Generator().manual_seed(12)).to(F64)
    x = -1 + index * 2 / 255
    y = (index / 255).reshape(6, 1, 2, 2)
    kw = dict(divergence="exact", rtol=1e-7, atol=1e-7, eps=1e-5)
    rx = sd.bits_per_dim(sde_x, gmm_x.score(sde_x), x, bits=8, data_range=(-1, 1), n_dequant=2,
                         generator=torch.Generator().manual_seed(13), **kw)
    ry = sd.bits_per_dim(sde_y, gmm_y.score(sde_y), y, bits=8, data_range=(0, 1), n_dequant=2,
                         generator=torch.Generator().manual_seed(13), **kw)
    # Same generator ⇒ same uniform draws ⇒ ỹ = (x̃ + 1)/2 exactly. Both log_probs are exact up to the ODE error
    # (≤ 1e-5 nats here). The two p_eps are not exact images of each other only through the noise added by eps:
    # variances s²c²/4 + σ² vs (s²c² + σ²)/4 with σ(eps)² ≈ 1e-6, a relative difference ≈ 1e-5 per dimension.
    torch.testing.assert_close(ry.values, rx.values, rtol=0, atol=1e-4)
    # The absolute level, against the formula applied by hand to the oracle's density at t = 0 on the same
    # dequantized points (the first draw of the same generator); p_eps and p_0 differ by σ(eps)²/c² ≈ 4e-6.
    direct = (-gmm_x.log_prob(dequantize(x, 8, (-1, 1), torch.Generator().manual_seed(13))) / d
              - math.log(2 / 256)) / math.log(2)
    torch.testing.assert_close(rx.values[:, 0], direct, rtol=0, atol=1e-3)


def test_bad_input_raises_clear_errors():
    gmm = _mixture(2)
    sde = sd.VPSDE()
    score = gmm.score(sde)
    x = gmm.sample(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"\(B, \*D\).*\(2,\)"):
        sd.log_likelihood(sde, score, x[0])
    with pytest.raises(ValueError, match="'exact', 'hutchinson'"):
        sd.log_likelihood(sde, score, x, divergence="trace")
    with pytest.raises(ValueError, match="'rademacher', 'gaussian'"):
        sd.log_likelihood(sde, score, x, probe="normal")
    with pytest.raises(ValueError, match="'dopri5'"):
        sd.log_likelihood(sde, score, x, solver="RK45")
    with pytest.raises(ValueError, match="n_probes"):
        sd.log_likelihood(sde, score, x, n_probes=0)
    with pytest.raises(ValueError, match="vjp_batch must be a positive integer"):
        sd.log_likelihood(sde, score, x, vjp_batch=0)
    with pytest.raises(ValueError, match="eps"):
        sd.log_likelihood(sde, score, x, eps=1.0)
    with pytest.raises(ValueError, match="step_size"):
        sd.log_likelihood(sde, score, x, solver="euler")
    with pytest.raises(ValueError, match="differentiable"):
        sd.log_likelihood(sde, lambda x, t: score(x, t).detach(), x)
    with pytest.raises(ValueError, match=r"shape of x|x's shape"):
        sd.log_likelihood(sde, lambda x, t: score(x, t)[:, :1], x)
    with pytest.raises(RuntimeError, match="inference_mode"):
        with torch.inference_mode():
            sd.log_likelihood(sde, score, x)
    levels = torch.tensor([[-1.0, 1.0]], dtype=F64)
    with pytest.raises(ValueError, match="on the 256 levels"):
        sd.bits_per_dim(sde, score, levels * 1.5)
    with pytest.raises(ValueError, match="on the 256 levels"):
        sd.bits_per_dim(sde, score, levels + 1 / 255)          # half a level off the grid
    with pytest.raises(ValueError, match="bits"):
        sd.bits_per_dim(sde, score, levels, bits=0)
    with pytest.raises(ValueError, match="data_range"):
        sd.bits_per_dim(sde, score, levels, data_range=(1, -1))
    with pytest.raises(ValueError, match="n_dequant"):
        sd.bits_per_dim(sde, score, levels, n_dequant=0)


def _diagonal_gaussian(sde, dim):
    """Data N(m, diag(c²)) and its exact score under a linear SDE: score(x, t) = −(x − s m)/v, v = s² c² + σ².

    Returns (m, c, variance, score) with variance(t) of shape (len(t), dim); the score accepts any (B, *D).
    """
    m = torch.linspace(-1.0, 1.0, dim, dtype=F64)
    c = torch.linspace(0.3, 1.2, dim, dtype=F64)

    def variance(t):
        return sde.scale(t)[:, None] ** 2 * c**2 + sde.std(t)[:, None] ** 2

    def score(x, t):
        flat = x.reshape(x.shape[0], -1)
        return (-(flat - sde.scale(t)[:, None] * m) / variance(t)).reshape(x.shape)

    return m, c, variance, score


U32 = 2.0 ** -24      # unit roundoff of float32: |fl(a) − a| ≤ U32 |a| for every correctly rounded operation


def _upper_sum(values, h):
    """Σ_n h·max(values on step n) for values sampled at 8 points per step (shape (..., 8 N + 1)): the upper
    Darboux sum over the solver's N steps, which bounds any quadrature with positive weights summing to h per step
    (the solver's stages) of a smooth function."""
    steps = values[..., 1:].unflatten(-1, (-1, 8)).amax(-1)
    return h * torch.maximum(steps, values[..., :-1:8]).sum(-1)


def test_a_float32_score_is_integrated_in_a_float64_state():
    """A float32 x: the score sees float32 x and t, the results are float32, and the solver's state (x and the
    accumulated log-density) is float64; the result is within the rounding of the float32 field, bounded here
    by counting the roundings each evaluation performs, so that the bound holds on any IEEE-754 machine.

    Both solves take the same fixed steps (rk4, N = 100): with an adaptive solver the float32 field's rounding
    changes the step sizes, and the difference then includes the solver's own error (measured on one machine:
    1.2e-5 with dopri5 at 2e-6 against 2.2e-6 on a fixed grid, and 7e-5 on another CPU), which is no rounding bound.

    The data N(m, v0 I) and x are float32 numbers, so the casts of x and m are exact. Per evaluation, with
    u = 2⁻²⁴, β̃ = fl(0.1 + fl(t·19.9)) at t̃ = fl(t) is within 4u β (three roundings, and t̃'s), f̃ = −β̃/2,
    g̃² = fl(fl(√β̃)²) within 7u, the score rounds s and v once each (computed in float64) plus their condition
    numbers κ = |t ∂ log/∂t| times u for t̃, and the divergence term c̃ = fl(f̃ + fl(g̃²/2 / ṽ)) is within
    4u|f| + (9 + κ_v) u q + u|c| of c = f + q (q = β/2v); the sum of d terms adds at most (d − 1) u d|c| in any
    order (the kernel picks it). The drift F = f x + q (x − s m) is within 6u|f x| + q (u|x| + (2 + κ_s) u s|m| +
    (11 + κ_v) u |x − s m|) + u|F| per component, propagated to z by √(v_T / v_t) (the linear flow). The prior adds
    |∇ log p_T(z)|·δz and the final cast u |log p|. Each error is integrated with the upper sum over the steps.
    The bound is a worst case (every rounding at its limit, all with one sign): the measured error is below 1 %
    of it; `test_a_float32_state_loses_steps_that_the_float64_state_keeps` is the sharp check of the state."""
    sde, d, v0, eps, steps = sd.VPSDE(), 32, 0.25, 1e-5, 100
    gen = torch.Generator().manual_seed(0)
    mean = (0.5 * torch.randn(d, generator=gen, dtype=F64)).float().double()
    x = (mean + 0.5 * torch.randn(64, d, generator=gen, dtype=F64)).float().double()
    seen = set()

    def variance(t):
        return v0 * sde.scale(t) ** 2 + sde.std(t) ** 2

    def score(x, t):                       # the exact score of N(mean, v0 I) pushed through the SDE
        seen.add((x.dtype, t.dtype))
        s, v = sde.scale(t.double()).to(x.dtype)[:, None], variance(t.double()).to(x.dtype)[:, None]
        return -(x - s * mean.to(x.dtype)) / v

    h = (sde.T - eps) / steps
    options = dict(divergence="exact", time_variable="t", solver="rk4", step_size=h, eps=eps)
    wide = sd.log_likelihood(sde, score, x, **options)
    seen.clear()
    narrow = sd.log_likelihood(sde, score, x.float(), **options)
    assert seen == {(torch.float32, torch.float32)}
    assert {narrow.log_prob.dtype, narrow.z.dtype, narrow.delta_log_prob.dtype} == {torch.float32}

    t = torch.linspace(eps, sde.T, 8 * steps + 1, dtype=F64).requires_grad_(True)
    s, v, beta = sde.scale(t), variance(t), sde.beta(t)
    kappa_s, kappa_v = ((t * torch.autograd.grad(y.log().sum(), t, retain_graph=True)[0]).abs().detach()
                        for y in (s, v))
    t, s, v, beta = t.detach(), s.detach(), v.detach(), beta.detach()
    f, q = -0.5 * beta, 0.5 * beta / v
    c = f + q
    div_error = d * (4 * U32 * f.abs() + (9 + kappa_v) * U32 * q + U32 * c.abs()) + (d - 1) * U32 * d * c.abs()
    delta_bound = _upper_sum(div_error, h)
    # The exact trajectory of the linear flow: x_t = s m + √(v_t / v_eps) (x − s_eps m); shapes (B, d, 8N + 1).
    xt = s * mean[:, None] + (v / v[0]).sqrt() * (x - s[0] * mean)[..., None]
    r = xt - s * mean[:, None]
    drift_error = (6 * U32 * (f * xt).abs() + q * (U32 * xt.abs() + (2 + kappa_s) * U32 * (s * mean[:, None]).abs()
                                                   + (11 + kappa_v) * U32 * r.abs()) + U32 * (f * xt + q * r).abs())
    z_bound = (v[-1] / v[0]).sqrt() * _upper_sum(drift_error, h)                     # (B, d)
    prior_grad = (wide.z / sde.prior_std() ** 2).abs()
    bound = (delta_bound + (prior_grad * z_bound).sum(1) + (z_bound ** 2).sum(1) / sde.prior_std() ** 2
             + U32 * wide.log_prob.abs())
    assert bool(((narrow.delta_log_prob.double() - wide.delta_log_prob).abs() <= delta_bound).all())
    assert bool(((narrow.z.double() - wide.z).abs() <= z_bound + U32 * wide.z.abs()).all())
    assert bool(((narrow.log_prob.double() - wide.log_prob).abs() <= bound).all())
    for bad in (torch.float16, torch.int64, "float64"):
        with pytest.raises(ValueError, match="state_dtype must be None or a floating torch.dtype at least as wide"):
            sd.log_likelihood(sde, score, x.float(), state_dtype=bad)


class _Brownian(sd.LinearSDE):
    """dx = dw: s = 1, σ² = t (closed forms, so that no tabulation enters the rounding count)."""

    def drift_coef(self, t):
        return torch.zeros_like(t)

    def diffusion(self, t):
        return torch.ones_like(t)

    def scale(self, t):
        return torch.ones_like(self._check_time(t))

    def std(self, t):
        return self._check_time(t).sqrt()

    def time_from_log_snr(self, log_snr):
        return torch.exp(-log_snr)


@pytest.mark.parametrize("time_variable", ["t", "sigma"])
def test_a_float32_state_loses_steps_that_the_float64_state_keeps(time_variable):
    """The sharp check of the float64 state, exact on any IEEE-754 machine. Data N(m, v0 I) near 1.5·2²⁰ under
    dx = dw, whose flow moves x − m by √((v0 + σ²)/v0) (×2.2 by T = 1) with a field of at most 2|x − m| (t) or
    |x − m| (σ̃). Near 2²⁰ float32's spacing is 2⁻³: an Euler step of h·|F| < 2⁻⁴ (half a spacing) added to a
    float32 state rounds back to x, so the float32 state never moves and its z is x itself, about
    |x − m| (√5 − 1) ≥ 1.8 away from the float64 solve's. With the float64 state only the cast of x to float32 for
    the score remains, |fl(x) − x| ≤ 2⁻⁴, which moves the field by c·2⁻⁴ (c = ∂F/∂x = ½/(v0 + t), or
    σ̃/(v0 + σ̃²)), plus at most 8 roundings of F; propagated by the flow, (1 + h c) per step, and with the final
    cast of z (2⁻⁴), that is ≤ 0.15."""
    sde, d, v0, eps, steps = _Brownian(), 4, 0.25, 1e-5, 100
    gen = torch.Generator().manual_seed(3)
    mean = (1.5 * 2 ** 20 + torch.randint(-1000, 1000, (d,), generator=gen)).double()
    sign = 2 * torch.randint(0, 2, (8, d), generator=gen) - 1
    x = mean + sign * (1.5 + torch.randint(0, 5, (8, d), generator=gen) / 8)   # float32 numbers, |x − m| ∈ [1.5, 2]

    def score(x, t):
        return -(x - mean.to(x.dtype)) / (v0 + sde.std(t.double()) ** 2).to(x.dtype)[:, None]

    if time_variable == "t":
        lo, hi = eps, sde.T
        field = lambda tau: 0.5 / (v0 + tau)           # c(τ) = ∂F/∂x, and F = c (x − m)
    else:
        lo, hi = math.sqrt(eps), math.sqrt(sde.T)
        field = lambda tau: tau / (v0 + tau ** 2)
    h = (hi - lo) / steps
    options = dict(divergence="exact", time_variable=time_variable, solver="euler", step_size=h, eps=eps)
    wide = sd.log_likelihood(sde, score, x, **options)
    narrow = sd.log_likelihood(sde, score, x.float(), **options)
    fast = sd.log_likelihood(sde, score, x.float(), state_dtype=torch.float32, **options)

    taus = lo + h * torch.arange(steps, dtype=F64)
    c = field(taus)
    spread = ((v0 + (taus ** 2 if time_variable == "sigma" else taus)) / v0).sqrt()  # |x_τ − m| / |x − m|
    assert float((h * c * 2.0).max()) < 2.0 ** -4 * 0.9      # every float32 step stays below half a spacing
    error_bound = torch.zeros(())
    for n in range(steps):                          # δ ← (1 + h c) δ + h (c 2⁻⁴ + 8u|F|), |F| ≤ c·2·spread
        error_bound = (1 + h * c[n]) * error_bound + h * c[n] * (2.0 ** -4 + 8 * U32 * 2 * spread[n])
    bound = float(error_bound) * 1.001 + 2.0 ** -4          # + the cast of z to float32
    assert bound < 0.15
    assert float((narrow.z.double() - wide.z).abs().max()) <= bound
    assert torch.equal(fast.z, x.float())                   # the float32 state never moved
    assert float((fast.z.double() - wide.z).abs().min()) > 10 * bound


@pytest.mark.slow
@pytest.mark.parametrize("vjp_batch", [1, 4, None])
@pytest.mark.parametrize("shape", [(6,), (1, 2, 3)], ids=["flat", "image"])
def test_batched_vjps_give_the_closed_form_divergence(vjp_batch, shape):
    # For a linear score the PF drift is linear with a diagonal Jacobian, and since dv/dt = 2 f v + g²,
    #   ∇·F = d f + ½ g² Σ_i 1/v_i = Σ_i ½ d/dt log v_i   ⇒   ∫_eps^T ∇·F dt = ½ Σ_i log(v_i(T)/v_i(eps)),
    # the same for every x. A Rademacher probe has v_i² = 1, so each Hutchinson probe is exact too.
    dim = 6
    sde = sd.SubVPSDE()
    m, c, variance, score = _diagonal_gaussian(sde, dim)
    eps = 1e-3
    x = (m + c * torch.randn(5, dim, generator=torch.Generator().manual_seed(14), dtype=F64)).reshape((5,) + shape)
    bounds = torch.tensor([eps, sde.T], dtype=F64)
    v = variance(bounds)
    expected = 0.5 * torch.log(v[1] / v[0]).sum()
    tol = dict(rtol=1e-9, atol=1e-9, eps=eps, vjp_batch=vjp_batch)
    exact = sd.log_likelihood(sde, score, x, divergence="exact", **tol)
    # Local tolerance 1e-9 on an O(1) integral: the global error is orders below 1e-6.
    torch.testing.assert_close(exact.delta_log_prob, expected.expand(5), rtol=0, atol=1e-6)
    hutch = sd.log_likelihood(sde, score, x, divergence="hutchinson", n_probes=5,
                              generator=torch.Generator().manual_seed(15), **tol)
    torch.testing.assert_close(hutch.delta_log_prob_per_probe, expected.expand(5, 5), rtol=0, atol=1e-6)


class _Opaque(torch.autograd.Function):
    """Identity whose backward reads a Python number: vmap (hence a batched backward) cannot run it."""

    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        _Opaque.calls += 1
        if float(grad.abs().sum()) < 0:        # data-dependent Python control flow
            raise AssertionError("unreachable")
        return grad


@pytest.mark.slow
def test_vjps_fall_back_to_one_at_a_time_when_vmap_cannot_batch():
    dim = 4
    sde = sd.VPSDE()
    m, c, variance, score = _diagonal_gaussian(sde, dim)
    x = m + c * torch.randn(3, dim, generator=torch.Generator().manual_seed(16), dtype=F64)
    _Opaque.calls = 0
    opaque = sd.log_likelihood(sde, lambda x, t: score(_Opaque.apply(x), t), x, divergence="exact",
                               solver="euler", step_size=0.1, eps=1e-3)
    plain = sd.log_likelihood(sde, score, x, divergence="exact", solver="euler", step_size=0.1, eps=1e-3)
    torch.testing.assert_close(opaque.log_prob, plain.log_prob, rtol=0, atol=1e-12)
    # After the first evaluation fails to batch, every evaluation runs d single VJPs.
    assert _Opaque.calls >= dim * (opaque.nfe - 1)


def test_auto_time_variable_picks_sigma_for_networks_and_both_agree():
    """"auto" integrates a network in σ̃ and a plain function in t; the two variables give the same density of a
    small ε-network to the solver tolerance (dopri5 at 1e-7, float64), and σ̃ with a network needs fewer steps."""
    from scoresde.sde import choose_time_variable

    torch.manual_seed(0)
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=16, depth=1), sde).double()
    assert choose_time_variable("auto", sde, model) == "sigma"
    assert choose_time_variable("auto", sde, _mixture(2).score(sde)) == "t"
    cond_model = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, num_classes=3), sde)
    assert choose_time_variable("auto", sde, sd.classifier_free_guidance(cond_model, 1, scale=2.0)) == "sigma"
    assert choose_time_variable("auto", sde, sd.conditional_score(cond_model, 1)) == "sigma"
    with pytest.raises(ValueError, match="valid choices"):
        choose_time_variable("tau", sde, model)
    x = _mixture(2).sample(8, torch.Generator().manual_seed(2))
    in_t = sd.log_likelihood(sde, model, x, divergence="exact", rtol=1e-7, atol=1e-7, time_variable="t")
    in_sigma = sd.log_likelihood(sde, model, x, divergence="exact", rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(in_sigma.log_prob, in_t.log_prob, rtol=0, atol=2e-5)
    torch.testing.assert_close(in_sigma.z, in_t.z, rtol=1e-4, atol=1e-4)
    assert in_sigma.nfe < in_t.nfe
