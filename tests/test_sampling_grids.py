"""Time grids: endpoints, monotonicity and the defining spacing of each kind, for any LinearSDE."""
import pytest
import torch

import scoresde as sd
from helpers import F64, Wiggly

SDES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(), Wiggly()]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("kind", sd.sampling.GRIDS)
def test_grid_endpoints_and_spacing(sde, kind):
    eps, n = 1e-3, 12
    t = sd.time_grid(sde, n, kind, eps=eps)
    assert t.shape == (n + 1,) and t.dtype == F64
    assert float(t[0]) == sde.T and float(t[-1]) == eps
    assert bool((t[1:] < t[:-1]).all())
    if kind == "uniform":
        assert torch.allclose(t.diff(), t.diff()[0].expand(n), rtol=1e-10)
    elif kind == "log_snr":
        lam = sde.log_snr(t)
        assert torch.allclose(lam.diff(), lam.diff()[0].expand(n), rtol=1e-6)
    elif kind == "trailing":
        torch.testing.assert_close(t[:-1], sde.T * (1 - torch.arange(n, dtype=F64) / n))
    elif kind == "quadratic":
        # √((t − eps)/(T − eps)) = 1 − i/N is linear in the step index
        root = ((t - eps) / (sde.T - eps)).sqrt()
        assert torch.allclose(root.diff(), root.diff()[0].expand(n), rtol=1e-10)
    else:
        # EDM: sigma_tilde^(1/rho) is linear in the step index, with sigma_tilde = sigma / scale.
        root = (sde.std(t) / sde.scale(t)) ** (1 / 7.0)
        assert torch.allclose(root.diff(), root.diff()[0].expand(n), rtol=1e-6)


def test_grid_bad_input():
    with pytest.raises(ValueError, match="valid choices: 'uniform', 'log_snr', 'edm'"):
        sd.time_grid(sd.VPSDE(), 10, "cosine")
    with pytest.raises(ValueError, match="eps must lie"):
        sd.time_grid(sd.VPSDE(), 10, eps=0.0)
