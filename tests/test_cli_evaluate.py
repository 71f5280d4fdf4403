"""`scoresde fid-stats` and `scoresde evaluate` with a tiny stand-in extractor (the pipeline, not Inception):
sharded sampling that resumes after a SIGTERM with bit-identical features, settings checked on resume, a run and a
folder of images evaluated with every metric, and bad input refused in one line."""
import json
import os
import signal

import numpy as np
import pytest
import torch

from scoresde.app import evaluate as ev
from scoresde.app.cli import main
from scoresde.evaluation import features as F
from scoresde.evaluation.image_metrics import fid


class TinyExtractor(torch.nn.Module):
    """uint8 (N, 3, H, W) → 4×4 average-pooled channels (48 features) and 10 fixed random logits."""

    name = "tiny"

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(48, 10)
        torch.nn.init.normal_(self.head.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, images):
        x = images.expand(-1, 3, -1, -1).float() / 255
        feats = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return {"features": feats, "logits": self.head(feats)}


def tiny_extractor(weights=None, device="cpu"):
    return TinyExtractor().to(device)


def _images(first_seed, count):
    """A stand-in sampler: a function of the seed only, as `sample_shards` requires."""
    gen = torch.Generator().manual_seed(first_seed)
    return F.to_uint8(torch.randn(count, 3, 8, 8, generator=gen).tanh()), 7


def test_an_interrupted_evaluation_resumes_with_bit_identical_features(tmp_path):
    net = TinyExtractor()
    whole = ev.sample_shards(str(tmp_path / "whole"), _images, net, (10, 33), 5, {"sampler": "x"})
    calls = []

    def sigterm_after_first(first_seed, count):
        calls.append(first_seed)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)             # preemption while the first shard is sampled
        return _images(first_seed, count)

    out = str(tmp_path / "resumed")
    with ev.StopOnSignal() as stop:
        with pytest.raises(ev.EvaluationInterrupted, match="stopped after shard 1 of 5") as info:
            ev.sample_shards(out, sigterm_after_first, net, (10, 33), 5, {"sampler": "x"}, stop=stop)
    assert info.value.signal == signal.SIGTERM and calls == [10]
    assert sorted(os.listdir(os.path.join(out, "shards"))) == ["shard_00000.pt"]
    resumed = ev.sample_shards(out, sigterm_after_first, net, (10, 33), 5, {"sampler": "x"})
    assert calls == [10, 15, 20, 25, 30] and resumed["resumed"] == 1
    assert torch.equal(resumed["features"], whole["features"]) and torch.equal(resumed["logits"], whole["logits"])
    assert resumed["features"].shape == (23, 48) and resumed["nfe"] == 7
    with pytest.raises(ValueError, match="other settings \\(sampler, seeds differ"):
        ev.sample_shards(out, _images, net, (0, 23), 5, {"sampler": "y"})
    again = ev.sample_shards(out, _images, net, (0, 23), 5, {"sampler": "y"}, overwrite=True)
    assert again["resumed"] == 0


def test_compute_metrics_warns_on_small_n_and_names_what_is_missing(tmp_path):
    feats = torch.from_numpy(np.random.RandomState(0).rand(40, 6)).float()
    F.save_reference(str(tmp_path / "mu.npz"), feats.numpy() + 0.1, "tiny")
    ref = F.load_reference(str(tmp_path / "mu.npz"))
    numbers, notes = ev.compute_metrics(feats, None, ref, ["fid"])
    assert numbers["fid"] == pytest.approx(fid(feats, feats + 0.1), rel=1e-6)
    assert "n = 40 samples is biased" in notes[0] and "n → ∞" in notes[0] and "fid_inf" in numbers
    with pytest.raises(ValueError, match="--keep-features"):
        ev.compute_metrics(feats, None, ref, ["kid"])
    with pytest.raises(ValueError, match="need reference statistics"):
        ev.compute_metrics(feats, None, None, ["fid", "prc"])
    with pytest.raises(ValueError, match="isc needs class logits"):
        ev.compute_metrics(feats, None, None, ["isc"])
    with pytest.raises(ValueError, match="choose from fid, kid, isc, prc"):
        ev.parse_metrics("fid,lpips")
    assert ev.parse_seeds("0-49999") == (0, 50000)


