"""`scoresde evaluate --from score_sde_pytorch|edm` on the tiny committed fixtures (8×8 images), per-sample seeds
(sample i from seed i, whatever the shard size) and ``--bpd`` in the same JSON line; the extractor is
test_cli_evaluate's stand-in, so nothing is downloaded."""
import json
import os

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.app import evaluate as ev
from scoresde.app.cli import main
from scoresde.evaluation import features as F
from scoresde.interop import from_denoiser

DATA = os.path.join(os.path.dirname(__file__), "data")
TINY = "test_cli_evaluate:tiny_extractor"
THEIRS = os.path.join(DATA, "score_sde_pytorch", "ncsnpp_ddpmblock_res_inskip_cat")   # uncentered: [0, 1]
EDM_COND = os.path.join(DATA, "edm", "edm_songunet_ncsnpp_cond_aug9.pkl.gz")


def _shard_images(out):
    names = sorted(os.listdir(os.path.join(out, "shards")))
    return torch.cat([torch.load(os.path.join(out, "shards", f), weights_only=True)["images"] for f in names])


def _reference(tmp_path):
    path = str(tmp_path / "ref.npz")
    F.save_reference(path, np.random.RandomState(0).rand(30, 48), "tiny", image_size=(8, 8))
    return path


def test_per_sample_seeds_name_the_samples_whatever_the_shard_size():
    sde = sd.VPSDE()
    score = lambda x, t: -x                  # N(0, I) data: every VP marginal is N(0, I), its score −x
    sampler = sd.SAMPLERS.build("ddim", steps=3)
    make = ev.sample_images(sde, score, (3, 8, 8), sampler, data_range=(-1.0, 1.0))
    whole, nfe = make(5, 6)
    parts = torch.cat([make(5, 4)[0], make(9, 2)[0]])
    alone = make(7, 1)[0]
    assert nfe == 3 and whole.dtype == torch.uint8 and whole.shape == (6, 3, 8, 8)
    assert (whole.int() - parts.int()).abs().max() <= 1          # batched float arithmetic may round one level
    assert (whole[2:3].int() - alone.int()).abs().max() <= 1
    # sample i starts at the prior draw of seed i (a CPU generator), as EDM's generate.py seeds its latents
    x_T = sde.prior_sample((1, 3, 8, 8), generator=torch.Generator().manual_seed(7))
    direct = sampler.sample(sde, score, (1, 3, 8, 8), x_T=x_T).x
    assert torch.equal(alone, F.to_uint8(direct, (-1.0, 1.0)))
    shard = ev.sample_images(sde, score, (3, 8, 8), sampler, seeding="shard")
    assert not torch.equal(shard(5, 6)[0], whole)
    # a stochastic sampler too: its path noise comes from the per-sample generators
    noisy = ev.sample_images(sde, score, (3, 8, 8), sd.SAMPLERS.build("ddim", steps=3, eta=1.0))
    whole_noisy = noisy(5, 6)[0]
    assert (whole_noisy.int() - torch.cat([noisy(5, 4)[0], noisy(9, 2)[0]]).int()).abs().max() <= 1
    assert not torch.equal(whole_noisy, whole)                    # the noise is there
    with pytest.raises(ValueError, match="seeding must be one of sample, shard"):
        ev.sample_images(sde, score, (3, 8, 8), sampler, seeding="batch")


