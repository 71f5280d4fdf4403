"""scoresde's EDM compatibility layer against NVlabs/edm's own code, run from their checkout (commit 008a4e5).

    python benchmarks/edm_equivalence.py --edm /work/peers/edm                  # denoisers, full CIFAR-10 size
    python benchmarks/edm_equivalence.py --edm /work/peers/edm --size tiny      # the same table on 8x8 nets
    python benchmarks/edm_equivalence.py --edm /work/peers/edm --sampler        # edm_sampler / ablation_sampler
    python benchmarks/edm_equivalence.py --edm /work/peers/edm --speed --device cpu
    python benchmarks/edm_equivalence.py --edm /work/peers/edm --fixtures tests/data/edm/sampler_expected.pt

**Denoisers** (default): for every network (SongUNet DDPM++, SongUNet NCSN++, DhariwalUNet) x preconditioning
(VP, VE, iDDPM, EDM) x (unconditional, 10 classes) x augment_dim (0, 9), their network is built, every parameter
perturbed (their init zeroes the last layers), and pickled the way their training loop pickles a snapshot (a deep
copy in eval mode without gradients, ``pickle.dump(dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...))``
to a file); ``sd.from_edm`` reads the file and both denoisers are compared at several σ.

**Sampler** (``--sampler``): their ``edm_sampler`` against ``sd.HeunSampler`` on the tiny snapshots of
tests/data/edm, from the same latents and, with S_churn > 0, the same churn noise: their ``randn_like`` argument is
given a function drawing from a seeded ``torch.Generator`` at the steps where churn is on (zeros elsewhere, where
their γ = 0 multiplies the draw by 0), which is exactly the sequence our sampler draws from a generator with the
same seed. Also the options of their ``ablation_sampler`` that our samplers express. ``--fixtures`` writes their
outputs for tests/test_zoo_edm_sampler.py.

**Speed** (``--speed``): our raw U-Nets (scoresde.nets.edm) against theirs on the same weights, batch 8 at 32x32.

Their code is imported from ``--edm`` and run; nothing of it is copied here.
"""
import argparse
import copy
import gzip
import math
import os
import pickle
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
import scoresde as sd  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data", "edm")


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edm", default="/work/peers/edm", help="checkout of NVlabs/edm (commit 008a4e5)")
    p.add_argument("--sampler", action="store_true", help="their edm_sampler / ablation_sampler against ours")
    p.add_argument("--speed", action="store_true", help="our U-Nets against theirs, forward and backward")
    p.add_argument("--fixtures", default=None, help="write their sampler outputs here (a torch.save of tensors)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--size", default="full", choices=["full", "tiny"], help="network size of the denoiser table")
    p.add_argument("--batch", type=int, default=1, help="batch of the denoiser comparison")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None, help="comma-separated architectures for the denoiser table / speed")
    return p.parse_args()


def import_edm(path):
    sys.path.insert(0, os.path.abspath(path))
    import dnnlib  # noqa: F401
    import generate
    from training import augment, loss, networks
    return dict(networks=networks, loss=loss, augment=augment, generate=generate, dnnlib=dnnlib)


def rel_err(ours, theirs):
    """max |ours − theirs| / max |theirs| (float64)."""
    return ((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max()).item()


def max_abs(ours, theirs):
    return (ours.double() - theirs.double()).abs().max().item()


# ---------------------------------------------------------------------------------------------------------------
# Denoisers: their snapshot → sd.from_edm, at full size
# ---------------------------------------------------------------------------------------------------------------

# Their train.py settings for CIFAR-10 (--arch=ddpmpp / ncsnpp) and a reduced ADM (their ImageNet-64 one is
# model_channels=192, channel_mult=[1, 2, 3, 4]: 296M parameters).
FULL = {
    "ddpmpp": dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                   decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=128,
                   channel_mult=[2, 2, 2], dropout=0.13),
    "ncsnpp": dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual",
                   decoder_type="standard", channel_mult_noise=2, resample_filter=[1, 3, 3, 1], model_channels=128,
                   channel_mult=[2, 2, 2], dropout=0.13),
    "adm": dict(model_type="DhariwalUNet", model_channels=64, channel_mult=[1, 2, 3, 4], dropout=0.10),
}
TINY = {
    "ddpmpp": dict(FULL["ddpmpp"], model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4]),
    "ncsnpp": dict(FULL["ncsnpp"], model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4]),
    "adm": dict(FULL["adm"], model_channels=16, channel_mult=[1, 4], channel_mult_emb=1, num_blocks=1,
                attn_resolutions=[4]),
}
PRECONDS = ("VPPrecond", "VEPrecond", "iDDPMPrecond", "EDMPrecond")


