"""The continuous-conditioning oracle: the exact posteriors of one linear-Gaussian measurement at many observations
(`GaussianMixture.posterior` with y of shape (B, m), a `PosteriorMixtures`) and the exact conditional score
``model(x, t, y) = ∇ log p_t(x | y)`` (`GaussianMixture.measurement_score`), checked against the single-y posterior,
Bayes' rule, the probability-flow ODE and the closed form of classifier-free guidance on a Gaussian.

Tolerances: "float64 rounding" bounds are c · ε · κ · scale with ε the machine epsilon, κ the condition number of
the matrices solved or inverted, scale the magnitude of the terms combined, and c a small count of operations;
Monte Carlo bounds are 5 standard errors computed from the exact law and n.
"""
import math

import pytest
import torch

import scoresde as sd

F64 = torch.float64
EPS64 = torch.finfo(F64).eps


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _prior(dim=3, k=3, seed=0):
    """K components with full covariances (eigenvalues between ~0.05 and ~3) and unequal weights."""
    gen = _gen(seed)
    L = torch.randn(k, dim, dim, generator=gen, dtype=F64)
    cov = 0.3 * L @ L.transpose(1, 2) + 0.05 * torch.eye(dim, dtype=F64)
    means = 2 * torch.randn(k, dim, generator=gen, dtype=F64)
    return sd.GaussianMixture(means, weights=[0.2, 0.3, 0.5][:k], covariances=cov)


def _operators(dim=3):
    """(operator, keyword arguments of the noise) for every kind of LinearMeasurement."""
    A = torch.tensor([[1.0, 0.5, -0.3], [0.2, -0.4, 0.7]], dtype=F64)[:, :dim]
    R = torch.tensor([[0.09, 0.03], [0.03, 0.16]], dtype=F64)
    mask = sd.Mask(torch.tensor([True, False, True][:dim]))
    return {
        "matrix": (A, dict(noise_std=0.3)),
        "general_noise": (A, dict(noise_cov=R)),
        "mask": (mask, dict(noise_std=0.2)),
        "noiseless_mask": (mask, dict(noise_std=0.0)),
    }


def _observations(operator, n, seed):
    """n observations (n, m) in dense coordinates, and the same as LinearMeasurement's y ((n, m) or (n, *D))."""
    gen = _gen(seed)
    if isinstance(operator, sd.Mask):
        full = 1.5 * torch.randn((n,) + operator.shape, generator=gen, dtype=F64)
        return full.reshape(n, -1)[:, operator.mask.reshape(-1)], full
    y = 1.5 * torch.randn(n, operator.shape[0], generator=gen, dtype=F64)
    return y, y


def _scale_tol(*values):
    """An absolute float64 tolerance, c · ε · κ · scale with c = 100 operations, an amplification κ = 1e3 and the
    magnitude of these values: the prior's covariance eigenvalues lie in [0.05, 2.6] (κ ≤ 50), S_k ⪰ R ⪰ 0.04 I,
    the noisy posteriors' eigenvalues are ≥ 0.02 (asserted where used) and the variances a score divides by are
    ≥ σ(0.01)² ≈ 0.002 against offsets |x − s m_k| ≤ ~10, an error of at most ~10 ε / 0.002 = 5e3 ε per term on
    scores of size ≥ 5 (the term, not the sum, sets their size)."""
    scale = max(float(v.abs().max()) for v in values)
    return 100 * 1e3 * EPS64 * max(scale, 1.0)


