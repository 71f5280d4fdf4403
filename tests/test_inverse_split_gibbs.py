"""Split Gibbs: at a fixed coupling ρ its x-chain draws exactly the posterior of the inflated measurement (noise
σ_y² I + ρ² A Aᵀ), which the oracle computes; annealing ρ moves it towards the posterior itself."""
import math

import pytest
import torch

import scoresde as sd

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _floor(post, n, repeats=5, seed=100):
    """Energy distances between independent exact sample sets of size n: their largest (a one-sided noise floor)."""
    return max(float(sd.energy_distance(post.sample(n, _gen(seed + 2 * i)), post.sample(n, _gen(seed + 2 * i + 1))))
               for i in range(repeats))


@pytest.mark.slow
def test_fixed_rho_draws_the_inflated_posterior_in_2d():
    """Eight Gaussians, y = x₁ + x₂/2 + noise 0.3, ρ = 0.5: the chain's energy distance to exact samples of the
    inflated posterior is within the largest of five noise-floor draws plus their spread (n = 1000; measured 0.0008
    against a floor of ≈ 0.0015 at n = 2000)."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians(std=0.3)
    meas = sd.LinearMeasurement(torch.tensor([[1.0, 0.5]], dtype=F64), torch.tensor([0.7], dtype=F64), 0.3)
    target = gmm.posterior(meas.inflated(0.5))
    n = 1000
    res = sd.SplitGibbsSampler(meas, rho=0.5, iterations=20).sample(sde, gmm.score(sde), (n, 2), _gen(0), dtype=F64)
    distance = float(sd.energy_distance(res.x, target.sample(n, _gen(1))))
    floor = _floor(target, n)
    assert distance < 2 * floor + 0.003
    # and it is not the uninflated posterior: that one is measurably farther
    assert float(sd.energy_distance(res.x, gmm.posterior(meas).sample(n, _gen(2)))) > distance


@pytest.mark.slow
def test_the_inflated_posterior_is_stationary_in_16d():
    """16-D, 6 components, a random projection (m = 4, σ_y = 0.1), ρ = 0.3 and 1: started at exact draws of the
    inflated posterior, five sweeps keep its law. The mean exact log-density of the samples equals its expectation
    −H (Monte Carlo, 200,000 exact draws) within 5 standard errors of the sample mean plus the prior step's
    solver bias (SDE-DPM-Solver++ with 60 steps: |gap| ≲ 0.05 nats in 16-D, benchmarks/sde_gap.py), and every
    component keeps its exact mass within 5 binomial standard errors + 0.005.

    Started from the prior instead, the chain does not find the right component in 16-D: each sweep moves x by
    about ρ, and the posterior (99.9 % on one component) is far from most prior modes: the mode-mixing limit of
    split Gibbs that docs/benchmarks.md measures."""
    g = _gen(3)
    K, D = 6, 16
    gmm = sd.GaussianMixture(1.5 * torch.randn(K, D, dtype=F64, generator=g),
                             stds=0.3 + 0.4 * torch.rand(K, D, dtype=F64, generator=g))
    A = torch.randn(4, D, dtype=F64, generator=g) / math.sqrt(D)
    x_true = gmm.sample(1, g)[0]
    meas = sd.LinearMeasurement(A, A @ x_true + 0.1 * torch.randn(4, dtype=F64, generator=g), 0.1)
    n, sde = 1000, sd.VPSDE()
    for rho in (0.3, 1.0):
        target = gmm.posterior(meas.inflated(rho))
        start = target.sample(n, _gen(4))
        res = sd.SplitGibbsSampler(meas, rho=rho, iterations=5, sampler=sd.DPMSolverSDE(steps=60),
                                   initial="x_T").sample(sde, gmm.score(sde), (n, D), _gen(5), x_T=start)
        lp = target.log_prob(res.x)
        neg_entropy, _ = target.entropy_mc(200_000, _gen(6))
        assert abs(float(lp.mean()) + neg_entropy) < 5 * float(lp.std()) / math.sqrt(n) + 0.05
        t_small = torch.full((n,), 1e-4, dtype=F64)
        mass = torch.softmax(target._log_components_t(sde, res.x, t_small), 1).argmax(1).bincount(minlength=K) / n
        w = target.weights
        assert bool(((mass - w).abs() < 5 * (w * (1 - w) / n).sqrt() + 0.005).all())


@pytest.mark.slow
def test_annealing_moves_towards_the_posterior():
    """A unimodal case where the chain mixes at every ρ: the inflated posterior's distance to the posterior falls
    with ρ, and so does the annealed chain's (ρ 1 → 0.05 against a fixed ρ = 1)."""
    sde = sd.VPSDE()
    prior = sd.GaussianMixture(torch.tensor([[0.0, 0.5]], dtype=F64),
                               covariances=torch.tensor([[[1.0, 0.5], [0.5, 0.8]]], dtype=F64))
    meas = sd.LinearMeasurement(torch.tensor([[1.0, 0.0]], dtype=F64), torch.tensor([1.5], dtype=F64), 0.1)
    post = prior.posterior(meas)
    n = 2000
    fixed = sd.SplitGibbsSampler(meas, rho=1.0, iterations=10).sample(sde, prior.score(sde), (n, 2), _gen(6),
                                                                      dtype=F64)
    annealed = sd.SplitGibbsSampler(meas, rho=1.0, rho_min=0.05, iterations=10).sample(
        sde, prior.score(sde), (n, 2), _gen(7), dtype=F64)
    ref = post.sample(n, _gen(8))
    d_fixed = float(sd.energy_distance(fixed.x, ref))
    d_annealed = float(sd.energy_distance(annealed.x, ref))
    assert d_annealed < d_fixed / 5
    assert abs(float(annealed.x[:, 0].mean()) - float(post.means[0, 0])) < 5 * float(
        post.covariances[0, 0, 0].sqrt()) / math.sqrt(n) + 0.01


