"""compare_samplers: the table tells a sampler that draws from the truth from one that does not."""
import math

import pytest
import torch

import scoresde as sd

F64 = torch.float64


class OracleDraw:
    """A 'sampler' that returns exact draws from the mixture (distance should sit at the noise floor)."""

    def __init__(self, gmm, shift=0.0):
        self.gmm, self.shift = gmm, shift

    def sample(self, sde, score, shape, generator=None, **kwargs):
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
        return sd.SampleResult(x=self.gmm.sample(shape[0], gen) + self.shift, nfe=7)


def test_table_separates_truth_from_bias():
    gmm = sd.eight_gaussians()
    sde = sd.VPSDE()
    table = sd.compare_samplers(sde, gmm.score(sde), {"truth": OracleDraw(gmm), "shifted": OracleDraw(gmm, 0.3)},
                                n=800, reference=gmm, repeats=2, keep_samples=True)
    truth, shifted = table.rows
    assert truth.nfe == 7 and truth.samples.shape == (800, 2) and truth.wall_time >= 0
    # Exact draws: the energy distance is an unbiased U-statistic with mean 0, like the noise floor; its standard
    # deviation at n = 800 is below 2e-3 here (eight Gaussians of radius 2), so 5e-3 is > 2.5 SD.
    assert abs(truth.distance) < 5e-3 and abs(table.noise_floor) < 5e-3
    # A 0.3 shift of every point moves the energy distance by about 2 E|X - Y| - ... ≈ 0.3^2-order: far above.
    assert shifted.distance > 10 * 5e-3
    # NLL under the true density: exact draws match the reference within 4 standard errors (log-density SD < 1.5).
    assert abs(truth.nll - table.reference_nll) < 4 * 1.5 * math.sqrt(2 / 800)
    assert shifted.nll > truth.nll + 0.5
    md = str(table)
    assert md.splitlines()[0].startswith("| sampler | NFE |") and "noise floor" in md and "| shifted |" in md
    fig = table.plot()
    assert fig.axes and fig.axes[0].get_xscale() == "log"


def test_tensor_reference_and_real_sampler():
    gmm = sd.eight_gaussians()
    sde = sd.VPSDE()
    ref = gmm.sample(500, torch.Generator().manual_seed(0))
    table = sd.compare_samplers(sde, gmm.score(sde), [sd.DPMSolver(steps=10, order=2)], n=300, reference=ref)
    row, = table.rows
    assert row.nfe == 10 and row.nll is None and table.noise_floor is None
    assert row.distance < 0.05  # 10 steps of DPM-Solver++ 2M on the exact score land close to the data


def test_bad_input():
    gmm = sd.eight_gaussians()
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="valid choices: 'energy', 'sliced_wasserstein'"):
        sd.compare_samplers(sde, gmm.score(sde), [sd.DPMSolver()], reference=gmm, metric="mmd")
    with pytest.raises(TypeError, match="has no .sample"):
        sd.compare_samplers(sde, gmm.score(sde), {"x": object()}, reference=gmm)
    with pytest.raises(ValueError, match="reference must be"):
        sd.compare_samplers(sde, gmm.score(sde), [sd.DPMSolver()])


def test_the_table_says_how_to_read_it():
    sde, gmm = sd.VPSDE(), sd.eight_gaussians()
    table = sd.compare_samplers(sde, gmm.score(sde), {"dpm": sd.DPMSolver(steps=10)}, n=300, reference=gmm,
                                dtype=torch.float64)
    text = table.to_markdown()
    assert "cross-entropy under the truth (nats)" in text and "NLL" not in text
    assert "true samples: noise floor; entropy" in text and "negative values are noise" in text
    assert "Lower is not better" in text
    assert table.noise_floor > 0                                 # an RMS: positive, unlike one draw of the estimate