@pytest.mark.slow
def test_cli_fid_stats_and_evaluate_a_run_and_an_image_folder(tmp_path, capsys):
    run = str(tmp_path / "digits")
    assert main(["train", "--out", run, "--steps=2", "--batch_size=16", "--data.name=digits", "--model.hidden=8",
                 "--model.depth=1", "--progress=false", "--eval_every=0", "--device=cpu"]) == 0
    capsys.readouterr()
    ref = str(tmp_path / "digits.npz")
    tiny = "test_cli_evaluate:tiny_extractor"
    assert main(["fid-stats", "--data.name=digits", "--out", ref, "--extractor", tiny, "--keep-features"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 1497 and summary["image_size"] == [8, 8] and summary["extractor"] == "tiny"
    out = str(tmp_path / "eval")
    args = ["evaluate", "--checkpoint", run, "--n", "24", "--sampler", "ddim", "--steps=2", "--shard-size", "10",
            "--reference", ref, "--metrics", "fid,kid,isc,prc", "--extractor", tiny, "--out", out, "--device", "cpu"]
    assert main(args + ["--bpd", "--bpd-n", "4"]) == 0       # test-set bits/dim in the same line
    captured = capsys.readouterr()
    record = json.loads(captured.out.strip().splitlines()[-1])
    assert record["bpd_n"] == 4 and np.isfinite(record["bpd"]) and record["bpd_stderr"] > 0
    assert record["bpd_data"] == "test samples of digits" and record["seeding"] == "sample"
    for key in ("fid", "fid_inf", "kid_mean", "kid_std", "isc_mean", "isc_std", "precision", "recall"):
        assert np.isfinite(record[key]), key
    assert record["n"] == 24 and record["seeds"] == [0, 23] and record["nfe"] == 2 and record["extractor"] == "tiny"
    assert record["sampler"] == "ddim steps=2" and record["kid_subset_size"] == 24
    assert "biased upwards" in captured.err and len(os.listdir(os.path.join(out, "shards"))) == 3
    assert main(args) == 0                                    # everything on disk: nothing sampled again
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["resumed_shards"] == 3 and again["fid"] == record["fid"]
    # The same samples as PNG files give the same numbers (quantized before features either way).
    images = torch.cat([torch.load(os.path.join(out, "shards", f), weights_only=True)["images"]
                        for f in sorted(os.listdir(os.path.join(out, "shards")))])
    F.save_png(images, str(tmp_path / "png"))
    assert main(["evaluate", "--images", str(tmp_path / "png"), "--reference", ref, "--metrics", "fid",
                 "--extractor", tiny]) == 0
    folder = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert folder["fid"] == pytest.approx(record["fid"], rel=1e-9)
    # A reference of another extractor is refused in one line.
    F.save_reference(str(tmp_path / "other.npz"), np.random.RandomState(0).rand(10, 48), "inception-v3-compat")
    assert main(args[:-8] + ["--reference", str(tmp_path / "other.npz"), "--extractor", tiny, "--out", out]) == 2
    assert "holds statistics of extractor 'inception-v3-compat', not 'tiny'" in capsys.readouterr().err


def test_cli_evaluate_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    assert main(["evaluate", "--images", str(tmp_path), "--checkpoint", "x", "--extractor",
                 "test_cli_evaluate:tiny_extractor"]) == 2
    assert "exactly one of --checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "--images", str(tmp_path), "--extractor", "test_cli_evaluate:tiny_extractor"]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["fid-stats", "--out", str(tmp_path / "s.npz"), "--data.name=eight_gaussians", "--extractor",
                 "test_cli_evaluate:tiny_extractor"]) == 2
    assert "needs an image data set" in capsys.readouterr().err


