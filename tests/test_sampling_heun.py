"""EDM's Heun sampler against the oracle: distribution, pathwise accuracy, convergence order, bookkeeping.

The helpers (exact Gaussian flow, fitted orders, oracle problems with their noise floor) live in
tests/helpers.py, shared with tests/test_sampling_dpm.py.
"""
import pytest
import torch

import scoresde as sd
from helpers import (ED_MULTIPLE, EPS, F64, SDE_FACTORIES, CountingScore, accurate_flow, convergence, fitted_order,
                     gaussian_flow, oracle_problem, rms_error)


# -- distribution -----------------------------------------------------------------------------------------
HEUN_CASES = [
    ("VP", 2, dict(steps=25)),
    ("subVP", 2, dict(steps=25)),
    ("VE", 2, dict(steps=25)),
    ("VP", 2, dict(steps=40, churn=10.0)),
    ("subVP", 2, dict(steps=40, churn=10.0)),
    ("VE", 2, dict(steps=40, churn=10.0, s_tmin=0.05, s_tmax=10.0)),
    ("VP", 16, dict(steps=25)),
    ("VE", 16, dict(steps=40, churn=5.0)),
    ("Wiggly", 2, dict(steps=25, grid="log_snr")),
]


@pytest.mark.parametrize("sde_name,dim,options", HEUN_CASES,
                         ids=[f"{s}-{d}d-" + "-".join(f"{k}={v}" for k, v in o.items()) for s, d, o in HEUN_CASES])
def test_heun_matches_oracle_in_energy_distance(sde_name, dim, options):
    n = 1000
    sde, gmm, x_T, reference, floor = oracle_problem(sde_name, dim, n)
    score = gmm.score(sde)
    res = sd.HeunSampler(**options).sample(sde, score, x_T.shape, x_T=x_T,
                                           generator=torch.Generator().manual_seed(5))
    distance = float(sd.energy_distance(res.x, reference))
    assert distance <= ED_MULTIPLE * floor, (distance, floor)


def test_energy_distance_detects_a_coarse_sampler():
    """The acceptance threshold has power: 4 Heun steps leave a visible bias on the eight Gaussians."""
    sde, gmm, x_T, reference, floor = oracle_problem("VP", 2, 1000)
    res = sd.HeunSampler(steps=4).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T)
    assert float(sd.energy_distance(res.x, reference)) > ED_MULTIPLE * floor


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", ["VP", "VE"])
def test_heun_follows_the_accurate_probability_flow_pathwise(sde_name):
    """Same x_T: Heun with the library's PF ODE solved by dopri5 at rtol = atol = 1e-10 (error ≪ Heun's).

    Second order means the RMS error falls by ≈ 4 per doubling of N; near mode boundaries the flow is
    sensitive (pre-asymptotic), so we ask for a factor of at least 3 from N = 20 to 40, and an RMS error at
    N = 40 below 5e-3, a twentieth of a component's std 0.1, far too small to show in the law.
    """
    sde, gmm = oracle_problem(sde_name, 2, 1000)[:2]
    x_T, exact = accurate_flow(sde_name)
    rms = []
    for n in (20, 40):
        x = sd.HeunSampler(steps=n).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T).x
        rms.append(rms_error(x, exact))
    assert rms[1] < rms[0] / 3 and rms[1] < 5e-3, rms


# -- convergence order ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde_name", ["VP", "subVP", "VE", "Wiggly"])
def test_heun_is_second_order(sde_name):
    """Fitted slope of log error against log N on exact Gaussian flows.

    ±0.3 allows for the pre-asymptotic terms of the error expansion C₂h² + C₃h³ + …, which bend the
    fitted line at the coarse end (measured: 2.04–2.07 over N = 16…128).
    """
    sde = SDE_FACTORIES[sde_name]()
    steps = [16, 32, 64, 128]
    errors = convergence(lambda n: sd.HeunSampler(steps=n), sde, steps)
    assert abs(fitted_order(steps, errors) - 2.0) < 0.3, errors


@pytest.mark.parametrize("sde_name", ["VP", "VE"])
def test_heun_with_churn_converges_to_the_right_variance(sde_name):
    """Stochastic Heun (churn = 10) on data N(0, c² I): the sample second moment E‖x‖²/(d v(eps)²) → 1.

    With n = 20000 samples in d = 2 its standard error is √(2/(n d)) = 0.007. The churn sampler is a
    consistent SDE discretisation (γ = churn/N → 0), at least first order in 1/N, so its bias must shrink by
    ≥ 3 from N = 20 to 80 (first order gives 4) and be within 0.03 (four standard errors) of 1 at N = 80.
    """
    sde, c, n = SDE_FACTORIES[sde_name](), 0.5, 20000
    score, _ = gaussian_flow(sde, c)
    ends = torch.tensor([EPS], dtype=F64)
    target = float(sde.scale(ends) ** 2 * c * c + sde.std(ends) ** 2)
    bias = []
    for steps in (20, 80):
        x = sd.HeunSampler(steps, churn=10.0).sample(sde, score, (n, 2), generator=torch.Generator().manual_seed(1),
                                                     dtype=F64).x
        bias.append(float(x.pow(2).mean()) / target - 1)
    assert abs(bias[1]) < abs(bias[0]) / 3 and abs(bias[1]) < 0.03, bias


