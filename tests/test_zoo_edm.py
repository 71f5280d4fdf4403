"""EDM's snapshots (NVlabs/edm) through `sd.from_edm`: their pickles read without running anything from them, their
preconditionings against their own outputs, and their denoiser as a score on our SDEs.

The fixtures in tests/data/edm were written by benchmarks/edm_fixtures.py with *their* code (tiny networks with
perturbed weights, pickled the way their training loop pickles snapshots; gzipped) together with their denoiser's
outputs; no EDM checkout is needed here.
"""
import collections
import gzip
import io
import math
import os
import pickle
import sys
import types
import warnings

import pytest
import torch

import scoresde as sd
from scoresde.zoo import edm
from scoresde.zoo.edm import from_edm

DATA = os.path.join(os.path.dirname(__file__), "data", "edm")
EXPECTED = torch.load(os.path.join(DATA, "expected.pt"), weights_only=True)
NAMES = sorted(EXPECTED)
PRECONDITIONING = {"edm": "EDMPrecond", "vp": "VPPrecond", "ve": "VEPrecond", "iddpm": "iDDPMPrecond"}


def fixture(name):
    return os.path.join(DATA, name + ".pkl.gz")


def raw_bytes(name):
    with gzip.open(fixture(name), "rb") as f:
        return f.read()


def assert_close_to(out, expected, rtol=1e-5):
    """Equal to float32 rounding, relative to the largest entry (the kernels' rounding differs between machines)."""
    err = (out.double() - expected.double()).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= rtol * scale, f"max error {err:.3g} vs max |expected| {scale:.3g}"


# --------------------------------------------------------------------------------------------------------------------
# Their outputs
# --------------------------------------------------------------------------------------------------------------------

def test_fixture_set_covers_every_preconditioning_and_network():
    kinds = {PRECONDITIONING[name.split("_")[0]] for name in NAMES}
    assert kinds == set(edm.PRECONDITIONINGS)
    assert any("dhariwal" in n for n in NAMES) and any("songunet" in n for n in NAMES)
    assert any("aug9" in n for n in NAMES) and any("cond" in n.split("_") for n in NAMES)
    total = sum(os.path.getsize(os.path.join(DATA, f)) for f in os.listdir(DATA))
    assert total < 2_000_000


@pytest.mark.parametrize("name", NAMES)
def test_denoiser_reproduces_their_outputs(name):
    e = EXPECTED[name]
    sde, score = from_edm(fixture(name))
    info = score.edm
    assert info.preconditioning == PRECONDITIONING[name.split("_")[0]]
    assert type(info.denoiser).__name__ == info.preconditioning
    assert info.shape == (3, 8, 8) and info.img_resolution == 8 and info.img_channels == 3
    labels = e.get("labels")
    assert info.label_dim == (0 if labels is None else int(info.denoiser.label_dim)) and (labels is None) == (
        info.label_dim == 0)
    assert_close_to(info.denoiser(e["x"], e["sigma"], labels), e["D"])
    if labels is not None:  # integer labels are one-hot inside, as their generate.py builds them
        onehot = torch.eye(info.label_dim)[labels]
        assert_close_to(info.denoiser(e["x"], e["sigma"], onehot), e["D"])
        assert_close_to(info.denoiser(e["x"], e["sigma"]), e["D_no_labels"])  # their zero label vector
    if "augment_labels" in e:
        assert_close_to(info.denoiser(e["x"], e["sigma"], labels, augment_labels=e["augment_labels"]),
                        e["D_augment"])
    if info.preconditioning != "VPPrecond":
        assert info.denoiser.sigma_min == pytest.approx(e["sigma_min"].item(), rel=1e-7)
        assert info.denoiser.sigma_max == pytest.approx(e["sigma_max"].item(), rel=1e-7)


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("vp")])
def test_score_on_edm_sde_is_tweedie_of_their_denoiser(name):
    """On EDMSDE (s = 1, σ = t): score(x, σ) = (D(x; σ) − x)/σ², and as_denoiser gives their D back."""
    e = EXPECTED[name]
    sde, score = from_edm(fixture(name), cond=e.get("labels"))
    assert isinstance(sde, sd.EDMSDE) and isinstance(score, sd.Score) and score.network
    sigma = e["sigma"].clamp(max=sde.T)
    keep = sigma == e["sigma"]
    x = e["x"][keep]
    cond_D = e["D"][keep]
    labels = e.get("labels")
    if labels is not None:
        _, score = from_edm(fixture(name), cond=labels[keep])
    expected_score = (cond_D - x) / sigma[keep].reshape(-1, 1, 1, 1) ** 2
    assert_close_to(score(x, sigma[keep]), expected_score, rtol=1e-4)
    assert_close_to(sd.as_denoiser(sde, score)(x, sigma[keep]), cond_D, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("vp")])
