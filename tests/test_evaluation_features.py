"""Features for the image metrics: 8-bit quantization equal to a PNG round trip, reference files (ours and
pytorch-fid's layout; another extractor or resolution refused), and torch-fidelity's Inception loaded without its
package ``__init__`` from a weights file read with ``weights_only=True`` (random weights: nothing is downloaded)."""
import importlib.util
import os

import numpy as np
import pytest
import torch

from scoresde.evaluation import features as F
from scoresde.evaluation.image_metrics import fid, inception_score, kid
from helpers import TORCH_FIDELITY_IMPORT

HAS_TORCH_FIDELITY = importlib.util.find_spec("torch_fidelity") is not None
needs_torch_fidelity = pytest.mark.skipif(not HAS_TORCH_FIDELITY, reason="torch-fidelity is not installed "
                                          "(pip install scoresde[metrics])")


def _full_torch_fidelity():
    """torch_fidelity's package (its __init__ imports torchvision, which fails with PyPI's build on a CPU torch)."""
    try:
        import torch_fidelity
        return torch_fidelity
    except Exception as err:  # ImportError, or torchvision's RuntimeError (operator torchvision::nms)
        pytest.skip(f"torch_fidelity's package does not import here ({type(err).__name__}: {str(err)[:80]})")


def test_to_uint8_inverts_the_loaders_and_equals_a_png_round_trip(tmp_path):
    v = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = v.float() / 255 * 2 - 1                           # what every 8-bit loader gives
    assert torch.equal(F.to_uint8(x), v)
    assert torch.equal(F.to_uint8((x + 1) / 2, data_range=(0, 1)), v)
    gen = torch.Generator().manual_seed(0)
    samples = torch.randn(5, 3, 6, 7, generator=gen) * 0.7           # outside [-1, 1] too: clipped
    u8 = F.to_uint8(samples)
    edm = (samples * 127.5 + 128).clip(0, 255).to(torch.uint8)      # EDM's generate.py
    assert (u8.int() - edm.int()).abs().max() <= 1 and (u8 != edm).float().mean() < 0.01   # ties only
    F.save_png(u8, str(tmp_path / "rgb"))
    assert torch.equal(F.read_images(str(tmp_path / "rgb")), u8)
    grey = F.to_uint8(samples[:, :1])
    F.save_png(grey, str(tmp_path / "grey"))
    assert torch.equal(F.read_images(str(tmp_path / "grey")), grey.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="first is sample 2"):
        F.to_uint8(torch.where(torch.arange(5)[:, None, None, None] == 2, float("nan"), samples))


