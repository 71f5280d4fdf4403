"""`sd.HeunSampler` on EDM snapshots loaded by `sd.from_edm` against NVlabs/edm's own ``edm_sampler`` and
``ablation_sampler`` (generate.py).

tests/data/edm/sampler_expected.pt was written by ``benchmarks/edm_equivalence.py --fixtures`` with *their* samplers on
the tiny snapshots of tests/data/edm: per case the latents (float32, as their generate.py draws them), the class
labels, the noise levels their network was called at, their output, and with churn the seed of the noise. Their
``randn_like`` was a seeded ``torch.Generator`` drawing (float64, like their state) only at the steps where churn is
on, which is the stream our sampler draws from a generator with that seed. No EDM checkout is needed here.

The mapping (N = their num_steps): ``edm_sampler(num_steps=N, rho, S_churn, S_min, S_max, S_noise)`` is
``HeunSampler(steps=N − 1, rho, churn=S_churn (N − 1)/N, s_tmin=S_min, s_tmax=S_max, s_noise=S_noise,
eps=σ_min, denoise=True, final_correction=True)`` from x_T = σ_max · latents: their N levels are our N − 1 intervals,
their Euler step to σ = 0 is our final denoising (x + (0 − σ)(x − D)/σ = D), and their γ = S_churn/N is ours
churn/(N − 1).
"""
import math
import os

import pytest
import torch

import scoresde as sd
from scoresde.sde import times_at_noise_levels

DATA = os.path.join(os.path.dirname(__file__), "data", "edm")
EXPECTED = torch.load(os.path.join(DATA, "sampler_expected.pt"), weights_only=True)

CHURN = dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)
#: case → (snapshot, edm_sampler keywords, ablation_sampler keywords or None); as benchmarks/edm_equivalence.py
CASES = {
    "edm_det": ("edm_songunet_ncsnpp_cond_aug9", {}, None),
    "edm_churn": ("edm_songunet_ncsnpp_cond_aug9", CHURN, None),
    "vp_det": ("vp_songunet_ddpmpp_uncond", {}, None),
    "vp_churn": ("vp_songunet_ddpmpp_uncond", CHURN, None),
    "ve_det": ("ve_songunet_ncsnpp_cond_aug9", {}, None),
    "ve_churn": ("ve_songunet_ncsnpp_cond_aug9", dict(CHURN, S_churn=10.0), None),
    "iddpm_det": ("iddpm_dhariwal_cond", {}, None),
    "iddpm_churn": ("iddpm_dhariwal_cond", CHURN, None),
    "edm_det_10steps": ("edm_songunet_ncsnpp_cond_aug9", dict(num_steps=10, rho=5.0), None),
    "abl_edm_heun": ("edm_songunet_ncsnpp_cond_aug9", {}, dict(solver="heun", discretization="edm")),
    "abl_edm_euler": ("edm_songunet_ncsnpp_cond_aug9", {}, dict(solver="euler", discretization="edm")),
    "abl_ve_heun": ("edm_songunet_ncsnpp_cond_aug9", {}, dict(solver="heun", discretization="ve")),
    "abl_vp_heun": ("edm_songunet_ncsnpp_cond_aug9", {}, dict(solver="heun", discretization="vp")),
    "abl_iddpm_heun": ("edm_songunet_ncsnpp_cond_aug9", {}, dict(solver="heun", discretization="iddpm")),
    "abl_vp_euler_vpvp": ("vp_songunet_ddpmpp_uncond", {},
                          dict(solver="euler", discretization="vp", schedule="vp", scaling="vp")),
}
U32 = 2.0 ** -24  # float32 unit roundoff


def tolerance(num_steps, state):
    """Relative to max |their output|. Their state is float64 and so is ours here; only their network runs in
    float32. Where our float64 σ or x differs from theirs in the last bits (our grid is formed through log SNR and
    back, σ ↔ t on VPSDE: ~1e-16) it can fall on the other side of a float32 rounding boundary: the network then sees
    an input one float32 ulp (U32 relative) away, and its output moves by a few ulps of |D| (the tiny random nets'
    gain on σ through c_noise and c_in; we allow 4). The flow contracts toward D as σ falls, so the propagated errors
    do not grow, and over the 2N − 1 evaluations the difference stays below 4 (2N − 1) U32 (9e-6 at N = 18; measured
    0 on EDMSDE at ρ = 7, 1e-7 on VPSDE, 4e-7 at N = 10, ρ = 5). A float32 state adds the rounding of ~4 operations
    per evaluation: 8 (2N − 1) U32 (measured 3e-7 to 4e-7)."""
    return (2 * num_steps - 1) * U32 * (4 if state == torch.float64 else 8)


def path(name):
    return os.path.join(DATA, name + ".pkl.gz")