def perturb(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            scale = float(p.std()) if p.numel() > 1 else 0.0
            p.add_(torch.randn(p.shape, generator=g) * (0.5 * scale + 0.02))


def pickle_like_training_loop(edm, net, path):
    """Their training loop's snapshot: deep copies in eval mode without gradients, on the CPU, one pickle.dump."""
    data = dict(ema=net, loss_fn=edm["loss"].EDMLoss(), augment_pipe=None,
                dataset_kwargs=dict(edm["dnnlib"].EasyDict(class_name="training.dataset.ImageFolderDataset",
                                                           path="cifar10-32x32.zip", use_labels=True)))
    for key, value in data.items():
        if isinstance(value, torch.nn.Module):
            data[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
    with open(path, "wb") as f:
        pickle.dump(data, f)


def denoiser_table(args, edm):
    nets = TINY if args.size == "tiny" else FULL
    res = 8 if args.size == "tiny" else 32
    archs = args.only.split(",") if args.only else list(nets)
    print(f"denoisers D(x; σ): theirs (pickled like their training loop) vs sd.from_edm; {args.size} size "
          f"({res}x{res}), batch {args.batch}; relative error = max|ours − theirs| / max|theirs|")
    print(f"{'arch':7} {'precond':13} {'labels':6} {'aug':3} {'params':>8} {'pickle MB':>9} "
          + " ".join(f"{'σ=' + s:>9}" for s in ("0.002", "0.5", "5", "80")) + f" {'load s':>6}")
    seed = 0
    worst = 0.0
    for arch in archs:
        for precond in PRECONDS:
            for label_dim in (0, 10):
                for aug in (0, 9):
                    seed += 1
                    torch.manual_seed(seed)
                    kwargs = dict(nets[arch], augment_dim=aug)
                    net = getattr(edm["networks"], precond)(img_resolution=res, img_channels=3, label_dim=label_dim,
                                                            **kwargs)
                    perturb(net, seed)
                    net.eval()
                    with tempfile.TemporaryDirectory() as tmp:
                        path = os.path.join(tmp, "network-snapshot-000000.pkl")
                        pickle_like_training_loop(edm, net, path)
                        size = os.path.getsize(path) / 2 ** 20
                        t0 = time.perf_counter()
                        _, score = sd.from_edm(path)
                        load = time.perf_counter() - t0
                    ours = score.edm.denoiser
                    g = torch.Generator().manual_seed(1000 + seed)
                    errs = []
                    for sigma in (0.002, 0.5, 5.0, 80.0):
                        sig = net.round_sigma(torch.full((args.batch,), sigma)).float()
                        x = torch.randn(args.batch, 3, res, res, generator=g) * (1 + sig.reshape(-1, 1, 1, 1))
                        onehot = torch.eye(label_dim)[torch.randint(label_dim, (args.batch,), generator=g)] \
                            if label_dim else None
                        augl = torch.randn(args.batch, aug, generator=g) if aug else None
                        extra = dict(augment_labels=augl) if aug else {}
                        with torch.no_grad():
                            theirs = net(x, sig, onehot, **extra)
                            mine = ours(x, sig, onehot, augment_labels=augl)
                        errs.append(rel_err(mine, theirs))
                    worst = max(worst, max(errs))
                    params = sum(p.numel() for p in net.parameters()) / 1e6
                    print(f"{arch:7} {precond:13} {label_dim:6} {aug:3} {params:7.2f}M {size:9.1f} "
                          + " ".join(f"{e:9.1e}" for e in errs) + f" {load:6.1f}", flush=True)
                    del net, ours, score
    print(f"worst relative error {worst:.1e}")


# ---------------------------------------------------------------------------------------------------------------
# Samplers: their edm_sampler / ablation_sampler vs sd.HeunSampler
# ---------------------------------------------------------------------------------------------------------------

def edm_levels(sigma_min, sigma_max, num_steps, rho=7.0):
    """EDM's eq. 5 levels σ_0 > … > σ_{N−1} (float64), before their round_sigma."""
    i = torch.arange(num_steps, dtype=torch.float64)
    return (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


class ChurnNoise:
    """A ``randn_like`` for their samplers: draws from a seeded generator at the steps where churn is on, zeros at
    the others (there their γ = 0 multiplies the draw by 0), so the stream equals the one our HeunSampler draws from
    a generator with the same seed. ``first`` keeps the first draw (the tests check the seed reproduces it)."""

    def __init__(self, seed, active):
        self.g = torch.Generator().manual_seed(seed)
        self.active, self.calls, self.first = list(active), 0, None

    def __call__(self, x):
        on = self.active[self.calls]
        self.calls += 1
        if not on:
            return torch.zeros_like(x)
        z = torch.randn(x.shape, generator=self.g, dtype=x.dtype)
        if self.first is None:
            self.first = z.clone()
        return z


class Recording:
    """Their net, recording the (x, σ) of every call (their samplers read sigma_min/max and round_sigma from it)."""

    def __init__(self, net):
        self.net, self.calls = net, []

    def __getattr__(self, name):
        return getattr(self.net, name)

    def __call__(self, x, sigma, class_labels=None):
        self.calls.append((x.detach().clone(), torch.as_tensor(sigma).clone()))
        return self.net(x, sigma, class_labels)


def load_theirs(name):
    with gzip.open(os.path.join(DATA, name + ".pkl.gz"), "rb") as f:
        return pickle.load(f)["ema"]            # their persistence runs their code: this is their side


#: name → (fixture, labels, edm_sampler keywords, ablation keywords or None)
CHURN = dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)
CASES = {
    "edm_det": ("edm_songunet_ncsnpp_cond_aug9", [2, 0], {}, None),
    "edm_churn": ("edm_songunet_ncsnpp_cond_aug9", [2, 0], CHURN, None),
    "vp_det": ("vp_songunet_ddpmpp_uncond", None, {}, None),
    "vp_churn": ("vp_songunet_ddpmpp_uncond", None, CHURN, None),
    "ve_det": ("ve_songunet_ncsnpp_cond_aug9", [1, 2], {}, None),
    "ve_churn": ("ve_songunet_ncsnpp_cond_aug9", [1, 2], dict(CHURN, S_churn=10.0), None),
    "iddpm_det": ("iddpm_dhariwal_cond", [0, 2], {}, None),
    "iddpm_churn": ("iddpm_dhariwal_cond", [0, 2], CHURN, None),
    "edm_det_10steps": ("edm_songunet_ncsnpp_cond_aug9", [2, 0], dict(num_steps=10, rho=5.0), None),
    # ablation_sampler (schedule="linear", scaling="none" throughout: the only schedule our Heun steps in)
    "abl_edm_heun": ("edm_songunet_ncsnpp_cond_aug9", [2, 0], {}, dict(solver="heun", discretization="edm")),
    "abl_edm_euler": ("edm_songunet_ncsnpp_cond_aug9", [2, 0], {}, dict(solver="euler", discretization="edm")),
    "abl_ve_heun": ("edm_songunet_ncsnpp_cond_aug9", [2, 0], {}, dict(solver="heun", discretization="ve")),
    "abl_vp_heun": ("edm_songunet_ncsnpp_cond_aug9", [2, 0], {}, dict(solver="heun", discretization="vp")),
    "abl_iddpm_heun": ("edm_songunet_ncsnpp_cond_aug9", [2, 0], {}, dict(solver="heun", discretization="iddpm")),
    "abl_vp_euler_vpvp": ("vp_songunet_ddpmpp_uncond", None, {},
                          dict(solver="euler", discretization="vp", schedule="vp", scaling="vp")),
}


def run_theirs(edm, case, seed=7):
    """Their sampler on the case; returns the fixture entry (latents, labels, their grid, output, first noise)."""
    fixture, labels, opts, ablation = CASES[case]
    net = Recording(load_theirs(fixture))
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, net.img_channels, net.img_resolution, net.img_resolution, generator=g)
    onehot = torch.eye(net.label_dim)[torch.tensor(labels)] if labels else None
    num_steps = opts.get("num_steps", 18)
    lo, hi = max(0.002, float(net.sigma_min)), min(80.0, float(net.sigma_max))
    levels = net.round_sigma(edm_levels(lo, hi, num_steps, opts.get("rho", 7.0))).to(torch.float64)
    s_churn = opts.get("S_churn", 0.0)
    active = [s_churn > 0 and opts.get("S_min", 0) <= float(v) <= opts.get("S_max", math.inf) for v in levels]
    noise = ChurnNoise(seed + 1, active)
    with torch.no_grad():
        if ablation is None:
            out = edm["generate"].edm_sampler(net, latents, onehot, randn_like=noise, **opts)
        else:
            out = edm["generate"].ablation_sampler(net, latents, onehot, randn_like=noise, **ablation)
    entry = dict(latents=latents, out=out, levels=torch.stack([torch.as_tensor(s).double().reshape(())
                                                               for _, s in net.calls]),
                 inputs_last=net.calls[-1][0].double(), noise_seed=torch.tensor(seed + 1))
    if labels:
        entry["labels"] = torch.tensor(labels)
    if noise.first is not None:
        entry["first_noise"] = noise.first
    return entry


def run_ours(case, entry, state_dtype=torch.float64):
    """Our sampler on the case (as tests/test_zoo_edm_sampler.py runs it): (output, info string)."""
    fixture, labels, opts, ablation = CASES[case]
    path = os.path.join(DATA, fixture + ".pkl.gz")
    cond = torch.tensor(labels) if labels else None
    num_steps, rho = opts.get("num_steps", 18), opts.get("rho", 7.0)
    n = num_steps - 1
    heun = dict(steps=n, rho=rho, churn=opts.get("S_churn", 0.0) * n / num_steps, s_tmin=opts.get("S_min", 0.0),
                s_tmax=opts.get("S_max", math.inf), s_noise=opts.get("S_noise", 1.0), denoise=True,
                final_correction=True)
    latents = entry["latents"].to(state_dtype)
    times = None
    if ablation is None:
        sde, score = sd.from_edm(path, cond=cond)
        info = score.edm
        lo, hi = max(0.002, info.denoiser.sigma_min), min(80.0, info.denoiser.sigma_max)
        if info.preconditioning != "VPPrecond" and info.preconditioning != "iDDPMPrecond":
            how = f"EDMSDE({lo:g}, {hi:g}), grid='edm'"
        elif info.preconditioning == "VPPrecond":   # VPSDE: their σ levels are σ̃; times where σ/s equals them
            times = torch.cat([sd.sde.times_at_noise_levels(sde, edm_levels(lo, hi, num_steps, rho))])
            how = "VPSDE, times=t(their σ levels)"
        else:                                       # iDDPM: their levels are rounded to the discrete u_j
            times = info.round_sigma(edm_levels(lo, hi, num_steps, rho)).double()
            # round_sigma(80) = u_j ≈ 80.2 > 80 = T of from_edm's default EDMSDE: widen it to the rounded range
            sde, score = sd.from_edm(path, cond=cond, sde=sd.EDMSDE(float(times[-1]), float(times[0])))
            how = f"EDMSDE({float(times[-1]):.4g}, {float(times[0]):.4g}), times=round_sigma(edm levels)"
            hi = float(times[0])
        x_T = latents * (hi * float(sde.scale(torch.tensor([float(sde.T) if times is None else float(times[0])],
                                                                dtype=torch.float64))))
        sampler = sd.HeunSampler(eps=info.eps if times is None else float(times[-1]), **heun)
        res = sampler.sample(sde, score, tuple(latents.shape), torch.Generator().manual_seed(int(entry["noise_seed"])),
                             x_T=x_T, times=times)
        return res.x, how
    # ablation_sampler
    solver, disc = ablation["solver"], ablation["discretization"]
    schedule = ablation.get("schedule", "linear")
    if schedule == "linear":
        defaults = {"ve": (0.02, 100.0), "edm": (0.002, 80.0), "iddpm": (0.002, 81.0),
                    "vp": (math.sqrt(math.expm1(0.5 * 19.9 * 1e-6 + 0.1e-3)), math.sqrt(math.expm1(0.5 * 19.9 + 0.1)))}
        _, base = sd.from_edm(path, cond=cond)
        den = base.edm.denoiser
        lo, hi = max(defaults[disc][0], den.sigma_min), min(defaults[disc][1], den.sigma_max)
        heun.update(order=1 if solver == "euler" else 2)
        if disc in ("edm", "ve", "iddpm"):
            sde = sd.EDMSDE(lo, hi)
            grid = {"edm": "edm", "ve": "log_snr", "iddpm": "edm"}[disc]
            if disc == "iddpm":       # no grid of ours picks iDDPM's u_j: pass them as times
                times = entry["levels"][::2].clone() if solver == "heun" else entry["levels"].clone()
            how = f"EDMSDE({lo:g}, {hi:g}), " + (f"grid={grid!r}" if times is None else "times=their u_j")
            eps = lo
        else:                         # "vp": their β fitted to (σ_min, σ_max) at t = (ε_s, 1); uniform grid in t
            eps_s = 1e-3
            beta_d = 2 * (math.log(lo ** 2 + 1) / eps_s - math.log(hi ** 2 + 1)) / (eps_s - 1)
            beta_min = math.log(hi ** 2 + 1) - 0.5 * beta_d
            sde = sd.VPSDE(beta_min=beta_min, beta_max=beta_min + beta_d)
            grid, eps = "uniform", eps_s
            how = f"VPSDE(β_min={beta_min:.4f}, β_max={beta_min + beta_d:.3f}), grid='uniform', eps=1e-3"
        _, score = sd.from_edm(path, cond=cond, sde=sde)
        sampler = sd.HeunSampler(eps=eps, grid=grid, **heun)
        first = hi if times is None else float(times[0])        # iDDPM's largest u_j in range lies below σ_max
        x_T = latents * first * float(sde.scale(torch.tensor([float(sde.T)], dtype=torch.float64)))
        res = sampler.sample(sde, score, tuple(latents.shape), x_T=x_T, times=times)
        return res.x, how
    # schedule="vp", scaling="vp", Euler in t: our probability-flow ODE in t on the VPSDE; their last step (an Euler
    # step in t to t = 0) has no counterpart, so the comparison is the state at t = ε_s (their last net input × s).
    sde, score = sd.from_edm(path, cond=cond)
    sampler = sd.ProbabilityFlowSampler(solver="euler", steps=num_steps - 1, eps=1e-3, grid="uniform",
                                        time_variable="t")
    x_T = latents * float(sde.std(torch.tensor([1.0], dtype=torch.float64)))
    res = sampler.sample(sde, score, tuple(latents.shape), x_T=x_T)
    s_eps = float(sde.scale(torch.tensor([1e-3], dtype=torch.float64)))
    return res.x / s_eps, "VPSDE, ProbabilityFlowSampler(euler, time_variable='t'): state at t=ε_s"


def sampler_table(args, edm):
    print("their edm_sampler / ablation_sampler vs ours (batch 2, 8x8 tiny snapshots of tests/data/edm);"
          " state float64 as theirs, and float32")
    print(f"{'case':18} {'max|theirs|':>11} {'max abs 64':>10} {'rel 64':>8} {'rel 32':>8}  ours")
    fixtures = {}
    for case in CASES:
        entry = run_theirs(edm, case)
        fixtures[case] = entry
        target = entry["inputs_last"] if case == "abl_vp_euler_vpvp" else entry["out"]
        ours64, how = run_ours(case, entry, torch.float64)
        # churn noise drawn in float32 is another stream than their float64 draws: no float32 column there
        rel32 = "n/a" if "first_noise" in entry else f"{rel_err(run_ours(case, entry, torch.float32)[0], target):.1e}"
        print(f"{case:18} {target.abs().max().item():11.3f} {max_abs(ours64, target):10.1e} "
              f"{rel_err(ours64, target):8.1e} {rel32:>8}  {how}", flush=True)
    return fixtures


# ---------------------------------------------------------------------------------------------------------------
# Speed: our raw U-Nets vs theirs on the same weights
# ---------------------------------------------------------------------------------------------------------------

def timed(fn, device, repeats=5):
    fn()                                      # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed_table(args, edm):
    from scoresde.nets import edm as ours_nets
    device = torch.device(args.device)
    archs = args.only.split(",") if args.only else list(FULL)
    print(f"raw U-Nets, batch 8 at 32x32, {args.device}, {torch.get_num_threads()} threads, median of 5 (ms); "
          f"ratio = ours / theirs")
    print(f"{'arch':7} {'params':>8} {'pass':16} {'theirs':>9} {'ours':>9} {'ratio':>6} {'max rel diff':>12}")
    for arch in archs:
        kwargs = {k: v for k, v in FULL[arch].items() if k != "model_type"}
        cls = FULL[arch]["model_type"]
        torch.manual_seed(0)
        theirs = getattr(edm["networks"], cls)(img_resolution=32, in_channels=3, out_channels=3, label_dim=10,
                                               augment_dim=9, **kwargs)
        perturb(theirs, 1)
        ours = getattr(ours_nets, cls)(img_resolution=32, in_channels=3, out_channels=3, label_dim=10,
                                       augment_dim=9, **kwargs)
        ours.load_state_dict(theirs.state_dict())
        theirs, ours = theirs.to(device).train(), ours.to(device).train()
        g = torch.Generator().manual_seed(2)
        x = torch.randn(8, 3, 32, 32, generator=g).to(device)
        noise = torch.randn(8, generator=g).to(device)
        labels = torch.eye(10)[torch.randint(10, (8,), generator=g)].to(device)
        aug = torch.randn(8, 9, generator=g).to(device)
        with torch.no_grad():
            diff = rel_err(ours.eval()(x, noise, labels, aug), theirs.eval()(x, noise, labels, augment_labels=aug))
        params = sum(p.numel() for p in ours.parameters()) / 1e6
        for name, train in (("forward", False), ("forward+backward", True)):
            def step(net, call):
                net.train(train)
                if train:
                    net.zero_grad(set_to_none=True)
                    call().square().mean().backward()
                else:
                    with torch.no_grad():
                        call()
            # dropout is on in training mode in both; its draws do not change the work
            t_theirs = timed(lambda: step(theirs, lambda: theirs(x, noise, labels, augment_labels=aug)), args.device)
            t_ours = timed(lambda: step(ours, lambda: ours(x, noise, labels, aug)), args.device)
            print(f"{arch:7} {params:7.2f}M {name:16} {t_theirs * 1e3:9.1f} {t_ours * 1e3:9.1f} "
                  f"{t_ours / t_theirs:6.2f} {diff:12.1e}", flush=True)
        del theirs, ours


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    edm = import_edm(args.edm)
    if args.sampler or args.fixtures:
        fixtures = sampler_table(args, edm)
        if args.fixtures:
            keep = {case: {k: v for k, v in entry.items() if k != "inputs_last" or case == "abl_vp_euler_vpvp"}
                    for case, entry in fixtures.items()}
            torch.save(keep, args.fixtures)
            print(f"wrote {args.fixtures} ({os.path.getsize(args.fixtures)} bytes)")
    elif args.speed:
        speed_table(args, edm)
    else:
        denoiser_table(args, edm)


if __name__ == "__main__":
    main()
