"""The grid search: on the oracle it never does worse than the best fixed grid at the same NFE, on fresh draws."""
import pytest
import torch

import scoresde as sd
from helpers import F64
from scoresde.sampling.optimize import rms_distance


@pytest.mark.parametrize("sampler", [sd.DPMSolver(steps=5, order=2), sd.UniPCSampler(steps=6, order=2)],
                         ids=["dpm-5", "unipc-6"])
@pytest.mark.slow
def test_the_searched_grid_beats_every_fixed_grid_on_fresh_draws(sampler):
    """Searched on 64 prior draws, scored on 256 others against dopri5 at 1e-9: no worse than the best fixed grid
    there (measured 4–30× better on the 2-D and 16-D mixtures at 5–10 NFE; benchmarks/grid_search.py)."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    score = gmm.score(sde)
    g = torch.Generator().manual_seed(0)
    search, fresh = torch.randn(64, 2, dtype=F64, generator=g), torch.randn(256, 2, dtype=F64, generator=g)
    res = sd.optimize_grid(sde, score, sampler, search, max_evaluations=60)
    assert res.times.shape == (sampler.steps + 1,) and bool((res.times[1:] < res.times[:-1]).all())
    assert float(res.times[0]) == sde.T and float(res.times[-1]) == sampler.eps
    assert res.error <= min(res.fixed.values()) and res.evaluations <= 60
    reference = sd.ProbabilityFlowSampler(rtol=1e-9, atol=1e-9, eps=sampler.eps, time_variable="t").sample(
        sde, score, fresh.shape, x_T=fresh).x

    def fresh_error(times):
        return rms_distance(sampler.sample(sde, score, fresh.shape, x_T=fresh, times=times).x, reference)

    best_fixed = min(fresh_error(sd.time_grid(sde, sampler.steps, kind, sampler.eps)) for kind in res.fixed)
    assert fresh_error(res.times) <= best_fixed


def test_stochastic_and_adaptive_samplers_are_refused():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    x_T = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="deterministic"):
        sd.optimize_grid(sde, gmm.score(sde), sd.DPMSolverSDE(steps=5), x_T)
    with pytest.raises(ValueError, match="no fixed grid"):
        sd.optimize_grid(sde, gmm.score(sde), sd.ProbabilityFlowSampler(), x_T)


def test_the_quadratic_grid():
    t = sd.time_grid(sd.VPSDE(), 4, "quadratic", eps=1e-3)
    u = 1 - (1 - torch.arange(5, dtype=F64) / 4) ** 2
    torch.testing.assert_close(t, 1 + u * (1e-3 - 1), rtol=1e-14, atol=1e-15)
    assert sd.DPMSolver(steps=4, grid="quadratic").times(sd.VPSDE()).shape == (5,)
