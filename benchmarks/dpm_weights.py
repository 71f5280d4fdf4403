"""DPM-Solver's second-order weight: "midpoint" (the published DPM-Solver++(2M), (1 − e^{−h}) h/2) against
"taylor" (h − (1 − e^{−h})), on the exact oracle score.

    .venv/bin/python benchmarks/dpm_weights.py

For each case: the RMS error at t = 1e-3 of DPMSolver(order=2) against the probability-flow image of the same
2000 prior draws x_T (the library's PF ODE, dopri5 at rtol = atol = 1e-10), VP SDE, float64; the eight Gaussians
(2-D) and a 16-D mixture of four well-separated components (unequal weights and per-dimension stds). Printed as
"midpoint / taylor".
"""
from __future__ import annotations

import torch

import scoresde as sd

F64 = torch.float64


def mixture_16d() -> sd.GaussianMixture:
    g = torch.Generator().manual_seed(16)
    means = 2.0 * torch.randn((4, 16), generator=g, dtype=F64)
    stds = 0.2 + 0.3 * torch.rand((4, 16), generator=g, dtype=F64)
    return sd.GaussianMixture(means, stds, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64))


def main() -> None:
    torch.set_num_threads(1)
    print("| D | form | 5 steps | 10 | 20 | 50 |\n|---|---|---|---|---|---|")
    for dim, gmm in ((2, sd.eight_gaussians()), (16, mixture_16d())):
        sde = sd.VPSDE()
        x_T = torch.randn((2000, dim), generator=torch.Generator().manual_seed(0), dtype=F64) * sde.prior_std()
        xs, _ = sde.probability_flow(gmm.score(sde)).solve(x_T, [sde.T, 1e-3], rtol=1e-10, atol=1e-10)
        exact = xs[-1]
        for prediction in ("x0", "eps"):
            cells = []
            for steps in (5, 10, 20, 50):
                err = {}
                for kind in ("midpoint", "taylor"):
                    x = sd.DPMSolver(steps, order=2, prediction=prediction, solver_type=kind).sample(
                        sde, gmm.score(sde), x_T.shape, x_T=x_T).x
                    err[kind] = float((x - exact).pow(2).sum(1).mean().sqrt())
                cells.append(f"{err['midpoint']:.3g} / {err['taylor']:.3g}")
            print(f"| {dim} | {prediction} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
