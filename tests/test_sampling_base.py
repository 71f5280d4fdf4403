"""What the sampler base owns for every sampler: explicit times, NFE known in advance, the grid settings (ρ
included), trajectories, callbacks, and the SDE contract."""
import math

import pytest
import torch

import scoresde as sd
from helpers import CountingScore, registered_example

F64 = torch.float64

#: Every registered sampler in its example configuration (by its registry name), and variants of the families.
SAMPLERS = {name: registered_example(sd.SAMPLERS, name) for name in sd.SAMPLERS.names()}
SAMPLERS.update({
    "reverse_sde torchsde": sd.ReverseSDESampler(steps=12),
    "reverse_sde native edm": sd.ReverseSDESampler(steps=12, backend="native", grid="edm", rho=3.0),
    "reverse_sde heun": sd.ReverseSDESampler(solver="heun", steps=6),
    "reverse_sde reversible_heun": sd.ReverseSDESampler(solver="reversible_heun", steps=6),
    "pf rk4": sd.ProbabilityFlowSampler(solver="rk4", steps=5, grid="log_snr"),
    "pf midpoint denoise": sd.ProbabilityFlowSampler(solver="midpoint", steps=5, denoise=True),
    "pf dopri5": sd.ProbabilityFlowSampler(rtol=1e-3, atol=1e-3),
    "pc": sd.PCSampler(steps=6, corrector_steps=2),
    "pc corrector only": sd.PCSampler(predictor=None, corrector="annealed_langevin", steps=5, corrector_steps=2),
    "pc ancestral edm": sd.PCSampler("ancestral", None, steps=6, grid="edm", rho=3.0),
    "heun": sd.HeunSampler(steps=5, churn=1.0),
    "dpm 3M": sd.DPMSolver(steps=6, order=3),
    "dpm 2S denoise": sd.DPMSolver(steps=4, order=2, multistep=False, denoise=True),
})


def _takes_explicit_times(sampler) -> bool:
    """torchsde needs equal steps; split Gibbs runs on its inner sampler's grid (both refuse explicit times)."""
    if isinstance(sampler, sd.ReverseSDESampler):
        return sampler.backend != "torchsde"
    return not isinstance(sampler, sd.SplitGibbsSampler)


