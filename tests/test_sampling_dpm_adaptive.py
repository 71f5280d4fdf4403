"""Adaptive DPM-Solver-12/23: the error against the accurate flow falls with the tolerance, the count is exact, and
the controller accepts and rejects as specified."""
import pytest
import torch

import scoresde as sd
from helpers import CountingScore, accurate_flow, oracle_problem, rms_error
from scoresde.sampling.dpm_adaptive import PIDController


@pytest.mark.parametrize("order", [2, 3])
def test_error_follows_the_tolerance(order):
    """Against dopri5 at 1e-10 from the same x_T (2-D mixture, VP): tightening rtol (and atol = rtol/6) tenfold
    shrinks the RMS error at least threefold (measured 8–20× per decade at order 2, 5–8× at order 3), and at
    rtol = 1e-3 it is below 1e-3 (measured 6.5e-4 and 4.5e-4 with 140 and 81 evaluations)."""
    sde, gmm = oracle_problem("VP", 2, 1000)[:2]
    x_T, exact = accurate_flow("VP")
    errors = []
    for rtol in (1e-2, 1e-3):
        res = sd.AdaptiveDPMSolver(order=order, rtol=rtol, atol=rtol / 6).sample(sde, gmm.score(sde), x_T.shape,
                                                                                 x_T=x_T)
        errors.append(rms_error(res.x, exact))
    assert errors[1] < errors[0] / 3 and errors[1] < 1e-3, errors


def test_nfe_is_exact_and_max_nfe_stops_the_run():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    counting = CountingScore(gmm.score(sde))
    sampler = sd.AdaptiveDPMSolver(order=3, denoise=True)
    x_T = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    res = sampler.sample(sde, counting, x_T.shape, x_T=x_T)
    assert res.nfe == counting.calls == 3 * (sampler.accepted + sampler.rejected) + 1
    assert sampler.nfe() is None
    with pytest.raises(RuntimeError, match="max_nfe = 10"):
        sd.AdaptiveDPMSolver(rtol=1e-6, atol=1e-6, max_nfe=10).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T)


def test_the_controller():
    """The integral controller with order k: f = 1 + atan(E^{−1/k} − 1); accept at f ≥ 0.81."""
    pid = PIDController(0.1, 0.0, 1.0, 0.0, order=2)
    assert pid.propose(0.25) and pid.h == pytest.approx(0.1 * (1 + torch.atan(torch.tensor(2.0 - 1)).item()))
    pid = PIDController(0.1, 0.0, 1.0, 0.0, order=2)
    assert not pid.propose(16.0) and pid.h < 0.1
    with pytest.raises(ValueError, match="valid choices: 2, 3"):
        sd.AdaptiveDPMSolver(order=1)
    with pytest.raises(ValueError, match="rtol must be a positive number"):
        sd.AdaptiveDPMSolver(rtol=0)
