"""score_sde_pytorch checkpoints written by their own code load through `sd.from_score_sde_pytorch` and give the
scores their code computed, without their code.

The fixtures in tests/data/score_sde_pytorch/ were produced by score_sde_pytorch itself (commit cb1f359) with

    /work/peers/venv/bin/python benchmarks/score_sde_equivalence.py --make-fixtures

one set per small variant of their networks (NCSN++ under every option, DDPM, NCSN, NCSNv2; VP, sub-VP and VE,
continuous and discrete): ``<name>.pth`` their checkpoint in their exact format ({'optimizer', 'model' with
DataParallel's ``module.`` keys, 'ema' with ``shadow_params``, 'step'}; weights perturbed at random so that no layer
is zero, EMA ≠ model weights), ``<name>.json`` their config with every field, and ``<name>.pt`` their
``get_score_fn(sde, model, train=False, continuous=config.training.continuous)`` at 4 points (x, t), with the EMA
weights (``score_ema``) and with the raw model weights (``score_model``). The benchmark's docstring lists the
shims their code needed to run at all (NCSN/NCSNv2 and FIR-free upsampling fail as published).
"""
import json
import math
from pathlib import Path

import pytest
import torch

import scoresde as sd

FIXTURES = Path(__file__).parent / "data" / "score_sde_pytorch"
NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))


def load_fixture(name):
    config = json.loads((FIXTURES / f"{name}.json").read_text())
    outputs = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    return config, outputs


def tolerance(config, t):
    """Allowed max|ours − theirs| / max|theirs| per sample (B,), from float32 rounding.

    Both sides evaluate the same float32 operations, up to the order of sums inside convolutions, attention and
    FIR filters: float32's ε = 2⁻²³ ≈ 1.2e-7 per operation, through a few dozen well-conditioned layers, stays
    below ~1e-6 (measured ≤ 5e-7 on small variants of every network and option), so 1e-5 is a 10x margin that still
    catches any wrong weight, label or scaling (those give errors of order 1).

    One term comes from their side alone. For VP and sub-VP models taken as continuous, their score divides by
    their float32 std, computed as sqrt(1 − exp(2m)) (VP) or 1 − exp(2m) (sub-VP), m(t) = −t²(β₁ − β₀)/4 − tβ₀/2.
    Near t = 0, exp(2m) ≈ 1 and the subtraction cancels: 1 − exp(2m) carries an absolute error of about one ulp of
    1 (2⁻²³), i.e. a relative error 2⁻²³/(1 − exp(2m)) that passes to their score (halved by the VP square root).
    Ours computes the std without that cancellation, so we allow 2⁻²²/(1 − exp(2m)) more: 3.6e-4 at t = 1e-3 with
    the published β (measured 1.2e-4 VP, 2.4e-4 sub-VP), below 1e-6 for t > 0.3.
    """
    rtol = torch.full_like(t, 1e-5, dtype=torch.float64)
    model, training = config["model"], config["training"]
    kind = training["sde"].lower()
    if kind == "subvpsde" or (kind == "vpsde" and training["continuous"]):
        t = t.double()
        m = -0.25 * t ** 2 * (model["beta_max"] - model["beta_min"]) - 0.5 * t * model["beta_min"]
        rtol = rtol + 2.0 ** -22 / -torch.expm1(2 * m)
    return rtol


def relative_errors(ours, theirs):
    """max|ours − theirs| / max|theirs| per sample (B,)."""
    diff = (ours.double() - theirs.double()).flatten(1).abs().amax(1)
    return diff / theirs.double().flatten(1).abs().amax(1)


def test_the_fixtures_are_there_and_cover_every_sde_case():
    """Ten variants; between them VP, sub-VP and VE, continuous and not, and the four network families."""
    assert len(NAMES) >= 10, NAMES
    cases, families = set(), set()
    for name in NAMES:
        config, _ = load_fixture(name)
        cases.add((config["training"]["sde"], config["training"]["continuous"]))
        families.add(config["model"]["name"])
    assert {("vpsde", True), ("vpsde", False), ("subvpsde", True), ("vesde", True), ("vesde", False)} <= cases
    assert {"ncsnpp", "ddpm", "ncsn", "ncsnv2_64"} <= families


def cases():
    for name in NAMES:
        yield pytest.param(name, True, id=f"{name}-ema")
        yield pytest.param(name, False, id=f"{name}-model")


@pytest.mark.parametrize("name, ema", list(cases()))
def test_their_checkpoint_gives_their_score(name, ema, monkeypatch):
    """Ours from their checkpoint + config dict = their score, for the EMA and for the raw model weights; the
    file is read with torch.load(weights_only=True) (their checkpoints are plain tensors, lists and numbers).
    Their EMA keeps shadows of the parameters with requires_grad only: the Fourier embedding's fixed W (NCSN++
    with embedding_type 'fourier', two of these fixtures) has none."""
    config, outputs = load_fixture(name)
    calls, load = [], torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return load(*args, **kwargs)
    monkeypatch.setattr(torch, "load", spy)
    sde, model = sd.from_score_sde_pytorch(FIXTURES / f"{name}.pth", config=config, ema=ema)
    monkeypatch.undo()
    assert calls == [True]

    x, t = outputs["x"], outputs["t"]
    with torch.no_grad():
        ours = model(x, t)
    theirs = outputs["score_ema" if ema else "score_model"]
    assert ours.shape == theirs.shape and ours.dtype == torch.float32
    errors, rtol = relative_errors(ours, theirs), tolerance(config, t)
    assert (errors <= rtol).all(), f"relative errors {errors.tolist()} > tolerance {rtol.tolist()} at t {t.tolist()}"
    # The other set of weights gives a clearly different score, so the check above tells EMA from model weights.
    other = outputs["score_model" if ema else "score_ema"]
    assert (relative_errors(ours, other) > 100 * rtol).any()


@pytest.mark.parametrize("name", NAMES)
def test_our_sde_has_their_marginals(name):
    """Our SDE's scale(t) and std(t) are their marginal_prob's mean coefficient and std, in float64 (the VP/sub-VP
    closed forms through m(t) above; VE σ_min (σ_max/σ_min)^t with s = 1)."""
    config, outputs = load_fixture(name)
    sde, _ = sd.from_score_sde_pytorch(FIXTURES / f"{name}.pth", config=config, ema=False)
    t = outputs["t"].double()
    model, kind = config["model"], config["training"]["sde"].lower()
    if kind == "vesde":
        scale = torch.ones_like(t)
        std = model["sigma_min"] * (model["sigma_max"] / model["sigma_min"]) ** t
    else:
        m = -0.25 * t ** 2 * (model["beta_max"] - model["beta_min"]) - 0.5 * t * model["beta_min"]
        scale = torch.exp(m)
        std = torch.sqrt(-torch.expm1(2 * m)) if kind == "vpsde" else -torch.expm1(2 * m)
    assert torch.allclose(sde.scale(t).double(), scale, rtol=1e-12, atol=0)
    assert torch.allclose(sde.std(t).double(), std, rtol=1e-12, atol=0)
    assert math.isclose(float(sde.T), 1.0)