def test_cli_evaluate_samples_a_vector_conditional_run_from_its_null(tmp_path, capsys):
    """A run conditioned on a vector (cond_dim) is evaluated unconditionally: its learned null embedding, one row
    shared by the batch, is the condition of every sample."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 8, 8, generator=g) * 2 - 1
    np.savez(tmp_path / "pairs.npz", x=x.numpy(), y=x.mean((1, 2, 3))[:, None].repeat(1, 3).numpy())
    run = str(tmp_path / "vector")
    assert main(["train", "--out", run, "--steps=2", "--batch_size=8", "--data.name=array", "--data.key=x",
                 f"--data.path={tmp_path / 'pairs.npz'}", "--data.cond_key=y", "--model.cond_dim=3",
                 "--progress=false", "--eval_every=0", "--sample_every=0", "--device=cpu"]) == 0
    capsys.readouterr()
    out = str(tmp_path / "eval")
    assert main(["evaluate", "--checkpoint", run, "--n", "4", "--sampler", "ddim", "--steps=2", "--metrics", "isc",
                 "--extractor", "test_cli_evaluate:tiny_extractor", "--out", out, "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["n"] == 4 and np.isfinite(record["isc_mean"])


def test_features_of_other_weights_under_the_same_name_are_not_mixed(tmp_path):
    """The extractor's weights are fingerprinted (SHA-256 of its state dict) into the manifest and the reference:
    resuming an evaluation, or comparing with a reference, under other weights of the same extractor is refused;
    a manifest written before the record resumes."""
    net, other = TinyExtractor(), TinyExtractor()
    with torch.no_grad():
        other.head.weight.add_(1.0)
    assert F.weights_fingerprint(net) == F.weights_fingerprint(TinyExtractor())      # the same weights, the same id
    assert F.weights_fingerprint(net) != F.weights_fingerprint(other)
    out = str(tmp_path / "eval")
    ev.sample_shards(out, _images, net, (0, 6), 3, {"sampler": "x"})
    with pytest.raises(ValueError, match="extractor_weights differ"):
        ev.sample_shards(out, _images, other, (0, 6), 3, {"sampler": "x"})
    manifest = os.path.join(out, ev.MANIFEST)
    with open(manifest) as fh:
        old = {k: v for k, v in json.load(fh).items() if k != "extractor_weights"}
    with open(manifest, "w") as fh:
        json.dump(old, fh)
    assert ev.sample_shards(out, _images, other, (0, 6), 3, {"sampler": "x"})["resumed"] == 2
    ref = str(tmp_path / "ref.npz")
    F.save_reference(ref, np.random.RandomState(0).rand(10, 48), "tiny", weights=F.weights_fingerprint(net))
    assert F.load_reference(ref, extractor="tiny", weights=F.weights_fingerprint(net))["weights"] is not None
    with pytest.raises(ValueError, match="with other weights"):
        F.load_reference(ref, extractor="tiny", weights=F.weights_fingerprint(other))


def test_cli_evaluate_bpd_of_a_vector_conditional_run_uses_its_null(tmp_path, capsys):
    """--bpd of a run conditioned on a vector: the test points' −log p(x) under the learned null, as `likelihood`."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 8, 8, generator=g) * 2 - 1
    np.savez(tmp_path / "pairs.npz", x=x.numpy(), y=x.mean((1, 2, 3))[:, None].repeat(1, 3).numpy())
    run = str(tmp_path / "vector")
    assert main(["train", "--out", run, "--steps=2", "--batch_size=8", "--data.name=array", "--data.key=x",
                 f"--data.path={tmp_path / 'pairs.npz'}", "--data.cond_key=y", "--data.test_fraction=0.25",
                 "--model.cond_dim=3", "--progress=false", "--eval_every=0", "--sample_every=0", "--device=cpu"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", run, "--n", "2", "--sampler", "ddim", "--steps=2", "--metrics", "isc",
                 "--extractor", "test_cli_evaluate:tiny_extractor", "--out", str(tmp_path / "eval"), "--device", "cpu",
                 "--bpd", "--bpd-n", "2"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["bpd_n"] == 2 and np.isfinite(record["bpd"])