class TimeSpy:
    """A Gaussian score N(0, v(t) I), v = s² c² + σ², that records the distinct times it is called at."""

    def __init__(self, sde, c=0.5):
        self.sde, self.c, self.times = sde, c, []

    def __call__(self, x, t):
        self.times.append(float(t[0]))
        var = self.sde.scale(t) ** 2 * self.c ** 2 + self.sde.std(t) ** 2
        return -x / var.reshape(-1, *([1] * (x.dim() - 1)))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_nfe_is_known_before_the_run_and_matches_it(name):
    sampler, sde = SAMPLERS[name], sd.VPSDE()
    counting = CountingScore(TimeSpy(sde))
    res = sampler.sample(sde, counting, (8, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    assert res.nfe == counting.calls
    expected = sampler.nfe()
    if name in ("pf dopri5", "probability_flow", "dpm_adaptive"):
        assert expected is None                       # adaptive: known only after the run
    else:
        assert expected == res.nfe


@pytest.mark.parametrize("name", [n for n in SAMPLERS if _takes_explicit_times(SAMPLERS[n])])
def test_explicit_times_replace_the_grid(name):
    sampler, sde = SAMPLERS[name], sd.VPSDE()
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    own = sampler.sample(sde, TimeSpy(sde), (8, 2), generator=gen(), dtype=F64, trajectory=True)
    given = sampler.sample(sde, TimeSpy(sde), (8, 2), generator=gen(), dtype=F64, trajectory=True,
                           times=sampler.times(sde))
    torch.testing.assert_close(given.x, own.x, rtol=0, atol=0)
    # A different tensor of times is followed: the score is evaluated on it (and nowhere outside it).
    times = torch.tensor([1.0, 0.7, 0.45, 0.2, 0.05, 0.01], dtype=F64)
    spy = TimeSpy(sde)
    res = sampler.sample(sde, spy, (8, 2), generator=gen(), dtype=F64, times=times, trajectory=True)
    assert min(spy.times) >= 0.01 - 1e-12 and max(spy.times) <= 1.0 + 1e-12
    if _evaluates_only_on_the_grid(sampler):
        assert {round(t, 12) for t in spy.times} <= {round(t, 12) for t in times.tolist()}
    if isinstance(sampler, sd.AdaptiveDPMSolver):      # its own steps between the end points of the times
        assert res.times[-1] == pytest.approx(0.01) and len(res.times) == res.trajectory.shape[0]
        return
    expected_reports = len(times) if getattr(sampler, "predictor", "x") is None else len(times) - 1
    assert res.trajectory.shape[0] == expected_reports == len(res.times)
    if sampler.nfe(times) is not None:
        assert sampler.nfe(times) == res.nfe


def _evaluates_only_on_the_grid(sampler) -> bool:
    """Samplers without intermediate stages (Runge–Kutta, singlestep, adaptive, churned times)."""
    if isinstance(sampler, sd.DPMSolver):
        return sampler.multistep
    if isinstance(sampler, sd.HeunSampler):
        return sampler.churn == 0
    return isinstance(sampler, (sd.PCSampler, sd.ReverseSDESampler))


def test_grid_settings_reach_every_sampler_rho_included():
    # PCSampler and ProbabilityFlowSampler used to ignore ρ (the "edm" grid was always ρ = 7), and
    # ReverseSDESampler had no grid at all. Every sampler's times now follow its own (steps, grid, eps, ρ).
    sde = sd.VPSDE()
    expected = sd.time_grid(sde, 6, "edm", eps=1e-3, rho=3.0)
    for sampler in (sd.PCSampler("ancestral", None, steps=6, grid="edm", rho=3.0),
                    sd.ProbabilityFlowSampler(solver="euler", steps=6, grid="edm", rho=3.0),
                    sd.ReverseSDESampler(steps=6, backend="native", grid="edm", rho=3.0),
                    sd.HeunSampler(steps=6, grid="edm", rho=3.0),
                    sd.DPMSolver(steps=6, grid="edm", rho=3.0)):
        torch.testing.assert_close(sampler.times(sde), expected, rtol=0, atol=0)
        spy = TimeSpy(sde)
        sampler.sample(sde, spy, (4, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
        # Each of these evaluates the score at every grid time but the last (Heun at all but the first twice).
        assert {round(t, 12) for t in expected[:-1].tolist()} <= {round(t, 12) for t in spy.times}, type(sampler)
    assert not torch.allclose(expected, sd.time_grid(sde, 6, "edm", eps=1e-3, rho=7.0))


def test_native_reverse_sde_follows_a_non_uniform_grid_with_the_right_increments():
    # On an exact Gaussian score the reverse SDE's Euler–Maruyama chain is linear in the Brownian increments;
    # x ← m_k x + g_k √h_k z with m_k = 1 − h_k (f_k + g_k²/v(t_k)) for the score −x/v, so the law of x_eps has
    # variance from the recursion V ← m_k² V + g_k² h_k, started at the prior's. Checked by Monte Carlo: the
    # sample variance of n normal draws has standard error V √(2/n); 4 of them.
    sde, c = sd.VPSDE(), 0.5
    sampler = sd.ReverseSDESampler(steps=8, backend="native", grid="log_snr", denoise=False)
    times = sampler.times(sde)
    n = 40_000
    res = sampler.sample(sde, TimeSpy(sde, c), (n, 1), generator=torch.Generator().manual_seed(5), dtype=F64)
    t = times[:-1]
    h = times[:-1] - times[1:]
    v = sde.scale(t) ** 2 * c ** 2 + sde.std(t) ** 2
    g2 = sde.diffusion(t) ** 2
    f = -0.5 * sde.beta(t)
    m = 1 - h * (f + g2 / v)
    var = torch.tensor(sde.prior_std() ** 2, dtype=F64)
    for k in range(len(h)):
        var = var * m[k] ** 2 + g2[k] * h[k]
    sample_var = res.x.var()
    se = float(var) * math.sqrt(2 / n)
    assert abs(float(sample_var) - float(var)) < 4 * se


def test_torchsde_backend_refuses_unequal_steps():
    with pytest.raises(ValueError, match="equal steps only"):
        sd.ReverseSDESampler(steps=8, grid="edm")
    sampler = sd.ReverseSDESampler(steps=8)
    with pytest.raises(ValueError, match="equal steps only"):
        sampler.sample(sd.VPSDE(), TimeSpy(sd.VPSDE()), (2, 2), times=torch.tensor([1.0, 0.5, 0.1, 0.001]))


@pytest.mark.parametrize("times, message", [
    (torch.tensor([1.0]), "at least 2"),
    (torch.tensor([[1.0, 0.5]]), "1-D"),
    (torch.tensor([0.5, 1.0]), "strictly decreasing"),
    (torch.tensor([1.0, 0.0]), "lie in"),
    (torch.tensor([2.0, 0.5]), "lie in"),
])
def test_bad_explicit_times_are_refused(times, message):
    with pytest.raises(ValueError, match=message):
        sd.HeunSampler(steps=3).sample(sd.VPSDE(), TimeSpy(sd.VPSDE()), (2, 2), times=times)


def test_callback_and_progress_see_every_step_and_the_sde_contract_is_checked():
    seen = []
    sd.DPMSolver(steps=5).sample(sd.VPSDE(), TimeSpy(sd.VPSDE()), (3, 2), callback=lambda i, t, x: seen.append(i),
                                 progress=True)
    assert seen == [1, 2, 3, 4, 5]

    class Drift(sd.SDE):                              # an SDE with no marginals: fine for the reverse SDE only
        def drift(self, x, t):
            return -x

        def diffusion(self, t):
            return torch.ones_like(t)

        def prior_sample(self, shape, generator=None, device=None, dtype=None):
            return torch.randn(shape, generator=generator, dtype=dtype)

    with pytest.raises(TypeError, match="DPMSolver needs a linear SDE.*lacks scale, std"):
        sd.DPMSolver(steps=5).sample(Drift(), lambda x, t: -x, (3, 2))
    res = sd.ReverseSDESampler(steps=5, backend="native", denoise=False).sample(Drift(), lambda x, t: -x, (3, 2))
    assert res.x.shape == (3, 2) and res.nfe == 5


@pytest.mark.parametrize("name, steers", [
    ("reverse_sde native edm", True), ("pc ancestral edm", True), ("dpm 3M", True),
    ("heun", False), ("reverse_sde torchsde", False), ("pf rk4", False),
])
def test_which_samplers_a_callback_can_steer(name, steers):
    """As documented in Sampler.sample: an in-place change of x in the callback steers some samplers only."""
    sampler, sde = SAMPLERS[name], sd.VPSDE()

    def run(callback):
        return sampler.sample(sde, TimeSpy(sde), (16, 2), generator=torch.Generator().manual_seed(4), dtype=F64,
                              callback=callback).x

    plain = run(lambda i, t, x: None)
    zeroed = run(lambda i, t, x: x.mul_(0) if i == 1 else None)
    assert (not torch.allclose(plain, zeroed)) == steers


def test_run_gets_the_grids_coefficients_and_an_old_style_sampler_still_runs():
    """The base computes s, σ, λ and σ̃ once per grid and hands them to `_run` (`sd.sde.Coefficients`); a sampler
    written against the old signature, ``_run(sde, score, x, times, ...)``, gets the tensor with a warning."""
    seen = {}

    class New(sd.Sampler):
        def __init__(self):
            self.schedule = sd.TimeGrid(4, "uniform", 1e-3)

        def _run(self, sde, score, x, grid, generator, report):
            seen["grid"] = grid
            return x

    class Old(New):
        def _run(self, sde, score, x, times, generator, report):
            seen["times"] = times
            return x

    sde = sd.VPSDE()
    New().sample(sde, lambda x, t: -x, (2, 2), dtype=F64)
    grid, t = seen["grid"], sd.time_grid(sde, 4, "uniform", 1e-3)
    assert torch.equal(grid.t, t) and torch.equal(grid.s, sde.scale(t)) and torch.equal(grid.sigma, sde.std(t))
    assert torch.equal(grid.lam, torch.log(grid.s) - torch.log(grid.sigma)) and torch.equal(grid.noise_level,
                                                                                          grid.sigma / grid.s)
    with pytest.warns(DeprecationWarning, match=r"Old._run\(sde, score, x, times, generator, report\) is deprecated"):
        Old().sample(sde, lambda x, t: -x, (2, 2), dtype=F64)
    assert torch.equal(seen["times"], t)