def test_evaluate_from_score_sde_pytorch_maps_their_0_1_samples_to_pixels(tmp_path, capsys):
    ref, out = _reference(tmp_path), str(tmp_path / "eval")
    args = ["evaluate", "--from", "score_sde_pytorch", "--checkpoint", THEIRS + ".pth", "--config", THEIRS + ".json",
            "--n", "5", "--sampler", "ddim", "--steps=2", "--shard-size", "3", "--reference", ref, "--metrics", "fid",
            "--extractor", TINY, "--out", out, "--device", "cpu"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["from"] == "score_sde_pytorch" and record["n"] == 5 and record["nfe"] == 2
    assert record["seeding"] == "sample" and np.isfinite(record["fid"])
    sde, model = sd.from_score_sde_pytorch(THEIRS + ".pth", config=json.load(open(THEIRS + ".json")), ema=True)
    assert model.data_range == (0.0, 1.0)
    sampler = sd.SAMPLERS.build("ddim", steps=2)
    x_T = torch.cat([sde.prior_sample((1, 3, 8, 8), generator=torch.Generator().manual_seed(i)) for i in range(3)])
    x = sampler.sample(sde, model, (3, 3, 8, 8), x_T=x_T, generator=torch.Generator().manual_seed(0)).x
    expected = F.to_uint8(x, (0.0, 1.0))                              # [0, 1] → pixels, not [−1, 1]
    assert (_shard_images(out)[:3].int() - expected.int()).abs().max() <= 1   # another batch: a level at most
    first = _shard_images(out)
    os.remove(os.path.join(out, "shards", "shard_00001.pt"))        # as if preempted after the first shard
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["resumed_shards"] == 1 and again["fid"] == record["fid"] and torch.equal(_shard_images(out), first)
    assert main(args + ["--seeding", "shard"]) == 2                  # the manifest holds the seeding
    assert "seeding 'sample' there, 'shard' now" in capsys.readouterr().err
    assert main(args[:5] + ["--n", "2", "--extractor", TINY, "--out", str(tmp_path / "x")]) == 2
    assert "needs --config" in capsys.readouterr().err


def test_evaluate_from_edm_draws_a_label_per_seed_and_ends_at_their_eps(tmp_path, capsys):
    out = str(tmp_path / "edm")
    args = ["evaluate", "--from", "edm", "--checkpoint", EDM_COND, "--seeds", "3-6", "--sampler", "heun",
            "--steps=2", "--shard-size", "2", "--metrics", "isc", "--extractor", TINY, "--out", out, "--device", "cpu"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sde, score = sd.from_edm(EDM_COND)
    info = score.edm
    assert record["from"] == "edm" and record["seeds"] == [3, 6] and record["label_dim"] == info.label_dim > 0
    assert f"eps={info.eps}" in record["sampler"] and np.isfinite(record["isc_mean"])
    sampler = sd.SAMPLERS.build("heun", steps=2, eps=info.eps)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    x_T = torch.cat([sde.prior_sample((1,) + tuple(info.shape), generator=g) for g in gens])
    labels = torch.cat([torch.randint(info.label_dim, (1,), generator=g) for g in gens])
    x = sampler.sample(sde, from_denoiser(info.denoiser, sde, cond=labels), (2,) + tuple(info.shape), x_T=x_T).x
    assert torch.equal(_shard_images(out)[:2], F.to_uint8(x, (-1.0, 1.0)))
    assert main(args[:-2] + ["--out", str(tmp_path / "b"), "--bpd"]) == 2
    assert "--bpd is not available for --from edm" in capsys.readouterr().err


def test_evaluate_bpd_of_a_score_sde_pytorch_checkpoint_by_their_protocol(tmp_path, capsys):
    images = torch.from_numpy(np.random.RandomState(0).randint(0, 256, (4, 3, 8, 8))).to(torch.uint8)
    F.save_png(images, str(tmp_path / "data" / "test"))              # a folder with a test/ split
    args = ["evaluate", "--from", "score_sde_pytorch", "--checkpoint", THEIRS + ".pth", "--config", THEIRS + ".json",
            "--n", "2", "--sampler", "ddim", "--steps=2", "--metrics", "isc", "--extractor", TINY, "--out",
            str(tmp_path / "eval"), "--device", "cpu", "--bpd", "--bpd-n", "3", "--bpd-repeats", "1",
            "--data.name=image_folder", f"--data.path={tmp_path / 'data'}", "--data.mode=RGB"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["bpd_n"] == 3 and record["bpd_protocol"] == "score_sde_pytorch" and record["bpd_repeats"] == 1
    assert np.isfinite(record["bpd"]) and record["bpd_stderr"] > 0
    # the same number as their protocol called directly on the same images with the same generator
    _, model = sd.from_score_sde_pytorch(THEIRS + ".pth", config=json.load(open(THEIRS + ".json")), continuous=True)
    data = sd.data.load("image_folder", split="test", path=str(tmp_path / "data"), mode="RGB")
    res = sd.zoo.score_sde_pytorch.bits_per_dim(model, data, n=3, batch_size=100, repeats=1,
                                                generator=torch.Generator().manual_seed(0))
    assert record["bpd"] == pytest.approx(res.bpd, rel=1e-9)
    assert main(args[:-3] + ["--out", str(tmp_path / "e2")]) == 2
    assert "needs the test data: --data.name" in capsys.readouterr().err
