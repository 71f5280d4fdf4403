"""Speed of ``sd.log_likelihood`` against a host-side reference and against the peers, and exact vs Hutchinson cost.

Reference ("score_sde_pytorch style"): our own re-implementation of the algorithm described for
score_sde_pytorch's ``likelihood.py`` (no code copied): the augmented state (x, ∫div) lives in a flat float64
numpy vector integrated by ``scipy.integrate.solve_ivp(method="RK45")``; every evaluation copies the state to
a torch tensor, runs the PF drift under no_grad, then a *second* forward pass with autograd for the Hutchinson
divergence vᵀ ∂F/∂x v (one probe v fixed for the solve), and copies both back to numpy.

Ours: ``sd.log_likelihood(..., divergence="hutchinson", n_probes=1)``: torchdiffeq dopri5 on the torch state,
one forward pass + one VJP per evaluation, no host transfers.

With ``--score-sde-pytorch DIR`` (a checkout of github.com/yang-song/score_sde_pytorch, which needs only torch,
numpy and scipy for this), its real ``likelihood.get_likelihood_fn`` runs beside both on the same network, data
and probe (its VP SDE with β ∈ [0.1, 20], continuous time; the data as (B, d, 1, 1) images, since its score
wrapper expects 4-D input). Nothing of it is copied here; it is imported from DIR at run time.

Both use the same float32 score MLP (briefly fitted by denoising score matching), the same data, the same probe,
eps = 1e-5 and rtol = atol = 1e-5. Prints markdown tables; wall times are medians of ``--repeats`` runs.
A first table splits one evaluation into its parts (forward pass without and with a graph, forward + VJP).

Peer tables (section ``peers``, issue #17): one interleaved run per case of

- ours in both time variables, ``time_variable="t"`` and ``"sigma"`` (x̃ = x/s against σ̃ = σ/s), passed explicitly;
- score_sde_pytorch's real ``likelihood.py`` (``--score-sde-pytorch DIR``; it always computes in float32);
- flow_matching's ``ODESolver.compute_likelihood`` (``--flow-matching DIR``, a folder holding the package, e.g.
  ``pip install --target DIR flow_matching==1.0.10 --no-deps``; it needs torch, numpy, torchdiffeq), on the PF ODE
  in its time u = 1 − (t − eps)/(T − eps), which must run from 1 (data) to 0, with a float64 time grid;
- k-diffusion's ``log_likelihood`` (``--k-diffusion FILE``, its ``k_diffusion/sampling.py`` loaded alone as in
  benchmarks/kdiffusion_crosscheck.py) on x/s(eps) from σ̃(eps) to σ̃(T), with EDM's denoiser
  D(x̃, σ̃) = x̃ + σ̃² s score(s x̃, t(σ̃)) built from the score; its log-density is mapped back with
  log p_t(x) = log p̃_σ̃(x/s) − D log s;

on (1) exact Gaussian-mixture scores in float64 (d = 2, 16), (2) a float32 ε-network fitted briefly to a mixture
(d = 2, 16, 64), (3) trained runs given by ``--model-2d DIR`` (``scoresde train``, eight Gaussians) and
``--model-digits DIR`` (``--data.name=digits --model.net=unet``), batch ``--peer-batch`` (digits ``--digits-batch``),
Hutchinson with one Rademacher probe, dopri5 (score_sde_pytorch: RK45), rtol = atol = 1e-5, eps = 1e-5.

The same probe everywhere: ours draws it from ``Generator().manual_seed(seed)``; score_sde_pytorch and k-diffusion
draw ``torch.randint_like`` from the global RNG, seeded with the same seed; flow_matching draws
``(torch.randn_like(x) < 0) · 2 − 1``, so for its call ``torch.randn_like`` returns −probe once. ``check_probes``
draws each library's probe with its own recipe and checks that all are equal. Every library's result is read as
its transport term ∫ ∇·F plus the exact log p_T at its own latent (the N(0, I) prior differs from p_T): its prior
is replaced by a recorder (score_sde_pytorch: ``prior_logp``; flow_matching: ``log_p0``) or its solution is read
through a recorder around ``odeint`` (k-diffusion). Error = mean over the batch of |log p − log p_ref|, log p_ref
a float64 solve of ours with the same probe at rtol = atol = ``--ref-tol`` (1e-8; digits ``--digits-ref-tol``,
1e-7) in σ̃, checked against the same solve in t. For the exact mixtures a column also gives the distance to the
exact log p_eps, which includes the Hutchinson estimator's own noise (the same for every library).

    .venv/bin/python benchmarks/likelihood_speed.py            # ~3 min + ours-only peer tables, 2-core CPU
    .venv/bin/python benchmarks/likelihood_speed.py --score-sde-pytorch /path/to/score_sde_pytorch
    .venv/bin/python benchmarks/likelihood_speed.py --quick    # smaller, for a smoke test
    # every table with every peer and the 2-D model: ~9 min on a shared 2-core CPU
    .venv/bin/python benchmarks/likelihood_speed.py --score-sde-pytorch DIR --flow-matching DIR \
        --k-diffusion .../k_diffusion/sampling.py --model-2d RUN
    # the digits U-Net row alone (batch 4: a U-Net evaluation costs ~100 MLP ones): 5-11 min
    .venv/bin/python benchmarks/likelihood_speed.py --sections peers --peer-groups trained --model-digits RUN \
        --score-sde-pytorch DIR --flow-matching DIR --k-diffusion .../k_diffusion/sampling.py

Runs: ``scoresde train --out RUN --steps=1500`` (the 2-D demo, ~1 min) and ``scoresde train --out RUN
--data.name=digits --model.net=unet --steps=600 --train.batch_size=128`` (~6 min).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from scipy.integrate import solve_ivp

import scoresde as sd
from scoresde.sde import NoiseLevelFlow


class ScoreMLP(torch.nn.Module):
    """ε-network ε_θ(x, t) on flat data; score(x, t) = −ε_θ(x, t) / σ(t); initialised from ``seed``."""

    def __init__(self, dim: int, hidden: int = 128, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 2, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim),
        )

    def forward(self, x, t):
        features = torch.cat([x, torch.sin(2 * math.pi * t)[:, None], torch.cos(2 * math.pi * t)[:, None]], 1)
        return self.net(features)


def make_score(sde, model):
    def score(x, t):
        return -model(x, t) / sde.std(t)[:, None]
    return score


def fit(sde, model, gmm, steps: int, seed: int):
    """A brief denoising-score-matching fit (ε-prediction MSE, t ~ U(1e-5, 1))."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(steps):
        x0 = gmm.sample(512, gen).float()
        t = 1e-5 + (1 - 1e-5) * torch.rand(512, generator=gen)
        xt, z = sde.sample_marginal(x0, t, generator=gen)
        loss = (model(xt, t) - z).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.requires_grad_(False)
    return model