def test_vp_model_on_vpsde_tweedie_gives_their_denoiser(name):
    """VPSDE(β_min, β_min + β_d): std/scale is their σ(t) exactly, and Tweedie of the score gives their D there."""
    e = EXPECTED[name]
    sde, score = from_edm(fixture(name), cond=e.get("labels"))
    den = score.edm.denoiser
    assert isinstance(sde, sd.VPSDE) and sde.T == 1.0
    assert sde.beta_min == den.beta_min and sde.beta_max == pytest.approx(den.beta_min + den.beta_d, rel=1e-15)
    sigma_tilde = sde.std(e["t"]) / sde.scale(e["t"])
    torch.testing.assert_close(sigma_tilde, e["sigma_t"], rtol=1e-12, atol=0)
    assert_close_to(sd.as_denoiser(sde, score)(e["x"], sigma_tilde.float()), e["D_t"], rtol=1e-5)
    # the network's time label (M − 1) σ⁻¹(σ(t)) is (M − 1) t
    torch.testing.assert_close(den.sigma_inv(den.sigma(e["t"])), e["t"], rtol=1e-12, atol=1e-15)
    # the range: σ(1) at T; eps where σ̃ = max(0.002, σ(ε_t)) (ours in float64; theirs float32-rounded)
    assert score.edm.sigma_max == pytest.approx(e["sigma_max"].item(), rel=1e-6)
    assert den.sigma_min == pytest.approx(math.sqrt(math.expm1(0.5 * den.beta_d * den.epsilon_t ** 2
                                                               + den.beta_min * den.epsilon_t)), rel=1e-12)
    assert score.edm.sigma_min == pytest.approx(max(0.002, den.sigma_min), rel=1e-9)
    assert score.edm.eps == pytest.approx(float(den.sigma_inv(torch.tensor(score.edm.sigma_min, dtype=torch.float64))),
                                          rel=1e-9)


def test_iddpm_levels_and_rounding_match_theirs():
    name = next(n for n in NAMES if n.startswith("iddpm"))
    e = EXPECTED[name]
    record = edm.read_snapshot(fixture(name))["ema"]
    fresh = edm.build_denoiser(record, strict=False)  # loads u too; rebuild the levels from our formula alone
    ours = edm.iDDPMPrecond(img_resolution=8, img_channels=3, **{k: v for k, v in record.init_kwargs.items()
                                                                  if k not in ("img_resolution", "img_channels")})
    # ours in float64; theirs is a float32 recursion whose cancellation at the smallest levels costs up to 5e-4
    torch.testing.assert_close(ours.u[:900], e["u"][:900], rtol=1e-5, atol=0)
    torch.testing.assert_close(ours.u, e["u"], rtol=1e-3, atol=0)
    assert torch.equal(fresh.u, e["u"])  # a snapshot carries its levels as a buffer: the model uses theirs
    assert ours.u[-1] == 0 and bool((ours.u[:-1] > ours.u[1:]).all())
    levels = torch.tensor([0.003, 0.5, 3.0, 60.0])
    assert torch.equal(fresh.round_sigma(levels, return_index=True), e["round_index"])
    torch.testing.assert_close(fresh.round_sigma(levels), e["u"][e["round_index"]])
    sde, score = from_edm(fixture(name))
    # generate.py clamps to [0.002, 80] and rounds its grid: the levels nearest 0.002 and 80 (80.2 lies above 80)
    top = e["u"][(e["u"] - 80).abs().argmin()].item()
    assert (sde.sigma_min, sde.sigma_max) == (pytest.approx(e["u"][-2].item()), pytest.approx(top)) and top > 80
    torch.testing.assert_close(score.edm.round_sigma(levels), fresh.round_sigma(levels))


def test_sde_ranges_follow_their_sampler_defaults():
    for name in NAMES:
        sde, score = from_edm(fixture(name))
        den = score.edm.denoiser
        if isinstance(den, edm.VPPrecond):
            continue
        ends = den.round_sigma(torch.tensor([max(0.002, den.sigma_min), min(80.0, den.sigma_max)]))
        assert sde.sigma_min == pytest.approx(float(ends[0])) and sde.sigma_max == pytest.approx(float(ends[1]))
        assert score.edm.eps == pytest.approx(sde.sigma_min) and score.edm.sigma_max == pytest.approx(sde.T)


