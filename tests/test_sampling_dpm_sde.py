"""SDE-DPM-Solver++: η = 0 is DPM-Solver++(2M) exactly; η = 1 samples the oracle's law."""
import math

import pytest
import torch

import helpers
import scoresde as sd
from helpers import F64, SDES, assert_oracle_law, mixture_16d_isotropic, run


@pytest.mark.parametrize("order", [1, 2])
def test_eta_zero_is_the_ode_solver(order):
    sde, gmm = sd.VESDE(), sd.eight_gaussians()
    x_T = torch.randn((64, 2), generator=torch.Generator().manual_seed(0), dtype=F64) * sde.prior_std()
    ours = sd.DPMSolverSDE(15, order=order, eta=0.0, denoise=False).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T).x
    ode = sd.DPMSolver(15, order=order).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T).x
    torch.testing.assert_close(ours, ode, rtol=1e-10, atol=1e-10)


def test_order_three_at_eta_zero_is_a_third_order_ode_solver():
    """3M at η = 0 with the exact u²/2 weight: fitted slope on the exact Gaussian flow within 0.3 of 3 or above
    (measured 3.9, as DPMSolver(order=3)); with k-diffusion's halved weight (``kdiffusion_3m``, equal to its
    sample_dpmpp_3m_sde to 1e-15 on a shared grid) the last doubling's slope is about 2 (measured 2.07)."""
    from helpers import SDE_FACTORIES, convergence, fitted_order

    steps = [16, 32, 64, 128]
    errors = convergence(lambda n: sd.DPMSolverSDE(n, order=3, eta=0.0, denoise=False), SDE_FACTORIES["VP"](), steps)
    assert fitted_order(steps, errors) > 2.7, errors
    halved = convergence(lambda n: sd.DPMSolverSDE(n, order=3, eta=0.0, denoise=False, kdiffusion_3m=True),
                         SDE_FACTORIES["VP"](), steps)
    assert abs(fitted_order(steps[-2:], halved[-2:]) - 2) < 0.3, halved
    assert all(a < b for a, b in zip(errors, halved))


@pytest.mark.parametrize("name", ["vp", "ve", "user"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_sde_solver_samples_the_oracle(name, order):
    res = run(sd.DPMSolverSDE(steps=50, order=order), SDES[name](), sd.eight_gaussians())
    assert res.nfe == 51
    assert_oracle_law(res.x, sd.eight_gaussians(), key="8g")


def test_sde_solver_in_16d_and_a_too_coarse_run_is_detected():
    gmm = mixture_16d_isotropic()
    assert_oracle_law(run(sd.DPMSolverSDE(steps=50), sd.VPSDE(), gmm).x, gmm, key="16d")
    with pytest.raises(AssertionError):
        assert_oracle_law(run(sd.DPMSolverSDE(steps=3, order=1), sd.VPSDE(), sd.eight_gaussians()).x,
                          sd.eight_gaussians(), key="8g")
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        sd.DPMSolverSDE(eta=2.0)
    assert sd.SAMPLERS.build("dpm_solver_sde", steps=4).order == 2


# -- singlestep SDE-DPM-Solver++(2S) ------------------------------------------------------------------------------
@pytest.mark.parametrize("sde_name", ["VE", "VP"])
def test_singlestep_at_eta_zero_is_dpm_solver_2s(sde_name):
    sde, gmm = helpers.SDE_FACTORIES[sde_name](), sd.eight_gaussians()
    x_T = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    ours = sd.DPMSolverSDE(12, eta=0.0, multistep=False, denoise=False).sample(sde, gmm.score(sde), x_T.shape,
                                                                               x_T=x_T)
    ode = sd.DPMSolver(12, order=2, multistep=False).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T)
    assert ours.nfe == ode.nfe == 24
    torch.testing.assert_close(ours.x, ode.x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,coupling,steps", [("vp", "path", 25), ("ve", "path", 25), ("user", "path", 25),
                                                 ("vp", "sigma", 25), ("vp", "independent", 100)])
