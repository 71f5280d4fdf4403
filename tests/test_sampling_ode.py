"""ProbabilityFlowSampler against the Gaussian-mixture oracle and closed-form Gaussian flows (float64).

Oracle-law checks as in tests/test_sampling_sde.py: the energy distance to fresh oracle samples must stay
below 5 × the noise floor (RMS of the same statistic between two independent oracle sets, 8 repeats), and the
mean oracle log-density of the samples must match that of the oracle samples within 5 standard errors
(ED alone does not see the width of the components). The PF-ODE samples at eps are not denoised, so their
components are wider by σ(eps)² ≈ 1e-4 against a variance of 0.01 (VP): a shift of ≈ 0.2 SE.
"""
import numpy as np
import pytest
import torch

import scoresde as sd
from helpers import SDES, assert_oracle_law, mixture_16d_isotropic, run


class RecordingScore:
    """Counts calls and records the times the score sees."""

    def __init__(self, score):
        self.score, self.calls, self.times = score, 0, []

    def __call__(self, x, t):
        self.calls += 1
        self.times.append(t.detach().clone())
        return self.score(x, t)


# -- the law of the samples ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "user"])
def test_dopri5_matches_oracle_2d(name):
    gmm = sd.eight_gaussians()
    assert_oracle_law(run(sd.ProbabilityFlowSampler(), SDES[name](), gmm).x, gmm, "8g")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_dopri5_matches_oracle_16d(name):
    gmm = mixture_16d_isotropic()
    assert_oracle_law(run(sd.ProbabilityFlowSampler(), SDES[name](), gmm, n=500).x, gmm, "16d")


@pytest.mark.slow
@pytest.mark.parametrize("grid", ["uniform", "log_snr", "edm"])
def test_fixed_grid_rk4_matches_oracle(grid):
    gmm = sd.eight_gaussians()
    res = run(sd.ProbabilityFlowSampler("rk4", steps=50, grid=grid), sd.VESDE(), gmm)
    assert res.nfe == 200
    assert_oracle_law(res.x, gmm, "8g")