def test_read_images_refuses_mixed_sizes_and_empty_folders(tmp_path):
    F.save_png(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), str(tmp_path / "a"))
    F.save_png(torch.zeros(1, 3, 5, 4, dtype=torch.uint8), str(tmp_path / "a"), start=1)
    with pytest.raises(ValueError, match="different sizes"):
        F.read_images(str(tmp_path / "a"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no images"):
        F.read_images(str(tmp_path / "empty"))


def test_reference_files_round_trip_and_refuse_another_extractor_or_resolution(tmp_path):
    feats = np.random.RandomState(0).randn(50, 8)
    path = F.save_reference(str(tmp_path / "ref.npz"), feats, "tiny", image_size=(32, 32), keep_features=True)
    ref = F.load_reference(path, extractor="tiny", image_size=(32, 32), feature_dim=8)
    assert ref["n"] == 50 and ref["extractor"] == "tiny" and ref["image_size"] == (32, 32)
    np.testing.assert_allclose(ref["mu"], feats.mean(0))
    np.testing.assert_allclose(ref["sigma"], np.cov(feats, rowvar=False))
    np.testing.assert_array_equal(ref["features"], feats.astype(np.float32))
    with pytest.raises(ValueError, match="extractor 'tiny', not 'inception-v3-compat'"):
        F.load_reference(path, extractor=F.INCEPTION)
    with pytest.raises(ValueError, match="32×32 images, not 64×64"):
        F.load_reference(path, extractor="tiny", image_size=(64, 64))
    # pytorch-fid's / EDM's layout: only mu and sigma; accepted, checked on the dimension.
    np.savez(tmp_path / "theirs.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    theirs = F.load_reference(str(tmp_path / "theirs.npz"), extractor=F.INCEPTION, image_size=(32, 32))
    assert theirs["extractor"] is None and theirs["features"] is None
    with pytest.raises(ValueError, match="8-dimensional statistics; this extractor gives 2048"):
        F.load_reference(str(tmp_path / "theirs.npz"), feature_dim=2048)
    np.savez(tmp_path / "bad.npz", mean=feats.mean(0))
    with pytest.raises(ValueError, match="lacks mu, sigma"):
        F.load_reference(str(tmp_path / "bad.npz"))


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_weights_file_holding_code_is_refused(tmp_path):
    path = str(tmp_path / "evil.pth")
    torch.save({"w": _Payload()}, path)
    with pytest.raises(ValueError, match="pickled Python objects, which are not read"):
        F.inception(weights=path)
    with pytest.raises(ValueError, match="do not exist"):
        F.inception(weights=str(tmp_path / "missing.pth"))


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    if not HAS_TORCH_FIDELITY:
        pytest.skip("torch-fidelity is not installed (pip install scoresde[metrics])")
    return F.random_inception_weights(str(tmp_path_factory.mktemp("incep") / "random.pth"), seed=0)


@needs_torch_fidelity
@pytest.mark.slow
def test_torch_fidelitys_inception_runs_without_its_package_init(random_weights):
    import sys

    net = F.inception(weights=random_weights)
    assert "torch_fidelity" not in sys.modules or hasattr(sys.modules["torch_fidelity"], "calculate_metrics")
    assert net.name == "inception-v3-compat"
    images = torch.randint(0, 256, (3, 1, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = F.extract(net, images, batch_size=2)
    assert out["features"].shape == (3, 2048) and out["logits"].shape == (3, 1008)
    assert torch.isfinite(out["features"]).all() and out["features"].std(0).mean() > 0
    state = torch.load(random_weights, weights_only=True)
    assert all(torch.equal(v, state[k]) for k, v in net.net.state_dict().items())
    # Grey images are the RGB image with three equal channels.
    again = F.extract(net, images.expand(-1, 3, -1, -1).contiguous(), batch_size=3)
    torch.testing.assert_close(again["features"], out["features"], rtol=1e-5, atol=1e-6)


#: torch-fidelity's calculate_metrics in a child process (with the tests' torchvision stand-in where PyPI's
#: torchvision does not import with a CPU torch: helpers.TORCH_FIDELITY_IMPORT; everything from reading the PNGs to
#: the Fréchet distance is torch-fidelity's code).
_THEIR_FID = TORCH_FIDELITY_IMPORT + """
import json
out = torch_fidelity.calculate_metrics(input1=sys.argv[1], input2=sys.argv[2], fid=True, kid=True, isc=True,
                                       kid_subset_size=12, kid_subsets=5, cuda=False, verbose=False, cache=False,
                                       feature_extractor_weights_path=sys.argv[3])
print(json.dumps({k: float(v) for k, v in out.items()}))
"""


@needs_torch_fidelity
@pytest.mark.slow
def test_our_metrics_equal_torch_fidelitys_calculate_metrics_on_the_same_folders(random_weights, tmp_path):
    """Our FID, KID and Inception score of two PNG folders equal torch-fidelity's calculate_metrics on the same
    folders with the same (random) Inception weights: the same network, image reading, statistics. FID to 1e-4
    relative (float32 features reduced in another order; measured 1.2e-7)."""
    import json
    import subprocess
    import sys

    gen = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (24, 3, 32, 32), generator=gen, dtype=torch.uint8)
    b = (a.float() * 0.7 + 40).round().to(torch.uint8)
    F.save_png(a, str(tmp_path / "a"))
    F.save_png(b, str(tmp_path / "b"))
    proc = subprocess.run([sys.executable, "-c", _THEIR_FID, str(tmp_path / "a"), str(tmp_path / "b"),
                           random_weights], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    net = F.inception(weights=random_weights)
    ours_a = F.extract(net, F.read_images(str(tmp_path / "a")))
    ours_b = F.extract(net, F.read_images(str(tmp_path / "b")))
    assert fid(ours_a["features"], ours_b["features"]) == pytest.approx(theirs["frechet_inception_distance"],
                                                                        rel=1e-4)
    # The same subsets (numpy RandomState(2020), as theirs) and splits: KID's kernel sums run in float32 there
    # (F = 2048 products per entry: ~√F u ≈ 5e-6 relative per entry), its std over 5 subsets is a difference of
    # close numbers (1e-3); the Inception score's softmax and logs agree to 1e-6.
    kid_mean, kid_std = kid(ours_a["features"], ours_b["features"], subsets=5, subset_size=12)
    assert kid_mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert kid_std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-3)
    isc_mean, isc_std = inception_score(ours_a["logits"], splits=10)
    assert isc_mean == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert isc_std == pytest.approx(theirs["inception_score_std"], rel=1e-3)
