"""Inputs that used to give silently wrong results from the Python API (issue 12, part 3) now give clear errors.

Times outside [0, T], non-finite data / starts / scores, dtype mismatches, degenerate SDEs and parameters,
unreachable tolerances, runaway adaptive solves and malformed ``steps``: each is refused, or reported at the
first step where it happens, with the expected value in the message.
"""
import functools
import math
import re

import numpy as np
import pytest
import torch

import scoresde as sd
from helpers import registered_example

F64 = torch.float64

#: Every registered sampler in its example configuration, and variants of the families.
SAMPLERS = {name: functools.partial(registered_example, sd.SAMPLERS, name) for name in sd.SAMPLERS.names()}
SAMPLERS.update({
    "reverse_sde torchsde": lambda: sd.ReverseSDESampler(steps=12),
    "reverse_sde native": lambda: sd.ReverseSDESampler(steps=12, backend="native"),
    "pf dopri5": lambda: sd.ProbabilityFlowSampler(rtol=1e-3, atol=1e-3),
    "pf euler": lambda: sd.ProbabilityFlowSampler("euler", steps=12),
    "pc corrector only": lambda: sd.PCSampler(predictor=None, corrector="annealed_langevin", steps=5),
    "dpm": lambda: sd.DPMSolver(steps=6),
})


class VPLike(sd.LinearSDE):
    """A user SDE with the VP coefficients, f = −β/2 and g = √β (β = 0.1 + 19.9 t): its derived marginals must
    match VPSDE's closed forms."""

    def drift_coef(self, t):
        return -0.5 * (0.1 + 19.9 * t)

    def diffusion(self, t):
        return (0.1 + 19.9 * t).sqrt()


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x, t):
        return self.linear(x)


def gaussian_score(sde, c=0.5):
    """The exact score of p_t for data N(0, c² I): −x / (s² c² + σ²)."""

    def score(x, t):
        var = sde.scale(t) ** 2 * c * c + sde.std(t) ** 2
        return -x / var.reshape(-1, *([1] * (x.dim() - 1)))

    return score


# -- times outside [0, T] -------------------------------------------------------------------------------------
def test_user_linear_sde_refuses_times_outside_zero_to_T():
    sde, vp = VPLike(), sd.VPSDE()
    inside = torch.tensor([0.0, 1e-4, 0.5, 1.0], dtype=F64)
    # Inside [0, T] the derived marginal is the closed form (to the table's 1e-6 relative accuracy) ...
    assert torch.allclose(sde.std(inside), vp.std(inside), rtol=1e-6, atol=1e-12)
    # ... outside it used to extrapolate the table (std(2T) = 1.3e-5 instead of ~1) or crash with an IndexError.
    for bad in (2.0, -0.5, math.nan):
        t = torch.tensor([0.5, bad], dtype=F64)
        for method in (sde.std, sde.scale, sde.log_snr):
            with pytest.raises(ValueError, match=r"t must lie in \[0, T=1.0\].*got t = " + re.escape(repr(bad))):
                method(t)
        with pytest.raises(ValueError, match=r"t must lie in \[0, T=1.0\]"):
            sde.marginal(torch.zeros(2, 3), t)


def test_closed_form_sdes_refuse_times_outside_zero_to_T():
    for sde in (sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()):
        for bad in (-0.5, 1.5, math.nan):
            for method in (sde.std, sde.scale):
                with pytest.raises(ValueError, match=r"t must lie in \[0, T=1.0\]"):
                    method(torch.tensor([bad]))
    # T itself rounded to float32 is inside (0.3 is not exact in either dtype).
    sde = sd.VPSDE(T=0.3)
    assert torch.allclose(sde.std(torch.tensor([0.3])).double(), sde.std(torch.tensor([0.3], dtype=F64)))


def test_score_model_and_dsm_loss_refuse_t_where_sigma_is_zero():
    sde = sd.VPSDE()
    model = sd.ScoreModel(Net(), sde)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(model(x, 1e-4)).all()
    for bad in (0.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"t must lie in \(0, T=1.0\]"):
            model(x, bad)                                   # σ(0) = 0: the conversions divide by it
        with pytest.raises(ValueError, match=r"t must lie in \(0, T=1.0\]"):
            sd.dsm_loss(sde, model, x, t=torch.full((4,), bad))