# -- the score never sees a time outside [eps, T] ------------------------------------------------------
@pytest.mark.parametrize("solver", ["dopri5", "bosh3", "adaptive_heun", "dopri8"])
def test_score_times_stay_in_range(solver):
    gmm, sde, eps = sd.eight_gaussians(), sd.VPSDE(), 1e-3
    sampler = sd.ProbabilityFlowSampler(solver, rtol=1e-4, atol=1e-4, eps=eps)
    score = RecordingScore(gmm.score(sde))
    res = sampler.sample(sde, score, (64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    enc = sampler.encode(sde, score, res.x)
    t = torch.cat(score.times)
    assert float(t.min()) >= eps and float(t.max()) <= sde.T
    assert res.nfe + enc.nfe == score.calls


# -- convergence orders on a Gaussian whose PF-ODE flow is known ----------------------------------------
def gaussian_flow_problem(sde, c):
    """Data N(0, c² I): p_t = N(0, v(t) I) with v = s²c² + σ², and the PF-ODE flow is x_t = x_T √(v(t)/v(T))."""

    def variance(t):
        return sde.scale(t) ** 2 * c**2 + sde.std(t) ** 2

    def score(x, t):
        return -x / variance(t)[:, None]

    def exact(x_T, t):
        tt = torch.tensor([t, sde.T], dtype=torch.float64)
        v = variance(tt)
        return x_T * (v[0] / v[1]).sqrt()

    return sd.Score(score, closed_form=True), exact


@pytest.mark.parametrize("name, solver, order, steps", [
    ("vp", "euler", 1, [25, 50, 100, 200, 400]),
    ("ve", "euler", 1, [25, 50, 100, 200, 400]),
    ("vp", "midpoint", 2, [10, 20, 40, 80]),
    ("vp", "heun3", 3, [10, 20, 40, 80]),
    ("vp", "rk4", 4, [20, 40, 80, 160]),
])
def test_fixed_step_convergence_order(name, solver, order, steps):
    # The fitted slope of log(error) against log(h) is the solver's order; asymptotically exact, so ±0.15
    # allows for the pre-asymptotic curvature over the fitted range (c = 0.5 makes the flow non-trivial:
    # for VP and c = 1 it would be the identity).
    sde, c = SDES[name](), 0.5
    score, exact = gaussian_flow_problem(sde, c)
    x_T = torch.tensor([[1.0, -2.0]], dtype=torch.float64) * sde.prior_std()
    errors = []
    for n in steps:
        res = sd.ProbabilityFlowSampler(solver, steps=n).sample(sde, score, (1, 2), x_T=x_T)
        errors.append(float((res.x - exact(x_T, 1e-3)).abs().max()))
    slope = np.polyfit(np.log(1.0 / np.array(steps)), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.15, f"fitted order {slope:.3f}, errors {errors}"


def test_adaptive_solution_matches_the_closed_form_flow():
    # dopri5 at rtol = atol = 1e-7 on the Gaussian flow: error within 100 × atol (a local tolerance).
    sde = sd.SubVPSDE()
    score, exact = gaussian_flow_problem(sde, 0.3)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = sd.ProbabilityFlowSampler(rtol=1e-7, atol=1e-7).sample(sde, score, x_T.shape, x_T=x_T)
    assert float((res.x - exact(x_T, 1e-3)).abs().max()) < 1e-5


# -- encode / decode round trip -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "user"])
def test_encode_decode_round_trip(name):
    gmm, sde = sd.eight_gaussians(), SDES[name]()
    sampler = sd.ProbabilityFlowSampler(rtol=1e-7, atol=1e-7)
    x0 = gmm.sample(200, torch.Generator().manual_seed(1))
    latent = sampler.encode(sde, gmm.score(sde), x0)
    assert latent.x.shape == x0.shape and latent.nfe > 0
    # The latents follow the prior: their std is close to the prior std (200 × 2 values: SE ≈ 3.5%).
    assert abs(float(latent.x.std()) / sde.prior_std() - 1) < 0.15
    back = sampler.sample(sde, gmm.score(sde), x0.shape, x_T=latent.x)
    assert float((back.x - x0).abs().max()) <= 1e-4


# -- bookkeeping ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver, steps, denoise, expected", [
    ("euler", 20, False, 20), ("euler", 20, True, 21), ("midpoint", 10, False, 20), ("rk4", 10, True, 41),
    ("dopri5", None, False, None),
])
def test_nfe_is_exact(solver, steps, denoise, expected):
    gmm, sde = sd.eight_gaussians(), sd.VESDE()
    score = RecordingScore(gmm.score(sde))
    res = sd.ProbabilityFlowSampler(solver, steps=steps, denoise=denoise).sample(
        sde, score, (16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert res.nfe == score.calls
    if expected is not None:
        assert res.nfe == expected


def test_same_generator_same_samples():
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    sampler = sd.ProbabilityFlowSampler(rtol=1e-3, atol=1e-3)
    a, b, c = (run(sampler, sde, gmm, n=16, seed=s).x for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_trajectory_on_fixed_grid():
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    seen = []
    res = sd.ProbabilityFlowSampler("euler", steps=10, grid="log_snr").sample(
        sde, gmm.score(sde), (8, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64,
        trajectory=True, callback=lambda i, t, x: seen.append(t))
    torch.testing.assert_close(res.times, sd.time_grid(sde, 10, "log_snr")[1:])
    assert res.trajectory.shape == (10, 8, 2) and len(seen) == 10
    torch.testing.assert_close(res.trajectory[-1], res.x)


def test_float32_state():
    gmm, sde = sd.eight_gaussians(dtype=torch.float32), sd.VPSDE()
    for solver, steps in (("dopri5", None), ("euler", 10)):
        res = sd.ProbabilityFlowSampler(solver, steps=steps).sample(
            sde, gmm.score(sde), (8, 2), generator=torch.Generator().manual_seed(0))
        assert res.x.dtype == torch.float32 and bool(torch.isfinite(res.x).all())


# -- bad input -----------------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match="valid choices.*'dopri5'.*'rk4'"):
        sd.ProbabilityFlowSampler("rk45")
    with pytest.raises(ValueError, match="needs steps"):
        sd.ProbabilityFlowSampler("euler")
    with pytest.raises(ValueError, match="valid choices.*'log_snr'"):
        sd.ProbabilityFlowSampler("euler", steps=10, grid="cosine")
    with pytest.raises(ValueError, match="rtol"):
        sd.ProbabilityFlowSampler(rtol=0)
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match=r"x's shape \(4, 2\)"):
        sd.ProbabilityFlowSampler().sample(sde, lambda x, t: x[:, :1], (4, 2))
    with pytest.raises(ValueError, match=r"x's shape \(4, 2\)"):
        sd.ProbabilityFlowSampler().encode(sde, lambda x, t: x.sum(1), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="eps"):
        sd.ProbabilityFlowSampler(eps=1.5).sample(sde, lambda x, t: -x, (4, 2))


@pytest.mark.parametrize("solver, steps", [("dopri5", None), ("rk4", 40)])
def test_sigma_time_gives_the_same_flow(solver, steps):
    """The probability-flow map x_T → x_eps is one map in either variable: σ̃-time and t-time agree to the solver
    tolerance (dopri5 at 1e-8; rk4 on 40 log-SNR steps: both within 1e-3 of the tight solve), and encoding in
    σ̃ inverts decoding."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    score = gmm.score(sde)
    x_T = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tight = sd.ProbabilityFlowSampler(rtol=1e-10, atol=1e-10, time_variable="t").sample(sde, score, (64, 2), x_T=x_T)
    kw = dict(rtol=1e-8, atol=1e-8) if steps is None else dict(steps=steps, grid="log_snr")
    for variable in ("t", "sigma"):
        res = sd.ProbabilityFlowSampler(solver, time_variable=variable, **kw).sample(sde, score, (64, 2), x_T=x_T)
        assert float((res.x - tight.x).abs().max()) < (1e-5 if steps is None else 1e-3)
    sampler = sd.ProbabilityFlowSampler(rtol=1e-8, atol=1e-8, time_variable="sigma")
    z = sampler.encode(sde, score, tight.x).x
    torch.testing.assert_close(z, x_T, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="valid choices"):
        sd.ProbabilityFlowSampler(time_variable="tau")
