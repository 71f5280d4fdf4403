"""Score-matching losses: DSM against the oracle, importance sampling, and the closed-form Gaussian case
where denoising, sliced and explicit score matching must agree up to known constants."""
import math

import pytest
import torch

import scoresde as sd
from scoresde.losses import TIME_DISTRIBUTIONS


F64 = torch.float64
SDES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()]
IDS = ["VP", "subVP", "VE"]


def _paired(a, b):
    """Mean and standard error of the paired differences a − b (same t, z draws for both)."""
    diff = (a - b).detach()
    return float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))


class Recording:
    """Wrap a score function and remember the (x_t, t) it was called with."""

    def __init__(self, score):
        self.score, self.calls = score, []

    def __call__(self, x, t):
        self.calls.append((x, t))
        return self.score(x, t)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_oracle_score_minimises_dsm(sde):
    gmm = sd.eight_gaussians(std=0.3)
    x0 = gmm.sample(5000, torch.Generator().manual_seed(0))
    exact = Recording(gmm.score(sde))
    perturbations = {
        "scaled by 1.1": lambda x, t: 0.1 * gmm.score_t(sde, x, t),
        "shifted by 0.3 / σ": lambda x, t: 0.3 / sde.std(t)[:, None] * torch.ones_like(x),
    }

    def loss(model, **kwargs):
        return sd.dsm_loss(sde, model, x0, generator=torch.Generator().manual_seed(1), reduce="none", **kwargs)

    base = loss(exact)
    x_t, t = exact.calls[0]
    for name, e in perturbations.items():
        perturbed = loss(lambda x, t: gmm.score_t(sde, x, t) + e(x, t))
        mean, se = _paired(perturbed, base)
        # The perturbed score is worse by far more than the Monte Carlo error of the paired difference.
        assert mean > 5 * se, name
        # Exactly: E[λ‖s* + e + z/σ‖²] − E[λ‖s* + z/σ‖²] = E[λ‖e‖²] + 2 E[λ eᵀ(s* + z/σ)], and the cross term
        # vanishes because E[z/σ | x_t] = −s*(x_t). So the paired differences minus λ‖e‖² (λ = σ², same draws)
        # average to zero within 4.5 standard errors.
        excess = sde.std(t) ** 2 * e(x_t, t).pow(2).sum(-1)
        mean, se = _paired(perturbed, base + excess)
        assert abs(mean) < 4.5 * se, name
        # Same ordering under the likelihood weighting with importance sampling.
        mean, se = _paired(loss(lambda x, t: gmm.score_t(sde, x, t) + e(x, t), weighting="likelihood",
                                importance_sampling=True),
                           loss(gmm.score(sde), weighting="likelihood", importance_sampling=True))
        assert mean > 5 * se, name


# ---- the Gaussian case -----------------------------------------------------------------------------------
# Data x_0 ~ N(0, c² I_d) and the (deliberately wrong) model score s_θ(x) = −a x. At time t, x_t ~ N(0, v I)
# with v = s² c² + σ². By hand:
#   explicit SM on p_t:  ℓ_ESM(x) = ½ a² ‖x‖² − a d,        E = ½ a² v d − a d
#   sliced SM:           ℓ_SSM(x, u) = ½ a² (uᵀx)² − a ‖u‖², E over u with E[u uᵀ] = I gives ℓ_ESM(x)
#   DSM (λ = 1) at t:    E‖−a x_t + z/σ‖² = a² v d − 2 a d + d/σ² = 2 E[ℓ_ESM] + d/σ²
#                        (the cross term E[x_tᵀ z] = σ d), the constant d/σ² does not depend on the model.
#   In σ-scaled form:    E‖σ s_θ(x_t) + z‖² = d [a² σ² s² c² + (1 − a σ²)²].
C, A, D = 0.8, 0.5, 2


def _gaussian_model(x, t=None):
    return -A * x