# -- a. the batched posterior is the single-y posterior row by row ------------------------------------------------
@pytest.mark.parametrize("kind", list(_operators()))
def test_batched_posterior_rows_are_the_single_y_posteriors(kind):
    """Row i of the B posteriors (means, weights, covariances; log_prob at t = 0 and log_prob_t, score_t at t > 0)
    equals the posterior of the measurement with the one observation y_i, and so does the conditional-score model:
    the same formulas on the same numbers, batched or not, to float64 rounding."""
    prior, (operator, noise) = _prior(), _operators()[kind]
    sde, B = sd.VPSDE(), 5
    dense, y = _observations(operator, B, seed=1)
    batched = prior.posterior(sd.LinearMeasurement(operator, y, **noise))
    assert isinstance(batched, sd.evaluation.oracle.PosteriorMixtures) and len(batched) == B
    x = torch.randn(B, 3, generator=_gen(2), dtype=F64)
    t = torch.tensor([0.01, 0.05, 0.2, 0.5, 0.9], dtype=F64)
    model = prior.measurement_score(sde, operator, **noise)
    assert float(sde.std(t).min()) ** 2 > 0.0019                      # the premises of _scale_tol
    assert kind == "noiseless_mask" or float(batched.stds.min()) ** 2 > 0.02
    scores, model_scores = batched.score_t(sde, x, t), model(x, t, dense)
    for i in range(B):
        single = prior.posterior(sd.LinearMeasurement(operator, y[i], **noise))
        torch.testing.assert_close(batched.means[i], single.means, rtol=0, atol=_scale_tol(single.means))
        torch.testing.assert_close(batched.weights[i], single.weights, rtol=0, atol=_scale_tol(single.weights))
        torch.testing.assert_close(batched.covariances, single.covariances, rtol=0, atol=_scale_tol(single.covariances))
        ref = single.score_t(sde, x[i:i + 1], t[i:i + 1])[0]
        torch.testing.assert_close(scores[i], ref, rtol=0, atol=_scale_tol(ref))
        torch.testing.assert_close(model_scores[i], ref, rtol=0, atol=_scale_tol(ref))
        ref_lp = single.log_prob_t(sde, x[i:i + 1], t[i:i + 1])
        torch.testing.assert_close(batched.log_prob_t(sde, x, t)[i:i + 1], ref_lp, rtol=0, atol=_scale_tol(ref_lp))
        if kind != "noiseless_mask":                       # a noiseless posterior has no density at t = 0
            ref_lp = single.log_prob(x[i:i + 1])
            torch.testing.assert_close(batched.log_prob(x)[i:i + 1], ref_lp, rtol=0, atol=_scale_tol(ref_lp))
    torch.testing.assert_close(batched.mixture(3).means, batched.means[3], rtol=0, atol=0)
    torch.testing.assert_close(model.posterior(dense).means, batched.means, rtol=0, atol=_scale_tol(batched.means))
    if kind == "noiseless_mask":
        with pytest.raises(ValueError, match="singular"):
            batched.log_prob(x)


# -- b. Bayes' rule and normalisation ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["matrix", "general_noise", "mask"])
def test_batched_posterior_density_is_bayes_rule(kind):
    """log p(x | y_i) = log p(y_i | x) + log p(x) − log p(y_i) at many x, for every row i, with the likelihood
    N(y_i; A x, R), the prior's density and its log_evidence (a MultivariateNormal on S_k, not the posterior's
    Cholesky path) computed independently of the posterior's Kalman formulas. Sums of O(10) log terms from solves
    of κ ≤ 1e3: float64 rounding."""
    prior, (operator, noise) = _prior(), _operators()[kind]
    B = 4
    dense, y = _observations(operator, B, seed=3)
    meas = sd.LinearMeasurement(operator, y, **noise)
    post = prior.posterior(meas)
    A = meas.dense()[0]
    R = meas.noise_covariance()
    for j in range(3):                                     # three points per posterior
        x = torch.randn(B, 3, generator=_gen(10 + j), dtype=F64)
        log_lik = torch.distributions.MultivariateNormal(x @ A.T, covariance_matrix=R).log_prob(dense)
        log_evidence = torch.tensor([prior.log_evidence(sd.LinearMeasurement(operator, y[i], **noise))
                                     for i in range(B)], dtype=F64)
        bayes = log_lik + prior.log_prob(x) - log_evidence
        torch.testing.assert_close(post.log_prob(x), bayes, rtol=0, atol=_scale_tol(log_lik, prior.log_prob(x)))


