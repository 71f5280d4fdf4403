"""UniPC: fitted convergence orders on the exact Gaussian flow (UniP-p of order p, the corrector one higher),
the oracle law, exact NFE, seeding and bad input; diffusers' UniPCMultistepScheduler is reproduced in
tests/test_interop.py."""
import pytest
import torch

import scoresde as sd
from helpers import ED_MULTIPLE, F64, SDE_FACTORIES, CountingScore, convergence, fitted_order, oracle_problem

# (SDE, options, order): measured slopes 0.97, 1.96–2.14, 1.92–2.15, 2.89–3.09 for these; ±0.3 as in
# tests/test_sampling_dpm.py (the next terms of the error expansion bend the line at coarse N).
ORDER_CASES = [
    ("VP", dict(order=1, corrector=False), 1),
    ("VP", dict(order=1, variant="bh2"), 2),
    ("VE", dict(order=1, variant="bh1"), 2),
    ("VP", dict(order=2, corrector=False), 2),
    ("VE", dict(order=2, variant="bh2"), 3),
    ("VP", dict(order=2, variant="bh1"), 3),
]


@pytest.mark.parametrize("sde_name,options,order", ORDER_CASES,
                         ids=[s + "-" + "-".join(f"{k}={v}" for k, v in o.items()) for s, o, _ in ORDER_CASES])
def test_convergence_order(sde_name, options, order):
    steps = [16, 32, 64, 128]
    errors = convergence(lambda n: sd.UniPCSampler(n, **options), SDE_FACTORIES[sde_name](), steps)
    assert abs(fitted_order(steps, errors) - order) < 0.3, errors


def test_order_three_is_at_least_third_order_and_the_corrector_helps():
    """Order 3 starts with orders 1 and 2 (warm-up), so its slope is at least 3 − 0.3 (measured 3.5–4.1); the
    corrector lowers the error at every N (measured 2–4× at N = 16–32)."""
    sde, steps = SDE_FACTORIES["VP"](), [16, 32, 64, 128]
    with_c = convergence(lambda n: sd.UniPCSampler(n, order=3), sde, steps)
    without = convergence(lambda n: sd.UniPCSampler(n, order=3, corrector=False), sde, steps)
    assert fitted_order(steps, with_c) > 2.7
    assert all(a < b for a, b in zip(with_c, without)), (with_c, without)


@pytest.mark.parametrize("sde_name,dim,options", [("VP", 2, dict(steps=10, order=2)), ("VE", 2, dict(steps=12)),
                                                 ("VP", 16, dict(steps=20, order=3, grid="uniform"))])
def test_matches_the_oracle_in_energy_distance(sde_name, dim, options):
    sde, gmm, x_T, reference, floor = oracle_problem(sde_name, dim, 1000)
    res = sd.UniPCSampler(**options).sample(sde, gmm.score(sde), x_T.shape, x_T=x_T)
    assert float(sd.energy_distance(res.x, reference)) <= ED_MULTIPLE * floor


@pytest.mark.parametrize("options, expected", [(dict(steps=7), 7), (dict(steps=7, order=3, denoise=True), 8),
                                               (dict(steps=1, order=3), 1)])
def test_nfe_is_exact_and_the_run_is_deterministic(options, expected):
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    counting = CountingScore(gmm.score(sde))
    sampler = sd.UniPCSampler(**options)
    x_T = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = sampler.sample(sde, counting, x_T.shape, x_T=x_T)
    assert a.nfe == counting.calls == sampler.nfe() == expected
    torch.testing.assert_close(sampler.sample(sde, counting, x_T.shape, x_T=x_T).x, a.x, rtol=0, atol=0)
    assert sd.SAMPLERS.build("unipc", steps=5).nfe() == 5


def test_lower_order_final_follows_diffusers_rule():
    s = sd.UniPCSampler(steps=5, order=3, lower_order_final=True)
    assert [s._step_order(i, 5) for i in range(5)] == [1, 2, 3, 2, 1]
    d = sd.UniPCSampler(steps=5, order=3, lower_order_final=True, denoise=True)
    assert [d._step_order(i, 5) for i in range(5)] == [1, 2, 3, 3, 2]


def test_bad_input():
    with pytest.raises(ValueError, match="valid choices: 1, 2, 3"):
        sd.UniPCSampler(order=4)
    with pytest.raises(ValueError, match="valid choices: 'bh1', 'bh2'"):
        sd.UniPCSampler(variant="bh3")
    with pytest.raises(ValueError, match="steps"):
        sd.UniPCSampler(steps=0)
