"""Conditional scores and guidance against the labelled oracle.

The truths: for a labelled mixture, p_t(x | c) is the class's own mixture (its score computed here from
``gmm.conditional(c)``, a separate GaussianMixture), and ∇ log p_t(x) + ∇ log p_t(c | x) = ∇ log p_t(x | c).
Sampling checks use the two statistics of tests/helpers.py ``assert_oracle_law`` (energy distance within 5 noise
floors, mean log-density within 5 standard errors) against the class's exact law.
"""
import math

import pytest
import torch

import scoresde as sd
from helpers import F64, assert_oracle_law, mixture_16d_diagonal

TIMES = (0.05, 0.3, 0.9)


def labelled_16d() -> sd.GaussianMixture:
    """The 16-D mixture of tests/helpers.py with two classes of two components each: class 0 = components 0
    and 2 (weights 0.1 and 0.3, so the class reweights them 1 : 3), class 1 = components 1 and 3."""
    gmm = mixture_16d_diagonal()
    return sd.GaussianMixture(gmm.means, gmm.stds, gmm.weights, labels=torch.tensor([0, 1, 0, 1]))


def points(gmm, sde, t, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = gmm.sample(n, g)
    time = torch.full((n,), t, dtype=F64)
    return sde.sample_marginal(x0, time, generator=g)[0], time


class CountingConditional:
    """A conditional model (the exact conditional score) that counts its calls and the rows it was given."""

    def __init__(self, gmm, sde):
        self.score, self.num_classes = gmm.conditional_score(sde), gmm.num_classes
        self.calls, self.rows = 0, []

    def __call__(self, x, t, cond):
        self.calls += 1
        self.rows.append(x.shape[0])
        return self.score(x, t, cond)


# -- the oracle's classes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=["VP", "VE"])
def test_conditional_score_is_the_class_mixtures_score(sde):
    gmm = sd.eight_gaussians(num_classes=4)
    for t in TIMES:
        x, time = points(gmm, sde, t)
        for c in range(4):
            expected = gmm.conditional(c).score(sde)(x, time)
            got = gmm.conditional_score(sde)(x, time, torch.full((64,), c))
            assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
        null = gmm.conditional_score(sde)(x, time, 4)
        assert torch.allclose(null, gmm.score(sde)(x, time), rtol=1e-12, atol=1e-12)


def test_conditional_law_is_the_reweighted_class():
    gmm = labelled_16d()
    c0 = gmm.conditional(0)
    assert torch.equal(c0.means, gmm.means[[0, 2]])
    assert torch.allclose(c0.weights, torch.tensor([0.25, 0.75], dtype=F64))
    assert gmm.num_classes == 2 and c0.labels is None


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()], ids=["VP", "subVP", "VE"])
def test_exact_classifier_is_bayes(sde):
    """Rows of exp(log p_t(c | x)) sum to one, and ∇ log p_t(x) + ∇_x log p_t(c | x) (autograd) is the class score."""
    gmm = labelled_16d()
    classifier = gmm.classifier(sde)
    for t in TIMES:
        x, time = points(gmm, sde, t, n=32)
        log_probs = classifier(x, time)
        assert log_probs.shape == (32, 2)
        assert torch.allclose(log_probs.exp().sum(1), torch.ones(32, dtype=F64), atol=1e-12)
        for c in range(2):
            xg = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(classifier(xg, time)[:, c].sum(), xg)
            bayes = gmm.score(sde)(x, time) + grad
            assert torch.allclose(bayes, gmm.conditional(c).score(sde)(x, time), rtol=1e-8, atol=1e-8)