def test_solves_refuse_output_times_outside_zero_to_T():
    sde = sd.VPSDE()
    x = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"times must lie in \[0, T=1.0\] for ProbabilityFlowODE.solve; "
                                         r"got times = 1.5"):
        sde.probability_flow(gaussian_score(sde)).solve(x, [1.5, 0.1])
    with pytest.raises(ValueError, match=r"times must lie in \[0, T=1.0\] for ReverseSDE.solve; got times = -0.1"):
        sde.reverse(gaussian_score(sde)).solve(x, -0.1)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_check_their_times_once_and_not_at_every_step(name):
    """Every score call of a sampler runs inside ``validated_times``, where scale/std/ScoreModel skip their range
    check (a reduction over t, i.e. a host sync per step on a GPU): the sampler checked its grid once."""
    from scoresde._utils import _TIMES_VALIDATED

    sde, inside = sd.VPSDE(), []
    model = sd.ScoreModel(Net().double(), sde)

    def score(x, t):
        inside.append(_TIMES_VALIDATED.get())
        return model(x, t)

    SAMPLERS[name]().sample(sde, score, (4, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    assert inside and all(inside)
    assert not _TIMES_VALIDATED.get()                       # and the context ends with the call
    with pytest.raises(ValueError, match="t must lie in"):
        model(torch.zeros(4, 2, dtype=F64), 0.0)


# -- non-finite values ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_refuse_a_non_finite_start(name):
    sde = sd.VPSDE()
    x_T = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    x_T[2, 1] = math.nan
    with pytest.raises(ValueError, match=r"x_T has non-finite values \(NaN or inf\) in row 2"):
        SAMPLERS[name]().sample(sde, gaussian_score(sde), (4, 2), x_T=x_T)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_report_the_first_non_finite_score(name):
    """A score that turns NaN below t = 0.5: the error names the first evaluation that did, and its time."""
    sde, calls = sd.VPSDE(), []
    exact = gaussian_score(sde)

    def score(x, t):
        calls.append(float(t[0]))
        out = exact(x, t)
        return out * math.nan if float(t[0]) < 0.5 else out

    x_T = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="score returned non-finite values") as info:
        SAMPLERS[name]().sample(sde, score, (4, 2), x_T=x_T, generator=torch.Generator().manual_seed(1))
    first = next(k for k, t in enumerate(calls) if t < 0.5)
    assert f"at evaluation {first + 1} (t = {calls[first]:.6g}" in str(info.value)
    assert "underflow" not in str(info.value)


def test_native_sampler_reports_the_step_where_the_state_overflowed():
    sde = sd.VPSDE()
    huge = lambda x, t: torch.full_like(x, 1e37)                          # noqa: E731  finite, but x overflows
    sampler = sd.ReverseSDESampler(steps=20, backend="native", denoise=False)
    with pytest.raises(ValueError, match=r"the state became non-finite after step (\d+)") as info:
        sampler.sample(sde, huge, (2, 2), x_T=torch.zeros(2, 2), generator=torch.Generator().manual_seed(0))
    # Without the Brownian part (≈ 1, far below float32's resolution at 1e37) step k computes the drift
    # f x = −β_k x/2 and then x ← x (1 + h β_k/2) + h β_k 1e37 (g² = β); the first of the two to pass float32's
    # maximum 3.4e38 is the drift of step 4 (3.75e38; 2.2e38 in step 3).
    times = torch.linspace(1.0, 1e-3, 21, dtype=F64)
    x, expected, top = 0.0, None, torch.finfo(torch.float32).max
    for k in range(20):
        h, beta = float(times[k] - times[k + 1]), float(sde.beta(times[k]))
        drift, x = beta * x / 2, x * (1 + h * beta / 2) + h * beta * 1e37
        if expected is None and max(drift, x) > top:
            expected = k + 1
    assert int(re.search(r"after step (\d+)", str(info.value)).group(1)) == expected


def test_log_likelihood_refuses_non_finite_data_and_reports_a_non_finite_score():
    sde = sd.VPSDE()
    x = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    bad = x.clone()
    bad[1, 0] = math.inf
    with pytest.raises(ValueError, match=r"x has non-finite values \(NaN or inf\) in row 1"):
        sd.log_likelihood(sde, gaussian_score(sde), bad)
    exact, calls = gaussian_score(sde), []

    def score(x, t):
        calls.append(float(t[0]))
        return exact(x, t) * (math.nan if float(t[0]) > 0.5 else 1.0)

    with pytest.raises(ValueError, match="score returned non-finite values") as info:
        sd.log_likelihood(sde, score, x, divergence="exact")
    first = next(k for k, t in enumerate(calls) if t > 0.5)
    assert f"at evaluation {first + 1} (t = {calls[first]:.6g}" in str(info.value)
    assert "underflow" not in str(info.value)


def test_data_loaders_reject_non_finite_rows(tmp_path):
    array = np.array([[0.0, 1.0], [2.0, 3.0], [np.nan, 4.0], [5.0, np.inf]], dtype=np.float32)
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) in row 2 \(2 of 4 rows\)"):
        sd.data.load(str(tmp_path / "bad.npy"))
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) in row 2"):
        sd.data.Dataset(torch.from_numpy(array))
    # float64 values beyond float32's range become inf when loaded as float32.
    np.save(tmp_path / "big.npy", np.array([[0.0, 1e300], [1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"in row 0"):
        sd.data.load(str(tmp_path / "big.npy"))
    assert len(sd.data.load(str(tmp_path / "big.npy"), dtype=F64)) == 2
    # Training tensors go through the same check (the trainer used to blame "the loss" at step 1).
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match=r"data set 'tensor' has non-finite values \(NaN or inf\) in row 2"):
        sd.Trainer(sd.ScoreModel(sd.nets.MLP(2), sde), sde, torch.from_numpy(array), sd.TrainConfig(steps=1))


# -- dtypes -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_refuse_an_integer_start(name):
    sde = sd.VPSDE()
    with pytest.raises(TypeError, match=r"x_T must be a floating-point tensor; got dtype torch.int64.*x_T.float\(\)"):
        SAMPLERS[name]().sample(sde, gaussian_score(sde), (4, 2), x_T=torch.ones(4, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"dtype must be a floating-point dtype; got torch.int32"):
        SAMPLERS[name]().sample(sde, gaussian_score(sde), (4, 2), dtype=torch.int32)


def test_score_model_names_the_dtype_it_expects():
    sde = sd.VPSDE()
    model = sd.ScoreModel(Net(), sde)
    x = torch.randn(3, 2, dtype=F64)
    message = (r"x has dtype torch.float64 but the network's parameters are torch.float32: cast x with "
               r"x.float\(\) or the model with model.double\(\)")
    with pytest.raises(TypeError, match=message):
        model(x, 0.5)
    with pytest.raises(TypeError, match=message):
        sd.HeunSampler(steps=3).sample(sde, model, (3, 2), x_T=x)
    assert model.double()(x, 0.5).dtype == F64


# -- degenerate SDEs and parameters ---------------------------------------------------------------------------
class ConstantG(sd.LinearSDE):
    """f = −1/2 and g = 1 returned as Python numbers (broadcast, as for drift_coef)."""

    def drift_coef(self, t):
        return -0.5

    def diffusion(self, t):
        return 1.0


class TensorG(ConstantG):
    def drift_coef(self, t):
        return torch.full_like(t, -0.5)

    def diffusion(self, t):
        return torch.ones_like(t)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_constant_diffusion_is_broadcast_by_every_sampler(name):
    """g returned as the number 1.0 gives exactly what g = ones_like(t) gives."""
    results = []
    for sde in (ConstantG(), TensorG()):
        x_T = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
        res = SAMPLERS[name]().sample(sde, gaussian_score(sde), (4, 2), x_T=x_T,
                                      generator=torch.Generator().manual_seed(1))
        results.append(res.x)
    assert torch.isfinite(results[0]).all()
    assert torch.equal(results[0], results[1])


@pytest.mark.slow
def test_a_constant_diffusion_in_the_likelihood_and_the_losses():
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    values = []
    for sde in (ConstantG(), TensorG()):
        score = gaussian_score(sde)
        ll = sd.log_likelihood(sde, score, x, divergence="exact").log_prob
        losses = [sd.dsm_loss(sde, score, x, weighting="likelihood", generator=torch.Generator().manual_seed(2)),
                  sd.dsm_loss(sde, score, x, importance_sampling=True, generator=torch.Generator().manual_seed(2))]
        values.append(torch.cat([ll, torch.stack(losses)]))
    assert torch.equal(values[0], values[1])


class LateNoise(sd.LinearSDE):
    """g = 0 on [0, 1/2), 2 after: σ(t) = 0 up to t = 1/2."""

    def drift_coef(self, t):
        return torch.zeros_like(t)

    def diffusion(self, t):
        return torch.where(t < 0.5, torch.zeros_like(t), torch.full_like(t, 2.0))


@pytest.mark.parametrize("name", ["pc", "pc corrector only", "heun", "dpm"])
def test_samplers_that_divide_by_sigma_refuse_a_grid_where_it_is_zero(name):
    sde, sampler = LateNoise(), SAMPLERS[name]()
    grid = sampler.times(sde)
    first = float(grid[sde.std(grid) == 0][0])              # the largest grid time with σ = 0
    with pytest.raises(ValueError, match=rf"needs std\(t\) > 0 at every time of its grid; LateNoise has "
                                         rf"std\(t\) = 0 at t = {first:.6g} "):
        sampler.sample(sde, gaussian_score(sde), (4, 2), generator=torch.Generator().manual_seed(0))
    times = torch.tensor([1.0, 0.8, 0.6])                  # σ > 0 on all of them: runs
    res = SAMPLERS[name]().sample(sde, gaussian_score(sde), (4, 2), times=times,
                                  generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(res.x).all()


def test_infinite_or_nan_parameters_are_refused():
    inf, nan = math.inf, math.nan
    for make in (lambda: sd.VPSDE(beta_max=inf), lambda: sd.VPSDE(beta_min=1.0, beta_max=nan),
                 lambda: sd.SubVPSDE(beta_max=inf), lambda: sd.VESDE(sigma_max=inf),
                 lambda: sd.VESDE(sigma_min=nan)):
        with pytest.raises(ValueError, match="finite"):
            make()
    means = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"weights must be finite.*component 1"):
        sd.GaussianMixture(means, torch.ones(2), torch.tensor([1.0, inf]))
    with pytest.raises(ValueError, match=r"stds must be finite.*component 1"):
        sd.GaussianMixture(means, torch.tensor([1.0, inf]))
    with pytest.raises(ValueError, match=r"means must be finite.*component 0"):
        sd.GaussianMixture(torch.tensor([[0.0, nan], [1.0, 1.0]]), torch.ones(2))


# -- tolerances and the evaluation budget of adaptive solves ----------------------------------------------------
def test_log_likelihood_refuses_tolerances_its_dtype_cannot_reach():
    sde = sd.VPSDE()
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    score = gaussian_score(sde)
    for rtol, atol in ((-1e-3, 1e-3), (1e-3, -1e-3), (0.0, 1e-5), (1e-5, 0.0), (math.nan, 1e-5)):
        with pytest.raises(ValueError, match="rtol and atol must be positive"):
            sd.log_likelihood(sde, score, x, rtol=rtol, atol=atol)
    # rtol below 10 machine epsilons of the dtype (float32: 1.19e-6) is out of reach.
    with pytest.raises(ValueError, match=r"rtol=1e-12 is below what torch.float32 can reach \(1.19e-06"):
        sd.log_likelihood(sde, score, x, rtol=1e-12, atol=1e-12)
    for dtype, floor in ((torch.bfloat16, "0.0781"), (torch.float16, "0.00977")):
        with pytest.raises(ValueError, match=rf"rtol=1e-05 is below what {dtype} can reach \({floor}"):
            sd.log_likelihood(sde, score, x.to(dtype))
    with pytest.raises(ValueError, match="rtol=1e-12 is below what torch.float32 can reach"):
        sd.ProbabilityFlowSampler(rtol=1e-12, atol=1e-12).sample(sde, score, (3, 2))
    # An atol far below the range of the solution: torchdiffeq's step size underflows at once; the error says so
    # instead of torchdiffeq's bare "underflow in dt", naming the dtype of the solver's state (float64 for a float32
    # x: `scoresde.likelihood.solver_dtype`).
    with pytest.raises(RuntimeError, match=r"step size underflowed to 0 at t = .*tolerances are too tight for "
                                           r"torch.float64"):
        sd.log_likelihood(sde, score, x, divergence="exact", rtol=1e-5, atol=1e-30)


def test_adaptive_solves_stop_at_max_nfe():
    sde = sd.VPSDE()
    x = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    score = gaussian_score(sde)
    with pytest.raises(RuntimeError, match=r"the adaptive solve reached max_nfe=20 evaluations"):
        sd.log_likelihood(sde, score, x, divergence="exact", rtol=1e-10, atol=1e-10, max_nfe=20)
    with pytest.raises(RuntimeError, match=r"reached max_nfe=20 evaluations"):
        sd.ProbabilityFlowSampler(rtol=1e-10, atol=1e-10, max_nfe=20).sample(sde, score, (3, 2), x_T=x)
    res = sd.log_likelihood(sde, score, x, divergence="exact", max_nfe=1000)
    assert res.nfe <= 1000
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="max_nfe must be a positive integer"):
            sd.ProbabilityFlowSampler(max_nfe=bad)


# -- options -------------------------------------------------------------------------------------------------
def test_digits_refuses_an_option_it_does_not_have():
    with pytest.raises(ValueError, match=r"unknown option\(s\) n for data set 'digits'; valid options: "
                                         r".*test_fraction"):
        sd.data.load("digits", n=5)


@pytest.mark.parametrize("bad", ["abc", None, math.nan, True, 2.0, 2.5, 0, -1])
def test_every_sampler_refuses_a_malformed_steps_with_one_message(bad):
    makers = [sd.ReverseSDESampler, sd.HeunSampler, sd.DPMSolver, sd.PCSampler,
              lambda steps: sd.PCSampler(predictor=None, corrector="langevin", steps=steps),
              lambda steps: sd.ProbabilityFlowSampler("rk4", steps=steps)]
    makers += [lambda steps: sd.time_grid(sd.VPSDE(), steps), lambda steps: sd.VPSDE().discretize(steps)]
    for make in makers:
        with pytest.raises(ValueError, match=r"steps must be a positive integer.*; got " + re.escape(repr(bad))):
            make(steps=bad)
    with pytest.raises(ValueError, match=r"corrector_steps must be a non-negative integer.*; got 'abc'"):
        sd.PCSampler(corrector_steps="abc")
    # Adaptive solvers take steps=None (they choose their own steps).
    assert sd.ProbabilityFlowSampler(steps=None).steps is None


def test_compare_samplers_reports_a_diverging_sampler_as_a_row():
    """A sampler that now raises on NaN does not end the comparison: its row says it diverged."""
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    exact = gmm.score(sde)

    def score(x, t):
        return exact(x, t) * (math.nan if float(t[0]) < 0.5 else 1.0)

    samplers = {"to eps = 1e-3": sd.DPMSolver(steps=4), "to eps = 0.6": sd.DPMSolver(steps=4, eps=0.6)}
    table = sd.compare_samplers(sde, score, samplers, n=50, reference=gmm, dtype=F64)
    diverged, fine = table.rows
    assert "score returned non-finite values" in diverged.diverged
    assert math.isnan(diverged.distance) and diverged.nfe == 4
    assert fine.diverged is None and math.isfinite(fine.distance)
    assert "| to eps = 1e-3 | 4 |" in str(table) and "diverged (NaN or inf)" in str(table)


def test_devices_are_checked_and_a_device_without_float64_is_refused(monkeypatch):
    """TrainConfig(device="cuda") on a machine without CUDA raised torch's AssertionError from deep inside, and
    "gpu" torch's device-string error. A device without float64 (Apple's MPS) is refused at every entry point
    with the reason, here simulated by the one capability check `has_float64` saying no for the CPU."""
    from scoresde._utils import available_devices

    here = ", ".join(available_devices())
    with pytest.raises(ValueError, match=rf"unknown device 'gpu'; available here: {re.escape(here)}$"):
        sd.TrainConfig(device="gpu")
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=8), sd.VPSDE())
    data = torch.randn(64, 2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=rf"TrainConfig.device 'cuda' is not available here; available: "
                                             rf"{re.escape(here)}"):
            sd.Trainer(model, sd.VPSDE(), data, sd.TrainConfig(device="cuda"))
    with pytest.raises(ValueError, match=r"TrainConfig.device 'cuda:99' is not available here"):
        sd.Trainer(model, sd.VPSDE(), data, sd.TrainConfig(device="cuda:99"))

    monkeypatch.setattr("scoresde._utils.has_float64", lambda device: torch.device(device).type != "cpu")
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    reason = r"cannot run on cpu: that device has no float64, which scoresde uses for its time grids"
    with pytest.raises(ValueError, match=r"DPMSolver " + reason):
        sd.DPMSolver(steps=4).sample(sde, gmm.score(sde), (4, 2))
    with pytest.raises(ValueError, match=r"log_likelihood " + reason):
        sd.log_likelihood(sde, gmm.score(sde), torch.randn(4, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"dsm_loss " + reason):
        sd.dsm_loss(sde, gmm.score(sde), torch.randn(4, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"Trainer " + reason):
        sd.Trainer(model, sd.VPSDE(), data, sd.TrainConfig())
    with pytest.raises(ValueError, match=r"TrainConfig.device 'cpu' " + reason):
        sd.Trainer(model, sd.VPSDE(), data, sd.TrainConfig(device="cpu"))