def test_counts_schedules_and_noiseless_data():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    meas = sd.LinearMeasurement(sd.Mask(torch.tensor([True, False])), torch.tensor([1.0, 0.0], dtype=F64), 0.0)
    sampler = sd.SplitGibbsSampler(meas, rho=[0.8, 0.4, 0.2], iterations=3, sampler=sd.DPMSolverSDE(steps=5))
    seen = []
    res = sampler.sample(sde, gmm.score(sde), (20, 2), _gen(9), dtype=F64, callback=lambda k, r, x: seen.append(r))
    assert seen == [0.8, 0.4, 0.2]
    assert res.nfe == sampler.nfe() == 4 * sampler.sampler.nfe()
    assert sd.SplitGibbsSampler(meas, rho=1.0, rho_min=0.01, iterations=3).rhos == pytest.approx([1.0, 0.1, 0.01])
    only = sd.SplitGibbsSampler(meas, rho=0.5, iterations=2, initial="measurement", sampler=sd.DPMSolverSDE(steps=5))
    assert only.sample(sde, gmm.score(sde), (20, 2), _gen(10), dtype=F64).nfe == 2 * 6


@pytest.mark.parametrize("kwargs, match", [
    (dict(rho=-1.0), "rho must be a finite number > 0"),
    (dict(rho=0.1, rho_min=0.5), "must not exceed rho"),
    (dict(rho=[0.1, 0.5], iterations=2), "non-increasing"),
    (dict(rho=[0.5], iterations=2), "iterations = 2 values"),
    (dict(rho=[0.5, 0.1], rho_min=0.05, iterations=2), "only with a number rho"),
    (dict(initial="zeros"), "valid choices: 'prior', 'measurement'"),
    (dict(iterations=0), "iterations must be a positive integer"),
])
def test_bad_settings_are_refused(kwargs, match):
    meas = sd.LinearMeasurement(torch.ones(1, 2, dtype=F64), torch.ones(1, dtype=F64), 0.1)
    with pytest.raises(ValueError, match=match):
        sd.SplitGibbsSampler(meas, **kwargs)


def test_a_coupling_the_sde_cannot_reach_is_refused():
    sde, gmm = sd.VESDE(sigma_max=5.0), sd.eight_gaussians()
    meas = sd.LinearMeasurement(torch.ones(1, 2, dtype=F64), torch.ones(1, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="above the SDE's largest"):
        sd.SplitGibbsSampler(meas, rho=10.0, iterations=1, initial="measurement").sample(
            sde, gmm.score(sde), (4, 2), dtype=F64)
    with pytest.raises(TypeError, match="LinearMeasurement"):
        sd.SplitGibbsSampler(torch.ones(1, 2))
    general = sd.LinearMeasurement(torch.ones(1, 2, dtype=F64), torch.ones(1, dtype=F64), noise_cov=torch.eye(1))
    with pytest.raises(ValueError, match="isotropic"):
        sd.SplitGibbsSampler(general)


def test_it_is_a_registered_sampler_and_refuses_what_it_cannot_use():
    """A Sampler subclass registered as "split_gibbs": built by name, its chain can start at a given x_T, and it
    refuses explicit times (its prior steps run on the inner sampler's grid from t*(ρ))."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    meas = sd.LinearMeasurement(sd.Mask(torch.tensor([True, False])), torch.tensor([1.0, 0.0], dtype=F64), 0.1)
    sampler = sd.SAMPLERS.build("split_gibbs", measurement=meas, rho=0.5, iterations=2,
                                sampler=sd.DPMSolverSDE(steps=4))
    assert isinstance(sampler, sd.Sampler) and isinstance(sampler, sd.SplitGibbsSampler)
    assert isinstance(sd.SAMPLERS.build("inpainting", measurement=meas, steps=4), sd.Sampler)
    start = torch.zeros(5, 2, dtype=F64)
    given = sd.SplitGibbsSampler(meas, rho=0.5, iterations=2, sampler=sd.DPMSolverSDE(steps=4), initial="x_T")
    res = given.sample(sde, gmm.score(sde), (5, 2), _gen(11), x_T=start, trajectory=True)
    assert res.nfe == given.nfe() == 2 * 5 and res.times.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="initial='x_T' starts the chain at x_T: pass x_T"):
        given.sample(sde, gmm.score(sde), (5, 2), _gen(11))
    with pytest.raises(ValueError, match="runs its prior steps on its inner sampler's grid"):
        sampler.sample(sde, gmm.score(sde), (5, 2), _gen(11), times=torch.tensor([1.0, 0.5], dtype=F64))