def test_heun_on_the_log_snr_and_uniform_grids_is_second_order_too():
    sde = sd.VPSDE()
    steps = [32, 64, 128, 256]
    for grid in ("log_snr", "uniform"):
        errors = convergence(lambda n: sd.HeunSampler(steps=n, grid=grid), sde, steps)
        assert abs(fitted_order(steps, errors) - 2.0) < 0.3, (grid, errors)


# -- bookkeeping ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options,expected", [
    (dict(steps=1), 1), (dict(steps=7), 13), (dict(steps=7, denoise=True), 14),
    (dict(steps=6, churn=3.0), 11),
])
def test_heun_nfe_is_exact(options, expected):
    sde, gmm = sd.VESDE(), sd.eight_gaussians()
    counting = CountingScore(gmm.score(sde))
    sampler = sd.HeunSampler(**options)
    res = sampler.sample(sde, counting, (16, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    assert res.nfe == counting.calls == expected == sampler.nfe()


def test_heun_is_reproducible_with_a_generator_and_records_its_trajectory():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    sampler = sd.HeunSampler(steps=8, churn=4.0)
    seen = []

    def run(seed, **kw):
        return sampler.sample(sde, gmm.score(sde), (32, 2), generator=torch.Generator().manual_seed(seed),
                              dtype=F64, **kw)

    a = run(1, trajectory=True, callback=lambda i, t, x: seen.append((i, t)))
    b, c = run(1), run(2)
    assert torch.equal(a.x, b.x) and not torch.allclose(a.x, c.x)
    grid = sd.time_grid(sde, 8, "edm", eps=EPS)
    assert a.trajectory.shape == (8, 32, 2) and torch.equal(a.trajectory[-1], a.x)
    assert torch.allclose(a.times, grid[1:]) and [i for i, _ in seen] == list(range(1, 9))


def test_heun_churn_is_noise_free_when_its_window_is_empty():
    """Churn acts only for σ̃ in [s_tmin, s_tmax]; an empty window gives the deterministic sampler exactly."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    x_T = torch.randn((64, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    plain = sd.HeunSampler(steps=10).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T).x
    windowed = sd.HeunSampler(steps=10, churn=5.0, s_tmin=1e6, s_tmax=1e7).sample(
        sde, gmm.score(sde), x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(4)).x
    assert torch.equal(plain, windowed)


def test_heun_denoise_returns_tweedie_of_the_undenoised_result():
    sde, gmm = sd.SubVPSDE(), sd.eight_gaussians()
    x_T = torch.randn((64, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    plain = sd.HeunSampler(steps=10).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T).x
    denoised = sd.HeunSampler(steps=10, denoise=True).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T).x
    t = torch.full((64,), EPS, dtype=F64)
    assert torch.allclose(denoised, gmm.denoiser(sde)(plain, t), rtol=1e-12, atol=1e-12)


def test_heun_float32_and_image_shaped_state():
    sde = sd.VPSDE()
    score, _ = gaussian_flow(sde, 0.5)
    x_T = torch.randn((3, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    res = sd.HeunSampler(steps=30).sample(sde, score, x_T.shape, x_T=x_T)
    assert res.x.dtype == torch.float32 and res.x.shape == x_T.shape
    # The same sampler in float64: only float32 round-off separates the two, about 30 roundings of u = 2⁻²⁴ per
    # evaluation over 59 evaluations, 1e-4 in the worst case; 10× that.
    x64 = sd.HeunSampler(steps=30).sample(sde, score, x_T.shape, x_T=x_T.double()).x
    assert torch.allclose(res.x.double(), x64, rtol=1e-3, atol=1e-4)


def test_heun_bad_input():
    with pytest.raises(ValueError, match="valid choices: 'uniform', 'log_snr', 'edm'"):
        sd.HeunSampler(grid="karras")
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps must be a positive integer"):
            sd.HeunSampler(steps=bad)
    with pytest.raises(ValueError, match="churn"):
        sd.HeunSampler(churn=-1.0)
    with pytest.raises(ValueError, match="s_tmin <= s_tmax"):
        sd.HeunSampler(s_tmin=2.0, s_tmax=1.0)
    with pytest.raises(ValueError, match="rho must be positive"):
        sd.HeunSampler(rho=0.0)
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match=r"score\(x, t\) must return a tensor of x's shape \(4, 2\)"):
        sd.HeunSampler(steps=2).sample(sde, lambda x, t: x[:, :1], (4, 2))
