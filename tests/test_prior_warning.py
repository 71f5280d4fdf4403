"""A warning, once per SDE, when the prior N(0, σ(T)² I) is far from p_T (SNR(T) above PRIOR_SNR_THRESHOLD)."""
import warnings

import pytest
import torch

import scoresde as sd
from scoresde.sde import PRIOR_SNR_THRESHOLD, PriorMismatchWarning

F64 = torch.float64


class Weak(sd.LinearSDE):                   # the README's first CosineNoise: SNR(T) = 0.58
    def drift_coef(self, t):
        return -0.5 * (1 + torch.cos(torch.pi * t))

    def diffusion(self, t):
        return (1 + torch.cos(torch.pi * t)).sqrt()


def _gmm():
    return sd.GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=F64), stds=[0.3, 0.3])


def test_sampler_warns_once_when_the_prior_is_not_p_T():
    sde, gmm = Weak(), _gmm()
    assert float(sde.snr(torch.tensor([sde.T], dtype=F64))[0]) > PRIOR_SNR_THRESHOLD
    with pytest.warns(PriorMismatchWarning, match=r"SNR\(T\)"):
        sd.DPMSolver(steps=4).sample(sde, gmm.score(sde), (8, 2), torch.Generator().manual_seed(0), dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PriorMismatchWarning)
        sd.DPMSolver(steps=4).sample(sde, gmm.score(sde), (8, 2), torch.Generator().manual_seed(0), dtype=F64)
        x_T = torch.zeros(8, 2, dtype=F64)         # a given start is the user's business
        sd.DPMSolver(steps=4).sample(Weak(), gmm.score(sde), (8, 2), x_T=x_T)


def test_likelihood_warns_and_reaching_noise_does_not():
    gmm = _gmm()
    with pytest.warns(PriorMismatchWarning):
        sd.log_likelihood(Weak(), gmm.score(Weak()), gmm.sample(4, torch.Generator().manual_seed(0)),
                          divergence="exact", rtol=1e-3, atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PriorMismatchWarning)
        for sde in (sd.VPSDE(), sd.VESDE(), sd.SubVPSDE(), sd.EDMSDE(), sd.CosineVPSDE(), sd.RectifiedFlowSDE()):
            sd.DPMSolver(steps=2).sample(sde, gmm.score(sde), (4, 2), torch.Generator().manual_seed(0), dtype=F64)


def test_readme_sde_reaches_noise():
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "class CosineNoise" in b)
    namespace = {}
    exec(compile(block.replace("print(", "(lambda *a: None)("), "README.md", "exec"), namespace)
    sde = namespace["sde"]
    assert float(sde.snr(torch.tensor([sde.T], dtype=F64))[0]) < 1e-3
