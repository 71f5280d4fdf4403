"""torch-fidelity's DINOv2 and CLIP extractors loaded without its package ``__init__`` (a torchvision stand-in
during the import, gone afterwards): the same features as torch-fidelity's own classes, run in a child process
through ``import torch_fidelity``, on tiny stand-in networks (no network, no weights, no DINOv2 clone); weights
files read with ``weights_only=True`` and checked against the architecture the name says; ``--extractor
dinov2-...`` through ``scoresde fid-stats`` and ``evaluate`` with a local hub folder."""
import importlib.util
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from scoresde.app.cli import main
from scoresde.evaluation import features as F
from scoresde.evaluation.image_metrics import fid
from helpers import TORCH_FIDELITY_IMPORT

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is None,
                                reason="torch-fidelity is not installed (pip install scoresde[metrics])")

#: A DINOv2 hub folder with a tiny stand-in network: a fixed random linear map of the 224×224 image to 16 features
#: (sensitive to every resized pixel), under torch.hub's entry names of ViT-S/14 and ViT-B/14.
_HUBCONF = """
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 224 * 224, 16)
        torch.nn.init.normal_(self.proj.weight, std=1e-3, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.proj(x.flatten(1))


def dinov2_vits14(pretrained=False, **kwargs):
    return Tiny()


dinov2_vitb14 = dinov2_vits14
"""

#: torch-fidelity's package imported as a user would (``import torch_fidelity``), with the tests' torchvision
#: stand-in where torchvision does not import (helpers.TORCH_FIDELITY_IMPORT).
_THEIR_HEADER = TORCH_FIDELITY_IMPORT

_THEIR_DINOV2 = _THEIR_HEADER + """
from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
sys.path.insert(0, sys.argv[1])
import hubconf
torch.hub.load = lambda repo, entry, **kwargs: hubconf.dinov2_vits14()      # their hub call, offline
net = FeatureExtractorDinoV2("dinov2-vit-s-14", ["dinov2"])
net.model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
torch.save(net(torch.load(sys.argv[3], weights_only=True))[0], sys.argv[4])
"""

_THEIR_CLIP = _THEIR_HEADER + """
from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP
net = FeatureExtractorCLIP("clip-vit-b-32", ["clip"], feature_extractor_weights_path=sys.argv[1])
torch.save(net(torch.load(sys.argv[2], weights_only=True))[0], sys.argv[3])
"""


def _theirs(script, *args):
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(args[-1], weights_only=True)