def reference_log_likelihood(sde, score, x, probe, rtol=1e-5, atol=1e-5, eps=1e-5):
    """score_sde_pytorch-style: scipy RK45 on host, numpy round trip and two forward passes per evaluation."""
    batch, d = x.shape
    dtype, device = x.dtype, x.device

    def pf_drift(x_t, t):
        g = sde.diffusion(t)
        return sde.drift(x_t, t) - 0.5 * (g * g)[:, None] * score(x_t, t)

    def rhs(t, y):
        x_t = torch.from_numpy(y[: batch * d].reshape(batch, d)).to(device=device, dtype=dtype)
        t_vec = torch.full((batch,), t, device=device, dtype=dtype)
        with torch.no_grad():
            drift = pf_drift(x_t, t_vec)                           # forward pass 1
        with torch.enable_grad():
            x_g = x_t.clone().requires_grad_(True)
            out = (pf_drift(x_g, t_vec) * probe).sum()             # forward pass 2, for the divergence only
            (grad,) = torch.autograd.grad(out, x_g)
        div = (grad * probe).sum(1)
        return np.concatenate([drift.cpu().numpy().reshape(-1), div.cpu().numpy()]).astype(np.float64)

    y0 = np.concatenate([x.cpu().numpy().reshape(-1), np.zeros(batch)]).astype(np.float64)
    sol = solve_ivp(rhs, (eps, sde.T), y0, rtol=rtol, atol=atol, method="RK45")
    y_end = sol.y[:, -1]
    z = torch.from_numpy(y_end[: batch * d].reshape(batch, d)).to(device=device, dtype=dtype)
    delta = torch.from_numpy(y_end[batch * d:]).to(device=device, dtype=dtype)
    return sde.prior_log_prob(z) + delta, sol.nfev


def real_score_sde_pytorch(path):
    """(likelihood module, sde_lib module) imported from a score_sde_pytorch checkout at ``path``."""
    sys.path.insert(0, path)
    try:
        return importlib.import_module("likelihood"), importlib.import_module("sde_lib")
    finally:
        sys.path.remove(path)


class ImageShaped(torch.nn.Module):
    """score_sde_pytorch calls model(x, labels) with 4-D x and labels = 999 t (VP, continuous)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, labels):
        return self.model(x.reshape(x.shape[0], -1), labels / 999).reshape(x.shape)


def real_log_likelihood(likelihood_module, sde_lib, model, x, seed, rtol=1e-5, atol=1e-5, eps=1e-5):
    """score_sde_pytorch's own likelihood_fn; returns (log p in nats per sample, nfe).

    Its Rademacher probe comes from the global RNG: ``torch.manual_seed(seed)`` makes it the probe ours draws
    from ``Generator().manual_seed(seed)``. It reports bits/dim plus an offset 7 − inverse_scaler(−1) = 8 for
    the identity scaler, undone here.
    """
    sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    fn = likelihood_module.get_likelihood_fn(sde, lambda v: v, rtol=rtol, atol=atol, eps=eps)
    d = x[0].numel()
    torch.manual_seed(seed)
    bpd, _, nfe = fn(ImageShaped(model), x.reshape(x.shape[0], -1, 1, 1))
    return -(bpd.double() - 8.0) * d * math.log(2), nfe


def per_evaluation(score, x, repeats=200):
    """ms for a forward pass without graph, with graph, and forward + one VJP (median of 5 blocks)."""
    t = torch.full((x.shape[0],), 0.5, device=x.device, dtype=x.dtype)
    v = torch.ones_like(x)

    def no_grad():
        with torch.no_grad():
            score(x, t)

    def with_graph():
        score(x.detach().requires_grad_(True), t)

    def with_vjp():
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(score(xg, t), xg, v)

    out = []
    for fn in (no_grad, with_graph, with_vjp):
        for _ in range(20):
            fn()
        blocks = []
        for _ in range(5):
            sync(x.device)
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            sync(x.device)
            blocks.append((time.perf_counter() - start) / repeats * 1e3)
        out.append(statistics.median(blocks))
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats):
    """(median wall time, median CPU time of this process, last output) over ``repeats`` runs."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus), out


def interleaved(fns, repeats, warmup=True):
    """Run ``fns`` (name → callable) in turn after one warm-up call each (``warmup``), ``repeats`` rounds, so slow drifts of a shared machine hit all alike.

    Round r starts at the r-th callable (the order rotates), so none always runs first or after the same one.
    Returns name → (median wall, median CPU, last output, per-round walls, per-round CPU times).
    """
    walls = {name: [] for name in fns}
    cpus = {name: [] for name in fns}
    outs = {}
    for fn in fns.values() if warmup else ():      # warm-up: first calls build tables and caches
        fn()
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu, outs[name] = timed(fns[name], 1)
            walls[name].append(wall)
            cpus[name].append(cpu)
    return {name: (statistics.median(walls[name]) if walls[name] else None,
                   statistics.median(cpus[name]) if cpus[name] else None, outs.get(name), walls[name], cpus[name])
            for name in fns}


def bpd(log_prob, d):
    """Continuous-data negative log-likelihood in bits/dim, mean and standard error over the batch."""
    v = -log_prob.double() / (d * math.log(2))
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def expand_like(v, x):
    """(B,) → (B, 1, …, 1) to broadcast against x (B, *D)."""
    return v.reshape(v.shape + (1,) * (x.dim() - v.dim()))


def mixture(d, seed):
    gen = torch.Generator().manual_seed(seed)
    k = 8 if d == 2 else 4
    if d == 2:
        return sd.eight_gaussians(radius=1.0, std=0.1)
    return sd.GaussianMixture(torch.randn(k, d, generator=gen, dtype=torch.float64) * 0.8,
                              torch.full((k,), 0.3, dtype=torch.float64))


