"""Exact likelihoods through the probability-flow ODE, and bits per dimension.

The probability-flow (PF) ODE of a forward SDE dx = f(x, t) dt + g(t) dw,

    dx/dt = F(x, t) = f(x, t) − ½ g(t)² score(x, t),

transports p_eps to p_T, and along its solution the log-density changes by the divergence of F
(instantaneous change of variables, Chen et al. 2018; Song et al. 2021, Appendix D.2):

    d log p_t(x_t)/dt = −∇·F(x_t, t)   ⇒   log p_eps(x) = log p_T(x_T) + ∫_eps^T ∇·F(x_t, t) dt.

`log_likelihood` integrates the augmented state (x_t, ∫ ∇·F) from eps to T with torchdiffeq and replaces
the unknown p_T by the SDE's prior. Every evaluation of the augmented dynamics runs ONE forward pass of the score
with a graph to x, then vector–Jacobian products (VJPs) that reuse that graph:

- ``divergence="exact"``: d VJPs with the unit vectors e_i, ∇·F = Σ_i e_iᵀ (∂F/∂x) e_i (fine for small d);
- ``divergence="hutchinson"``: ∇·F ≈ vᵀ (∂F/∂x) v with a probe v drawn ONCE per solve (Hutchinson 1989,
  Skilling 1989), E[v vᵀ] = I, so the estimate of the integral is unbiased; one VJP per probe.

The graph is dropped after each evaluation (the state is detached), so memory does not grow with the number of
solver steps; no gradients flow back to the score's parameters.

`bits_per_dim` turns the density of dequantized k-bit data into bits per dimension.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

from ._adapters import DEFAULT_MAX_NFE, ODE_SOLVERS, check_tolerances, integrate_ode
from ._utils import (FiniteWatch, ScoreFn, SummaryRepr, check_choice, check_finite, check_same_shape,
                     require_float64, validated_times)
from .data import Dataset, check_quantization, dequantize
from .guidance.condition import cond_rows, cond_to, index_rows
from .guidance.conditional import conditional_score
from .sde import NoiseLevelFlow, check_prior, choose_time_variable

Tensor = torch.Tensor

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


@dataclass(repr=False)
class LikelihoodResult(SummaryRepr):
    """What `log_likelihood` returns (all tensors detached, on x's device and dtype).

    Attributes:
        log_prob: log p_eps(x) in nats, shape (B,); equals ``prior_log_prob + delta_log_prob``.
        prior_log_prob: log p_T(z) under the SDE's prior, shape (B,).
        delta_log_prob: ∫_eps^T ∇·F(x_t, t) dt, shape (B,) (for Hutchinson: the mean over the probes).
        z: the latent x_T reached by the PF ODE, shape of x.
        nfe: number of evaluations of the augmented dynamics = forward passes of the score.
        delta_log_prob_per_probe: Hutchinson only: the estimate of each probe, shape (B, n_probes). Given the
            trajectory the probes are independent, so ``.std(1) / sqrt(n_probes)`` is the standard error of
            ``delta_log_prob``. None for the exact divergence.
    """

    log_prob: Tensor
    prior_log_prob: Tensor
    delta_log_prob: Tensor
    z: Tensor
    nfe: int
    delta_log_prob_per_probe: Optional[Tensor] = None


@dataclass(repr=False)
class BitsPerDimResult(SummaryRepr):
    """What `bits_per_dim` returns.

    Attributes:
        mean: mean bits/dim over the samples and the dequantizations.
        stderr: standard error of ``mean``: the standard deviation of ``per_sample`` over √B (B ≥ 2); for a
            single sample, the standard deviation over the dequantizations over √n_dequant (nan if both are 1).
        per_sample: bits/dim of each sample averaged over its dequantizations, shape (B,).
        values: bits/dim of each sample and dequantization, shape (B, n_dequant).
        nfe: total number of score evaluations over all solves.
    """

    mean: float
    stderr: float
    per_sample: Tensor
    values: Tensor
    nfe: int


class _AugmentedDynamics:
    """d/dt (x, a) = (F(x, t), ∇·F(x, t)) with a of shape (B, K): K = 1 (exact) or n_probes (Hutchinson).

    One forward pass of the score per call; the divergence reuses its graph through VJPs. Several VJPs (the d
    unit vectors of the exact divergence, or the probes) run together as one batched backward pass
    (``torch.autograd.grad(..., is_grads_batched=True)``, i.e. vmap over the backward), ``vjp_batch`` vectors at
    a time; if the score has an operation that vmap cannot batch, the VJPs fall back to one at a time. Inputs
    are detached and outputs returned detached, so no graph survives between solver steps.

    The state may be wider than the score (``dtype``): the field and its divergence are computed in ``dtype``
    (x and t cast to it) and returned in the state's dtype, so only the solver's arithmetic is wide.
    """

    #: Automatic ``vjp_batch``: at most this many elements in one batch of VJP vectors (k · B · d).
    AUTO_VJP_ELEMENTS = 2**21

    def __init__(self, sde, score: ScoreFn, divergence: str, probes: Optional[Tensor],
                 vjp_batch: Optional[int] = None, watch: Optional[FiniteWatch] = None, time_variable: str = "t",
                 dtype: Optional[torch.dtype] = None):
        self.watch, self.nfe, self.dtype = watch, 0, dtype
        checked = self._differentiable(score)
        self.flow = sde.probability_flow(checked) if time_variable == "t" else NoiseLevelFlow(sde, checked)
        self.divergence, self.probes = divergence, probes
        self.vjp_batch = vjp_batch
        self.batched = vjp_batch != 1

    def _differentiable(self, score: ScoreFn) -> ScoreFn:
        """The score, checked to return x's shape with an autograd graph to x (the divergence needs one), and
        watched for NaN or inf."""

        def checked(x: Tensor, t: Tensor) -> Tensor:
            out = check_same_shape(score(x, t), x)
            if not out.requires_grad:
                raise ValueError("score(x, t) returned a tensor with no autograd graph to x; the divergence needs "
                                 "a score differentiable in x (do not detach it or run it under torch.no_grad)")
            self.nfe += 1
            if self.watch is not None:
                self.watch.score(out.detach(), self.nfe, t)
            return out

        return checked

    def __call__(self, state: Tuple[Tensor, Tensor], t: Tensor) -> Tuple[Tensor, Tensor]:
        wide = state[0].dtype
        dtype = wide if self.dtype is None else self.dtype
        x = state[0].detach().to(dtype).requires_grad_(True)
        with torch.enable_grad():
            drift = self.flow.drift(x, t.to(dtype))
            if self.divergence == "exact":
                div = self._exact(drift, x)
            else:
                div = self._hutchinson(drift, x)
        return drift.detach().to(wide), div.to(wide)

    def _chunk(self, x: Tensor, count: int) -> int:
        """How many VJP vectors go into one backward pass."""
        if not self.batched:
            return 1
        if self.vjp_batch is not None:
            return min(count, self.vjp_batch)
        return max(1, min(count, self.AUTO_VJP_ELEMENTS // x.numel()))

    def _vjps(self, drift: Tensor, x: Tensor, vectors: Tensor, last: bool) -> Tensor:
        """(∂F/∂x)ᵀ v for each v in ``vectors`` (k, B, *D); returns (k, B, *D).

        ``last``: the graph is not needed afterwards, so the one-at-a-time path frees it with its final VJP (the
        batched path keeps it, so that a failed batch can still fall back; it is freed when F goes out of scope).
        """
        if vectors.shape[0] > 1 and self.batched:
            try:
                (grads,) = torch.autograd.grad(drift, x, vectors, retain_graph=True, allow_unused=True,
                                               is_grads_batched=True)
                return torch.zeros_like(vectors) if grads is None else grads
            except RuntimeError:
                self.batched = False    # an op vmap cannot batch: do the VJPs one by one from now on
        grads = []
        for k in range(vectors.shape[0]):
            (grad,) = torch.autograd.grad(drift, x, vectors[k], allow_unused=True,
                                          retain_graph=not (last and k == vectors.shape[0] - 1))
            grads.append(torch.zeros_like(x) if grad is None else grad)
        return torch.stack(grads)

    def _exact(self, drift: Tensor, x: Tensor) -> Tensor:
        """∇·F = Σ_i [(∂F/∂x)ᵀ e_i]_i: d VJPs (batched in chunks) on one forward graph; returns (B, 1)."""
        batch, d = x.shape[0], x[0].numel()
        div = torch.zeros(batch, device=x.device, dtype=x.dtype)
        start = 0
        while start < d:
            k = self._chunk(x, d - start)
            stop = min(d, start + k)
            # The unit vectors e_start … e_{stop−1} of every sample: (k, B, d), viewed as (k, B, *D).
            basis = torch.zeros(stop - start, batch, d, device=x.device, dtype=x.dtype)
            index = torch.arange(start, stop, device=x.device)
            basis[torch.arange(stop - start, device=x.device), :, index] = 1
            grads = self._vjps(drift, x, basis.view((stop - start,) + tuple(x.shape)), last=stop == d)
            # Component i of the VJP with e_i: the diagonal of grads[:, :, start:stop].
            picked = grads.reshape(stop - start, batch, d)[:, :, start:stop]
            div = div + torch.diagonal(picked, dim1=0, dim2=2).sum(-1)
            start = stop
        return div[:, None]

    def _hutchinson(self, drift: Tensor, x: Tensor) -> Tensor:
        """vᵀ (∂F/∂x) v for each fixed probe v (VJPs batched in chunks) on one forward graph; returns (B, K)."""
        batch, n_probes = x.shape[0], self.probes.shape[0]
        divs, start = [], 0
        while start < n_probes:
            stop = min(n_probes, start + self._chunk(x, n_probes - start))
            v = self.probes[start:stop]
            grads = self._vjps(drift, x, v, last=stop == n_probes)
            divs.append((grads * v).reshape(stop - start, batch, -1).sum(-1))
            start = stop
        return torch.cat(divs).T


def _draw_probes(x: Tensor, probe: str, n_probes: int, generator: Optional[torch.Generator]) -> Tensor:
    """n_probes probes shaped like x, (n_probes, B, *D), with E[v vᵀ] = I."""
    shape = (n_probes,) + tuple(x.shape)
    if probe == "gaussian":
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    bits = torch.randint(0, 2, shape, generator=generator, device=x.device)
    return (2 * bits - 1).to(x.dtype)


def _check_x(x, name: str = "x") -> Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, *D); got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape (B, *D) with a batch dimension first (use x[None] for a single "
                         f"sample, x[:, None] for a batch of scalars); got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x[0].numel() == 0:
        raise ValueError(f"{name} must have a non-empty batch and data dimensions; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    return x


def log_likelihood(
    sde,
    score: ScoreFn,
    x: Tensor,
    *,
    divergence: str = "hutchinson",
    probe: str = "rademacher",
    n_probes: int = 1,
    solver: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    generator: Optional[torch.Generator] = None,
    step_size: Optional[float] = None,
    vjp_batch: Optional[int] = None,
    max_nfe: int = DEFAULT_MAX_NFE,
    time_variable: str = "auto",
    state_dtype: Optional[torch.dtype] = None,
    cond=None,
) -> LikelihoodResult:
    """log p_eps(x) in nats by integrating the probability-flow ODE from eps to T.

    Solves d/dt (x_t, a_t) = (F(x_t, t), ∇·F(x_t, t)) on [eps, T] from (x, 0), with
    F(x, t) = f(x, t) − ½ g(t)² score(x, t), and returns

        log p_eps(x) = log p_prior(x_T) + a_T.

    Uses only ``sde.drift``, ``sde.diffusion``, ``sde.prior_log_prob`` and ``sde.T``, so it works for any SDE with
    a prior, including a user `LinearSDE` defined by ``drift_coef`` and ``diffusion`` alone.

    Cost per evaluation: one forward pass of ``score`` plus d VJPs (exact) or ``n_probes`` VJPs (Hutchinson,
    one per probe on the same forward graph; the probes are not extra batch rows). Several VJPs run as one
    batched backward pass (vmap over the backward, ``is_grads_batched``), which makes the exact divergence
    about 2× cheaper than a loop for d of 16–64 on a CPU; ``vjp_batch`` bounds how many run together.
    Works when the caller is under ``torch.no_grad`` (gradients are enabled inside); ``torch.inference_mode``
    is refused because autograd cannot run there. The solver's state (x and the accumulated log-density) is
    float64 by default whatever x's dtype (``state_dtype``); the score runs in x's dtype, and the results come
    back in it.

    Args:
        sde: the forward SDE (with a prior).
        score: ``score(x, t)`` ≈ ∇ log p_t(x), differentiable in x; x (B, *D), t (B,).
        x: data, shape (B, *D) (flat (B, d) or images (B, C, H, W)).
        divergence: "exact" (d VJPs per evaluation) or "hutchinson" (unbiased, ``n_probes`` VJPs).
        probe: Hutchinson probe law, "rademacher" (±1, lower variance) or "gaussian".
        n_probes: number of Hutchinson probes, each fixed for the whole solve; the estimate is their mean.
        solver: a torchdiffeq method: adaptive "dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", or
            fixed-step "euler", "midpoint", "heun3", "rk4", "explicit_adams", "implicit_adams" (these need
            ``step_size``).
        rtol: tolerances of adaptive solvers, applied to the augmented state: positive, and rtol at least 10
            machine epsilons of x's dtype, the score's precision (float32: 1.19e-6; a float16/bfloat16 x needs
            rtol ≥ 9.8e-3 / 7.8e-2).
        atol: as ``rtol``.
        eps: start time, 0 ≤ eps < T; the result is the density of the marginal p_eps.
        generator: draws the Hutchinson probes (must live on x's device).
        step_size: step of fixed-step solvers.
        vjp_batch: how many VJPs (unit vectors or probes) run together in one batched backward pass; memory
            grows with it. None chooses it so that vjp_batch · x.numel() ≤ 2²¹; 1 runs them one at a time.
            A score with an operation vmap cannot batch falls back to one at a time automatically.
        max_nfe: an adaptive solve that needs more evaluations stops with a RuntimeError.
        time_variable: ``"t"`` integrates F in t; ``"sigma"`` (a LinearSDE) integrates the same ODE in EDM's
            variables x̃ = x/s, σ̃ = σ/s (`scoresde.sde.NoiseLevelFlow`), from σ̃(eps) to σ̃(T), where an
            ε-network's field dx̃/dσ̃ = ε̂ is bounded; the result is the same density, with
            log p_eps(x) = log p_T(s_T x̃_T) + D log(s_T/s_eps) + ∫ ∇·(dx̃/dσ̃) dσ̃. ``"auto"`` (default): σ̃
            on a linear SDE unless the score is a closed form (`scoresde.Score.time_variable`), t otherwise.
        state_dtype: the dtype of the solver's state, a floating dtype at least as wide as x's. None (default):
            float64 (`solver_dtype`). x's dtype is faster for a small network on a CPU and less accurate: the
            state's rounding accumulates in the log-density (docs/benchmarks.md, lab notes). On a fixed grid the
            float64 state leaves only the score's rounding; an adaptive solver's steps also depend on that
            rounding, so a float32 x and its float64 copy agree to the solver's tolerance, not to rounding (which
            CPU kernels run then changes the result within that tolerance).
        cond: a condition for a conditional model ``score(x, t, cond)``: log p(x | c) of each row with its own
            condition (labels (B,), a tensor (B, ...) or a dict; `scoresde.conditional_score` binds it).

    Returns:
        `LikelihoodResult` with ``log_prob``, ``prior_log_prob``, ``delta_log_prob`` (each (B,)), the
        latent ``z`` (shape of x) and ``nfe``.

    Raises:
        ValueError: wrong shape of x, non-finite values in x, unknown divergence / probe / solver names, bad eps,
            n_probes or tolerances; a score that returns NaN or inf (the message names the first evaluation
            and its time).
        RuntimeError: called under ``torch.inference_mode``; an adaptive solve that reached ``max_nfe``.
    """
    x = check_finite(_check_x(x), "x")
    check_choice(divergence, DIVERGENCES, "divergence")
    check_choice(probe, PROBES, "probe")
    check_choice(solver, ODE_SOLVERS.names(), "solver")
    if not callable(score):
        raise TypeError(f"score must be a callable score(x, t); got {type(score).__name__}")
    if cond is not None:
        score = conditional_score(score, cond)
    if isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer; got {n_probes!r}")
    if vjp_batch is not None and (isinstance(vjp_batch, bool) or not isinstance(vjp_batch, int) or vjp_batch < 1):
        raise ValueError(f"vjp_batch must be a positive integer or None; got {vjp_batch!r}")
    T = float(sde.T)
    if not (isinstance(eps, (int, float)) and 0 <= eps < T):
        raise ValueError(f"eps must be a number with 0 <= eps < T = {T}; got {eps!r}")
    time_variable = choose_time_variable(time_variable, sde, score)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("log_likelihood needs autograd for the divergence and cannot run under "
                           "torch.inference_mode(); call it under torch.no_grad() or with no context instead")

    require_float64(x.device, "log_likelihood")
    check_prior(sde, "log_likelihood")
    x = x.detach()
    if x.is_inference():
        x = x.clone()
    wide = solver_dtype(x) if state_dtype is None else state_dtype
    if not (isinstance(wide, torch.dtype) and wide.is_floating_point and torch.promote_types(wide, x.dtype) == wide):
        raise ValueError(f"state_dtype must be None or a floating torch.dtype at least as wide as x's ({x.dtype}); "
                         f"got {state_dtype!r}")
    if wide != x.dtype and ODE_SOLVERS.get(solver)[0].adaptive:
        check_tolerances(rtol, atol, x.dtype)      # the score's precision bounds what the solve can reach
    probes = _draw_probes(x, probe, n_probes, generator) if divergence == "hutchinson" else None
    n_acc = 1 if probes is None else n_probes
    acc0 = torch.zeros(x.shape[0], n_acc, device=x.device, dtype=wide)
    watch = FiniteWatch("log_likelihood", live_steps=False)
    dynamics = _AugmentedDynamics(sde, score, divergence, probes, vjp_batch, watch, time_variable, dtype=x.dtype)
    start, span, jacobian = x.to(wide), [float(eps), T], 0.0
    if time_variable == "sigma":
        ends = torch.tensor([float(eps), T], dtype=torch.float64)
        s_ends, sigma_ends = sde.scale(ends), sde.std(ends)
        span = (sigma_ends / s_ends).tolist()
        start = start / float(s_ends[0])
        jacobian = x[0].numel() * math.log(float(s_ends[1] / s_ends[0]))    # D log(s_T / s_eps)
    try:
        with validated_times():                 # the solver's times are clamped to the span
            (xs, accs), nfe = integrate_ode(dynamics, (start, acc0), span, method=solver, rtol=rtol,
                                            atol=atol, step_size=step_size, max_nfe=max_nfe)
        watch.result(torch.cat([xs[-1].reshape(x.shape[0], -1), accs[-1]], 1), T)
    except Exception as err:
        watch.flush(cause=err)
        raise
    z, acc = xs[-1], accs[-1]
    if time_variable == "sigma":
        z = z * float(s_ends[1])
        acc = acc + jacobian
    delta = acc.mean(1)
    prior = sde.prior_log_prob(z)
    if prior.shape != (x.shape[0],):
        raise ValueError(f"{type(sde).__name__}.prior_log_prob(z) must return shape ({x.shape[0]},); "
                         f"got {tuple(prior.shape)}")
    prior = prior.to(delta.dtype)
    return LikelihoodResult(
        log_prob=(prior + delta).to(x.dtype), prior_log_prob=prior.to(x.dtype), delta_log_prob=delta.to(x.dtype),
        z=z.to(x.dtype), nfe=nfe, delta_log_prob_per_probe=None if probes is None else acc.to(x.dtype),
    )


def solver_dtype(x: Tensor) -> torch.dtype:
    """The dtype of the ODE state of `log_likelihood`: float64 (the score still runs in x's dtype), because a
    float32 state's rounding in the accumulated log-density (a sum of about d log(σ̃_T/σ̃_eps) nats) is most of the
    error of a float32 ε-network's likelihood (docs/benchmarks.md, lab notes)."""
    return torch.float64


def bits_per_dim_from_log_prob(log_prob: Tensor, dim: int, bin_width: Optional[float] = None) -> Tensor:
    """bpd = −log p / (d ln 2) + log₂(1/Δ) for densities of d-dimensional samples (shape of ``log_prob``).

    With a bin width Δ (dequantized data) this is the bits/dim of the discrete data; without one it is the
    continuous −log₂ p per dimension.
    """
    bpd = -log_prob / (int(dim) * math.log(2))
    return bpd if bin_width is None else bpd + math.log2(1.0 / bin_width)


@dataclass(repr=False)
class EvaluationResult(SummaryRepr):
    """What `evaluate_likelihood` returns.

    Attributes:
        nll: mean negative log-likelihood −log p_eps(x) in nats per sample (of the dequantized points for
            quantized data).
        nll_stderr: its standard error (see ``bpd_stderr`` for the rule); nan when it cannot be estimated.
        bpd: mean bits per dimension: −log p/(d ln 2) + log₂(1/Δ) for quantized data with bin width Δ (the
            discrete data's bits/dim, an upper bound by Jensen), −log p/(d ln 2) for continuous data.
        bpd_stderr: standard error of ``bpd``: the standard deviation of the per-sample values over √B (B ≥ 2);
            for a single sample, the standard deviation over the dequantizations over √n_dequant.
        per_sample: bits/dim of each sample averaged over its dequantizations, shape (B,).
        values: bits/dim of each sample and dequantization, shape (B, n_dequant).
        nfe: total number of score evaluations over all solves.
        quantized: whether the data were dequantized (and ``bpd`` is that of the discrete data).
    """

    nll: float
    nll_stderr: float
    bpd: float
    bpd_stderr: float
    per_sample: Tensor
    values: Tensor
    nfe: int
    quantized: bool

    def metrics(self) -> Dict[str, float]:
        """``nll`` and ``nll_stderr``, plus ``bpd`` and ``bpd_stderr`` for quantized data: what the trainer logs."""
        out = {"nll": self.nll, "nll_stderr": self.nll_stderr}
        if self.quantized:
            out.update(bpd=self.bpd, bpd_stderr=self.bpd_stderr)
        return out


def _mean_stderr(values: Tensor) -> Tuple[float, float]:
    """Mean and standard error over the samples (rows) of values (B, K), with the rule of EvaluationResult."""
    per_sample = values.mean(1)
    if values.shape[0] >= 2:
        stderr = float(per_sample.std() / math.sqrt(values.shape[0]))
    elif values.shape[1] >= 2:
        stderr = float(values[0].std() / math.sqrt(values.shape[1]))
    else:
        stderr = float("nan")
    return float(per_sample.mean()), stderr


def evaluate_likelihood(sde, score: ScoreFn, data, *, n: Optional[int] = None, batch_size: Optional[int] = None,
                        n_dequant: int = 1, generator: Optional[torch.Generator] = None,
                        divergence: Optional[str] = None, device=None, dtype: Optional[torch.dtype] = None,
                        labels: bool = False, cond=None, **likelihood_kwargs) -> EvaluationResult:
    """NLL and bits/dim of a data set under the PF-ODE density, with mean ± standard error.

    The one evaluation path the trainer, the command line and the demo use. For quantized data (a
    [`scoresde.data.Dataset`][scoresde.data.Dataset] with ``levels``) every batch is dequantized afresh (``n_dequant`` times,
    each followed by its likelihood solve; [`scoresde.data.dequantize`][scoresde.data.dequantize] gives the convention) and
    bpd = −log p(x̃)/(d ln 2) + log₂(1/Δ); continuous data give bpd = −log p/(d ln 2).

    Args:
        sde: as in `log_likelihood`.
        score: as ``sde``.
        data: a [`scoresde.data.Dataset`][scoresde.data.Dataset] or a tensor (N, *D) of continuous data.
        n: evaluate the first n points (default: all).
        batch_size: points per solve (default: all at once).
        n_dequant: dequantization draws per point (quantized data only).
        generator: draws the dequantization noise and the Hutchinson probes, in that order, batch by batch.
        divergence: "exact" or "hutchinson"; None picks "exact" for d ≤ 16 elements per sample.
        device: where and in which dtype the points are evaluated (default: the data's).
        dtype: as ``device``.
        labels: evaluate −log p(x | c) with each point's label c (a labelled Dataset); ``score`` is then a
            conditional model ``score(x, t, cond)`` (see `scoresde.conditional_score`).
        cond: instead of labels, each point's condition: a tensor (N, ...) or a dict of them, row i for point i
            (−log p(x_i | c_i)).
        **likelihood_kwargs: passed to `log_likelihood` (probe, n_probes, solver, rtol, atol, eps, ...).

    Returns:
        `EvaluationResult`.
    """
    dataset = data if isinstance(data, Dataset) else Dataset(_check_x(data, "data"))
    x = dataset.x if n is None else dataset.x[: int(n)]
    x = x.to(device=device if device is not None else x.device, dtype=dtype or x.dtype)
    if labels:
        if cond is not None:
            raise ValueError("give labels=True (the data set's labels) or cond (the points' conditions), not both")
        if dataset.labels is None:
            raise ValueError(f"labels=True needs a labelled data set; {dataset.name!r} has no labels")
        cond = dataset.labels
    if cond is not None:
        rows = cond_rows(cond)
        if rows is None or rows < x.shape[0]:
            raise ValueError(f"cond must have one row per evaluated point (at least {x.shape[0]}); got "
                             f"{'no batch dimension' if rows is None else rows}")
        cond = cond_to(index_rows(cond, slice(0, x.shape[0])), x.device)
        step = int(batch_size) if batch_size else x.shape[0]
        cond_chunks = [index_rows(cond, slice(i, i + step)) for i in range(0, x.shape[0], step)]
    if isinstance(n_dequant, bool) or not isinstance(n_dequant, int) or n_dequant < 1:
        raise ValueError(f"n_dequant must be a positive integer; got {n_dequant!r}")
    if "generator" in likelihood_kwargs:
        raise TypeError("pass generator once, as evaluate_likelihood(..., generator=...)")
    quantized = dataset.levels is not None
    d = x[0].numel()
    if divergence is None:
        divergence = "exact" if d <= 16 else "hutchinson"
    rounds = n_dequant if quantized else 1
    # chosen once for the model itself (the per-chunk conditional wrappers keep the choice)
    likelihood_kwargs["time_variable"] = choose_time_variable(likelihood_kwargs.get("time_variable", "auto"), sde,
                                                               score)
    values, nlls, nfe = [], [], 0
    for _ in range(rounds):
        bpd_round, nll_round = [], []
        for k, chunk in enumerate(x.split(int(batch_size)) if batch_size else (x,)):
            if quantized:
                chunk = dequantize(chunk, data_range=dataset.data_range, generator=generator, levels=dataset.levels)
            chunk_score = score if cond is None else conditional_score(score, cond_chunks[k])
            res = log_likelihood(sde, chunk_score, chunk, divergence=divergence, generator=generator,
                                 **likelihood_kwargs)
            log_prob = res.log_prob.double()
            nll_round.append(-log_prob)
            bpd_round.append(bits_per_dim_from_log_prob(log_prob, d, dataset.bin_width))
            nfe += res.nfe
        values.append(torch.cat(bpd_round))
        nlls.append(torch.cat(nll_round))
    values, nlls = torch.stack(values, dim=1), torch.stack(nlls, dim=1)
    nll, nll_stderr = _mean_stderr(nlls)
    bpd, bpd_stderr = _mean_stderr(values)
    return EvaluationResult(nll=nll, nll_stderr=nll_stderr, bpd=bpd, bpd_stderr=bpd_stderr,
                            per_sample=values.mean(1), values=values, nfe=nfe, quantized=quantized)


def bits_per_dim(
    sde,
    score: ScoreFn,
    x: Tensor,
    bits: int = 8,
    data_range: Sequence[float] = (-1.0, 1.0),
    n_dequant: int = 1,
    generator: Optional[torch.Generator] = None,
    levels: Optional[int] = None,
    **likelihood_kwargs,
) -> BitsPerDimResult:
    """Bits per dimension of k-bit data under the PF-ODE density, with uniform dequantization.

    With the level/bin convention of [`scoresde.data.dequantize`][scoresde.data.dequantize] (levels a + i (b − a)/(2^k − 1), bins of
    width Δ = (b − a)/2^k tiling [a, b]), the probability of a bin is ≈ p(x̃) Δ^d, so for d = elements per sample

        bpd(x̃) = −log₂ (p(x̃) Δ^d) / d = −log p(x̃) / (d ln 2) + log₂(1/Δ)

    (8-bit data in [−1, 1]: + 7 bits; in [0, 1]: + 8 bits). Averaged over x̃ ~ U(bin) this is an upper bound on
    the discrete model's bits/dim (Jensen). ``n_dequant`` independent dequantizations are solved one after the
    other (memory of one batch). This is `evaluate_likelihood` on the tensor viewed as quantized data.

    Args:
        sde: as in `log_likelihood`.
        score: as ``sde``.
        x: k-bit data, (B, *D) images or flat (B, d).
        bits: bit depth k.
        data_range: (a, b), the range the data was scaled to.
        n_dequant: number of dequantization draws per sample.
        generator: draws the dequantization noise and the Hutchinson probes.
        levels: number of levels L when it is not 2^bits (e.g. 17 for the 8×8 digits); Δ = (b − a)/L.
        **likelihood_kwargs: passed to `log_likelihood` (divergence, probe, n_probes, solver, rtol, atol,
            eps, step_size, vjp_batch).

    Returns:
        `BitsPerDimResult` with ``mean``, ``stderr``, ``per_sample`` (B,), ``values`` (B, n_dequant), ``nfe``.
    """
    a, b, levels = check_quantization(bits, data_range, levels)
    x = _check_x(x)
    likelihood_kwargs.setdefault("divergence", "hutchinson")
    quantized = Dataset(x, data_range=(a, b), levels=levels)
    res = evaluate_likelihood(sde, score, quantized, n_dequant=n_dequant, generator=generator, **likelihood_kwargs)
    return BitsPerDimResult(mean=res.bpd, stderr=res.bpd_stderr, per_sample=res.per_sample.to(x.dtype),
                            values=res.values.to(x.dtype), nfe=res.nfe)