def test_singlestep_sde_solver_samples_the_oracle(name, coupling, steps):
    """At 25 steps both couplings of one Brownian path pass (measured z 1.4–1.7 for "path", 0.5 for "sigma");
    independent noises are biased there (z 6.3, samples too concentrated) and need more steps."""
    sampler = sd.DPMSolverSDE(steps=steps, multistep=False, coupling=coupling)
    assert sampler.nfe() == 2 * steps + 1
    res = run(sampler, SDES[name](), sd.eight_gaussians())
    assert res.nfe == 2 * steps + 1
    assert_oracle_law(res.x, sd.eight_gaussians(), key="8g")


def test_singlestep_sde_solver_in_16d():
    gmm = mixture_16d_isotropic()
    assert_oracle_law(run(sd.DPMSolverSDE(steps=25, multistep=False), sd.VPSDE(), gmm).x, gmm, key="16d")


@pytest.mark.slow
@pytest.mark.parametrize("eta", [1.0, 0.4])
def test_path_coupling_is_the_correlation_of_one_brownian_path(eta):
    """The docstring's SDE in λ, dx̃ = −(1 + η) x̃ dλ + √(2η) e^{−λ} dB, integrated by Euler–Maruyama from x̃ = 0 on a
    fine grid (2,000 steps, 40,000 paths): its variance at λ' is the step's σ̃'² (1 − e^{−2ηh}) (within 4 SE and the
    O(δλ) bias), and the correlation of its values at λ + h/2 and λ' is the sampler's ρ (within 4 SE of a correlation,
    (1 − ρ²)/√n, plus the same bias)."""
    lam, h, n, k = -0.3, 1.2, 40_000, 2000
    gen = torch.Generator().manual_seed(5)
    dl = h / k
    x = torch.zeros(n, dtype=F64)
    mid = None
    for j in range(k):
        u = lam + j * dl
        x = x - (1 + eta) * x * dl + math.sqrt(2 * eta * dl) * math.exp(-u) * torch.randn(n, generator=gen, dtype=F64)
        if j + 1 == k // 2:
            mid = x.clone()
    sigma_to, sigma_mid = math.exp(-(lam + h)), math.exp(-(lam + h / 2))
    variance = sigma_to ** 2 * -math.expm1(-2 * eta * h)
    assert abs(float(x.var()) / variance - 1) < 4 * math.sqrt(2 / n) + 2 * dl
    sampler = sd.DPMSolverSDE(eta=eta, multistep=False)
    rho = sampler._correlation(h / 2, h, math.exp(-lam), sigma_mid, sigma_to)
    measured = float(torch.corrcoef(torch.stack([mid, x]))[0, 1])
    assert abs(measured - rho) < 4 * (1 - rho ** 2) / math.sqrt(n) + dl
    # k-diffusion's σ̃-time Brownian increments are a different law: the test tells them apart
    other = sd.DPMSolverSDE(eta=eta, multistep=False, coupling="sigma")._correlation(h / 2, h, math.exp(-lam),
                                                                                       sigma_mid, sigma_to)
    assert abs(measured - other) > 10 * (1 - rho ** 2) / math.sqrt(n) + dl


def test_singlestep_seeding_and_bad_input():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    sampler = sd.DPMSolverSDE(steps=6, multistep=False, denoise=False)
    a, b = run(sampler, sde, gmm, n=32, seed=3).x, run(sampler, sde, gmm, n=32, seed=3).x
    assert torch.equal(a, b) and not torch.equal(a, run(sampler, sde, gmm, n=32, seed=4).x)
    with pytest.raises(ValueError, match=r"order 2; got order=3"):
        sd.DPMSolverSDE(order=3, multistep=False)
    with pytest.raises(ValueError, match=r"r must be a number in \(0, 1\]"):
        sd.DPMSolverSDE(multistep=False, r=0.0)
    with pytest.raises(ValueError, match=r"coupling 'tree'; valid choices: 'path', 'sigma', 'independent'"):
        sd.DPMSolverSDE(multistep=False, coupling="tree")