def test_class_probability_at_t0_is_the_component_posterior():
    """At t → 0 with well-separated components, a point drawn from component k is classified as label(k)."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    x, labels = gmm.sample(500, torch.Generator().manual_seed(1), return_labels=True)
    log_probs = gmm.classifier(sde)(x, torch.full((500,), 1e-5, dtype=F64))
    assert torch.equal(log_probs.argmax(1), labels)


# -- the guidance formulas ---------------------------------------------------------------------------------
@pytest.mark.parametrize("w", [0.0, 0.5, 2.0, 4.0])
def test_classifier_free_guidance_formula_in_one_call(w):
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(num_classes=4)
    x, time = points(gmm, sde, 0.4, n=16)
    cond = torch.arange(16) % 4
    model = CountingConditional(gmm, sde)
    guided = sd.classifier_free_guidance(model, cond, scale=w)
    out = guided(x, time)
    assert model.calls == 1 and model.rows == [16 if w == 0 else 32]
    assert guided.network_evaluations == (1 if w == 0 else 2)
    s_c = gmm.conditional_score(sde)(x, time, cond)
    s_null = gmm.score(sde)(x, time)
    assert torch.allclose(out, (1 + w) * s_c - w * s_null, rtol=1e-12, atol=1e-12)


def test_classifier_free_guidance_counts_network_evaluations_in_a_sampler():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(num_classes=4)
    model = CountingConditional(gmm, sde)
    sampler = sd.DPMSolver(10, order=2)
    res = sampler.sample(sde, sd.classifier_free_guidance(model, 1, scale=2.0), (8, 2), dtype=F64,
                         generator=torch.Generator().manual_seed(0))
    assert res.nfe == sampler.nfe() == model.calls
    assert res.network_evaluations == 2 * res.nfe and set(model.rows) == {16}
    plain = sampler.sample(sde, gmm.score(sde), (8, 2), dtype=F64)
    assert plain.network_evaluations == plain.nfe


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_classifier_guidance_adds_the_classifier_gradient(gamma):
    sde, gmm = sd.VESDE(), labelled_16d()
    x, time = points(gmm, sde, 0.2, n=16)
    cond = torch.arange(16) % 2
    classifier, score = gmm.classifier(sde), gmm.score(sde)
    guided = sd.classifier_guidance(score, classifier, cond, scale=gamma)
    with torch.no_grad():                                     # as samplers call it
        out = guided(x, time)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(classifier(xg, time).gather(1, cond[:, None]).sum(), xg)
    assert torch.allclose(out, score(x, time) + gamma * grad, rtol=1e-12, atol=1e-12)


def test_classifier_guidance_keeps_the_graph_for_the_likelihood():
    """Differentiating through the guided score (as the divergence does) gives the class score's Jacobian."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(num_classes=4)
    x, time = points(gmm, sde, 0.3, n=4)
    guided = sd.classifier_guidance(gmm.score(sde), gmm.classifier(sde), 2)
    exact = gmm.conditional(2).score(sde)

    def jacobian_row(fn):
        xg = x.clone().requires_grad_(True)
        (row,) = torch.autograd.grad(fn(xg, time)[:, 0].sum(), xg)
        return row

    assert torch.allclose(jacobian_row(guided), jacobian_row(exact), rtol=1e-8, atol=1e-8)


# -- sampling a class's exact law ----------------------------------------------------------------------------
SAMPLERS = {"dpm2": lambda: sd.DPMSolver(25, order=2), "heun": lambda: sd.HeunSampler(steps=30),
            "reverse_sde": lambda: sd.ReverseSDESampler(steps=300, backend="native")}
CASES = [(d, s, how) for d in (2, 16) for s in ("dpm2", "heun", "reverse_sde") for how in ("conditional", "classifier")
         if not (d == 16 and s == "reverse_sde")]