def heun_kwargs(opts):
    n_levels = opts.get("num_steps", 18)
    n = n_levels - 1
    return dict(steps=n, rho=opts.get("rho", 7.0), churn=opts.get("S_churn", 0.0) * n / n_levels,
                s_tmin=opts.get("S_min", 0.0), s_tmax=opts.get("S_max", math.inf), s_noise=opts.get("S_noise", 1.0),
                denoise=True, final_correction=True)


def edm_levels(lo, hi, n, rho):
    i = torch.arange(n, dtype=torch.float64)
    return (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def run_edm_sampler_twin(case, state=torch.float64):
    """Our sampler for a case of their ``edm_sampler``: (output, num_steps)."""
    name, opts, _ = CASES[case]
    entry = EXPECTED[case]
    cond = entry.get("labels")
    sde, score = sd.from_edm(path(name), cond=cond)
    info = score.edm
    n_levels = opts.get("num_steps", 18)
    lo, hi = max(0.002, info.denoiser.sigma_min), min(80.0, info.denoiser.sigma_max)
    times = None
    if info.preconditioning == "VPPrecond":
        # On VPSDE σ̃ = σ/s is their σ and T = 1 is σ̃ ≈ 152 > 80: run at the times of their levels.
        times = times_at_noise_levels(sde, edm_levels(lo, hi, n_levels, opts.get("rho", 7.0)))
    elif info.preconditioning == "iDDPMPrecond":
        # Their levels are rounded to the network's u_j (round_sigma(80) ≈ 80.2): the rounded grid as times, on an
        # EDMSDE that reaches it.
        times = info.round_sigma(edm_levels(lo, hi, n_levels, opts.get("rho", 7.0))).double()
        sde, score = sd.from_edm(path(name), cond=cond, sde=sd.EDMSDE(float(times[-1]), float(times[0])))
    first = sde.T if times is None else float(times[0])
    scale = float(sde.scale(torch.tensor([first], dtype=torch.float64)))
    level = float(sde.std(torch.tensor([first], dtype=torch.float64))) / scale
    x_T = entry["latents"].to(state) * level * scale
    sampler = sd.HeunSampler(eps=info.eps if times is None else float(times[-1]), **heun_kwargs(opts))
    generator = torch.Generator().manual_seed(int(entry["noise_seed"]))
    return sampler.sample(sde, score, tuple(x_T.shape), generator, x_T=x_T, times=times).x, n_levels


def assert_matches(out, expected, tol):
    err = (out.double() - expected.double()).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= tol * scale, f"max error {err:.3g} > {tol:.2g} × max |theirs| {scale:.3g}"


EDM_SAMPLER_CASES = [c for c in CASES if CASES[c][2] is None]


# iddpm_churn: their t̂ = round_sigma(σ (1 + γ)) snaps churned levels to iDDPM's u_j; from_edm's score carries
# round_noise_level, which HeunSampler applies to σ̂ (without it: 3.6e-2 relative)
@pytest.mark.parametrize("case", EDM_SAMPLER_CASES)
def test_heun_reproduces_edm_sampler(case):
    out, n_levels = run_edm_sampler_twin(case)
    assert_matches(out, EXPECTED[case]["out"], tolerance(n_levels, torch.float64))


@pytest.mark.parametrize("case", ["edm_det", "vp_det"])
def test_heun_float32_state(case):
    out, n_levels = run_edm_sampler_twin(case, torch.float32)
    assert out.dtype == torch.float32
    assert_matches(out, EXPECTED[case]["out"], tolerance(n_levels, torch.float32))


@pytest.mark.parametrize("case", [c for c in EDM_SAMPLER_CASES if "churn" in c])
def test_churn_noise_stream_is_the_seeded_generator(case):
    entry = EXPECTED[case]
    z = entry["first_noise"]
    g = torch.Generator().manual_seed(int(entry["noise_seed"]))
    assert torch.equal(torch.randn(z.shape, generator=g, dtype=z.dtype), z)


def test_vp_model_on_edmsde_as_in_the_migration_guide():
    """docs/migration.md: a VP model put on EDMSDE(0.002, 80) runs their σ grid with x_T = 80 · latents."""
    entry = EXPECTED["vp_det"]
    sde, score = sd.from_edm(path("vp_songunet_ddpmpp_uncond"), sde=sd.EDMSDE(0.002, 80.0))
    latents = entry["latents"]
    out = sd.HeunSampler(steps=17, eps=score.edm.eps, denoise=True, final_correction=True).sample(
        sde, score, tuple(latents.shape), x_T=80.0 * latents.double()).x
    assert_matches(out, entry["out"], tolerance(18, torch.float64))


def test_edm_grid_is_their_levels():
    """Their network saw σ_0, σ_1, σ_1, …, σ_{N−1}, σ_{N−1} (Heun) on the ρ-grid; our "edm" grid on EDMSDE is it."""
    sde, score = sd.from_edm(path("edm_songunet_ncsnpp_cond_aug9"))
    times = sd.HeunSampler(steps=17, eps=score.edm.eps).times(sde)
    theirs = EXPECTED["edm_det"]["levels"][::2]
    torch.testing.assert_close(times, theirs, rtol=1e-14, atol=0)


# --------------------------------------------------------------------------------------------------------------------
# ablation_sampler: the options our samplers express (schedule="linear", scaling="none" except the last)
# --------------------------------------------------------------------------------------------------------------------

VP_DEFAULT = (math.sqrt(math.expm1(0.5 * 19.9 * 1e-6 + 0.1e-3)), math.sqrt(math.expm1(0.5 * 19.9 + 0.1)))
RANGE = {"ve": (0.02, 100.0), "edm": (0.002, 80.0), "iddpm": (0.002, 81.0), "vp": VP_DEFAULT}


@pytest.mark.parametrize("case", ["abl_edm_heun", "abl_edm_euler", "abl_ve_heun", "abl_vp_heun", "abl_iddpm_heun"])
def test_heun_reproduces_ablation_sampler(case):
    name, _, ablation = CASES[case]
    entry = EXPECTED[case]
    cond = entry.get("labels")
    den = sd.from_edm(path(name), cond=cond)[1].edm.denoiser
    disc, solver = ablation["discretization"], ablation["solver"]
    lo, hi = max(RANGE[disc][0], den.sigma_min), min(RANGE[disc][1], den.sigma_max)
    times, grid, eps = None, {"edm": "edm", "ve": "log_snr", "iddpm": "edm"}.get(disc), lo
    if disc == "vp":
        # their β fitted so that σ(ε_s = 1e-3) = σ_min and σ(1) = σ_max, time uniform in t: our uniform grid on that VP
        eps = 1e-3
        beta_d = 2 * (math.log(lo ** 2 + 1) / eps - math.log(hi ** 2 + 1)) / (eps - 1)
        beta_min = math.log(hi ** 2 + 1) - 0.5 * beta_d
        sde, grid = sd.VPSDE(beta_min=beta_min, beta_max=beta_min + beta_d), "uniform"
    else:
        sde = sd.EDMSDE(lo, hi)
    if disc == "iddpm":  # iDDPM's u_j picked by index: no grid of ours, their levels as times
        times = entry["levels"][::2].clone()
    _, score = sd.from_edm(path(name), cond=cond, sde=sde)
    kwargs = dict(heun_kwargs({}), order=1 if solver == "euler" else 2)
    top = torch.tensor([sde.T], dtype=torch.float64)
    first = hi if times is None else float(times[0])  # iDDPM's largest u_j in range lies below σ_max
    x_T = entry["latents"].double() * first * float(sde.scale(top))
    out = sd.HeunSampler(eps=eps, grid=grid, **kwargs).sample(sde, score, tuple(x_T.shape), x_T=x_T, times=times).x
    # the fitted VP's σ̃ grid equals theirs to float64 rounding (as the σ ↔ t round trip of test_heun_...)
    assert_matches(out, entry["out"], tolerance(18, torch.float64))


def test_probability_flow_euler_in_t_reproduces_ablation_vp_schedule():
    """schedule="vp", scaling="vp", solver="euler" is Euler in t on the VP probability-flow ODE: our
    ProbabilityFlowSampler(euler, time_variable="t") on the VPSDE. Their last step (Euler in t to t = 0) has no
    counterpart, so the state at t = ε_s is compared: their last network input x̂/s."""
    entry = EXPECTED["abl_vp_euler_vpvp"]
    sde, score = sd.from_edm(path("vp_songunet_ddpmpp_uncond"))
    one, eps = (torch.tensor([v], dtype=torch.float64) for v in (1.0, 1e-3))
    x_T = entry["latents"].double() * float(sde.std(one))
    sampler = sd.ProbabilityFlowSampler(solver="euler", steps=17, eps=1e-3, grid="uniform", time_variable="t")
    out = sampler.sample(sde, score, tuple(x_T.shape), x_T=x_T).x / float(sde.scale(eps))
    assert_matches(out, entry["inputs_last"], tolerance(18, torch.float64))


def test_a_score_built_from_an_iddpm_denoiser_rounds_its_noise_levels_however_it_is_built():
    """iDDPM's round_sigma is the denoiser's round_noise_level, so from_edm's score and a score rebuilt from the
    denoiser with other labels (what `scoresde evaluate --from edm` does for a class-conditional snapshot) both
    snap Heun's churned levels to its u_j."""
    sde, score = sd.from_edm(path("iddpm_dhariwal_cond"))
    denoiser = score.edm.denoiser
    rebuilt = sd.from_denoiser(denoiser, sde, cond=torch.tensor([0, 1]))
    for s in (score, rebuilt):
        assert s.round_noise_level is not None
        level = torch.tensor([3.3], dtype=torch.float64)
        assert torch.equal(s.round_noise_level(level), denoiser.round_sigma(level))
