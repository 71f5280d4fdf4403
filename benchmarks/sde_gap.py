"""The log-density gap of stochastic samplers on the exact oracle score: mean exact log p_0 of the samples minus
its expectation under the data (200,000 oracle draws), ± its standard error; VP, float64, 20,000 samples.

    .venv/bin/python benchmarks/sde_gap.py
"""
import math

import torch

import scoresde as sd

from dpm_weights import mixture_16d             # the 16-D mixture of tests/helpers.py (this folder is on sys.path)

F64 = torch.float64

torch.set_num_threads(1)
for dim, gmm in ((2, sd.eight_gaussians()), (16, mixture_16d())):
    sde=sd.VPSDE(); n=20000
    truth=gmm.log_prob(gmm.sample(200000, torch.Generator().manual_seed(9)))
    for nfe in (20, 50):
        row=[]
        for name, sampler in (("dpm_sde_2", sd.DPMSolverSDE(nfe-1, order=2)), ("dpm_sde_1", sd.DPMSolverSDE(nfe-1, order=1)),
                              ("ddpm", sd.DDIMSampler(nfe-1, eta=1.0, denoise=True)),
                              ("em", sd.ReverseSDESampler(steps=nfe-1, backend="native", grid="log_snr"))):
            x=sampler.sample(sde, gmm.score(sde), (n, dim), generator=torch.Generator().manual_seed(1), dtype=F64).x
            lp=gmm.log_prob(x); gap=float(lp.mean()-truth.mean()); se=math.sqrt(float(lp.var())/n+float(truth.var())/len(truth))
            row.append(f"{name} {gap:+.3f}±{se:.3f}")
        print(dim, nfe, " | ".join(row))