def _images(n, channels=3, size=32, seed=0):
    return torch.randint(0, 256, (n, channels, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(hub folder, weights file of its tiny network with other values than its constructor's)."""
    folder = tmp_path_factory.mktemp("dinov2_hub")
    (folder / "hubconf.py").write_text(_HUBCONF)
    state = {"proj.weight": torch.randn(16, 3 * 224 * 224, generator=torch.Generator().manual_seed(1)) * 1e-3,
             "proj.bias": torch.randn(16, generator=torch.Generator().manual_seed(2))}
    torch.save(state, folder / "weights.pth")
    return str(folder), str(folder / "weights.pth")


def _tiny_clip(folder):
    """A tiny CLIP (ViT, 2 layers of width 64, patch 32 at 64×64, 16 features) as OpenAI ships it (a TorchScript
    archive) and as the documented conversion gives it (a state dict file)."""
    module = F._vision_module("feature_extractor_clip")
    torch.manual_seed(0)
    visual = module.CLIPVisual(16, 64, 2, 64, 32).visual

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = visual
            self.text_projection = torch.nn.Parameter(torch.randn(32, 16))

        def forward(self, x):
            return self.visual(x) @ self.text_projection.t()

    archive, state = os.path.join(folder, "tiny-clip.pt"), os.path.join(folder, "tiny-clip-state.pt")
    with warnings.catch_warnings():                   # TorchScript's deprecation and tracer warnings
        warnings.simplefilter("ignore")
        torch.jit.trace(Holder().eval(), torch.randn(1, 3, 64, 64)).save(archive)
        torch.save(torch.jit.load(archive, map_location="cpu").state_dict(), state)      # the one-line conversion
    return archive, state


def test_dinov2_features_equal_torch_fidelitys_and_the_stand_in_leaves(hub, tmp_path):
    folder, weights = hub
    had_torchvision = "torchvision" in sys.modules
    net = F.dinov2("dinov2-vit-s-14", repo=folder, weights=weights)
    if not had_torchvision:          # the stand-in is gone; a real torchvision (one that imports) may stay
        assert "torchvision" not in sys.modules or hasattr(sys.modules["torchvision"], "__file__")
    if not F._torchvision_imports():  # nor is the module that holds it, nor a package stub
        assert not any(m == "torch_fidelity" or m.endswith("feature_extractor_dinov2") for m in sys.modules)
    assert net.name == "dinov2-vit-s-14" and type(net.net).__name__ == "FeatureExtractorDinoV2"
    images = _images(5)
    torch.save(images, tmp_path / "images.pt")
    theirs = _theirs(_THEIR_DINOV2, folder, weights, tmp_path / "images.pt", tmp_path / "theirs.pt")
    ours = F.extract(net, images, batch_size=5)             # their batch: the same matrix products
    assert set(ours) == {"features"} and ours["features"].shape == (5, 16)
    assert torch.equal(ours["features"], theirs)
    # Grey images are their RGB expansion.
    grey = _images(3, channels=1, seed=3)
    torch.testing.assert_close(net(grey)["features"], net(grey.expand(-1, 3, -1, -1).contiguous())["features"],
                               rtol=0, atol=0)


def test_clip_features_equal_torch_fidelitys_from_the_converted_archive(tmp_path, monkeypatch):
    archive, state = _tiny_clip(str(tmp_path))
    with pytest.raises(ValueError, match="a ViT with 2 layers of width 64, patch 32 at 64×64 → 16 features, not "
                                         "clip-vit-b-32 \\(a ViT with 12 layers of width 768"):
        F.clip("clip-vit-b-32", weights=state)       # the name says another architecture
    monkeypatch.setitem(F.CLIP_ARCHITECTURES, "clip-vit-b-32", (2, 64, 32, 64, 16))
    net = F.clip("clip-vit-b-32", weights=state)
    assert net.name == "clip-vit-b-32"
    assert F._torchvision_imports() or "torch_fidelity.feature_extractor_clip" not in sys.modules
    images = _images(4, size=24)
    torch.save(images, tmp_path / "images.pt")
    theirs = _theirs(_THEIR_CLIP, archive, tmp_path / "images.pt", tmp_path / "theirs.pt")
    ours = F.extract(net, images)["features"]
    assert ours.shape == (4, 16)
    assert torch.equal(ours, theirs)
    grey = _images(2, channels=1, size=24, seed=5)
    assert torch.equal(net(grey)["features"], net(grey.expand(-1, 3, -1, -1).contiguous())["features"])


def test_the_torchvision_stand_in_normalizes_as_torchvision():
    """(x − mean_c) / std_c with mean and std cast to x's dtype first (torchvision's order of rounding)."""
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)) * 255
    mean, std = (255 * 0.485, 255 * 0.456, 255 * 0.406), (255 * 0.229, 255 * 0.224, 255 * 0.225)
    out = F._normalize(x, mean, std)
    expected = (x - torch.tensor(mean, dtype=torch.float32)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.equal(out, expected) and not torch.equal(out, x)
    assert F._normalize(x.double(), mean, std).dtype == torch.float64
    with pytest.raises(TypeError, match="float tensor"):
        F._normalize(x.to(torch.uint8), mean, std)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_weights_files_are_read_without_executing_them_and_checked(hub, tmp_path):
    folder, _ = hub
    evil = str(tmp_path / "evil.pth")
    torch.save({"proj.weight": _Payload()}, evil)
    for build in (lambda: F.dinov2("dinov2-vit-s-14", repo=folder, weights=evil),
                  lambda: F.clip("clip-vit-b-32", weights=evil)):
        with pytest.raises(ValueError, match="pickled Python objects, which are not read"):
            build()
    wrong = str(tmp_path / "wrong.pth")
    torch.save({"proj.weight": torch.zeros(8, 3 * 224 * 224), "head.bias": torch.zeros(8)}, wrong)
    with pytest.raises(ValueError, match="do not fit dinov2-vit-s-14: 1 entries missing \\(e.g. proj.bias\\), 1 "
                                         "unexpected \\(e.g. head.bias\\), 1 of another shape \\(e.g. proj.weight "
                                         "\\(8, 150528\\) vs \\(16, 150528\\)\\)"):
        F.dinov2("dinov2-vit-s-14", repo=folder, weights=wrong)
    with pytest.raises(ValueError, match="not a CLIP state dict"):
        F.clip("clip-vit-b-32", weights=wrong)
    with pytest.raises(ValueError, match="unknown DINOv2 extractor 'dinov2-vit-x-14'; choose from dinov2-vit-s-14"):
        F.dinov2("dinov2-vit-x-14", repo=folder, weights=wrong)
    with pytest.raises(ValueError, match="unknown CLIP extractor 'clip-vit-x'; choose from clip-rn50"):
        F.clip("clip-vit-x", weights=wrong)
    with pytest.raises(ValueError, match="not a clone of facebookresearch/dinov2"):
        F.dinov2("dinov2-vit-s-14", repo=str(tmp_path), weights=wrong)


def test_cli_fid_stats_and_evaluate_with_a_local_dinov2_hub(hub, tmp_path, capsys):
    folder, weights = hub
    F.save_png(_images(12, seed=10), str(tmp_path / "ref"))
    F.save_png(_images(12, seed=11), str(tmp_path / "gen"))
    ref = str(tmp_path / "ref.npz")
    dino = ["--extractor", "dinov2-vit-s-14", "--dinov2-repo", folder, "--weights", weights]
    assert main(["fid-stats", "--images", str(tmp_path / "ref"), "--out", ref, "--keep-features"] + dino) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["extractor"] == "dinov2-vit-s-14" and summary["feature_dim"] == 16
    assert F.load_reference(ref)["extractor"] == "dinov2-vit-s-14"
    evaluate = ["evaluate", "--images", str(tmp_path / "gen"), "--reference", ref, "--kid-subsets", "5"]
    assert main(evaluate + ["--metrics", "fid,kid"] + dino) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    net = F.dinov2("dinov2-vit-s-14", repo=folder, weights=weights)
    expected = fid(F.extract(net, F.read_images(str(tmp_path / "gen")))["features"],
                   F.extract(net, F.read_images(str(tmp_path / "ref")))["features"])
    assert record["fid"] == pytest.approx(expected, rel=1e-6) and np.isfinite(record["kid_mean"])
    assert record["extractor"] == "dinov2-vit-s-14"
    # The Inception score needs logits: refused in one line before anything is built.
    assert main(evaluate + ["--metrics", "fid,isc"] + dino) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only --extractor inception gives; dinov2-vit-s-14 gives features only" in err[0]
    # FD on another DINOv2 (here the same tiny network under ViT-B's name) against these statistics: refused.
    assert main(evaluate + ["--metrics", "fid", "--extractor", "dinov2-vit-b-14", "--dinov2-repo", folder,
                            "--weights", weights]) == 2
    assert "holds statistics of extractor 'dinov2-vit-s-14', not 'dinov2-vit-b-14'" in capsys.readouterr().err
    assert main(evaluate + ["--metrics", "fid", "--dinov2-repo", folder]) == 2
    assert "--dinov2-repo is for the DINOv2 extractors" in capsys.readouterr().err


def test_a_weights_file_of_pickled_objects_is_refused_with_what_to_save_instead(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"net": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(ValueError, match="pickled Python objects.*state_dict"):
        F._load_state(str(path), "DINOv2 weights")
    torch.save({"teacher": {"w": torch.zeros(1)}, "iteration": 5}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match="non-tensor entries 'teacher' \\(dict\\), 'iteration' \\(int\\)"):
        F._load_state(str(tmp_path / "nested.pth"), "DINOv2 weights")