# -- side by side with the peers (issue #17) --------------------------------------------------------------
PEER_LABELS = {
    "scoresde t": "scoresde, t",
    "scoresde σ": "scoresde, σ̃ = σ/s (x̃ = x/s)",
    "scoresde σ narrow": "scoresde, σ̃, the solver's state in float32 (state_dtype = x's dtype)",
    "score_sde_pytorch": "score_sde_pytorch `likelihood.py` (scipy RK45, t)",
    "flow_matching": "flow_matching 1.0.10 `ODESolver.compute_likelihood` (dopri5, u = 1 − (t − eps)/(T − eps))",
    "k-diffusion": "k-diffusion `log_likelihood` (dopri5, σ̃, D(x̃, σ̃) from the score)",
}


@dataclass
class Case:
    """One row group of the peer tables: a score on data x under sde.

    ``score`` runs in x's dtype; ``score64`` is the same score in float64 for the tight reference; ``log_p_T(z)``
    is the exact log-density of the data's law at T (float64, (B,)); ``exact(x)`` the exact log p_eps(x) where the
    score is the exact one (else None).
    """

    group: str
    name: str
    sde: object
    score: Callable
    score64: Callable
    x: torch.Tensor
    log_p_T: Callable
    exact: Optional[Callable] = None
    expensive: bool = False     # the digits U-Net: no warm-up call, its own rounds and reference tolerance, no t check
    score_ext: Optional[Callable] = None    # the same score under `extended(sde)`, defined past T (see there)

    @property
    def sde_ext(self):
        return extended(self.sde)


def extended(sde, factor=2.0):
    """The VP SDE with the same β(t) on [0, T], continued linearly to factor · T.

    torchdiffeq's dopri5 steps past the end of the interval and interpolates back unless told not to (ours passes
    ``step_t``); flow_matching and k-diffusion call it without, so their last step evaluates the field beyond T
    (σ̃ > σ̃(T)). A field clamped to t = T there has a kink at T that costs their solves accuracy; this SDE gives
    their adapters the field's smooth continuation instead (identical values on [eps, T])."""
    if not isinstance(sde, sd.VPSDE):
        return sde
    T = float(sde.T)
    return sd.VPSDE(beta_min=sde.beta_min, beta_max=sde.beta_min + (sde.beta_max - sde.beta_min) * factor,
                    T=factor * T)


def draw_probe(x, seed):
    """The Rademacher probe ours draws from ``Generator().manual_seed(seed)`` (likelihood._draw_probes), (B, *D)."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    bits = torch.randint(0, 2, (1,) + tuple(x.shape), generator=gen, device=x.device)
    return (2 * bits - 1).to(x.dtype)[0]


def load_flow_matching(path):
    """flow_matching's ODESolver and its version, imported from ``path`` (a ``pip install --target`` folder)."""
    sys.path.insert(0, path)
    try:
        import flow_matching
        from flow_matching.solver import ODESolver
    finally:
        sys.path.remove(path)
    return ODESolver, flow_matching.__version__


def load_kdiffusion(path):
    """k-diffusion's ``k_diffusion/sampling.py`` alone (benchmarks/kdiffusion_crosscheck.py's loader)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    try:
        from kdiffusion_crosscheck import kdiffusion_version, load_kdiffusion_sampling
    finally:
        sys.path.remove(here)
    return load_kdiffusion_sampling(path), kdiffusion_version(path)


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@contextlib.contextmanager
def given_randn_like(value):
    """torch.randn_like returns ``value`` once: flow_matching draws its probe as (randn_like(x) < 0) · 2 − 1, so
    value = −probe makes that probe exactly ``probe`` (checked in ``check_probes``)."""
    real, calls = torch.randn_like, []

    def fake(x, *args, **kwargs):
        if calls or tuple(x.shape) != tuple(value.shape):
            raise RuntimeError("flow_matching called torch.randn_like more than once, or on another shape")
        calls.append(1)
        return value.to(dtype=kwargs.get("dtype") or x.dtype, device=x.device).clone()

    torch.randn_like = fake
    try:
        yield
    finally:
        torch.randn_like = real


def sigma_ends(sde, eps):
    """(s(eps), s(T), σ(eps)/s(eps), σ(T)/s(T)) as floats."""
    ends = torch.tensor([float(eps), float(sde.T)], dtype=torch.float64)
    s, sigma = sde.scale(ends), sde.std(ends)
    return float(s[0]), float(s[1]), float(sigma[0] / s[0]), float(sigma[1] / s[1])


def run_scoresde(case, variable, seed, rtol, atol, eps, score=None, x=None, state_dtype=None):
    """(transport term in x-space, latent z at T, NFE): sd.log_likelihood in the time ``variable`` (its solver state
    in ``state_dtype``; None: the default, float64)."""
    x = case.x if x is None else x
    res = sd.log_likelihood(case.sde, case.score if score is None else score, x, divergence="hutchinson",
                            probe="rademacher", n_probes=1, time_variable=variable, rtol=rtol, atol=atol, eps=eps,
                            generator=torch.Generator(device=x.device).manual_seed(seed), state_dtype=state_dtype)
    return res.delta_log_prob, res.z, res.nfe


class EpsNet(torch.nn.Module):
    """score_sde_pytorch's model(x, labels) for its continuous VP SDE: ε(x, t) = −σ(t) score(x, t), t = labels / 999.

    Its likelihood casts the state to float32; the score runs in ``dtype`` (float64 for the exact mixture) and is
    cast back. Flat data travel as (B, d, 1, 1) images (its score wrapper divides by a 4-D std)."""

    def __init__(self, sde, score, shape, dtype):
        super().__init__()
        self.sde, self.score, self.shape, self.dtype = sde, score, tuple(shape), dtype

    def forward(self, x, labels):
        t = (labels / 999).to(self.dtype)
        xs = x.reshape((x.shape[0],) + self.shape).to(self.dtype)
        eps = -expand_like(self.sde.std(t), xs) * self.score(xs, t)
        return eps.reshape(x.shape).to(x.dtype)


def run_score_sde_pytorch(real, case, seed, rtol, atol, eps):
    """score_sde_pytorch's own likelihood_fn; (transport, latent, NFE). Its prior_logp is replaced by a recorder
    that keeps the latent and returns 0, and inverse_scaler(v) = v + 8 makes its bits/dim offset 7 − 7 = 0, so
    its bits/dim is −transport / (N ln 2) (float32, as it computes)."""
    likelihood_module, sde_lib = real
    sde = case.sde
    if not (isinstance(sde, sd.VPSDE) and sde.beta_min == 0.1 and sde.beta_max == 20.0 and sde.T == 1.0):
        raise ValueError("score_sde_pytorch's row needs the VP SDE with β ∈ [0.1, 20], T = 1")

    class Recording(sde_lib.VPSDE):
        def prior_logp(self, z):
            self.latent = z
            return torch.zeros(z.shape[0], device=z.device)

    their = Recording(beta_min=0.1, beta_max=20.0, N=1000)
    fn = likelihood_module.get_likelihood_fn(their, lambda v: v + 8.0, rtol=rtol, atol=atol, eps=eps)
    x = case.x
    images = x if x.dim() == 4 else x.reshape(x.shape[0], -1, 1, 1)
    torch.manual_seed(seed)                 # its probe: torch.randint_like(data, 0, 2) from the global RNG
    bpd, _, nfe = fn(EpsNet(sde, case.score, x.shape[1:], x.dtype), images.float())
    d = x[0].numel()
    transport = -bpd.double() * d * math.log(2)
    return transport, their.latent.reshape(x.shape).double(), nfe


def run_flow_matching(solver_class, case, seed, rtol, atol, eps):
    """flow_matching's ODESolver.compute_likelihood on the PF ODE in u = 1 − (t − eps)/(T − eps) ∈ [1, 0] (its
    time grid must run from 1, the data, to 0): velocity dx/du = −(T − eps) F(x, t). Its log_p0 is a recorder
    returning 0, so its output is the transport term. The time grid is float64 (finer than its float32 default
    near u = 1), and in float64 the default dtype is set to float64 for the call (its probe and log-det start
    follow the default dtype)."""
    x = case.x
    span, count = float(case.sde.T) - eps, [0]
    sde, score = (case.sde_ext, case.score_ext) if case.score_ext is not None else (case.sde, case.score)
    T = float(sde.T)        # beyond the case's T where the field is continued (`extended`)

    def velocity(x, t):
        count[0] += 1
        tt = (eps + (1 - t.to(torch.float64)) * span).clamp(eps, T).to(x.dtype).expand(x.shape[0])
        g = sde.diffusion(tt)
        return -span * (sde.drift(x, tt) - 0.5 * expand_like(g * g, x) * score(x, tt))

    probe = draw_probe(x, seed)
    grid = torch.tensor([1.0, 0.0], dtype=torch.float64, device=x.device)
    with given_randn_like(-probe), default_dtype(x.dtype):
        z, transport = solver_class(velocity_model=velocity).compute_likelihood(
            x_1=x, log_p0=lambda z: torch.zeros(z.shape[0], dtype=z.dtype, device=z.device), step_size=None,
            method="dopri5", atol=atol, rtol=rtol, time_grid=grid, exact_divergence=False)
    return transport.double(), z, count[0]


def kd_denoiser(sde, score):
    """EDM's D(x̃, σ̃) of x = s x̃ at the t with σ/s = σ̃: D = x̃ + σ̃² s score(s x̃, t) (Tweedie in x̃)."""
    flow = NoiseLevelFlow(sde, score)

    def denoiser(x, sigma):
        t = flow.time(sigma)
        s = expand_like(sde.scale(t).to(x.dtype), x)
        return x + expand_like(sigma.to(x.dtype) ** 2, x) * s * score(s * x, t)

    return denoiser