def test_other_sde_and_file_object_and_float64():
    name = next(n for n in NAMES if n.startswith("vp_songunet_ddpmpp"))
    e = EXPECTED[name]
    with gzip.open(fixture(name), "rb") as f:
        sde, score = from_edm(f, sde=sd.EDMSDE(0.002, 80.0))
    assert isinstance(sde, sd.EDMSDE)
    keep = e["sigma"] <= 80
    assert_close_to(sd.as_denoiser(sde, score)(e["x"][keep], e["sigma"][keep]), e["D"][keep])
    out = score.edm.denoiser(e["x"].double(), e["sigma"].double())
    assert out.dtype == torch.float64  # computed in the network's float32, returned in x's dtype
    assert_close_to(out, e["D"])
    with pytest.raises(TypeError, match="linear"):
        from_edm(fixture(name), sde=object())


def test_samplers_run_on_a_loaded_model():
    name = next(n for n in NAMES if n.startswith("edm_songunet"))
    sde, score = from_edm(fixture(name), cond=torch.tensor([0, 2]))
    sampler = sd.SAMPLERS.build("heun", steps=3, eps=score.edm.eps)
    res = sampler.sample(sde, score, (2, *score.edm.shape), generator=torch.Generator().manual_seed(0))
    assert res.x.shape == (2, 3, 8, 8) and torch.isfinite(res.x).all()


# --------------------------------------------------------------------------------------------------------------------
# Labels and arguments
# --------------------------------------------------------------------------------------------------------------------

def test_label_checks():
    cond_name = next(n for n in NAMES if n.startswith("edm_songunet"))
    uncond_name = next(n for n in NAMES if n.startswith("edm_dhariwal"))
    e = EXPECTED[cond_name]
    den = from_edm(fixture(cond_name))[1].edm.denoiser
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        den(e["x"], e["sigma"], torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match=r"\(B,\) = \(3,\)"):
        den(e["x"], e["sigma"], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="label_dim"):
        den(e["x"], e["sigma"], torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"shape \(B, 3, 8, 8\)"):
        den(e["x"][:, :2], e["sigma"])
    with pytest.raises(ValueError, match="sigma"):
        den(e["x"], torch.ones(2))
    # one label for the whole batch, and a number for σ
    assert_close_to(den(e["x"][:1], 0.7, 2), den(e["x"][:1], torch.tensor([0.7]), torch.tensor([2])))
    with pytest.raises(ValueError, match="unconditional"):
        from_edm(fixture(uncond_name), cond=torch.tensor([1]))
    unc = from_edm(fixture(uncond_name))[1].edm.denoiser
    with pytest.raises(ValueError, match="unconditional"):
        unc(e["x"], e["sigma"], torch.tensor([0, 1, 2]))


def test_preconditioning_coefficients_are_table_1():
    """Karras et al. 2022, Table 1, at σ = σ_d for EDM and in closed forms for VP / VE."""
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    pre = edm.EDMPrecond.coefficients(types.SimpleNamespace(sigma_data=0.5), sigma)
    torch.testing.assert_close(pre[0], 0.25 / (sigma ** 2 + 0.25))
    torch.testing.assert_close(pre[1], sigma * 0.5 / (sigma ** 2 + 0.25).sqrt())
    torch.testing.assert_close(pre[2], 1 / (sigma ** 2 + 0.25).sqrt())
    torch.testing.assert_close(pre[3], sigma.log() / 4)
    assert pre[0][0].item() == pytest.approx(0.5) and pre[1][0].item() == pytest.approx(0.5 / math.sqrt(2))
    ve = edm.VEPrecond.coefficients(None, sigma)
    torch.testing.assert_close(torch.stack(ve), torch.stack([torch.ones_like(sigma), sigma, torch.ones_like(sigma),
                                                             torch.log(sigma / 2)]))
    vp = types.SimpleNamespace(beta_d=19.9, beta_min=0.1, M=1000)
    vp.sigma_inv = lambda s: edm.VPPrecond.sigma_inv(vp, s)
    c = edm.VPPrecond.coefficients(vp, sigma)
    t = c[3] / 999
    torch.testing.assert_close(torch.sqrt(torch.expm1(0.5 * 19.9 * t ** 2 + 0.1 * t)), sigma)
    torch.testing.assert_close(c[1], -sigma)
    torch.testing.assert_close(c[2], 1 / (sigma ** 2 + 1).sqrt())


# --------------------------------------------------------------------------------------------------------------------
# Reading pickles safely
# --------------------------------------------------------------------------------------------------------------------