@pytest.mark.slow
@pytest.mark.parametrize("dim,sampler,how", CASES, ids=[f"{d}d-{s}-{h}" for d, s, h in CASES])
def test_guided_sampling_reproduces_the_class_law(dim, sampler, how):
    """The exact conditional score and classifier guidance with the exact classifier at γ = 1 both sample the
    class's exact law (a two-component class: the mode weights are part of the check)."""
    sde = sd.VPSDE()
    gmm = sd.eight_gaussians(num_classes=4) if dim == 2 else labelled_16d()
    c = 1 if dim == 2 else 0
    if how == "conditional":
        score = sd.conditional_score(gmm.conditional_score(sde), c)
    else:
        score = sd.classifier_guidance(gmm.score(sde), gmm.classifier(sde), c, scale=1.0)
    res = SAMPLERS[sampler]().sample(sde, score, (1000, dim), generator=torch.Generator().manual_seed(3), dtype=F64)
    assert_oracle_law(res.x, gmm.conditional(c), key=("class", dim, c))


def test_guidance_toward_the_wrong_class_is_detected():
    """The same check rejects samples of another class (it can fail)."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(num_classes=4)
    score = sd.conditional_score(gmm.conditional_score(sde), 2)
    res = sd.DPMSolver(25, order=2).sample(sde, score, (1000, 2), generator=torch.Generator().manual_seed(3),
                                           dtype=F64)
    with pytest.raises(AssertionError):
        assert_oracle_law(res.x, gmm.conditional(1), key=("class", 2, 1))


def test_conditional_log_likelihood_is_the_class_density():
    """log_likelihood with the exact conditional score (and with classifier guidance at γ = 1) is log p_eps(x | c).

    Exact divergence at rtol = atol = 1e-7: the ODE's global error is orders below the 1e-3 nats allowed; what
    is left is the prior mismatch log N(z; 0, I) − log p_T(z | c) at the VP end time (s(1) ≈ 0.0067, so
    |Δ| ≲ s·|μ|·|z| ≈ 0.03 on this class), also computed here and added to the truth.
    """
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(num_classes=4)
    law = gmm.conditional(3)
    x = law.sample(16, torch.Generator().manual_seed(5))
    for score in (sd.conditional_score(gmm.conditional_score(sde), 3),
                  sd.classifier_guidance(gmm.score(sde), gmm.classifier(sde), 3)):
        res = sd.log_likelihood(sde, score, x, divergence="exact", rtol=1e-7, atol=1e-7, eps=1e-5)
        at_T = torch.full((16,), sde.T, dtype=F64)
        truth = law.log_prob_t(sde, x, torch.full((16,), 1e-5, dtype=F64))
        ode_only = res.delta_log_prob + law.log_prob_t(sde, res.z, at_T)
        assert torch.allclose(ode_only, truth, atol=1e-3), (ode_only - truth).abs().max()


# -- errors ----------------------------------------------------------------------------------------------
def test_bad_labels_are_named():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(num_classes=4)
    x, time = points(gmm, sde, 0.5, n=4)
    score = gmm.conditional_score(sde)
    with pytest.raises(ValueError, match=r"0 … 3, or 4 for no label"):
        score(x, time, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(4,\)"):
        score(x, time, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="long"):
        score(x, time, torch.zeros(4))
    with pytest.raises(ValueError, match="in 0 … 3;"):
        sd.classifier_free_guidance(CountingConditional(gmm, sde), 4, scale=1.0)(x, time)
    with pytest.raises(ValueError, match="needs the null condition"):
        sd.classifier_free_guidance(gmm.score(sde), 1, scale=1.0)
    with pytest.raises(ValueError, match="finite number"):
        sd.classifier_free_guidance(CountingConditional(gmm, sde), 1, scale=math.inf)
    with pytest.raises(ValueError, match=r"shape \(B, C\)"):
        sd.classifier_guidance(gmm.score(sde), lambda x, t: x.sum(1), 1)(x, time)
    with pytest.raises(ValueError, match="needs a labelled mixture"):
        sd.GaussianMixture(gmm.means, gmm.stds).classifier(sde)
    with pytest.raises(ValueError, match="every class"):
        sd.GaussianMixture(gmm.means, gmm.stds, labels=torch.tensor([0, 0, 2, 2, 0, 0, 2, 2]))