def run_kdiffusion(kd, case, seed, rtol, atol, eps):
    """k-diffusion's log_likelihood(D, x/s(eps), σ̃(eps), σ̃(T)) in x̃ = x/s; (transport in x-space, latent, NFE).

    Its solution is read through a recorder around the module's ``odeint`` (returned unchanged), so the transport
    term is its Δ log p̃ + D log(s_T/s_eps) (log p_t(x) = log p̃_σ̃(x/s) − D log s) and the latent s_T x̃_T."""
    sde, x = case.sde, case.x
    s0, s1, lo, hi = sigma_ends(sde, eps)
    real_odeint, record = kd.odeint, {}

    def recording_odeint(*args, **kwargs):
        record["sol"] = real_odeint(*args, **kwargs)
        return record["sol"]

    kd.odeint = recording_odeint
    try:
        torch.manual_seed(seed)             # its probe: torch.randint_like(x, 2) from the global RNG
        denoiser = (kd_denoiser(case.sde_ext, case.score_ext) if case.score_ext is not None
                    else kd_denoiser(sde, case.score))
        _, info = kd.log_likelihood(denoiser, x / s0, lo, hi, atol=atol, rtol=rtol)
    finally:
        kd.odeint = real_odeint
    latent, delta = record["sol"][0][-1], record["sol"][1][-1]
    d = x[0].numel()
    return delta.double() + d * math.log(s1 / s0), latent * s1, info["fevals"]


def check_probes(case, seed, eps):
    """Each peer's probe, drawn with its own recipe (the lines of its code that draw it), equals ours."""
    x = case.x
    ours = draw_probe(x, seed)
    mine = sd.likelihood._draw_probes(x, "rademacher", 1, torch.Generator(device=x.device).manual_seed(seed))[0]
    torch.manual_seed(seed)
    images = x if x.dim() == 4 else x.reshape(x.shape[0], -1, 1, 1)
    sde_pytorch = (torch.randint_like(images.float(), low=0, high=2).float() * 2 - 1.).reshape(x.shape)
    torch.manual_seed(seed)
    kdiff = torch.randint_like(x / sigma_ends(case.sde, eps)[0], 2) * 2 - 1
    with given_randn_like(-ours):
        fm = (torch.randn_like(x).to(x.device) < 0) * 2.0 - 1.0
    for name, probe in (("scoresde", mine), ("score_sde_pytorch", sde_pytorch), ("k-diffusion", kdiff),
                        ("flow_matching", fm)):
        if not torch.equal(probe.to(ours), ours):
            raise AssertionError(f"{name}'s probe differs from ours")


def reference(case, seed, tol, check=True):
    """Tight float64 solves of ours with the same probe, in σ̃ and (``check``) in t: variable → (log p, NFE)."""
    x = case.x.double()
    out = {}
    for variable in ("sigma", "t") if check else ("sigma",):
        transport, z, nfe = run_scoresde(case, variable, seed, tol, tol, PEER_EPS, score=case.score64, x=x)
        out[variable] = (transport.double() + case.log_p_T(z.double()), nfe)
    return out


PEER_EPS = 1e-5