def test_records_hold_their_classes_arguments_and_state():
    name = next(n for n in NAMES if n.startswith("edm_songunet"))
    snap = edm.read_snapshot(fixture(name))
    assert set(snap) == {"ema", "loss_fn", "augment_pipe", "dataset_kwargs"}
    ema = snap["ema"]
    assert isinstance(ema, edm.PersistentRecord) and ema.class_name == "training.networks.EDMPrecond"
    assert ema.init_args == () and ema.init_kwargs["model_type"] == "SongUNet"
    assert ema.init_kwargs["label_dim"] == 3 and ema.init_kwargs["augment_dim"] == 9
    assert "module_src" not in vars(ema) and "module_src" not in ema.state  # the source is dropped unread
    model = ema.state["_modules"]["model"]
    assert model.class_name == "training.networks.SongUNet"
    assert model.state["_modules"]["enc"].class_name == "torch.nn.modules.container.ModuleDict"
    block = next(b for b in model.state["_modules"]["enc"].state["_modules"].values() if "skip_scale" in b.state)
    assert block.class_name == "training.networks.UNetBlock"
    assert type(block.state["skip_scale"]) is float  # their np.sqrt(0.5), read without numpy
    assert block.state["skip_scale"] == pytest.approx(math.sqrt(0.5))
    assert snap["loss_fn"].class_name == "training.loss.EDMLoss" and snap["loss_fn"].state["sigma_data"] == 0.5
    assert snap["augment_pipe"].class_name == "training.augment.AugmentPipe"
    assert snap["augment_pipe"].state["p"] == pytest.approx(0.12)
    assert type(snap["dataset_kwargs"]) is dict and snap["dataset_kwargs"]["use_labels"] is True
    state = ema.state_dict()
    assert all(torch.is_tensor(v) and not v.requires_grad for v in state.values())
    den = from_edm(fixture(name))[1].edm.denoiser
    assert list(state) == list(den.state_dict())


def test_protocol_2_pickles_load():
    name = next(n for n in NAMES if n.startswith("vp_songunet_skip"))  # written with protocol 2
    data = raw_bytes(name)
    assert data[:2] == b"\x80\x02" and b"__builtin__" in data
    assert isinstance(edm.read_snapshot(io.BytesIO(data))["ema"], edm.PersistentRecord)