def test_each_posterior_density_integrates_to_one():
    """A Riemann sum over [−6, 6]² at spacing 0.015 of every row's density (2-D prior, one observation of a
    combination of the coordinates): the densities are smooth with stds ≥ 0.15, so the sum's error is far below
    1e-6 and the mass outside the square is below 1e-8."""
    prior = _prior(dim=2, seed=4)
    y = torch.tensor([[0.5], [-1.0], [2.5]], dtype=F64)
    post = prior.posterior(sd.LinearMeasurement(torch.tensor([[1.0, -0.6]], dtype=F64), y, 0.3))
    assert float(post.stds.min()) > 0.15
    # the mass outside the square: a union bound over components and coordinates of the Gaussian tails
    sd_k = torch.diagonal(post.covariances, dim1=1, dim2=2).sqrt()                          # (K, 2)
    tails = 0.5 * (torch.erfc((6 - post.means) / sd_k / math.sqrt(2)) + torch.erfc((6 + post.means) / sd_k
                                                                                  / math.sqrt(2)))
    assert float((post.weights[..., None] * tails).sum((1, 2)).max()) < 1e-8
    u = torch.linspace(-6, 6, 801, dtype=F64)
    X, Y = torch.meshgrid(u, u, indexing="ij")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)
    for i in range(len(post)):
        mass = float(post.mixture(i).log_prob(pts).exp().sum()) * float(u[1] - u[0]) ** 2
        assert mass == pytest.approx(1.0, abs=1e-6)