def peer_cases(args, sde, device, groups):
    """The cases of issue #17: (1) exact mixture scores in float64, (2) float32 ε-networks on mixtures, (3)
    trained models (``--model-2d``, ``--model-digits``)."""
    cases = []
    T = torch.tensor([sde.T], dtype=torch.float64)

    def mixture_log_p_T(gmm, the_sde):
        return lambda z: gmm.log_prob_t(the_sde, z.double(), T.to(z.device).expand(z.shape[0]))

    batch = args.peer_batch
    if "mixture" in groups:
        for d in ((2,) if args.quick else (2, 16)):
            gmm = mixture(d, seed=d)
            x = gmm.sample(batch, torch.Generator().manual_seed(300 + d)).to(device)
            score = gmm.score(sde)
            cases.append(Case("exact mixture score, float64", f"d = {d}", sde, score, score, x,
                              mixture_log_p_T(gmm, sde),
                              lambda x, gmm=gmm: gmm.log_prob_t(sde, x, torch.full((x.shape[0],), PEER_EPS,
                                                                                   dtype=torch.float64)),
                              score_ext=gmm.score(extended(sde))))
    if "network" in groups:
        for d in ((2,) if args.quick else (2, 16, 64)):
            gmm = mixture(d, seed=d)
            model = fit(sde, ScoreMLP(d, seed=d), gmm, 100 if args.quick else 400, seed=d).to(device)
            model64 = copy.deepcopy(model).double()
            x = gmm.sample(batch, torch.Generator().manual_seed(400 + d)).float().to(device)
            cases.append(Case("float32 ε-network (ScoreMLP, briefly fitted to a mixture)", f"d = {d}", sde,
                              make_score(sde, model), make_score(sde, model64), x, mixture_log_p_T(gmm, sde),
                              score_ext=make_score(extended(sde), model)))
    if "trained" in groups:
        for path, label in ((args.model_2d, "2-D demo model"), (args.model_digits, "digits U-Net")):
            if not path:
                continue
            run = sd.load(path, device=str(device))
            run.model.requires_grad_(False)
            model64 = copy.deepcopy(run.model).double()
            from scoresde.app.config import build_data
            ds = build_data(run.config, "test")
            if ds.levels is not None:
                n = min(args.digits_batch, ds.x.shape[0])
                x = sd.data.dequantize(ds.x[:n], data_range=ds.data_range, levels=ds.levels,
                                       generator=torch.Generator().manual_seed(500)).to(device)
                # p_T of the training images, each a Gaussian with the dequantization's variance Δ²/12: at T,
                # where s(T)² ≈ 4e-5, as good as the exact law of the dequantized data.
                train = build_data(run.config, "train").x
                gmm = sd.GaussianMixture(train.reshape(train.shape[0], -1).double(),
                                         torch.full((train.shape[0],), ds.bin_width / math.sqrt(12),
                                                    dtype=torch.float64))
                name = f"{label}, d = {x[0].numel()}, {run.step} steps, batch {n}"
            else:
                x = ds.x[:batch].to(device)
                gmm = ds.oracle
                name = f"{label}, d = {x[0].numel()}, {run.step} steps"
            model_ext = copy.copy(run.model)        # shares the weights; its preconditioning reads sde_ext past T
            model_ext.sde = extended(run.sde)
            cases.append(Case("trained models (float32)", name, run.sde, run.model, model64, x,
                              mixture_log_p_T(gmm, run.sde), expensive=ds.levels is not None, score_ext=model_ext))
    return cases


def log_density(case, result, ref_lp):
    """log p = transport + exact log p_T(latent) of one library's (transport, latent, NFE), float64 (B,)."""
    transport, z, _ = result
    return transport.double().to(ref_lp.device) + case.log_p_T(z.double())


def equal_error_tolerance(case, variable, target, ref_lp, seed, eps, start=1e-5, factor=1.25, steps=12,
                          looser=False):
    """The rtol = atol of the ladder start / factor^k (1 ≤ k ≤ steps, at least 10 machine epsilons of x's dtype) at
    which ours in ``variable`` first has a mean error ≤ ``target`` (the loosest tighter one); None if none does.
    ``looser`` (ours at ``start`` already within ``target``): instead walk up the ladder start · factor^k while the
    error stays ≤ ``target`` and return the last such tolerance (None if already the first fails), so that an error
    below the peer's is traded for fewer evaluations, as the peer's own error is matched from below."""
    if looser:
        best, tol = None, start * factor
        for _ in range(steps):
            result = run_scoresde(case, variable, seed, tol, tol, eps)
            if float((log_density(case, result, ref_lp) - ref_lp).abs().mean()) > target:
                break
            best, tol = tol, tol * factor
        return best
    floor = max(10 * torch.finfo(case.x.dtype).eps, start / factor ** steps * (1 - 1e-9))
    tol = start / factor
    while tol >= floor:
        result = run_scoresde(case, variable, seed, tol, tol, eps)
        if float((log_density(case, result, ref_lp) - ref_lp).abs().mean()) <= target:
            return tol
        tol /= factor
    return None