class _System:
    """A classic hostile pickle: unpickling calls os.system."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


SYSTEM = f"{os.system.__module__}.system"
HOSTILE = {  # payload(marker) and the global the reader must name when refusing it
    "system": (lambda m: {"ema": _System(f"touch {m}")}, SYSTEM),
    "eval": (lambda m: _Eval(f"open({str(m)!r}, 'w').write('x')"), "builtins.eval"),
    "nested": (lambda m: {"ema": {"deep": [1, 2, (_System(f"touch {m}"),)]}}, SYSTEM),
}


@pytest.mark.parametrize("payload", sorted(HOSTILE))
def test_hostile_pickles_are_refused_and_run_nothing(tmp_path, payload):
    marker = tmp_path / "marker"
    make, refused = HOSTILE[payload]
    data = pickle.dumps(make(marker))
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=f"refused to load {refused}"):
        from_edm(path)
    with pytest.raises(ValueError, match=f"refused to load {refused}"):
        edm.read_snapshot(io.BytesIO(data))
    assert not marker.exists()


@pytest.fixture
def their_persistence(monkeypatch):
    """A stand-in module at their path ``torch_utils.persistence``, so that pickles naming their constructor can be
    written here; our reader never calls it."""
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called by the reader")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj, pkg.persistence = _reconstruct_persistent_obj, mod
    monkeypatch.setitem(sys.modules, "torch_utils", pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)

    class Persistent:
        def __init__(self, class_name, source, state):
            self.meta = dict(type="class", version=6, module_src=source, class_name=class_name, state=state)

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    return Persistent


def test_stored_source_is_never_run(tmp_path, their_persistence):
    marker = tmp_path / "marker"
    source = f"import os\nos.system('touch {marker}')\nopen({str(marker)!r}, 'w').write('x')\nclass Evil: pass\n"
    data = pickle.dumps({"ema": their_persistence("Evil", source, {"a": 1}), "loss_fn": None})
    snap = edm.read_snapshot(io.BytesIO(data))
    assert snap["ema"].class_name == "<persistent>.Evil" and snap["ema"].state == {"a": 1}
    assert not marker.exists()
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"<persistent>.Evil is not one of EDM's preconditionings"):
        from_edm(path)
    assert not marker.exists()


def test_changed_source_loads_identically_and_runs_nothing(tmp_path):
    """Their pickles carry module sources; replace each with hostile code of the same length: same outputs."""
    name = next(n for n in NAMES if n.startswith("edm_songunet"))
    data = bytearray(raw_bytes(name))
    marker = tmp_path / "marker"
    evil = f"import os\nos.system('touch {marker}')\nopen({str(marker)!r}, 'w').write('x')\n".encode()
    header = b"# Copyright (c) 2022, NVIDIA CORPORATION"
    start, replaced = 0, 0
    while (start := data.find(header, start)) >= 0:
        length = int.from_bytes(data[start - 4:start], "little")  # BINUNICODE's length prefix
        assert length > len(evil)
        data[start:start + length] = evil + b"#" * (length - len(evil))
        start, replaced = start + length, replaced + 1
    assert replaced == 3  # training/networks.py, loss.py, augment.py
    path = tmp_path / "changed.pkl"
    path.write_bytes(bytes(data))
    e = EXPECTED[name]
    sde, score = from_edm(path)
    _, untouched = from_edm(fixture(name))              # the same file with its sources as written: on this machine
    assert torch.equal(score.edm.denoiser(e["x"], e["sigma"], e["labels"]),
                       untouched.edm.denoiser(e["x"], e["sigma"], e["labels"]))
    assert not marker.exists()


def test_bad_files_give_clear_errors(tmp_path, their_persistence):
    name = NAMES[0]
    data = raw_bytes(name)
    with pytest.raises(FileNotFoundError, match="no EDM pickle"):
        from_edm(tmp_path / "missing.pkl")
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.pkl"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or not an EDM pickle"):
            from_edm(path)
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="zip archive"):
        from_edm(path)
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"net": [1.0, 2.0]}))
    with pytest.raises(ValueError, match=r"not an EDM snapshot.*'ema'.*\['net'\]"):
        from_edm(path)
    path.write_bytes(pickle.dumps({"ema": torch.ones(2)}))
    with pytest.raises(ValueError, match="not an EDM snapshot"):
        from_edm(path)
    path.write_bytes(pickle.dumps({"ema": their_persistence("EDMLoss", "", {"P_mean": -1.2})}))
    with pytest.raises(ValueError, match=r"training.loss.EDMLoss is not one of EDM's preconditionings"):
        from_edm(path)


def test_strict_loading_names_keys_and_shapes():
    name = next(n for n in NAMES if n.startswith("ve_"))
    record = edm.read_snapshot(fixture(name))["ema"]
    model = record.state["_modules"]["model"]
    params = model.state["_modules"]["map_layer0"].state["_parameters"]
    params["weight"] = params["weight"][:, :-1]
    with pytest.raises(ValueError, match=r"model.map_layer0.weight: checkpoint \(32, 15\) vs model \(32, 16\)"):
        edm.build_denoiser(record)
    del params["bias"]
    params["extra"] = torch.ones(1)
    with pytest.raises(ValueError, match=r"missing keys.*model.map_layer0.bias.*unexpected keys.*"
                                         r"model.map_layer0.extra"):
        edm.build_denoiser(record)
    record = edm.read_snapshot(fixture(name))["ema"]
    record.state["_init_kwargs"]["no_such_argument"] = 1
    with pytest.raises(ValueError, match="recorded arguments do not fit VEPrecond"):
        edm.build_denoiser(record)
    with pytest.raises(TypeError, match="PersistentRecord"):
        edm.build_denoiser({"ema": 1})


class _ForgedTensor:
    """Pickles as torch's own tensor rebuild with a size reaching past the storage, or (``build``) a valid tensor
    re-pointed afterwards by a BUILD of Tensor.__setstate__'s legacy (storage, offset, size, stride)."""

    def __init__(self, build=False):
        self.build = build

    def __reduce__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.arange(4.0).storage()
        if self.build:
            return (torch._utils._rebuild_tensor_v2, (storage, 0, (4,), (1,), False, collections.OrderedDict()),
                    (storage, 0, (100,), (1,)))
        return (torch._utils._rebuild_tensor_v2, (storage, 0, (100,), (1,), False, collections.OrderedDict()))


def test_tensors_reaching_past_their_storage_are_refused():
    """``set_`` does not check bounds: a forged size must be refused, not read past the storage."""
    with pytest.raises(ValueError, match="reaches past its storage"):
        edm.read_snapshot(io.BytesIO(pickle.dumps({"w": _ForgedTensor()})))
    with pytest.raises(ValueError, match="sets a tensor's state"):
        edm.read_snapshot(io.BytesIO(pickle.dumps({"w": _ForgedTensor(build=True)})))
    good = pickle.dumps({"w": torch.arange(4.0)[1:]})
    w = edm.read_snapshot(io.BytesIO(good))["w"]
    assert torch.equal(w, torch.arange(1.0, 4.0)) and "__setstate__" not in vars(w)