def test_explicit_score_matching_is_exact_on_a_linear_score():
    x = C * torch.randn(500, D, generator=torch.Generator().manual_seed(0), dtype=F64)
    per_sample = sd.score_matching_loss(_gaussian_model, x, reduce="none")
    torch.testing.assert_close(per_sample, 0.5 * A**2 * x.pow(2).sum(-1) - A * D, rtol=1e-12, atol=1e-12)
    # With t given, the model is called as model(x, t).
    with_t = sd.score_matching_loss(lambda x, t: -A * x * (1 + t[:, None]), x, t=torch.ones(500, dtype=F64),
                                    reduce="none")
    torch.testing.assert_close(with_t, 0.5 * (2 * A) ** 2 * x.pow(2).sum(-1) - 2 * A * D, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
def test_sliced_equals_explicit_score_matching_in_expectation(projection):
    gen = torch.Generator().manual_seed(1)
    x = C * torch.randn(20000, D, generator=gen, dtype=F64)
    sliced = sd.sliced_score_matching_loss(_gaussian_model, x, n_projections=2, generator=gen, reduce="none",
                                           projection=projection).detach()
    explicit = sd.score_matching_loss(_gaussian_model, x, reduce="none")
    # Same x for both: the paired difference has mean 0 (E over u of ℓ_SSM is ℓ_ESM); 4.5 standard errors.
    mean, se = _paired(sliced, explicit)
    assert abs(mean) < 4.5 * se
    # And both estimate the closed form ½ a² c² d − a d.
    exact = 0.5 * A**2 * C**2 * D - A * D
    assert abs(float(sliced.mean()) - exact) < 4.5 * float(sliced.detach().std()) / math.sqrt(x.shape[0])
    if projection == "rademacher":  # ‖u‖² = d exactly, so the trace term is exact per sample
        projected_mean = sliced + A * D
        assert (projected_mean >= -1e-12).all()


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_dsm_at_one_noise_level_is_twice_explicit_sm_plus_a_constant(sde):
    gen = torch.Generator().manual_seed(2)
    n = 20000
    t = torch.full((n,), 0.3, dtype=F64)
    s, sigma = float(sde.scale(t[:1])), float(sde.std(t[:1]))
    v = s * s * C * C + sigma * sigma
    x0 = C * torch.randn(n, D, generator=gen, dtype=F64)
    dsm = sd.dsm_loss(sde, _gaussian_model, x0, weighting="none", t=t, generator=gen, reduce="none")
    x_t = s * x0 + sigma * torch.randn(n, D, generator=gen, dtype=F64)     # fresh samples of p_t
    explicit = sd.score_matching_loss(_gaussian_model, x_t, reduce="none").detach()
    se_dsm = float(dsm.std()) / math.sqrt(n)
    se_explicit = float(explicit.std()) / math.sqrt(n)
    closed_dsm = A**2 * v * D - 2 * A * D + D / sigma**2
    # Each Monte Carlo mean within 4.5 standard errors of its closed form, and of each other's relation.
    assert abs(float(dsm.mean()) - closed_dsm) < 4.5 * se_dsm
    assert abs(float(explicit.mean()) - (0.5 * A**2 * v * D - A * D)) < 4.5 * se_explicit
    relation = float(dsm.mean()) - (2 * float(explicit.mean()) + D / sigma**2)
    assert abs(relation) < 4.5 * math.hypot(se_dsm, 2 * se_explicit)
    # The other weightings at a fixed t are the same loss times λ(t).
    for weighting, lam in (("sigma2", sigma**2), ("likelihood", float(sde.diffusion(t[:1])) ** 2)):
        weighted = sd.dsm_loss(sde, _gaussian_model, x0, weighting=weighting, t=t,
                               generator=torch.Generator().manual_seed(3), reduce="none")
        plain = sd.dsm_loss(sde, _gaussian_model, x0, weighting="none", t=t,
                            generator=torch.Generator().manual_seed(3), reduce="none")
        torch.testing.assert_close(weighted, lam * plain, rtol=1e-10, atol=0)


def _expected_dsm(sde, weighting, eps, points=20001):
    """E_{t~U(eps,T)}[λ/σ² E‖σ s_θ + z‖²] by the trapezoid rule in u = log t (the integrand is ∝ 1/t near 0
    for the likelihood weighting, smooth in u): relative error ~ (Δu)² ≈ 1e-7, negligible here."""
    u = torch.linspace(math.log(eps), math.log(sde.T), points, dtype=F64)
    t = torch.exp(u)
    s, sigma = sde.scale(t), sde.std(t)
    inner = D * (A**2 * sigma**2 * s**2 * C**2 + (1 - A * sigma**2) ** 2)
    lam = {"sigma2": sigma**2, "likelihood": sde.diffusion(t) ** 2, "none": torch.ones_like(t)}[weighting]
    integrand = lam / sigma**2 * inner * t                                        # dt = t du
    return float(torch.trapezoid(integrand, u)) / (sde.T - eps)


@pytest.mark.parametrize("sde", SDES + [sd.VPSDE(0.1, 10.0, T=2.0)], ids=IDS + ["VP(T=2)"])
@pytest.mark.parametrize("weighting", ["likelihood", "sigma2"])
def test_importance_sampling_is_unbiased(sde, weighting):
    n, eps = 20000, 1e-3
    x0 = C * torch.randn(n, D, generator=torch.Generator().manual_seed(4), dtype=F64)
    exact = _expected_dsm(sde, weighting, eps)
    for importance_sampling in (False, True):
        per_sample = sd.dsm_loss(sde, _gaussian_model, x0, weighting=weighting, eps=eps, reduce="none",
                                 importance_sampling=importance_sampling,
                                 generator=torch.Generator().manual_seed(5))
        mean, se = float(per_sample.mean()), float(per_sample.std()) / math.sqrt(n)
        # Both estimators target the same E_{t~U(eps,T)}[ℓ]; 4.5 standard errors.
        assert abs(mean - exact) < 4.5 * se, (importance_sampling, mean, exact, se)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_importance_sampling_reduces_variance_of_the_likelihood_loss(sde):
    # With the exact score of the Gaussian data, s*(x, t) = −x / v(t), the residual ‖σ s* + z‖² is O(d) at every
    # t, and the plain estimator's variance comes from the 1/t growth of λ/σ² = g²/σ² near eps. Sampling
    # p(t) ∝ g²/σ² makes that weight constant: the variance falls by well over 2× (about 10× at eps = 1e-3).
    n, eps = 20000, 1e-3

    def exact_score(x, t):
        v = sde.scale(t) ** 2 * C**2 + sde.std(t) ** 2
        return -x / v[:, None]

    x0 = C * torch.randn(n, D, generator=torch.Generator().manual_seed(7), dtype=F64)
    variances = [float(sd.dsm_loss(sde, exact_score, x0, weighting="likelihood", eps=eps, reduce="none",
                                   importance_sampling=flag, generator=torch.Generator().manual_seed(8)).var())
                 for flag in (False, True)]
    assert variances[1] < variances[0] / 2


def test_importance_sampled_times_follow_the_proposal():
    # The sampled t have density ∝ g²/σ² on [eps, T]: compare the fraction of t below a point with the exact
    # CDF ratio by quadrature; binomial standard error √(p(1−p)/n).
    sde, eps, n = sd.VPSDE(), 1e-4, 50000
    model = Recording(lambda x, t: -x)
    sd.dsm_loss(sde, model, torch.zeros(n, 1, dtype=F64), weighting="likelihood", eps=eps,
                importance_sampling=True, generator=torch.Generator().manual_seed(6))
    t = model.calls[0][1]
    assert float(t.min()) >= eps and float(t.max()) <= sde.T
    u = torch.linspace(math.log(eps), 0.0, 200001, dtype=F64)
    h = sde.diffusion(torch.exp(u)) ** 2 / sde.std(torch.exp(u)) ** 2 * torch.exp(u)
    cdf = torch.cat([torch.zeros(1, dtype=F64), torch.cumulative_trapezoid(h, u)])
    cdf = cdf / cdf[-1]
    for point in (1e-3, 1e-2, 0.1, 0.5):
        p = float(cdf[torch.searchsorted(u, math.log(point))])
        assert abs(float((t < point).to(F64).mean()) - p) < 4.5 * math.sqrt(p * (1 - p) / n)


def test_losses_backpropagate_to_parameters():
    torch.manual_seed(0)
    net = sd.nets.MLP(2, hidden=16, depth=1, time_embedding_dim=8)
    model = sd.ScoreModel(net, sd.VPSDE(), "eps")
    x0 = torch.randn(16, 2)
    for loss in (sd.dsm_loss(sd.VPSDE(), model, x0),
                 sd.dsm_loss(sd.VPSDE(), model, x0, weighting="likelihood", importance_sampling=True),
                 sd.sliced_score_matching_loss(model, x0, t=torch.full((16,), 0.5)),
                 sd.score_matching_loss(lambda x: model(x, torch.full((16,), 0.5)), x0)):
        net.zero_grad()
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_invalid_arguments_raise():
    sde, x0 = sd.VPSDE(), torch.randn(4, 2)
    score = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match="'sigma2', 'likelihood', 'flow_matching', 'none'"):
        sd.dsm_loss(sde, score, x0, weighting="l2")
    with pytest.raises(ValueError, match="'mean', 'sum', 'none'"):
        sd.dsm_loss(sde, score, x0, reduce="avg")
    with pytest.raises(ValueError, match="eps"):
        sd.dsm_loss(sde, score, x0, eps=0.0)
    with pytest.raises(ValueError, match=r"\(B, \*D\)"):
        sd.dsm_loss(sde, score, torch.randn(4))
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        sd.dsm_loss(sde, lambda x, t: x[:, :1], x0)
    with pytest.raises(ValueError, match="not both"):
        sd.dsm_loss(sde, score, x0, t=torch.rand(4), importance_sampling=True)
    with pytest.raises(ValueError, match="n_projections"):
        sd.sliced_score_matching_loss(lambda x: -x, x0, n_projections=0)
    with pytest.raises(ValueError, match="'rademacher', 'gaussian'"):
        sd.sliced_score_matching_loss(lambda x: -x, x0, projection="normal")
    with pytest.raises(ValueError, match="max_dim"):
        sd.score_matching_loss(lambda x: -x, torch.randn(2, 2000))
    with pytest.raises(ValueError, match="no_grad"):
        sd.score_matching_loss(lambda x: (-x).detach(), x0)


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_dsm_trains_a_network_towards_the_oracle(parameterization):
    # A few hundred Adam steps on the 8-Gaussian mixture close most of the gap between a fresh MLP and the
    # exact score. The gap is measured as the paired excess DSM loss over the oracle on held-out data, which
    # is E[σ² ‖s_θ − s*‖²] ≥ 0 (see test_oracle_score_minimises_dsm); its standard error is ~0.01 here while
    # training shrinks it from ~0.3–1.6 to ~0.1.
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(std=0.2)
    torch.manual_seed(0)
    net = sd.nets.MLP(2, hidden=64, depth=2, time_embedding_dim=32, fourier_scale=1.0)
    model = sd.ScoreModel(net, sde, parameterization, sigma_data=1.4)
    held_out = gmm.sample(4000, torch.Generator().manual_seed(9)).float()

    def oracle(x, t):
        return gmm.score_t(sde, x.double(), t.double()).float()

    def excess():
        with torch.no_grad():
            mean, se = _paired(*(sd.dsm_loss(sde, m, held_out, generator=torch.Generator().manual_seed(3),
                                             reduce="none") for m in (model, oracle)))
        return mean, se

    before, _ = excess()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(250):
        loss = sd.dsm_loss(sde, model, gmm.sample(256, gen).float(), generator=gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after, se = excess()
    assert after > -4.5 * se          # nothing beats the exact score
    assert after < 0.5 * before


# -- labels ------------------------------------------------------------------------------------------------
def test_dsm_with_labels_is_dsm_of_the_class_score_and_shards():
    """With cond, dsm_loss evaluates model(x_t, t, cond) on the same draws as the label-bound model, and its
    shards average to the whole batch's loss."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(num_classes=4)
    x0, labels = gmm.sample(64, torch.Generator().manual_seed(0), return_labels=True)
    conditional = gmm.conditional_score(sde)
    got = sd.dsm_loss(sde, conditional, x0, cond=labels, generator=torch.Generator().manual_seed(1), reduce="none")
    bound = sd.dsm_loss(sde, lambda x, t: conditional(x, t, labels), x0, generator=torch.Generator().manual_seed(1),
                        reduce="none")
    torch.testing.assert_close(got, bound, rtol=1e-12, atol=0)
    shards = [sd.dsm_loss(sde, conditional, x0, cond=labels, generator=torch.Generator().manual_seed(1),
                          shard=(r, 4)) for r in range(4)]
    torch.testing.assert_close(torch.stack(shards).mean(), got.mean(), rtol=1e-12, atol=0)


def test_the_class_score_beats_the_unconditional_one_given_labels():
    """E‖s + z/σ‖² is minimised by E[−z/σ | x_t, c] = ∇ log p_t(x_t | c): on the same draws, with labels, the
    conditional score has the smaller loss; the difference, E[λ ‖∇ log p_t(x | c) − ∇ log p_t(x)‖²] > 0, is
    large here (the classes are far apart), so 4 standard errors of the paired difference separate them."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(num_classes=4)
    x0, labels = gmm.sample(4000, torch.Generator().manual_seed(0), return_labels=True)
    conditional = gmm.conditional_score(sde)
    with_labels = sd.dsm_loss(sde, conditional, x0, cond=labels, generator=torch.Generator().manual_seed(2),
                              reduce="none")
    without = sd.dsm_loss(sde, conditional, x0, cond=torch.full_like(labels, 4),
                          generator=torch.Generator().manual_seed(2), reduce="none")
    diff = without - with_labels
    assert float(diff.mean()) > 4 * float(diff.std()) / math.sqrt(len(diff))


def test_classifier_loss_is_minimised_by_the_exact_classifier():
    """E[−log q(c | x_t)] − E[−log p_t(c | x_t)] = E KL(p_t(·|x_t) ‖ q) ≥ 0: tempering the exact classifier's
    logits (τ = 0.5, 2) raises the loss on the same draws by more than 4 paired standard errors."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(num_classes=4)
    x0, labels = gmm.sample(4000, torch.Generator().manual_seed(0), return_labels=True)
    exact = gmm.classifier(sde)

    def loss(classifier):
        return sd.classifier_loss(sde, classifier, x0, labels, generator=torch.Generator().manual_seed(3),
                                  reduce="none")

    best = loss(exact)
    for tau in (0.5, 2.0):
        diff = loss(lambda x, t: exact(x, t) / tau) - best
        assert float(diff.mean()) > 4 * float(diff.std()) / math.sqrt(len(diff)), tau
    shards = [sd.classifier_loss(sde, exact, x0, labels, generator=torch.Generator().manual_seed(3), shard=(r, 2))
              for r in range(2)]
    torch.testing.assert_close(torch.stack(shards).mean(), best.mean(), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="in 0 … 3;"):
        sd.classifier_loss(sde, exact, x0[:2], torch.tensor([0, 4]))


@pytest.mark.parametrize("weighting", sd.WEIGHTINGS.names())
@pytest.mark.slow
@pytest.mark.parametrize("distribution", TIME_DISTRIBUTIONS.names())
def test_every_weighting_has_its_closed_form_expectation_at_the_exact_score(weighting, distribution):
    """For x₀ ~ N(0, c² I) and the exact score, E_z ‖score + z/σ‖² = D (1/σ² − 1/v) with v = s² c² + σ², so the loss
    is D E_{t ~ U(eps, T)} λ(t) (1/σ² − 1/v) (quadrature on 200,001 points). The Monte Carlo loss (n = 200,000),
    with t uniform or drawn from each time distribution with its unbiasing weight, is within 5 standard errors."""
    sde, c, D, eps = sd.VPSDE(), 0.5, 4, 1e-3
    gmm = sd.GaussianMixture(torch.zeros(1, D, dtype=torch.float64), stds=[c])
    n = 200_000
    x0 = gmm.sample(n, torch.Generator().manual_seed(0))
    per = sd.dsm_loss(sde, gmm.score(sde), x0, weighting=weighting, time_distribution=distribution,
                      eps=eps, generator=torch.Generator().manual_seed(1), reduce="none")
    t = torch.linspace(eps, sde.T, 200_001, dtype=torch.float64)
    s, sigma = sde.scale(t), sde.std(t)
    lam = sd.WEIGHTINGS.get(weighting)[0](sde, t)
    integrand = lam * (1 / sigma ** 2 - 1 / (s * s * c * c + sigma ** 2)) * D
    truth = float(torch.trapezoid(integrand, t)) / (sde.T - eps)
    se = float(per.std()) / math.sqrt(n)
    assert abs(float(per.mean()) - truth) < 5 * se, (float(per.mean()), truth, se)


def test_min_snr_and_edm_weightings_have_their_defining_values():
    sde = sd.VPSDE()
    t = torch.tensor([0.05, 0.3, 0.9], dtype=torch.float64)
    s, sigma = sde.scale(t), sde.std(t)
    snr = s * s / (sigma * sigma)
    torch.testing.assert_close(sd.WEIGHTINGS.get("min_snr")[0](sde, t), torch.clamp(snr, max=5.0) * sigma ** 4 / s ** 2)
    # EDM: λ_D (σ̃) = (σ̃² + σ_d²)/(σ̃ σ_d)² on ‖D − x₀‖², and ‖D − x₀‖² = (σ⁴/s²) ‖score + z/σ‖²
    tilde = sigma / s
    torch.testing.assert_close(sd.WEIGHTINGS.get("edm")[0](sde, t),
                               (tilde ** 2 + 0.25) / (tilde ** 2 * 0.25) * sigma ** 4 / s ** 2)
    torch.testing.assert_close(sd.WEIGHTINGS.get("snr")[0](sde, t), sd.WEIGHTINGS.get("sigma2")[0](sde, t))


def test_time_distributions_have_their_densities_and_log_snr_equals_importance():
    """Each sampler's reported q(t) is its law's density: the histogram of 400,000 draws in 40 cells of log t
    matches ∫ q over each cell within 5 binomial standard errors + 1e-3; and log-SNR-uniform times have the
    importance proposal's density g²/σ² / Z in closed form."""


    sde, eps, n = sd.VPSDE(), 1e-3, 400_000
    edges = torch.logspace(math.log10(eps), 0, 41, dtype=torch.float64)
    for name in ("importance", "log_snr", "log_normal"):
        q = TIME_DISTRIBUTIONS.build(name)
        t, density = q.sample(sde, eps, n, torch.Generator().manual_seed(2), "cpu", torch.float64)
        assert float(t.min()) >= eps and float(t.max()) <= sde.T
        fine = torch.logspace(math.log10(eps), 0, 40 * 200 + 1, dtype=torch.float64)
        if name == "importance":                  # piecewise uniform in log t on its table: a piecewise-linear CDF
            import numpy as np

            from scoresde.losses import _importance_table

            u, _, cdf = _importance_table(sde, eps, "cpu")
            at_edges = np.interp(np.log(edges.numpy()), u.numpy(), (cdf / cdf[-1]).numpy())
            mass = torch.diff(torch.from_numpy(at_edges))
        else:
            g2 = sd.sde.diffusion_values(sde, fine) ** 2
            if name == "log_snr":
                ends = sde.log_snr(torch.tensor([sde.T, eps], dtype=torch.float64))
                dens = g2 / sde.std(fine) ** 2 / float(ends[1] - ends[0])
            else:
                normal = torch.distributions.Normal(-1.2, 1.2)
                level = torch.log(sde.std(fine) / sde.scale(fine))
                lims = torch.log(sde.std(torch.tensor([eps, 1.0], dtype=torch.float64)) /
                                 sde.scale(torch.tensor([eps, 1.0], dtype=torch.float64)))
                Z = float(normal.cdf(lims[1]) - normal.cdf(lims[0]))
                dens = torch.exp(normal.log_prob(level)) / Z * g2 / (2 * sde.std(fine) ** 2)
            cells = torch.cumulative_trapezoid(dens, fine)
            cum = torch.cat([torch.zeros(1, dtype=torch.float64), cells])[::200]
            mass = torch.diff(cum)
        hist = torch.histc(torch.log(t), 40, math.log(eps), 0.0).to(torch.float64) / n
        assert bool(((hist - mass).abs() < 5 * (mass * (1 - mass) / n).sqrt() + 1e-3).all()), name


class _LateNoise(sd.LinearSDE):
    """dx = g(t) dw with g = 0 before t = 0.5: std(t) = 0 there (a user SDE that starts adding noise late)."""

    def drift_coef(self, t):
        return torch.zeros_like(t)

    def diffusion(self, t):
        return (t >= 0.5).to(t.dtype)


def test_dsm_loss_refuses_what_would_make_it_nan_and_names_the_row():
    """Each of these returned NaN, inf or an IndexError from inside before."""
    sde, model = sd.VPSDE(), sd.GaussianMixture(torch.zeros(1, 2), torch.ones(1)).score(sd.VPSDE())
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    for bad in (float("nan"), float("inf")):
        x = x0.clone()
        x[3, 1] = bad
        with pytest.raises(ValueError, match=r"x0 has non-finite values \(NaN or inf\) in row 3 \(1 of 6 rows\)"):
            sd.dsm_loss(sde, model, x)
    with pytest.raises(ValueError, match=r"x0 must hold at least one sample .* got shape \(0, 2\)"):
        sd.dsm_loss(sde, model, torch.zeros(0, 2))
    late = _LateNoise()
    t = torch.tensor([0.9, 0.8, 0.3, 0.2, 0.7, 0.6])
    with pytest.raises(ValueError, match=r"std\(t\) = 0 at t = 0.3 \(row 2; 2 of 6 rows\).*g = 0 on \[0, t\]"):
        sd.dsm_loss(late, model, x0, t=t)
    with pytest.raises(ValueError, match=r"std\(t\) = 0 at t = .*added no noise"):
        sd.dsm_loss(late, model, x0, generator=torch.Generator().manual_seed(1))
    assert bool(torch.isfinite(sd.dsm_loss(late, model, x0, t=t.clamp_min(0.55))))
    with pytest.raises(ValueError, match=r"the weight λ\(t\)/std\(t\)² of 'blows_up' is inf at t = 0.3 \(row 2"):
        def blows_up(sde, t):
            return torch.where(t < 0.5, torch.full_like(t, float("inf")), torch.ones_like(t))

        sd.dsm_loss(sde, model, x0, t=t, weighting=blows_up)


def test_the_loss_object_carries_its_settings_and_equals_dsm_loss():
    """DSMLoss is dsm_loss with its settings bound (the same draws, bit for bit); the Trainer's default is the
    config's; time_distribution is the one way to ask for importance sampling."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    x0, score = gmm.sample(32, torch.Generator().manual_seed(0)), gmm.score(sd.VPSDE())
    cases = [(sd.DSMLoss(), dict(weighting="likelihood", importance_sampling=True)),
             (sd.DSMLoss("sigma2", "uniform"), dict(weighting="sigma2")),
             (sd.DSMLoss("edm", "log_normal", importance_weight=False, eps=1e-3),
              dict(weighting="edm", time_distribution="log_normal", importance_weight=False, eps=1e-3))]
    for loss, options in cases:
        got = loss(sde, score, x0, generator=torch.Generator().manual_seed(1))
        assert torch.equal(got, sd.dsm_loss(sde, score, x0, generator=torch.Generator().manual_seed(1), **options))
    assert sd.LOSSES.get("dsm")[0] is sd.DSMLoss
    made = sd.DSMLoss.from_config(sd.TrainConfig(weighting="sigma2", time_distribution="uniform"))
    assert (made.weighting, made.time_distribution) == ("sigma2", "uniform")
    with pytest.warns(DeprecationWarning, match=r"TrainConfig\(importance_sampling=False\) is deprecated: use "
                                                r"time_distribution='uniform'"):
        old = sd.TrainConfig(importance_sampling=False)
    assert (old.time_distribution, old.importance_sampling) == ("uniform", None)
    with pytest.raises(ValueError, match="give time_distribution='log_snr' or importance_sampling=True, not both"):
        sd.TrainConfig(importance_sampling=True, time_distribution="log_snr")
    made = sd.DSMLoss.from_config(sd.TrainConfig(time_distribution="log_snr", importance_weight=False))
    assert (made.time_distribution, made.importance_weight) == ("log_snr", False)
    assert "time_distribution='importance'" in repr(sd.DSMLoss())
    with pytest.raises(ValueError, match="unknown weighting 'nope'"):
        sd.DSMLoss("nope")
    with pytest.raises(ValueError, match="valid choices: 'uniform', 'importance', 'log_snr', 'log_normal'"):
        sd.DSMLoss(time_distribution="beta")
    with pytest.raises(ValueError, match="eps must be a number > 0"):
        sd.DSMLoss(eps=0)


def test_a_trainer_given_a_loss_object_uses_its_settings_not_the_configs():
    sde = sd.VPSDE()
    x0 = sd.eight_gaussians().sample(256, torch.Generator().manual_seed(2)).float()

    def train(config, loss_fn=None):
        torch.manual_seed(0)
        model = sd.ScoreModel(sd.nets.MLP(2, hidden=8), sde)
        sd.Trainer(model, sde, x0, config, loss_fn=loss_fn, hooks=[]).train()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    quiet = dict(steps=5, batch_size=32, progress=False)
    by_config = train(sd.TrainConfig(weighting="sigma2", time_distribution="uniform", **quiet))
    by_object = train(sd.TrainConfig(**quiet), sd.DSMLoss("sigma2", "uniform"))
    assert torch.equal(by_config, by_object)
    assert not torch.equal(by_object, train(sd.TrainConfig(**quiet)))
