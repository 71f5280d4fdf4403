"""Side-by-side cross-check against k-diffusion's own sampling code: same exact model, same σ grid, same prior draw.

Do our samplers reproduce k-diffusion's ``sample_heun``, ``sample_dpmpp_2m`` and ``sample_euler``? The model is an
exact denoiser, D(x, σ) = E[x_0 | x_0 + σ n = x] of a Gaussian mixture (``gmm.denoiser(sd.EDMSDE())``, k-diffusion's
``model(x, sigma)`` convention): the 2-D eight Gaussians and a 16-D, 4-component mixture with unequal weights. For
n = 5, 10, 20, 50 k-diffusion steps the script prints, as a markdown table, the relative RMS difference
‖ours − theirs‖ / ‖theirs‖ over the samples (float64), the evaluation counts of both, and the same run of our sampler
on `sd.VPSDE` (the change of SDE is exact: x_VP = s(t) x_EDM at each time).

    python benchmarks/kdiffusion_crosscheck.py --kdiffusion-sampling /tmp/kd/src/k_diffusion/sampling.py

k-diffusion's package imports heavy optional dependencies (torchvision, PIL, safetensors, ...) at import, so it is
never imported: only its ``k_diffusion/sampling.py`` is loaded, as a standalone module (importlib) under a private
package name whose ``utils`` is a two-function stub (``append_dims``, ``append_zero``: all that sampling.py uses of
it). sampling.py itself needs scipy, torchdiffeq, torchsde and tqdm. Get the file with e.g.

    pip download k-diffusion --no-deps -d /tmp/kd && python -m zipfile -e /tmp/kd/k_diffusion-*.whl /tmp/kd/src

Matching the two conventions (what each row of the table runs):

- k-diffusion's ``get_sigmas_karras(n, σ_min, σ_max, ρ)`` gives n positive σ's and appends σ = 0, so its samplers
  take n steps, the last one to σ = 0. Our samplers end at a time eps > 0 and can finish with Tweedie's denoising
  (``denoise=True``), which at the last σ is exactly a step to σ = 0 returning D(x, σ_last). On `sd.EDMSDE`
  (s = 1, σ(t) = t) times are σ's, so the comparison passes our sampler ``times = sigmas[:-1]`` (the appended 0
  dropped: n − 1 intervals) with ``denoise=True``. The grid is computed by k-diffusion's own ``get_sigmas_karras``
  with torch's default dtype set to float64 (its ``torch.linspace`` follows the default dtype).
- ``sample_dpmpp_2m``: its first step is first order, the middle ones use the midpoint weight
  (1 + 1/2r) D_i − (1/2r) D_{i−1}, and its last step, to σ = 0, is first order and returns D(x, σ_last). That is
  ``sd.DPMSolver(order=2, prediction="x0", solver_type="midpoint", denoise=True)`` on ``sigmas[:-1]``:
  NFE n on both sides.
- ``sample_euler`` (Euler in σ on dx/dσ = (x − D)/σ; its step to 0 returns D): on EDM's process that is both
  DDIM, ``sd.DPMSolver(order=1, prediction="x0")`` — x' = (σ'/σ) x + (1 − σ'/σ) D is the same Euler step in σ
  on any linear SDE, in the scaled state x/s — and ``sd.ProbabilityFlowSampler(solver="euler")``, because on EDMSDE
  t = σ. The latter is Euler in t, which on another SDE (VP) is a different discretization of the same ODE, so
  its VP column is expected to differ at the O(h) level (docs/migration.md).
- ``sample_heun``: every step between two positive σ's is a Heun step, and the last step, to σ = 0, is an Euler
  step (= D(x, σ_last)); NFE 2n − 1. Our `HeunSampler` (EDM's Algorithm 2 on T … eps) skips the correction on its
  own last step, to eps; so on ``sigmas[:-1]`` with ``denoise=True`` its step σ_{n−2} → σ_{n−1} is Euler where
  k-diffusion's is Heun, and NFE is 2n − 2. That row is expected to differ, by the local error of that one step.
  Two rows show that this last step is the whole difference: (a) k-diffusion's own functions composed to take
  the same steps, ``sample_heun`` on σ_0 … σ_{n−2} followed by ``sample_euler`` on (σ_{n−2}, σ_{n−1}, 0), and
  (b) our HeunSampler on k-diffusion's full grid with the final 0 replaced by a tiny positive level σ_end
  (~3e-101, the σ/s of VP at t = 1e-200) and ``denoise=False``: its last, Euler, step then lands at
  D + (σ_end/σ_last)(x − D), which is D to rounding — the same n steps and NFE 2n − 1 as k-diffusion.
- VP columns: the same sampler on ``sd.VPSDE()`` with ``sd.from_denoiser(D, vp)``, on the times with
  σ(t)/s(t) = k-diffusion's σ's (``vp.time_from_log_snr(-2 log σ)``), from x_T scaled by s(t_0). With
  ``denoise=True`` the output is E[x_0 | x] on both SDEs (no rescaling); otherwise it is divided by s(t_last) (= 1
  at t = 1e-200). The trajectory column compares x_VP / s(t_k) with x_EDM at every recorded time.

"agrees" means a relative RMS difference below 1e-12 (float64 rounding through up to 100 evaluations). The script
exits 1 if a row that should agree does not. Everything is seeded and deterministic (one fixed prior draw per
mixture and n, shared by all rows).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import os
import platform
import sys
import types

import torch

import scoresde as sd

TOL = 1e-12
VP_T_END = 1e-200          # the tiny end time of the "full grid" Heun row on VP (σ/s ≈ 3e-101)


# -- loading k-diffusion's sampling.py alone ------------------------------------------------------------
def _append_dims(x, target_dims):
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * dims_to_append]


def _append_zero(x):
    return torch.cat([x, x.new_zeros([1])])


def load_kdiffusion_sampling(path: str):
    """k_diffusion/sampling.py as a module, without importing the k_diffusion package."""
    if not path:
        sys.exit("error: pass --kdiffusion-sampling PATH, the path to k-diffusion's k_diffusion/sampling.py\n"
                 "  (e.g. pip download k-diffusion --no-deps -d /tmp/kd && "
                 "python -m zipfile -e /tmp/kd/k_diffusion-*.whl /tmp/kd/src;\n"
                 "   then --kdiffusion-sampling /tmp/kd/src/k_diffusion/sampling.py)")
    if not os.path.isfile(path):
        sys.exit(f"error: k-diffusion's sampling.py not found at {path!r}\n"
                 "  get it with: pip download k-diffusion --no-deps -d /tmp/kd && "
                 "python -m zipfile -e /tmp/kd/k_diffusion-*.whl /tmp/kd/src")
    pkg_name = "_kdiffusion_standalone"
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = []                      # a package with no files: nothing else of k-diffusion can be imported
    utils = types.ModuleType(pkg_name + ".utils")
    utils.append_dims, utils.append_zero = _append_dims, _append_zero
    pkg.utils = utils
    sys.modules[pkg_name], sys.modules[utils.__name__] = pkg, utils
    spec = importlib.util.spec_from_file_location(pkg_name + ".sampling", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as err:
        sys.exit(f"error: loading {path} failed: {err}\n  k-diffusion's sampling.py needs scipy, torchdiffeq, "
                 f"torchsde and tqdm; the stub provides only utils.append_dims / utils.append_zero")
    for name in ("get_sigmas_karras", "sample_heun", "sample_euler", "sample_dpmpp_2m"):
        if not hasattr(module, name):
            sys.exit(f"error: {path} has no {name}: is it k-diffusion's k_diffusion/sampling.py?")
    return module


def kdiffusion_version(path: str) -> str:
    """The version from a dist-info beside the package (a wheel unpacked or a pip --target install)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    for meta in sorted(glob.glob(os.path.join(root, "k_diffusion-*.dist-info", "METADATA"))):
        with open(meta, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
    return "unknown (no k_diffusion-*.dist-info beside the package)"


# -- the models -----------------------------------------------------------------------------------------
def mixtures():
    """The 2-D eight Gaussians and a seeded 16-D mixture (4 components, means ×2, std 0.3–0.5, unequal weights)."""
    g = torch.Generator().manual_seed(1234)
    means = 2.0 * torch.randn(4, 16, generator=g, dtype=torch.float64)
    stds = 0.3 + 0.2 * torch.rand(4, generator=g, dtype=torch.float64)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    return {2: sd.eight_gaussians(), 16: sd.GaussianMixture(means, stds, weights)}


class CountedModel:
    """k-diffusion's ``model(x, sigma, **extra_args)``, counting its calls."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma, **extra_args):
        self.calls += 1
        return self.denoiser(x, sigma)


def rel(a, b) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


# -- one (mixture, n) cell --------------------------------------------------------------------------------
def run_cell(kd, gmm, dim: int, n: int, args):
    edm, vp = sd.EDMSDE(sigma_min=args.sigma_min, sigma_max=args.sigma_max), sd.VPSDE()
    D = gmm.denoiser(edm)
    score_edm, score_vp = sd.from_denoiser(D, edm), sd.from_denoiser(D, vp)
    sigmas = kd.get_sigmas_karras(n, args.sigma_min, args.sigma_max, args.rho)     # n positive σ's, then 0
    assert sigmas.dtype == torch.float64 and len(sigmas) == n + 1 and float(sigmas[-1]) == 0.0
    gen = torch.Generator().manual_seed(args.seed * 100_003 + 1000 * dim + n)
    x_T = float(sigmas[0]) * torch.randn(args.samples, dim, generator=gen, dtype=torch.float64)

    pos = sigmas[:-1].clone()                                       # the positive σ's = our EDM times
    t_vp = vp.time_from_log_snr(-2 * torch.log(pos))                # VP times with σ/s = those σ's
    t_end_vp = torch.tensor([VP_T_END], dtype=torch.float64)
    sigma_end = vp.std(t_end_vp) / vp.scale(t_end_vp)               # ≈ 3e-101
    full_edm, full_vp = torch.cat([pos, sigma_end]), torch.cat([t_vp, t_end_vp])

    def theirs(fn):
        model = CountedModel(D)
        x = fn(model, x_T.clone())
        return x, model.calls

    def composed_heun(model, x):
        # k-diffusion's own steps, arranged as our HeunSampler on sigmas[:-1] takes them: Heun on
        # σ_0 … σ_{n−2}, then Euler σ_{n−2} → σ_{n−1} and Euler σ_{n−1} → 0 (= D(x, σ_{n−1})).
        x = kd.sample_heun(model, x, sigmas[: n - 1], disable=True)
        return kd.sample_euler(model, x, sigmas[n - 2:], disable=True)

    kd_heun = theirs(lambda m, x: kd.sample_heun(m, x, sigmas, disable=True))
    kd_heun_composed = theirs(composed_heun)
    kd_dpmpp = theirs(lambda m, x: kd.sample_dpmpp_2m(m, x, sigmas, disable=True))
    kd_euler = theirs(lambda m, x: kd.sample_euler(m, x, sigmas, disable=True))

    short = dict(grid="edm", rho=args.rho)
    rows = [
        # (theirs label, theirs result, ours label, sampler, EDM times, VP times, expect EDM match, expect VP match)
        ("sample_heun", kd_heun, "HeunSampler(denoise=True) on sigmas[:-1]",
         sd.HeunSampler(steps=n - 1, denoise=True, **short), pos, t_vp, False, False),
        ("sample_heun → sample_euler (composed)", kd_heun_composed, "HeunSampler(denoise=True) on sigmas[:-1]",
         sd.HeunSampler(steps=n - 1, denoise=True, **short), pos, t_vp, True, True),
        ("sample_heun", kd_heun, "HeunSampler(final_correction=True, denoise=True) on sigmas[:-1]",
         sd.HeunSampler(steps=n - 1, denoise=True, final_correction=True, **short), pos, t_vp, True, True),
        ("sample_heun", kd_heun, "HeunSampler on sigmas, 0 → σ_end",
         sd.HeunSampler(steps=n, denoise=False, **short), full_edm, full_vp, True, True),
        ("sample_dpmpp_2m", kd_dpmpp, "DPMSolver(2, x0, midpoint, denoise=True)",
         sd.DPMSolver(steps=n - 1, order=2, prediction="x0", solver_type="midpoint", denoise=True, **short),
         pos, t_vp, True, True),
        ("sample_euler", kd_euler, "DPMSolver(1, x0, denoise=True) (DDIM)",
         sd.DPMSolver(steps=n - 1, order=1, prediction="x0", denoise=True, **short), pos, t_vp, True, True),
        ("sample_euler", kd_euler, "ProbabilityFlowSampler(euler, denoise=True)",
         sd.ProbabilityFlowSampler(solver="euler", steps=n - 1, denoise=True, **short), pos, t_vp, True, False),
    ]
    out = []
    for kd_label, (x_kd, nfe_kd), ours_label, sampler, times_edm, times_vp, want_edm, want_vp in rows:
        res_edm = sampler.sample(edm, score_edm, x_T.shape, x_T=x_T.clone(), times=times_edm, trajectory=True)
        s_vp = vp.scale(times_vp)
        res_vp = sampler.sample(vp, score_vp, x_T.shape, x_T=float(s_vp[0]) * x_T, times=times_vp, trajectory=True)
        x_vp = res_vp.x if sampler.denoise else res_vp.x / float(s_vp[-1])
        traj = max(rel(res_vp.trajectory[k] / float(s_vp[k + 1]), res_edm.trajectory[k])
                   for k in range(len(times_vp) - 1))
        predicted = sampler.nfe(times_edm)
        out.append(dict(
            theirs=kd_label, ours=ours_label, dim=dim, n=n,
            nfe_edm=res_edm.nfe, nfe_vp=res_vp.nfe, nfe_pred=predicted, nfe_kd=nfe_kd,
            d_edm=rel(res_edm.x, x_kd), d_vp=rel(x_vp, x_kd), d_traj=traj,
            want_edm=want_edm, want_vp=want_vp))
    return out


def verdict(row) -> str:
    nfe_ok = row["nfe_edm"] == row["nfe_vp"] == row["nfe_pred"]
    parts = []
    for key, want, name in (("d_edm", row["want_edm"], "EDM"), ("d_vp", row["want_vp"], "VP")):
        agrees = row[key] < TOL
        if want and not agrees:
            parts.append(f"**{name} FAILS**")
        elif agrees:
            parts.append(f"{name} agrees")
        else:
            parts.append(f"{name} differs (expected)")
    if row["want_edm"] and row["nfe_edm"] != row["nfe_kd"]:
        parts.append("**NFE differs**")
    if not nfe_ok:
        parts.append(f"**nfe() predicted {row['nfe_pred']}**")
    return ", ".join(parts)


def failed(row) -> bool:
    return ((row["want_edm"] and not row["d_edm"] < TOL) or (row["want_vp"] and not row["d_vp"] < TOL)
            or (row["want_edm"] and row["nfe_edm"] != row["nfe_kd"])
            or not row["nfe_edm"] == row["nfe_vp"] == row["nfe_pred"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kdiffusion-sampling", metavar="PATH", default=None,
                        help="path to k-diffusion's k_diffusion/sampling.py (loaded alone, never the package)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--steps", default="5,10,20,50", help="k-diffusion step counts n (comma-separated, ≥ 3)")
    parser.add_argument("--sigma-min", type=float, default=0.002)
    parser.add_argument("--sigma-max", type=float, default=80.0)
    parser.add_argument("--rho", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    if min(steps) < 3:
        parser.error("--steps: every n must be >= 3 (the composed Heun row needs two positive σ's before the last)")

    kd = load_kdiffusion_sampling(args.kdiffusion_sampling)
    torch.set_default_dtype(torch.float64)             # get_sigmas_karras' linspace follows the default dtype
    with open(args.kdiffusion_sampling, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:16]
    gmms = mixtures()

    print("# k-diffusion cross-check: same exact denoiser, same σ grid, same prior draw\n")
    print(f"- machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, device cpu")
    print(f"- python {platform.python_version()}, torch {torch.__version__}, scoresde {sd.__version__}")
    print(f"- k-diffusion {kdiffusion_version(args.kdiffusion_sampling)}: {os.path.abspath(args.kdiffusion_sampling)} "
          f"(sha256 {digest}…), loaded alone with a stub utils")
    print(f"- float64, {args.samples} samples, get_sigmas_karras(n, {args.sigma_min}, {args.sigma_max}, "
          f"rho={args.rho}) + [0], n ∈ {steps}, seed {args.seed}")
    print("- models: exact denoisers of eight_gaussians() (2-D) and a 16-D mixture (K = 4, means 2·N(0, I), "
          "std U(0.3, 0.5), weights 0.1/0.2/0.3/0.4), on EDMSDE; VP = VPSDE(0.1, 20) via from_denoiser")
    print(f"- 'agrees': relative RMS difference < {TOL:g}\n")

    rows = [row for dim in (2, 16) for n in steps for row in run_cell(kd, gmms[dim], dim, n, args)]
    order = []
    for row in rows:
        key = (row["theirs"], row["ours"])
        if key not in order:
            order.append(key)
    print("| k-diffusion | scoresde | D | n | NFE ours (EDM, VP) / theirs | ‖EDM − kd‖/‖kd‖ | ‖VP − kd‖/‖kd‖ "
          "| max_t ‖VP/s − EDM‖/‖EDM‖ | verdict |")
    print("|---|---|---:|---:|---|---:|---:|---:|---|")
    for key in order:
        for row in (r for r in rows if (r["theirs"], r["ours"]) == key):
            print(f"| `{row['theirs']}` | `{row['ours']}` | {row['dim']} | {row['n']} | "
                  f"{row['nfe_edm']}, {row['nfe_vp']} / {row['nfe_kd']} | {row['d_edm']:.2e} | {row['d_vp']:.2e} | "
                  f"{row['d_traj']:.2e} | {verdict(row)} |")
    bad = [r for r in rows if failed(r)]
    print()
    print("Expected differences (see the module docstring): `HeunSampler(denoise=True)` on sigmas[:-1] takes an "
          "Euler step σ_{n−2} → σ_{n−1} where `sample_heun` takes a Heun step (ours skips the correction on its last "
          "step, k-diffusion's last step is the one to 0), so NFE 2n − 2 vs 2n − 1; composing k-diffusion's own "
          "sample_heun and sample_euler into those steps, running ours with `final_correction=True` (EDM's rule: "
          "correct every step but the one to σ = 0, which is our denoising), or on the full grid with the 0 replaced "
          "by σ_end ≈ 3e-101, agrees to rounding. `ProbabilityFlowSampler(euler)` is Euler in t: σ on EDMSDE (agrees), "
          "not on VP.")
    if bad:
        print(f"\n{len(bad)} row(s) that should agree do not.")
        sys.exit(1)
    print("\nEvery row that should agree does.")


if __name__ == "__main__":
    main()
