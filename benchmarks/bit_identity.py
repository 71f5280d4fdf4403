"""Fingerprints of every sampler, the likelihood and the loss on the exact oracle, to show that a restructure
changes no result: run it from two git worktrees (before and after) and compare the printed tables line by line.

    git worktree add /tmp/before <base-commit>
    (cd /tmp/before && python benchmarks/bit_identity.py) > before.txt
    python benchmarks/bit_identity.py > after.txt && diff before.txt after.txt

Each line is a configuration and the SHA-256 (first 16 hex digits) of its float64 output bytes, so any change of
a single bit shows. Only the public API of both versions is used (`import scoresde as sd`).
"""
from __future__ import annotations

import hashlib

import torch

import scoresde as sd

F64 = torch.float64


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to(F64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def samplers():
    return {
        "euler_maruyama native 50": sd.ReverseSDESampler(steps=50, backend="native"),
        "reverse_sde torchsde 30": sd.ReverseSDESampler(steps=30),
        "pf dopri5 1e-4": sd.ProbabilityFlowSampler(rtol=1e-4, atol=1e-4),
        "pf rk4 10": sd.ProbabilityFlowSampler("rk4", steps=10),
        "pc 40": sd.PCSampler(steps=40),
        "pc ancestral 40": sd.PCSampler("ancestral", None, steps=40),
        "pc annealed langevin 20": sd.PCSampler(predictor=None, corrector="annealed_langevin", steps=20),
        "heun 10": sd.HeunSampler(steps=10),
        "heun churn 10": sd.HeunSampler(steps=10, churn=2.0),
        "ddim 10": sd.DPMSolver(steps=10, order=1),
        "dpm++ 2M 10": sd.DPMSolver(steps=10, order=2),
        "dpm++ 3M 10": sd.DPMSolver(steps=10, order=3),
        "dpm 2S eps 10": sd.DPMSolver(steps=10, order=2, multistep=False, prediction="eps"),
        "dpm 3S 12": sd.DPMSolver(steps=12, order=3, multistep=False),
        "ddim eta 20": sd.DDIMSampler(steps=20, eta=1.0),
        "sde-dpm++ 2M 20": sd.DPMSolverSDE(steps=20),
        "sde-dpm++ 3M 20": sd.DPMSolverSDE(steps=20, order=3),
        "sde-dpm++ 2S 10": sd.DPMSolverSDE(steps=10, multistep=False),
        "unipc 10": sd.UniPCSampler(steps=10),
        "lms 10": sd.LMSSampler(steps=10),
        "deis 10": sd.DEISSampler(steps=10),
        "ancestral 20": sd.AncestralSampler(steps=20),
        "ancestral 2 10": sd.AncestralSampler(steps=10, order=2),
        "adaptive dpm": sd.AdaptiveDPMSolver(),
        "pf dopri5 sigma 1e-4": sd.ProbabilityFlowSampler(rtol=1e-4, atol=1e-4, time_variable="sigma"),
        "pf rk4 sigma 10": sd.ProbabilityFlowSampler("rk4", steps=10, time_variable="sigma"),
    }


def main() -> None:
    gmm = sd.eight_gaussians()
    for sde_name, sde in (("vp", sd.VPSDE()), ("subvp", sd.SubVPSDE()), ("ve", sd.VESDE()),
                          ("cosine_vp", sd.CosineVPSDE())):
        score = gmm.score(sde)
        for name, sampler in samplers().items():
            res = sampler.sample(sde, score, (256, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
            print(f"{sde_name:9} {name:26} nfe {res.nfe:4}  {digest(res.x)}")
        x = gmm.sample(64, torch.Generator().manual_seed(1))
        lik = sd.log_likelihood(sde, score, x, divergence="exact")
        print(f"{sde_name:9} {'log_likelihood exact':26} nfe {lik.nfe:4}  {digest(lik.log_prob, lik.z)}")
        sig = sd.log_likelihood(sde, score, x, divergence="exact", time_variable="sigma")
        print(f"{sde_name:9} {'log_likelihood exact sigma':26} nfe {sig.nfe:4}  {digest(sig.log_prob, sig.z)}")
        hut = sd.log_likelihood(sde, score, x, generator=torch.Generator().manual_seed(2))
        print(f"{sde_name:9} {'log_likelihood hutchinson':26} nfe {hut.nfe:4}  {digest(hut.log_prob, hut.z)}")
        for weighting in ("sigma2", "likelihood"):
            loss = sd.dsm_loss(sde, score, x, weighting=weighting, generator=torch.Generator().manual_seed(3),
                               reduce="none")
            print(f"{sde_name:9} {'dsm_loss ' + weighting:26} {'':8}  {digest(loss)}")
    sde = sd.VPSDE()
    meas = sd.LinearMeasurement(sd.Mask(torch.tensor([True, False])), torch.tensor([1.0, 0.0], dtype=F64), 0.0)
    noisy = sd.LinearMeasurement(torch.tensor([[1.0, 0.5]], dtype=F64), torch.tensor([1.0], dtype=F64), 0.1)
    for name, method, m, options in (("replacement", "replacement", meas, dict(steps=30)),
                                     ("repaint", "repaint", meas, dict(steps=20, resamplings=3, jump_length=5)),
                                     ("dps", "dps", noisy, dict(steps=30)), ("pigdm", "pigdm", noisy, dict(steps=30)),
                                     ("tweedie_moment", "tweedie_moment", noisy, dict(steps=20)),
                                     ("split_gibbs", "split_gibbs", noisy, dict(steps=10, iterations=3)),
                                     ("red", "red", noisy, dict(iterations=20))):
        res = sd.solve_inverse(method, sde, gmm.score(sde), m, (128, 2), torch.Generator().manual_seed(4), **options)
        print(f"{'inverse':9} {name:26} nfe {res.nfe:4}  {digest(res.x)}")
    labelled = sd.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=F64), torch.tensor([0.5, 0.5], dtype=F64),
                                  labels=torch.tensor([0, 1]))
    cfg = sd.classifier_free_guidance(labelled.conditional_score(sde), 1, scale=2.0)
    res = sd.DPMSolver(steps=10).sample(sde, cfg, (128, 2), generator=torch.Generator().manual_seed(5), dtype=F64)
    print(f"{'guidance':9} {'cfg w=2 dpm 10':26} nfe {res.nfe:4}  {digest(res.x)}")
    clf = sd.classifier_guidance(labelled.score(sde), labelled.classifier(sde), 0, scale=1.0)
    res = sd.HeunSampler(steps=10).sample(sde, clf, (128, 2), generator=torch.Generator().manual_seed(6), dtype=F64)
    print(f"{'guidance':9} {'classifier heun 10':26} nfe {res.nfe:4}  {digest(res.x)}")

    # Training: 30 steps of a small MLP for several loss settings (the Trainer's loss path), weights fingerprinted.
    x0 = sd.eight_gaussians().sample(512, torch.Generator().manual_seed(7)).float()
    for label, options in (("default", {}), ("sigma2 uniform", dict(weighting="sigma2", importance_sampling=False)),
                           ("log_normal unweighted", dict(weighting="edm", time_distribution="log_normal",
                                                          importance_weight=False)),
                           ("accumulate 2", dict(accumulate=2))):
        torch.manual_seed(0)
        model = sd.ScoreModel(sd.nets.MLP(2, hidden=16), sde)
        config = sd.TrainConfig(steps=30, batch_size=64, log_every=30, progress=False, **options)
        trainer = sd.Trainer(model, sde, x0, config, hooks=[])
        trainer.train()
        weights = [p.detach() for p in model.parameters()]
        print(f"{'train':9} {label:26} {'':8}  {digest(*weights)}")


if __name__ == "__main__":
    main()
