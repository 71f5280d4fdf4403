"""Moving averages of a model's weights: exponential with a decay warm-up, EDM's half-life in samples with a
ramp-up, and EDM2's power-function profile, with snapshots of it for a post-hoc EMA (`post_hoc_ema`)."""
from __future__ import annotations

import contextlib
import math
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .checkpoint import check_state_dict, save_checkpoint

Tensor = torch.Tensor


class EMA:
    """Exponential moving average θ̄ ← d θ̄ + (1 − d) θ of every floating-point entry of a state dict.

    The decay d_n of the n-th update (n = 0, 1, …) is one of:

    - exponential (default): ``decay``, with ``warmup`` min(decay, (1 + n)/(10 + n)), so that the average is not
      dominated by the random initialisation early in training;
    - ``half_life`` (EDM, Karras et al. 2022): 0.5^{B/h_n} with B = ``batch_size`` samples per update and the
      half-life h_n = min(half_life, rampup · (n + 1) B) in samples (the ramp-up keeps it a fraction of the
      samples seen);
    - ``power`` γ (EDM2, Karras et al. 2024): (1 − 1/(n + 1))^{γ+1}. The average after N updates then weighs update
      τ = 1 … N by exactly (τ^{γ+1} − (τ − 1)^{γ+1})/N^{γ+1}, the power function (γ + 1) τ^γ / N^{γ+1} integrated
      over each step; γ = 0 is the running mean.

    Integer buffers (e.g. counters) are copied, not averaged.

    Args:
        model: the module whose weights are averaged.
        decay: the asymptotic decay d in [0, 1) of the exponential profile.
        warmup: use the decay warm-up above.
        half_life: EDM's half-life in samples (None: not this profile).
        rampup: EDM's ramp-up ratio (0: none).
        batch_size: samples per update, for ``half_life``.
        power: EDM2's γ > −1 (None: not this profile).

    Example:
        ema = sd.EMA(model, decay=0.999)
        ...; optimizer.step(); ema.update()
        with ema.average_parameters():
            samples = sampler.sample(sde, model, shape)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True,
                 half_life: Optional[float] = None, rampup: float = 0.05, batch_size: int = 1,
                 power: Optional[float] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must be in [0, 1); got {decay!r}")
        if half_life is not None and power is not None:
            raise ValueError("give half_life (EDM) or power (EDM2), not both")
        if half_life is not None and not float(half_life) > 0:
            raise ValueError(f"half_life must be a positive number of samples; got {half_life!r}")
        if power is not None and not float(power) > -1:
            raise ValueError(f"power (EDM2's γ) must be > −1; got {power!r}")
        if not float(rampup) >= 0 or int(batch_size) < 1:
            raise ValueError(f"need rampup >= 0 and batch_size >= 1; got {rampup!r}, {batch_size!r}")
        self.model = model
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.half_life = None if half_life is None else float(half_life)
        self.rampup, self.batch_size = float(rampup), int(batch_size)
        self.power = None if power is None else float(power)
        self.num_updates = 0
        self.shadow: Dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next `update` uses (the class docstring's profiles)."""
        n = self.num_updates
        if self.power is not None:
            return (1.0 - 1.0 / (n + 1)) ** (self.power + 1)
        if self.half_life is not None:
            life = self.half_life
            if self.rampup > 0:
                life = min(life, self.rampup * (n + 1) * self.batch_size)
            return 0.5 ** (self.batch_size / max(life, 1e-12))
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    @torch.no_grad()
    def update(self) -> None:
        """θ̄ ← d θ̄ + (1 − d) θ for the model's current weights θ."""
        d = self.current_decay()
        for key, value in self.model.state_dict().items():
            avg = self.shadow[key]
            if avg.is_floating_point():
                avg.lerp_(value.detach(), 1.0 - d)
            else:
                avg.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: Optional[nn.Module] = None) -> None:
        """Write the averaged weights into ``model`` (default: the tracked model)."""
        (self.model if model is None else model).load_state_dict(self.shadow, strict=True)

    @contextlib.contextmanager
    def average_parameters(self, model: Optional[nn.Module] = None) -> Iterator[nn.Module]:
        """Temporarily swap the averaged weights into ``model`` (default: the tracked one); restore on exit."""
        model = self.model if model is None else model
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=True)

    def state_dict(self) -> Dict[str, object]:
        """Decay settings, update count and the averaged tensors (plain containers only)."""
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "half_life": self.half_life, "rampup": self.rampup, "batch_size": self.batch_size,
                "power": self.power, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore from `state_dict`; a ValueError names keys that do not match the model."""

        check_state_dict(self.shadow, state["shadow"], what="EMA")
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        self.half_life, self.power = state.get("half_life"), state.get("power")
        self.rampup, self.batch_size = float(state.get("rampup", 0.05)), int(state.get("batch_size", 1))
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)


# -- EDM2's post-hoc EMA: snapshots of power-function averages and their least-squares combination -------------
#: Written into every EMA snapshot file; bumped when the layout changes.
SNAPSHOT_FORMAT = "scoresde.ema_snapshot/1"
#: The folder of a run's snapshots, beside its checkpoint.
SNAPSHOT_FOLDER = "ema_snapshots"


def sigma_rel_from_power(power: float) -> float:
    """EDM2's relative width σ_rel of a power profile: the std of the density (γ + 1) x^γ on [0, 1],
    σ_rel = √((γ + 1) / ((γ + 2)² (γ + 3))) (its mean is (γ + 1)/(γ + 2), its second moment (γ + 1)/(γ + 3))."""
    gamma = float(power)
    if not gamma > -1:
        raise ValueError(f"power (EDM2's γ) must be > −1; got {power!r}")
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


#: The widest power profile: d/dγ log σ_rel² = 1/(γ + 1) − 2/(γ + 2) − 1/(γ + 3) vanishes where γ² + 3γ + 1 = 0,
#: at γ = (√5 − 3)/2 ≈ −0.382, where σ_rel ≈ 0.3003 (σ_rel → 0 as γ → −1 and as γ → ∞).
_SIGMA_REL_MAX = sigma_rel_from_power((math.sqrt(5.0) - 3.0) / 2.0)


def power_from_sigma_rel(sigma_rel: float) -> float:
    """The exponent γ of the power profile with relative width ``sigma_rel`` (inverse of `sigma_rel_from_power`).

    σ_rel² = (γ + 1)/((γ + 2)² (γ + 3)) is the cubic γ³ + 7γ² + (16 − 1/σ_rel²) γ + 12 − 1/σ_rel² = 0; γ is its
    largest real root (the narrow branch, where σ_rel decreases in γ; e.g. σ_rel = 0.10 gives γ ≈ 6.94 and 0.05
    gives γ ≈ 16.97, EDM2's two profiles). Needs 0 < σ_rel ≤ 0.3003 (the widest profile, γ = (√5 − 3)/2).
    """
    s = float(sigma_rel)
    if not 0 < s <= _SIGMA_REL_MAX:
        raise ValueError(f"sigma_rel must be in (0, {_SIGMA_REL_MAX:.4f}] (the widest power profile); got {sigma_rel!r}")
    a = 1.0 / (s * s)
    coefficients = (7.0, 16.0 - a, 12.0 - a)
    gamma = 1.0 + max(abs(c) for c in coefficients)            # Cauchy's bound: right of every real root
    for _ in range(200):                                         # Newton from the right: monotone (convex for γ > −7/3)
        value = ((gamma + coefficients[0]) * gamma + coefficients[1]) * gamma + coefficients[2]
        slope = (3 * gamma + 2 * coefficients[0]) * gamma + coefficients[1]
        step = value / slope if slope > 0 else 0.0
        if not step > 1e-15 * max(1.0, abs(gamma)):
            break
        gamma -= step
    return gamma


def _profile_inner(power_a: float, step_a: float, power_b: float, step_b: float) -> float:
    """⟨p_a, p_b⟩ = ∫ p_a p_b for p(τ) = (γ + 1) τ^γ / t^{γ+1} on (0, t] (see `post_hoc_ema_weights`)."""
    m = min(step_a, step_b)
    return ((power_a + 1) * (power_b + 1) / (power_a + power_b + 1)
            * (m / step_a) ** (power_a + 1) * (m / step_b) ** (power_b + 1) / m)


def _check_reconstruction_power(power, what: str) -> float:
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not math.isfinite(power) or not power > -0.5:
        raise ValueError(f"{what} must be a number > −1/2 for a post-hoc EMA (the L² inner products of power "
                         f"profiles need γ_a + γ_b > −1; a power EMA itself allows γ > −1); got {power!r}")
    return float(power)


def post_hoc_ema_weights(profiles: Sequence[Tuple[float, int]], power: float,
                         step: int) -> Tuple[Tensor, float]:
    """Least-squares weights x of stored power-EMA profiles whose combination best matches a target profile.

    A power EMA with exponent γ after t updates (`EMA` with ``power``) is the average Σ_{τ=1}^t w_τ θ_τ of the
    weights θ_τ after update τ, with w_τ = ∫_{τ−1}^{τ} p(s) ds for the profile p(s) = (γ + 1) s^γ / t^{γ+1} on
    (0, t]: it is exactly ∫ p(s) θ(⌈s⌉) ds. Hence a combination Σ_i x_i θ̄_i of snapshots i = (γ_i, t_i) differs
    from the target's average θ̄_r = (γ_r, t_r) by ∫ (Σ_i x_i p_i − p_r)(s) θ(⌈s⌉) ds, and by Cauchy–Schwarz, per
    entry of θ,

        |Σ_i x_i θ̄_i − θ̄_r| ≤ r · (Σ_{τ ≤ T} θ_τ²)^{1/2},   r = ‖Σ_i x_i p_i − p_r‖₂,   T = max(t_r, t_i).

    x minimises r² = xᵀ A x − 2 bᵀ x + ⟨p_r, p_r⟩: the Gram system A x = b with A_ij = ⟨p_i, p_j⟩, b_i = ⟨p_i, p_r⟩,

        ⟨p_a, p_b⟩ = (γ_a + 1)(γ_b + 1)/(γ_a + γ_b + 1) · m^{γ_a+γ_b+1} / (t_a^{γ_a+1} t_b^{γ_b+1}),  m = min(t_a, t_b),

    finite when γ_a + γ_b > −1 (so every γ > −1/2). Solved in float64 by SVD least squares (the minimum-norm x if
    A is singular, e.g. a profile stored twice).

    Args:
        profiles: the stored (γ_i, t_i), t_i ≥ 1 updates.
        power: the target's γ_r > −1/2.
        step: the target's t_r ≥ 1.

    Returns:
        (x (n,) float64, r): the weights and the residual norm r of the bound above.
    """
    if not profiles:
        raise ValueError("no EMA snapshots to combine")
    gamma_r = _check_reconstruction_power(power, "the target power")
    t_r = _positive_step(step, "the target step")
    stored = [(_check_reconstruction_power(g, f"snapshot {i}'s power"), _positive_step(t, f"snapshot {i}'s step"))
              for i, (g, t) in enumerate(profiles)]
    n = len(stored)
    gram = torch.empty(n, n, dtype=torch.float64)
    for i, (g_i, t_i) in enumerate(stored):
        for j in range(i, n):
            gram[i, j] = gram[j, i] = _profile_inner(g_i, t_i, *stored[j])
    target = torch.tensor([_profile_inner(g, t, gamma_r, t_r) for g, t in stored], dtype=torch.float64)
    x = torch.linalg.lstsq(gram, target[:, None], driver="gelsd").solution[:, 0]
    r2 = float(x @ gram @ x - 2 * target @ x) + _profile_inner(gamma_r, t_r, gamma_r, t_r)
    return x, math.sqrt(max(r2, 0.0))


def _positive_step(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer number of updates; got {value!r}")
    return value


def save_ema_snapshot(emas: Sequence["EMA"], path: str) -> str:
    """Write the power EMAs ``emas`` (one per profile, all after the same number of updates) atomically to ``path``
    (``weights_only`` readable: {"format", "step", "emas": [EMA.state_dict(), …]}); returns the path."""

    steps = {ema.num_updates for ema in emas}
    if len(steps) != 1 or any(ema.power is None for ema in emas):
        raise ValueError(f"a snapshot holds power EMAs after one number of updates; got powers "
                         f"{[ema.power for ema in emas]} after {sorted(steps)} updates")
    return save_checkpoint({"format": SNAPSHOT_FORMAT, "step": steps.pop(),
                            "emas": [ema.state_dict() for ema in emas]}, path)


def snapshot_path(folder: str, step: int) -> str:
    """``folder/ema_<step>.pt`` (step in 7 digits, so the names sort by step)."""
    return os.path.join(folder, f"ema_{step:07d}.pt")


def _snapshot_step(name: str) -> Optional[int]:
    match = re.fullmatch(r"ema_(\d+)\.pt", name)
    return None if match is None else int(match.group(1))


def drop_snapshots_after(folder: str, step: int) -> None:
    """Remove the snapshots of ``folder`` taken after ``step`` (written by a run that is being resumed from it)."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        taken = _snapshot_step(name)
        if taken is not None and taken > step:
            os.remove(os.path.join(folder, name))


def load_ema_snapshots(snapshots) -> List[Dict[str, Any]]:
    """The power-EMA states of ``snapshots``: a run's folder (its ``ema_snapshots`` sub-folder) or a snapshot
    folder, a snapshot file, `EMA` objects, their ``state_dict()``s, or a list of any of these. Files are read with
    ``torch.load(weights_only=True, mmap=True)`` (tensors are paged in when used)."""
    if isinstance(snapshots, (str, os.PathLike, EMA, dict)):
        snapshots = [snapshots]
    states: List[Dict[str, Any]] = []
    for item in snapshots:
        if isinstance(item, EMA):
            states.append(item.state_dict())
        elif isinstance(item, dict) and "shadow" in item:
            states.append(item)
        elif isinstance(item, dict) and item.get("format") == SNAPSHOT_FORMAT:
            states.extend(item["emas"])
        elif isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if os.path.isdir(os.path.join(path, SNAPSHOT_FOLDER)):
                path = os.path.join(path, SNAPSHOT_FOLDER)
            if os.path.isdir(path):
                names = sorted(n for n in os.listdir(path) if _snapshot_step(n) is not None)
                states.extend(s for n in names for s in _read_snapshot(os.path.join(path, n)))
            else:
                states.extend(_read_snapshot(path))
        else:
            raise TypeError(f"an EMA snapshot is a folder or file path, an EMA or an EMA state_dict (or a list of "
                            f"them); got {type(item).__name__}")
    return states


def _read_snapshot(path: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no EMA snapshot at {path!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:   # truncated, garbage, or a refused global: not a snapshot
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path!r} is not a valid scoresde EMA snapshot: {reason[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != SNAPSHOT_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path!r} is not a scoresde EMA snapshot: expected format {SNAPSHOT_FORMAT!r}, got {got!r}")
    return list(payload["emas"])


@torch.no_grad()
def post_hoc_ema(snapshots, power: Optional[float] = None, *, sigma_rel: Optional[float] = None,
                 step: Optional[int] = None, model: Optional[nn.Module] = None) -> Dict[str, Tensor]:
    """EDM2's post-hoc EMA (Karras et al. 2024, §3.2): the average of a power profile that was not tracked,
    reconstructed from stored snapshots of power EMAs by least squares (`post_hoc_ema_weights` states the math
    and the error bound).

        config = sd.TrainConfig(ema_snapshot_powers=[16.97, 6.94], ema_snapshot_every=1000, out_dir="runs/x")
        ...; weights = sd.post_hoc_ema("runs/x", sigma_rel=0.08, model=model)

    Args:
        snapshots: what `load_ema_snapshots` reads (a run's folder, snapshot files, EMAs or their state dicts);
            every one a power EMA (``power`` set) of the same state-dict keys and shapes.
        power: the target profile's γ > −1/2 ...
        sigma_rel: ... or its relative width σ_rel (`power_from_sigma_rel`; give one of the two).
        step: the target's number of updates t_r (default: the latest snapshot's), at most the latest's.
        model: load the result into this module (strict) as well.

    Returns:
        The state dict Σ_i x_i θ̄_i of floating entries (in float64, then cast to each entry's dtype); other
        entries (integer buffers) come from the latest snapshot.
    """
    if (power is None) == (sigma_rel is None):
        raise ValueError(f"give the target as power (γ) or as sigma_rel, exactly one; got power={power!r}, "
                         f"sigma_rel={sigma_rel!r}")
    gamma = power_from_sigma_rel(sigma_rel) if power is None else _check_reconstruction_power(power, "power")
    states = load_ema_snapshots(snapshots)
    if not states:
        raise ValueError(f"no EMA snapshots in {snapshots!r} (a run writes them with ema_snapshot_every > 0)")

    for i, state in enumerate(states):
        if state.get("power") is None:
            raise ValueError(f"snapshot {i} is not a power EMA (power=None, half_life={state.get('half_life')}): "
                             f"only EDM2's power profiles can be combined post hoc")
        if int(state["num_updates"]) < 1:
            raise ValueError(f"snapshot {i} was taken after 0 updates (its profile is undefined)")
        check_state_dict(states[0]["shadow"], state["shadow"], what=f"first snapshot (snapshot {i} differs)")
    latest = max(range(len(states)), key=lambda i: int(states[i]["num_updates"]))
    last_step = int(states[latest]["num_updates"])
    step = last_step if step is None else step
    if isinstance(step, int) and not isinstance(step, bool) and step > last_step:
        raise ValueError(f"step {step} is after the latest snapshot ({last_step} updates): nothing is known there")
    x, _ = post_hoc_ema_weights([(float(s["power"]), int(s["num_updates"])) for s in states], gamma, step)
    result: Dict[str, Tensor] = {}
    for key, value in states[latest]["shadow"].items():
        if not value.is_floating_point():
            result[key] = value.clone()
            continue
        total = torch.zeros(value.shape, dtype=torch.float64)
        for weight, state in zip(x.tolist(), states):
            total.add_(state["shadow"][key].to(device="cpu", dtype=torch.float64), alpha=weight)
        result[key] = total.to(dtype=value.dtype, device=value.device)
    if model is not None:
        check_state_dict(model.state_dict(), result, what="model")
        model.load_state_dict(result, strict=True)
    return result