def peer_tables(args, device, peers):
    """Every library on every case in interleaved rounds; one markdown table per case group, then the verdicts.

    Per case: the tight reference (which also warms the score up), one untimed round of every library (the warm-up,
    except for the expensive digits row, where it is the first timed round) whose errors give the best peer's
    error; for each of our time variables with a larger error, the loosest tighter tolerance that reaches it is
    found (untimed) and joins the timed rounds as an "equal error" row."""
    sde = sd.VPSDE()
    groups = args.peer_groups.split(",")
    cases = peer_cases(args, sde, device, groups)
    rtol = atol = 1e-5
    eps, seed = PEER_EPS, 11
    repeats = 1 if args.quick else args.peer_repeats
    digits = (f" (digits U-Net: batch {args.digits_batch}, {1 if args.quick else args.digits_repeats} rounds, the "
              f"first also the errors' round, reference at {args.digits_ref_tol:g})"
              if any(case.expensive for case in cases) else "")
    print(f"\n# side by side with the peers: Hutchinson, one Rademacher probe (the same for every library), dopri5 "
          f"(score_sde_pytorch: scipy RK45), rtol = atol = {rtol:g}, eps = {eps:g}, batch {args.peer_batch}, "
          f"wall time the median of {repeats} interleaved rounds after an untimed one{digits}\n")
    print("log p = transport term + exact log p_T(latent) for every library (its own latent). Error: mean over the "
          f"batch of |log p − log p_ref|, log p_ref a float64 solve of ours at rtol = atol = {args.ref_tol:g} with the "
          "same probe (in σ̃; the same solve in t is its check, column 'ref σ̃ − ref t'). 'equal error' rows: ours at "
          "the loosest rtol = atol of 1e-5/1.25^k whose error is no larger than the best peer's; where ours at 1e-5 is "
          "already within it, the loosest 1e-5·1.25^k reached before the error first exceeds it ('looser').\n")
    current = None
    verdicts = []
    for case in cases:
        check_probes(case, seed, eps)
        fns = {
            "scoresde t": lambda c=case: run_scoresde(c, "t", seed, rtol, atol, eps),
            "scoresde σ": lambda c=case: run_scoresde(c, "sigma", seed, rtol, atol, eps),
        }
        if case.x.dtype != torch.float64:       # the default float64 state against x's own dtype
            fns["scoresde σ narrow"] = lambda c=case: run_scoresde(c, "sigma", seed, rtol, atol, eps,
                                                                   state_dtype=c.x.dtype)
        if peers.get("score_sde_pytorch") is not None:
            fns["score_sde_pytorch"] = lambda c=case: run_score_sde_pytorch(peers["score_sde_pytorch"], c, seed,
                                                                            rtol, atol, eps)
        if peers.get("flow_matching") is not None:
            fns["flow_matching"] = lambda c=case: run_flow_matching(peers["flow_matching"], c, seed, rtol, atol, eps)
        if peers.get("k-diffusion") is not None:
            fns["k-diffusion"] = lambda c=case: run_kdiffusion(peers["k-diffusion"], c, seed, rtol, atol, eps)
        ref_tol = args.digits_ref_tol if case.expensive else args.ref_tol
        ref = reference(case, seed, ref_tol, check=not case.expensive)
        ref_lp = ref["sigma"][0]
        if "t" in ref:
            ref_note = f"{float((ref['sigma'][0] - ref['t'][0]).abs().max()):.1e}, {ref['sigma'][1]} / {ref['t'][1]}"
        else:
            ref_note = f"— (rtol = atol = {ref_tol:g}, σ̃ only), {ref['sigma'][1]} / —"

        # Round 0: every library once (errors; the warm-up).
        first = {}
        for name, fn in fns.items():
            wall, cpu, out = timed(fn, 1)
            first[name] = (wall, cpu, out)
        errors = {name: float((log_density(case, out, ref_lp) - ref_lp).abs().mean())
                  for name, (_, _, out) in first.items()}
        peer_names = [n for n in fns if not n.startswith("scoresde")]
        labels = dict(PEER_LABELS)
        if peer_names and not args.no_equal_error:
            best_err = min(errors[n] for n in peer_names)
            for ours, variable in (("scoresde t", "t"), ("scoresde σ", "sigma")):
                tol = equal_error_tolerance(case, variable, best_err, ref_lp, seed, eps,
                                            looser=errors[ours] <= best_err)
                if tol is not None:
                    key = f"{ours} @ {tol:.2g}"
                    side = "equal error, looser" if tol > rtol else "equal error"
                    labels[key] = f"{PEER_LABELS[ours]}, rtol = atol = {tol:.2g} ({side})"
                    fns[key] = lambda c=case, v=variable, tol=tol: run_scoresde(c, v, seed, tol, tol, eps)
                    if case.expensive:
                        first[key] = timed(fns[key], 1)
        if case.expensive:      # round 0 is the first timed round
            more = (1 if args.quick else args.digits_repeats) - 1
            runs = interleaved(fns, more, warmup=False) if more > 0 else {}
            merged = {}
            for name in fns:
                walls = [first[name][0]] + (runs[name][3] if name in runs else [])
                cpus = [first[name][1]] + (runs[name][4] if name in runs else [])
                out = runs[name][2] if name in runs else first[name][2]
                merged[name] = (statistics.median(walls), statistics.median(cpus), out, walls, cpus)
            runs = merged
        else:
            runs = interleaved(fns, repeats, warmup=False)
        fastest_peer_name = min(peer_names, key=lambda n: runs[n][0]) if peer_names else None
        if case.group != current:
            current = case.group
            exact_col = " error vs exact log p_eps (incl. Hutchinson noise) |" if case.exact else ""
            print(f"\n## {case.group}\n")
            print(f"| case | library | NFE | wall time (s) | CPU time (s) | wall / fastest | this / fastest peer, "
                  f"per round (median) | error (nats, mean abs) | max abs |{exact_col} ref σ̃ − ref t (max abs), "
                  f"ref NFE σ̃ / t |")
            print("|---|---|---|---|---|---|---|---|---|" + ("---|" if case.exact else "") + "---|")
        rows = {}
        for name, (wall, cpu, out, walls, _) in runs.items():
            err = (log_density(case, out, ref_lp) - ref_lp).abs()
            paired = (statistics.median(w / f for w, f in zip(walls, runs[fastest_peer_name][3]))
                      if fastest_peer_name else float("nan"))
            rows[name] = (out[2], wall, float(err.mean()), float(err.max()), log_density(case, out, ref_lp), cpu,
                          paired)
        fastest = min(r[1] for r in rows.values())
        exact = case.exact(case.x) if case.exact else None
        for name, (nfe, wall, err, err_max, lp, cpu, paired) in rows.items():
            extra = f" {float((lp - exact).abs().mean()):.2e} |" if exact is not None else ""
            print(f"| {case.name} | {labels[name]} | {nfe} | {wall:.2f} | {cpu:.2f} | {wall / fastest:.2f}× | "
                  f"{paired:.2f}× | {err:.2e} | {err_max:.2e} |{extra} {ref_note} |")
        sys.stdout.flush()
        if not peer_names:
            continue
        best_err = min(rows[n][2] for n in peer_names)
        best_wall = min(rows[n][1] for n in peer_names)
        fastest_peer = min(peer_names, key=lambda n: rows[n][1])
        best_peer = min(peer_names, key=lambda n: rows[n][2])
        verdicts.append(f"- **{case.group}, {case.name}**: fastest peer {fastest_peer} {best_wall:.2f} s; best "
                        f"peer error {best_err:.1e} ({best_peer})")
        for ours in ("scoresde t", "scoresde σ", "scoresde σ narrow"):
            candidates = [n for n in rows if n == ours or n.startswith(ours + " @")]
            for name in candidates:
                nfe, wall, err, _, _, cpu, paired = rows[name]
                ok_err, ok_wall = err <= best_err, wall <= best_wall
                state = ("wins" if ok_err and ok_wall else
                         "faster, larger error" if ok_wall else
                         "slower" + ("" if ok_err else ", larger error"))
                verdicts.append(f"  - {labels[name]}: {state}: NFE {nfe}, wall {wall:.2f} s "
                                f"(fastest peer / this = {best_wall / wall:.2f}×; per round, this / fastest peer = "
                                f"{paired:.2f}×), error {err:.1e} (÷ best peer's = {err / best_err:.2f})")
        ours_rows = [n for n in rows if n.startswith("scoresde")]
        for peer in peer_names:         # peer by peer: is one of our rows at least as fast and as accurate?
            beaten = [n for n in ours_rows if rows[n][1] <= rows[peer][1] and rows[n][2] <= rows[peer][2]]
            if beaten:
                by = min(beaten, key=lambda n: rows[n][1])
                verdicts.append(f"  - against {peer} alone ({rows[peer][1]:.2f} s, {rows[peer][2]:.1e}): beaten by "
                                f"{labels[by]} ({rows[by][1]:.2f} s, {rows[by][2]:.1e})")
            else:
                verdicts.append(f"  - against {peer} alone ({rows[peer][1]:.2f} s, {rows[peer][2]:.1e}): no row of "
                                f"ours is both as fast and as accurate")
        if "k-diffusion" in rows:
            verdicts.append(f"  - NFE at rtol = atol = 1e-5: scoresde t {rows['scoresde t'][0]}, σ̃ "
                            f"{rows['scoresde σ'][0]}; k-diffusion {rows['k-diffusion'][0]}")
    if verdicts:
        print("\n## verdicts (wall time at an error no larger than the best peer's)\n")
        print("\n".join(verdicts))
        print(PEER_NOTE)


