"""The `Score` type: what every score-making function returns, what wrappers pass on, and the time variable that
"auto" picks from it (issue 26: a plain closure around a network was integrated in t, at twice the evaluations)."""
import pytest
import torch

import scoresde as sd
from scoresde.score import as_score
from scoresde.sde import choose_time_variable

F64 = torch.float64


def _eps_network(dim):
    torch.manual_seed(0)
    return sd.ScoreModel(sd.nets.MLP(dim, hidden=32), sd.VPSDE()).double()


def test_a_plain_closure_around_a_network_is_integrated_in_sigma():
    """score_sde_pytorch's get_score_fn is such a closure: it now gets σ̃ without declaring anything, and takes the
    evaluations that σ̃ takes (the same solve), while t takes more."""
    sde, model = sd.VPSDE(), _eps_network(2)

    def closure(x, t):
        return model(x, t)

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert choose_time_variable("auto", sde, closure) == "sigma"
    default = sd.log_likelihood(sde, closure, x, divergence="exact")
    in_sigma = sd.log_likelihood(sde, closure, x, divergence="exact", time_variable="sigma")
    in_t = sd.log_likelihood(sde, closure, x, divergence="exact", time_variable="t")
    assert default.nfe == in_sigma.nfe < in_t.nfe
    assert torch.equal(default.log_prob, in_sigma.log_prob)
    res = sd.ProbabilityFlowSampler().sample(sde, closure, (4, 2), generator=torch.Generator().manual_seed(2),
                                             dtype=F64)
    ref = sd.ProbabilityFlowSampler(time_variable="sigma").sample(sde, closure, (4, 2),
                                                                  generator=torch.Generator().manual_seed(2), dtype=F64)
    assert torch.equal(res.x, ref.x) and res.nfe == ref.nfe


def test_closed_form_scores_keep_t_and_every_wrapper_passes_on_what_it_wraps():
    sde = sd.VPSDE()
    gmm = sd.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=F64), torch.tensor([0.5, 0.5], dtype=F64),
                             labels=torch.tensor([0, 1]))
    exact = gmm.score(sde)
    assert isinstance(exact, sd.Score) and exact.closed_form and exact.time_variable == "t"
    assert choose_time_variable("auto", sde, exact) == "t"
    meas = sd.LinearMeasurement(torch.eye(2, dtype=F64)[:1], torch.tensor([1.0], dtype=F64), noise_std=0.1)
    conditional = gmm.conditional_score(sde)
    derived = {
        "conditional_score": (sd.conditional_score(conditional, 1), 1),
        "classifier_free_guidance": (sd.classifier_free_guidance(conditional, 1, scale=2.0), 2),
        "classifier_free_guidance w=0": (sd.classifier_free_guidance(conditional, 1, scale=0.0), 1),
        "classifier_guidance": (sd.classifier_guidance(exact, gmm.classifier(sde), 1), 2),
        "dps_score": (sd.dps_score(sde, exact, meas), 2),
        "pigdm_score": (sd.pigdm_score(sde, exact, meas), 2),
        "tweedie_moment_score": (sd.tweedie_moment_score(sde, exact, meas), 3),
        "from_denoiser": (sd.from_denoiser(gmm.denoiser(sde), sde), 1),
    }
    for name, (score, evaluations) in derived.items():
        assert isinstance(score, sd.Score) and score.closed_form, name
        assert score.network_evaluations == evaluations, name
        assert choose_time_variable("auto", sde, score) == "t", name
    # Around a network the same wrappers are not closed forms: σ̃, with the network's cost per call.
    model = _eps_network(2)
    for name, score in {"dps_score": sd.dps_score(sde, model, meas),
                        "classifier_guidance": sd.classifier_guidance(model, gmm.classifier(sde), 1),
                        "from_denoiser": sd.from_denoiser(lambda x, s: x, sde),
                        "from_velocity": sd.from_velocity(lambda x, t: x, sd.RectifiedFlowSDE())}.items():
        assert not score.closed_form and score.time_variable == "sigma", name
    assert sd.dps_score(sde, model, meas).network and sd.dps_score(sde, model, meas).network_evaluations == 2
    # A sampler's count: calls times the cost of one call.
    res = sd.DPMSolver(steps=5).sample(sde, derived["classifier_free_guidance"][0], (3, 2), dtype=F64,
                                       generator=torch.Generator().manual_seed(0))
    assert res.network_evaluations == 2 * res.nfe


def test_a_function_may_still_say_what_it_is_and_bad_scores_are_refused():
    def closed(x, t):
        return -x

    closed.closed_form, closed.network_evaluations = True, 3
    info = as_score(closed)
    assert info.closed_form and info.network_evaluations == 3 and info.time_variable == "t"
    assert as_score(info) is info
    wrapped = sd.Score(closed, network_evaluations=2)
    assert torch.equal(wrapped(torch.ones(2, 2), torch.ones(2)), -torch.ones(2, 2))
    assert "network_evaluations=2" in repr(wrapped)
    with pytest.raises(TypeError, match="a score must be a callable score"):
        sd.Score(3)
    with pytest.raises(ValueError, match="network_evaluations must be a non-negative integer"):
        sd.Score(closed, network_evaluations=-1)


def test_round_noise_level_passes_through_wrappers_and_counters():
    from scoresde.sampling._base import CountedScore

    snap = lambda level: torch.round(level)                       # noqa: E731  (a model of integer levels)
    score = sd.Score(lambda x, t: -x, round_noise_level=snap)
    assert score.wrap(lambda x, t: -2 * x).round_noise_level is snap
    assert CountedScore(score).round_noise_level is snap and sd.Score(lambda x, t: x).round_noise_level is None
    with pytest.raises(TypeError, match="round_noise_level must be a callable"):
        sd.Score(lambda x, t: x, round_noise_level=3)
