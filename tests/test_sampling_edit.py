"""Image-to-image and inversion against exact truths: SDEdit from samples of p_0 (noised by the exact marginal)
samples p_0 again under the oracle's exact score, and inversion followed by sampling returns x_0 to the solver's
accuracy, converging as the grid is refined."""
import pytest
import torch

import scoresde as sd

F64 = torch.float64
INVERTIBLE = {
    "ddim": lambda n: sd.DDIMSampler(steps=n),
    "dpm_solver": lambda n: sd.DPMSolver(steps=n, order=2),
    "dpm_solver_3": lambda n: sd.DPMSolver(steps=n, order=3),
    "unipc": lambda n: sd.UniPCSampler(steps=n),
    "deis": lambda n: sd.DEISSampler(steps=n),
    "heun": lambda n: sd.HeunSampler(steps=n),
}


def null_spread(gmm, n, seed, repeats=16):
    """Standard deviation of the energy distance between two independent exact samples of size n (its mean is 0):
    the Monte Carlo noise floor a correct sampler's statistic lies within."""
    g = torch.Generator().manual_seed(seed)
    values = torch.stack([sd.energy_distance(gmm.sample(n, g), gmm.sample(n, g)) for _ in range(repeats)])
    return float(values.std())


@pytest.mark.parametrize("strength", [0.3, 1.0])
@pytest.mark.parametrize("make", [lambda: sd.DPMSolver(steps=40, order=3), lambda: sd.DDIMSampler(steps=60, eta=1.0)],
                         ids=["dpm_solver", "ddpm"])
def test_sdedit_from_samples_of_p0_samples_p0(strength, make):
    """x_0 ~ p_0 noised to t_0 = strength · T is an exact sample of p_{t_0}; with the exact score any sampler's run
    from t_0 is a sample of p_0 again: its energy distance to independent exact samples lies within 5 standard
    deviations of the statistic between two exact samples (the solver's bias at these step counts is far below)."""
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    g = torch.Generator().manual_seed(0)
    n = 512
    x0 = gmm.sample(n, g)
    res = sd.sdedit(sde, gmm.score(sde), x0, strength, make(), generator=g)
    assert res.x.shape == x0.shape
    distance = float(sd.energy_distance(res.x, gmm.sample(n, g)))
    assert abs(distance) < 5 * null_spread(gmm, n, seed=1), distance
    assert float((res.x - x0).norm() / x0.norm()) > 0.05               # it did move the samples


def test_sdedit_runs_the_samplers_grid_below_t0_and_refuses_bad_strength():
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    x0 = gmm.sample(8, torch.Generator().manual_seed(0))
    sampler = sd.DPMSolver(steps=10)
    grid = sampler.times(sde)
    res = sd.sdedit(sde, gmm.score(sde), x0, 0.5, sampler, torch.Generator().manual_seed(1), trajectory=True)
    assert res.nfe == int((grid < 0.5 * sde.T).sum())                   # one evaluation per step, from t_0 down
    torch.testing.assert_close(res.times, grid[grid < 0.5 * sde.T])
    for strength in (0, -0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=r"strength must be a number in \(0, 1\]"):
            sd.sdedit(sde, gmm.score(sde), x0, strength, sampler)
    with pytest.raises(ValueError, match="nothing to sample"):
        sd.sdedit(sde, gmm.score(sde), x0, 1e-4, sampler)
    with pytest.raises(TypeError, match="Sampler"):
        sd.sdedit(sde, gmm.score(sde), x0, 0.5, "dpm_solver")


@pytest.mark.parametrize("name", sorted(INVERTIBLE))
def test_inversion_then_sampling_returns_x0_to_the_solvers_accuracy(name):
    """invert runs the sampler's own steps up its own grid; sampling from the result on that grid returns x_0, with
    an error that is the two runs' discretisation error: below 2e-2 relative at 100 steps and at least 4 times
    smaller than at 25 steps (first order at worst: 4×). The encoded x_T is close to the prior N(0, 1)."""
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    x0 = gmm.sample(256, torch.Generator().manual_seed(0))
    errors = []
    for steps in (25, 100):
        sampler = INVERTIBLE[name](steps)
        encoded = sampler.invert(sde, gmm.score(sde), x0)
        assert encoded.x.shape == x0.shape and encoded.nfe == sampler.nfe() - int(sampler.denoise)
        back = sampler.sample(sde, gmm.score(sde), x0.shape, x_T=encoded.x).x
        errors.append(float((back - x0).norm() / x0.norm()))
    assert errors[1] < 2e-2 and errors[1] < errors[0] / 4, errors
    assert abs(float(encoded.x.std()) - 1) < 0.1


def test_invert_is_the_ddim_inversion_step_and_refuses_stochastic_samplers():
    """Order 1 up the grid is DDIM inversion: x_{t'} = s' x̂_0(x_t, t) + σ' ε̂(x_t, t) with t < t'."""
    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    score = gmm.score(sde)
    x0 = gmm.sample(16, torch.Generator().manual_seed(0))
    sampler = sd.DDIMSampler(steps=3)
    grid = sampler.times(sde).flip(0)
    x = x0
    for t, t_next in zip(grid[:-1], grid[1:]):
        tt = torch.full((16,), float(t), dtype=F64)
        s, sigma = sde.scale(tt)[:, None], sde.std(tt)[:, None]
        x0_hat = (x + sigma ** 2 * score(x, tt)) / s
        eps_hat = (x - s * x0_hat) / sigma
        nxt = torch.full((16,), float(t_next), dtype=F64)
        x = sde.scale(nxt)[:, None] * x0_hat + sde.std(nxt)[:, None] * eps_hat
    torch.testing.assert_close(sampler.invert(sde, score, x0).x, x, rtol=1e-10, atol=1e-10)
    for stochastic in (sd.DDIMSampler(eta=1.0), sd.HeunSampler(churn=1.0), sd.AncestralSampler(), sd.PCSampler()):
        with pytest.raises(ValueError, match="invert takes"):
            stochastic.invert(sde, score, x0)