PEER_NOTE = """
Why rows tie or lose (structural, not of one run):

- scoresde σ̃ and k-diffusion integrate the same ODE with the same dopri5 and tolerances (k-diffusion through
  D(x̃, σ̃), with the field continued smoothly past σ̃(T), see `extended`), so they take the same steps: equal NFE, and
  wall times within this machine's noise. Their errors still differ, because ours stops exactly at σ̃(T)
  (torchdiffeq's step_t) while k-diffusion steps past it and interpolates back, and through the float32 rounding of
  the two forms of the field. An adaptive solve's error is not monotone in the tolerance, so when the other lands
  lower, the 'equal error' row may need a much tighter tolerance than the small gap suggests.
- Our solver state is float64 by default (`state_dtype`), also for a float32 network, and every peer's is the
  network's float32: at the same steps that lowers the error where the float32 state's rounding of the accumulated
  log-density dominates it (the ε-networks in 16-D), and costs per evaluation on a small MLP on a CPU (the
  float64 RK arithmetic); the "float32 state" row is ours with the peers' precision.
- flow_matching runs the same dopri5 as scoresde t (its u is t rescaled) and differs from it in the same end-point
  handling; scoresde t on a network loses to the σ̃ rows by the NFE the time variable costs, not per evaluation.
- score_sde_pytorch evaluates the network twice per step (the drift under no_grad, then again for the divergence)
  and copies the state to NumPy and back for scipy's RK45, always in float32."""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is steadier on a shared 2-core machine)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--score-sde-pytorch", metavar="DIR", default=None,
                        help="checkout of yang-song/score_sde_pytorch: also run its real likelihood_fn")
    parser.add_argument("--flow-matching", metavar="DIR", default=None,
                        help="folder holding the flow_matching package (pip install --target DIR flow_matching==1.0.10 "
                             "--no-deps): its ODESolver.compute_likelihood joins the peer tables")
    parser.add_argument("--k-diffusion", metavar="FILE", default=None,
                        help="k-diffusion's k_diffusion/sampling.py: its log_likelihood joins the peer tables")
    parser.add_argument("--model-2d", metavar="DIR", default=None,
                        help="a `scoresde train` run of the 2-D demo (eight Gaussians): trained-model peer row")
    parser.add_argument("--model-digits", metavar="DIR", default=None,
                        help="a `scoresde train --data.name=digits --model.net=unet` run: trained-model peer row")
    parser.add_argument("--sections", default="evaluation,reference,sweep,peers",
                        help="comma-separated tables to print: evaluation (one evaluation's parts), reference "
                             "(ours vs the host-side reference and score_sde_pytorch), sweep (exact vs Hutchinson "
                             "against d), peers (issue #17's side-by-side tables)")
    parser.add_argument("--peer-groups", default="mixture,network,trained",
                        help="case groups of the peer tables: mixture (exact score, float64, d = 2, 16), network "
                             "(float32 ε-network, d = 2, 16, 64), trained (--model-2d / --model-digits)")
    parser.add_argument("--peer-batch", type=int, default=256)
    parser.add_argument("--digits-batch", type=int, default=4,
                        help="batch of the digits U-Net peer row (a U-Net evaluation costs ~100× an MLP's on a CPU)")
    parser.add_argument("--peer-repeats", type=int, default=7,
                        help="interleaved rounds of the peer tables (after one untimed round)")
    parser.add_argument("--ref-tol", type=float, default=1e-8,
                        help="rtol = atol of the float64 reference solves of the peer tables")
    parser.add_argument("--digits-ref-tol", type=float, default=1e-7,
                        help="the same for the digits U-Net (a float64 U-Net evaluation is slow on a CPU)")
    parser.add_argument("--digits-repeats", type=int, default=3, help="interleaved rounds of the digits row")
    parser.add_argument("--no-equal-error", action="store_true",
                        help="peer tables: skip the 'equal error' rows (ours at a tighter tolerance)")
    args = parser.parse_args()
    real = real_score_sde_pytorch(args.score_sde_pytorch) if args.score_sde_pytorch else None
    peers = {"score_sde_pytorch": real}
    if args.flow_matching:
        peers["flow_matching"], fm_version = load_flow_matching(args.flow_matching)
        if fm_version != "1.0.10":
            print(f"note: flow_matching {fm_version} (issue #17 names 1.0.10)")
    if args.k_diffusion:
        peers["k-diffusion"], kd_version = load_kdiffusion(args.k_diffusion)
    sections = set(args.sections.split(","))
    unknown = sections - {"evaluation", "reference", "sweep", "peers"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sde = sd.VPSDE()
    fit_steps = 100 if args.quick else 400
    repeats = 1 if args.quick else args.repeats
    tol = dict(rtol=1e-5, atol=1e-5, eps=1e-5)
    print(f"device {device}, torch threads {torch.get_num_threads()}, VP SDE, eps = 1e-5, rtol = atol = 1e-5, "
          f"float32 MLP, median of {repeats} runs\n")

    # -- ours vs the reference --------------------------------------------------------------------------
    dims = (2,) if args.quick else (2, 16)
    setups = {}         # d → (fitted model, data)
    if sections & {"evaluation", "reference"}:
        for d in dims:
            gmm = mixture(d, seed=d)
            model = fit(sde, ScoreMLP(d, seed=d), gmm, fit_steps, seed=d).to(device)
            setups[d] = (model, gmm.sample(args.batch, torch.Generator().manual_seed(100 + d)).float().to(device))

    if "evaluation" in sections:
        print(f"## one evaluation, in ms (batch {args.batch}; median of 5 blocks of 200)\n")
        print("| d | forward, no graph | forward, with graph | forward + VJP | reference: 2 forwards + VJP | "
              "ours: forward + VJP | bound on the speed-up at equal NFE |")
        print("|---|---|---|---|---|---|---|")
        for d in dims:
            model, x = setups[d]
            plain, graph, vjp = per_evaluation(make_score(sde, model), x)
            print(f"| {d} | {plain:.3f} | {graph:.3f} | {vjp:.3f} | {plain + vjp:.3f} | {vjp:.3f} | "
                  f"{(plain + vjp) / vjp:.2f}× |")

    if "reference" in sections:
        print(f"\n## ours vs score_sde_pytorch (Hutchinson, one fixed Rademacher probe, batch {args.batch})\n")
        print("| d | method | wall time (s) | CPU time (s) | NFE | forward passes | NLL (bits/dim) ± s.e. | "
              "speed-up of ours: ratio of medians (median of per-round ratios) |")
        print("|---|---|---|---|---|---|---|---|")
        for d in dims:
            model, x = setups[d]
            score = make_score(sde, model)
            gen = torch.Generator(device=device).manual_seed(7)
            probe = (2 * torch.randint(0, 2, x.shape, generator=gen, device=device) - 1).float()
            # Ours draws the same probe from the same generator state.
            fns = {
                "ours": lambda: sd.log_likelihood(sde, score, x, divergence="hutchinson", probe="rademacher",
                                                  generator=torch.Generator(device=device).manual_seed(7),
                                                  time_variable="t", **tol),
                "reference": lambda: reference_log_likelihood(sde, score, x, probe, **tol),
            }
            if real is not None:
                fns["real"] = lambda: real_log_likelihood(*real, model, x, seed=7, **tol)
            runs = interleaved(fns, repeats)
            t_ours, c_ours, res, walls_ours, _ = runs["ours"]
            m_ours, s_ours = bpd(res.log_prob, d)
            names = {"reference": "reference (ours, written from the description: scipy RK45, numpy, 2 forwards)",
                     "real": "score_sde_pytorch `likelihood.py` (the real one)"}
            for key in [k for k in ("reference", "real") if k in runs]:
                wall, cpu, (lp, nfe), walls, _ = runs[key]
                m, se = bpd(lp, d)
                diff = (res.log_prob.double() - lp.double().to(res.log_prob.device)) / (d * math.log(2))
                paired = statistics.median(w / o for w, o in zip(walls, walls_ours))
                print(f"| {d} | {names[key]} | {wall:.2f} | {cpu:.2f} | {nfe} | {2 * nfe} | {m:.4f} ± {se:.4f} "
                      f"(ours − it: mean {float(diff.mean()):+.1e}, max abs {float(diff.abs().max()):.1e}) | "
                      f"{wall / t_ours:.2f}× (paired {paired:.2f}×) |")
            print(f"| {d} | ours (torchdiffeq dopri5, 1 forward + 1 VJP) | {t_ours:.2f} | {c_ours:.2f} | {res.nfe} | "
                  f"{res.nfe} | {m_ours:.4f} ± {s_ours:.4f} | 1.00× |")

    if "sweep" in sections:
        # -- exact vs Hutchinson against d ------------------------------------------------------------------
        sweep_batch = 64
        dims = (2, 16) if args.quick else (2, 16, 64, 256)
        print(f"\n## exact vs Hutchinson (1 Rademacher probe) against d (ours, batch {sweep_batch})\n")
        print("Exact: d VJPs per evaluation, batched into one backward pass (default) or one at a time "
              "(`vjp_batch=1`).\n")
        print("| d | exact batched: s/solve | exact one at a time: s/solve | exact: NFE | exact: VJPs | "
              "Hutchinson: s/solve | Hutchinson: NFE | exact batched / Hutchinson | "
              "Hutch − exact (bits/dim): mean ± s.e. | mean abs |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for d in dims:
            gmm = mixture(d, seed=d)
            model = fit(sde, ScoreMLP(d, seed=d), gmm, fit_steps // 4, seed=d).to(device)
            score = make_score(sde, model)
            x = gmm.sample(sweep_batch, torch.Generator().manual_seed(200 + d)).float().to(device)
            reps = 1 if d >= 64 else repeats
            t_exact, _, exact = timed(lambda: sd.log_likelihood(sde, score, x, divergence="exact", time_variable="t",
                                                                  **tol), reps)
            t_loop, _, loop = timed(lambda: sd.log_likelihood(sde, score, x, divergence="exact", vjp_batch=1,
                                                              time_variable="t", **tol), reps)
            t_hutch, _, hutch = timed(lambda: sd.log_likelihood(
                sde, score, x, divergence="hutchinson", generator=torch.Generator(device=device).manual_seed(3),
                time_variable="t", **tol), repeats)
            gap = (exact.log_prob - hutch.log_prob).double() / (d * math.log(2))    # bits/dim: −log p / (d ln 2)
            print(f"| {d} | {t_exact:.2f} | {t_loop:.2f} | {exact.nfe} | {exact.nfe * d} | {t_hutch:.2f} | "
                  f"{hutch.nfe} | {t_exact / t_hutch:.1f}× | "
                  f"{float(gap.mean()):+.3f} ± {float(gap.std()) / math.sqrt(gap.numel()):.3f} | "
                  f"{float(gap.abs().mean()):.3f} |")

    if "peers" in sections:
        peer_tables(args, device, peers)


if __name__ == "__main__":
    main()