# -- c. the null rows ---------------------------------------------------------------------------------------------
def test_nan_rows_get_the_unconditional_score_and_observed_rows_their_own():
    """All-NaN rows of y are scored by the prior exactly (the same function on the same rows); observed rows by
    their own posterior (float64 rounding); an all-null batch is the unconditional score bit for bit."""
    prior, sde = _prior(), sd.VESDE()
    A, noise = _operators()["matrix"]
    model = prior.measurement_score(sde, A, **noise)
    assert model.closed_form is True and model.network is False
    assert model.null_cond.shape == (2,) and bool(torch.isnan(model.null_cond).all())
    x = torch.randn(6, 3, generator=_gen(5), dtype=F64)
    t = torch.tensor([0.02, 0.1, 0.3, 0.5, 0.7, 0.95], dtype=F64)
    y = torch.randn(6, 2, generator=_gen(6), dtype=F64)
    null = torch.tensor([True, False, True, False, False, True])
    y[null] = model.null_cond
    out = model(x, t, y)
    assert torch.equal(out[null], prior.score_t(sde, x[null], t[null]))
    assert torch.equal(out[~null], model(x[~null], t[~null], y[~null]))
    for i in torch.nonzero(~null)[:, 0].tolist():
        ref = prior.posterior(sd.LinearMeasurement(A, y[i], **noise)).score_t(sde, x[i:i + 1], t[i:i + 1])[0]
        torch.testing.assert_close(out[i], ref, rtol=0, atol=_scale_tol(ref))
    assert torch.equal(model(x, t, model.null_cond.expand(6, 2)), prior.score_t(sde, x, t))
    assert torch.equal(model(x, t, y[1]), model(x, t, y[1].expand(6, 2)))     # an (m,) observation: every row


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_the_model_works_in_float32_on_the_device_of_x(device):
    """x in float32 (on ``device``) gives float32 scores there, equal to the float64 ones to float32 rounding: the
    score's terms (x − s m_k)/v_k lose ε₃₂ ≈ 1.2e-7 relative to |x| + |s m_k| ≤ ~10 and are divided by variances
    ≥ σ(t)² ≈ 0.01, so 1e-7 · 10 / 0.01 · (a few operations) ≈ 1e-3 of the O(1 … 100) scores; 1e-3 relative."""
    prior, sde = _prior(), sd.VPSDE()
    A, noise = _operators()["matrix"]
    model = prior.measurement_score(sde, A, **noise)
    x = torch.randn(6, 3, generator=_gen(7), dtype=F64)
    t = torch.tensor([0.05, 0.1, 0.3, 0.5, 0.7, 0.95], dtype=F64)
    y = torch.randn(6, 2, generator=_gen(8), dtype=F64)
    y[2] = float("nan")
    ref = model(x, t, y)
    got = model(x.to(device, torch.float32), t.to(device, torch.float32), y.to(device, torch.float32))
    assert got.dtype == torch.float32 and got.device.type == device
    torch.testing.assert_close(got.cpu().double(), ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


# -- sampling ------------------------------------------------------------------------------------------------------
def _moments(mixture: sd.GaussianMixture, s: float = 1.0, sigma: float = 0.0):
    """Mean (D,), covariance (D, D) and the standard errors (D, D) of the sample covariance for n = 1 of the mixture
    pushed to scale s and std σ (components N(s m_k, s² C_k + σ² I)), exactly: with d = s m_k − mean and
    C = s² C_k + σ² I, E[(x_i − mean_i)² (x_j − mean_j)²] = Σ_k w_k (d_i² d_j² + d_i² C_jj + d_j² C_ii + 4 d_i d_j C_ij
    + C_ii C_jj + 2 C_ij²), and Var of the sample covariance is that minus cov_ij², over n."""
    w, means = mixture.weights, s * mixture.means
    covs = s * s * mixture.covariances + sigma ** 2 * torch.eye(mixture.dim, dtype=F64)
    mean = (w[:, None] * means).sum(0)
    cov = (w[:, None, None] * (covs + means[:, :, None] * means[:, None, :])).sum(0) - torch.outer(mean, mean)
    d = means - mean                                                    # (K, D)
    cd = torch.diagonal(covs, dim1=1, dim2=2)                           # (K, D)
    fourth = (w[:, None, None] * (d[:, :, None] ** 2 * d[:, None, :] ** 2 + d[:, :, None] ** 2 * cd[:, None, :]
                                  + d[:, None, :] ** 2 * cd[:, :, None] + 4 * d[:, :, None] * d[:, None, :] * covs
                                  + cd[:, :, None] * cd[:, None, :] + 2 * covs ** 2)).sum(0)
    return mean, cov, (fourth - cov ** 2).sqrt()


def _assert_moments(x, mixture, s=1.0, sigma=0.0, k=5.0):
    """Sample mean and covariance of x (n, D) within k standard errors of the exact ones."""
    n = x.shape[0]
    mean, cov, cov_se = _moments(mixture, s, sigma)
    assert bool(((x.mean(0) - mean).abs() < k * (torch.diagonal(cov) / n).sqrt()).all()), (x.mean(0), mean)
    assert bool(((torch.cov(x.T) - cov).abs() < k * cov_se / math.sqrt(n)).all()), (torch.cov(x.T), cov)


def test_posterior_mixtures_draw_one_sample_per_row_from_its_posterior():
    """Rows alternating between two observations (n = 20 000 each): each half has its posterior's mean and
    covariance within 5 SE (from the exact fourth moments)."""
    prior = _prior(dim=2, seed=4)
    y = torch.tensor([[0.5], [-1.5]], dtype=F64).repeat(20_000, 1)       # y_a, y_b, y_a, y_b, …
    post = prior.posterior(sd.LinearMeasurement(torch.tensor([[1.0, -0.6]], dtype=F64), y, 0.3))
    x = post.sample(_gen(9))
    assert x.shape == (40_000, 2)
    _assert_moments(x[0::2], post.mixture(0))
    _assert_moments(x[1::2], post.mixture(1))


@pytest.mark.slow
def test_probability_flow_with_the_model_draws_each_posterior():
    """The PF-ODE (dopri5, rtol = atol = 1e-9: solver error far below the SE) with the conditional score bound to
    many copies of two observations and of the null condition, started from exact draws of p_T(x | y) (so the
    prior's mismatch does not enter): at eps the samples have the moments of p_eps(x | y) (components
    N(s m_k, s² C_k + σ² I)) for each observation, and of p_eps(x) for the null rows, within 5 SE (n = 1000)."""
    prior, sde, eps, n = _prior(dim=2, seed=4), sd.VPSDE(), 1e-3, 1000
    A = torch.tensor([[1.0, -0.6]], dtype=F64)
    model = prior.measurement_score(sde, A, noise_std=0.3)
    groups = [torch.tensor([0.5], dtype=F64), torch.tensor([-1.5], dtype=F64), model.null_cond]
    laws = [prior.posterior(sd.LinearMeasurement(A, y, 0.3)) for y in groups[:2]] + [prior]
    y = torch.cat([g.expand(n, 1) for g in groups])
    ends = torch.tensor([sde.T, eps], dtype=F64)
    s, sigma = sde.scale(ends).tolist(), sde.std(ends).tolist()
    x_T = torch.cat([sd.GaussianMixture(s[0] * law.means, weights=law.weights, covariances=s[0] ** 2 * law.covariances
                                        + sigma[0] ** 2 * torch.eye(2, dtype=F64)).sample(n, _gen(20 + g))
                     for g, law in enumerate(laws)])
    sampler = sd.ProbabilityFlowSampler(rtol=1e-9, atol=1e-9, eps=eps)
    score = sd.conditional_score(model, y)
    assert score.closed_form                              # so "auto" integrates in t, where the closed form is smooth
    res = sampler.sample(sde, score, (3 * n, 2), x_T=x_T, dtype=F64)
    for g, law in enumerate(laws):
        _assert_moments(res.x[g * n:(g + 1) * n], law, s[1], sigma[1])


# -- e. classifier-free guidance on a Gaussian ------------------------------------------------------------------------
@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("w", [0.5, 2.0, 7.5])
def test_classifier_free_guidance_is_the_tilted_gaussian(sde, w):
    """For a Gaussian prior N(μ, Σ), p_t(x | y)^{1+w} p_t(x)^{−w} is the Gaussian with precision
    Λ_w = (1 + w) Λ_post,t − w Λ_prior,t (positive definite for w ≥ 0, as Λ_post,t ⪰ Λ_prior,t) and mean
    Λ_w⁻¹ ((1 + w) Λ_post,t s m − w Λ_prior,t s μ), where Λ_·,t = (s² C + σ² I)⁻¹ and the posterior (m, C) is
    taken in the information form C = (Σ⁻¹ + Aᵀ R⁻¹ A)⁻¹, m = C (Σ⁻¹ μ + Aᵀ R⁻¹ y), independently of the oracle's
    Kalman form. The guided score equals −Λ_w (x − mean) at every t, row by row, to float64 rounding: the guided
    combination cancels terms (1 + 2w) times its size, from inverses of κ(Λ_w) ≤ 1e3."""
    gen = _gen(11)
    L = torch.randn(3, 3, generator=gen, dtype=F64)
    Sigma = 0.3 * L @ L.T + 0.1 * torch.eye(3, dtype=F64)
    mu = torch.randn(3, generator=gen, dtype=F64)
    prior = sd.GaussianMixture(mu[None], covariances=Sigma[None])
    A, noise = _operators()["general_noise"]
    R = noise["noise_cov"]
    model = prior.measurement_score(sde, A, **noise)
    B = 6
    y = torch.randn(B, 2, generator=gen, dtype=F64)
    x = 2 * torch.randn(B, 3, generator=gen, dtype=F64)
    t = torch.tensor([0.01, 0.05, 0.2, 0.4, 0.7, 1.0], dtype=F64) * sde.T
    guided = sd.classifier_free_guidance(model, y, scale=w, null_cond=model.null_cond)
    got = guided(x, t)
    assert torch.equal(sd.classifier_free_guidance(model, y, scale=w)(x, t), got)       # model.null_cond by default
    Sigma_inv, R_inv = torch.linalg.inv(Sigma), torch.linalg.inv(R)
    C = torch.linalg.inv(Sigma_inv + A.T @ R_inv @ A)
    eye = torch.eye(3, dtype=F64)
    for i in range(B):
        m = C @ (Sigma_inv @ mu + A.T @ R_inv @ y[i])
        s, sigma = float(sde.scale(t[i:i + 1])), float(sde.std(t[i:i + 1]))
        lam_post = torch.linalg.inv(s * s * C + sigma ** 2 * eye)
        lam_prior = torch.linalg.inv(s * s * Sigma + sigma ** 2 * eye)
        lam_w = (1 + w) * lam_post - w * lam_prior
        mean_w = torch.linalg.solve(lam_w, (1 + w) * lam_post @ (s * m) - w * lam_prior @ (s * mu))
        ref = -lam_w @ (x[i] - mean_w)
        scale = (1 + 2 * w) * float((lam_post @ (x[i] - s * m)).abs().max() + (lam_prior @ (x[i] - s * mu)).abs().max())
        kappa = float(torch.linalg.cond(lam_w))
        assert kappa < 1e3
        torch.testing.assert_close(got[i], ref, rtol=0, atol=100 * EPS64 * kappa * max(scale, 1.0))


# -- f. errors -------------------------------------------------------------------------------------------------------
def test_bad_input_gets_a_clear_error():
    prior, sde = _prior(), sd.VPSDE()
    A, noise = _operators()["matrix"]
    model = prior.measurement_score(sde, A, **noise)
    x, t = torch.zeros(4, 3, dtype=F64), torch.full((4,), 0.5, dtype=F64)
    with pytest.raises(ValueError, match=r"shape \(B, m\) = \(B, 2\)"):
        model(x, t, torch.zeros(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="x has batch 4"):
        model(x, t, torch.zeros(3, 2, dtype=F64))
    with pytest.raises(ValueError, match="partly NaN"):
        model(x, t, torch.tensor([[0.0, 1.0], [0.0, float("nan")], [0.0, 0.0], [1.0, 1.0]], dtype=F64))
    with pytest.raises(ValueError, match="finite"):
        model(x, t, torch.full((4, 2), float("inf"), dtype=F64))
    with pytest.raises(TypeError, match="floating-point"):
        model(x, t, torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="LinearMeasurement"):
        prior.posterior("y")
    with pytest.raises(TypeError, match="Mask"):
        prior.measurement_score(sde, "A")
    with pytest.raises(ValueError, match="acts on 2 entries"):
        prior.measurement_score(sde, torch.ones(1, 2, dtype=F64))
    post = prior.posterior(sd.LinearMeasurement(A, torch.zeros(3, 2, dtype=F64), **noise))
    with pytest.raises(ValueError, match="batch B = 3"):
        post.score_t(sde, x, t)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(3,\)"):
        post.marginal(sde, t)
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        post.mixture(3)


def test_a_float32_oracle_of_a_noiseless_measurement_builds_and_agrees_with_float64():
    """A noiseless measurement's posterior covariance is singular by construction; in float32 its zero eigenvalues
    come out as ±D·eps·scale and must be read as zero, not refused. The float32 score then agrees with float64 to
    float32 rounding amplified by the conditioning of Σ_t (scale/σ(t)² ≲ 1e3 at t ≥ 0.01): 1.2e-7 · 1e3 ≈ 1e-4."""
    torch.manual_seed(0)
    sde, K, D = sd.VPSDE(), 3, 4
    means = torch.randn(K, D, dtype=torch.float64) * 2
    L = torch.randn(K, D, D, dtype=torch.float64) * 0.5
    gm64 = sd.GaussianMixture(means, covariances=L @ L.transpose(1, 2) + 0.05 * torch.eye(D, dtype=torch.float64))
    gm32 = gm64.to(dtype=torch.float32)
    x, y = torch.randn(32, D), torch.randn(32, 2) * 2
    for op in (torch.randn(2, D, dtype=torch.float64), sd.Mask(torch.tensor([True, False, True, False]))):
        for time in (0.01, 0.5):
            t = torch.full((32,), time)
            exact = gm64.measurement_score(sde, op)(x.double(), t.double(), y.double())
            got = gm32.measurement_score(sde, op)(x, t, y)
            assert got.dtype == torch.float32
            assert float(((got.double() - exact).norm(dim=1) / exact.norm(dim=1)).max()) < 1e-4
