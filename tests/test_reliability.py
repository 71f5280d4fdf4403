"""Nothing lost, nothing silent (training and the command line): preemption by a real signal, refusing to
overwrite a run, resuming from the run's own config, validating a checkpoint before loading it, clean
checkpoint files, data files from the CLI, and one-line errors for faults that used to raise tracebacks."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

import scoresde as sd
from scoresde.app.cli import main

SMALL = ["--batch_size=32", "--data.n=256", "--progress=false", "--model.hidden=16", "--model.depth=1",
         "--model.time_embedding_dim=8", "--log_every=5", "--device=cpu"]


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def _step(out):
    return torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["step"]


def _start_training(out, *extra, torchrun=False):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun \
        else [sys.executable]
    cmd = head + ["-m", "scoresde", "train", "--out", out, "--steps=10000000", "--checkpoint_every=0"] + SMALL
    proc = subprocess.Popen(cmd + list(extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (os.path.isfile(os.path.join(out, "metrics.jsonl")) and _records(out)):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.1)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume(tmp_path, sig):
    out = str(tmp_path / "run")
    proc = _start_training(out)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name}" in err and "--resume" in err
    stopped = _step(out)
    assert stopped > 0 and stopped >= _records(out)[-1]["step"]
    # The resumed run starts at that step and its log does not repeat the steps after it.
    assert main(["train", "--out", out, "--resume", f"--steps={stopped + 7}"] + SMALL) == 0
    steps = [r["step"] for r in _records(out)]
    assert _step(out) == stopped + 7 and steps == sorted(steps) and len(steps) == len(set(steps))


@pytest.mark.slow
def test_sigterm_under_torchrun_stops_every_rank_cleanly(tmp_path):
    out = str(tmp_path / "ddp")
    proc = _start_training(out, torchrun=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)                 # torchrun forwards it to both ranks
    _, err = proc.communicate(timeout=120)
    assert "stopped by SIGTERM" in err, err[-3000:]
    assert _step(out) > 0
    assert main(["train", "--out", out, "--resume", f"--steps={_step(out) + 2}"] + SMALL) == 0


def test_a_second_run_into_the_same_folder_is_refused_unless_asked(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, "--steps=10"] + SMALL) == 0
    before = open(os.path.join(out, "checkpoint.pt"), "rb").read()
    assert main(["train", "--out", out, "--steps=5"] + SMALL) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert open(os.path.join(out, "checkpoint.pt"), "rb").read() == before and _records(out)[-1]["step"] == 10
    assert main(["train", "--out", out, "--steps=5", "--overwrite"] + SMALL) == 0
    assert _step(out) == 5 and [r["step"] for r in _records(out)] == [5]


def test_resume_uses_the_runs_config_and_refuses_what_cannot_change(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, "--steps=10", "--sde.name=subvp"] + SMALL) == 0
    config_before = open(os.path.join(out, "config.yaml")).read()
    # A different architecture is refused before anything is written.
    assert main(["train", "--out", out, "--resume", "--steps=20", "--model.hidden=32"] + SMALL[:3]) == 2
    err = capsys.readouterr().err
    assert "model.hidden" in err and "cannot change" in err
    assert open(os.path.join(out, "config.yaml")).read() == config_before
    # Leaving out the original flags is fine: the run's own config is the base.
    assert main(["train", "--out", out, "--resume", "--steps=20"]) == 0
    cfg = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert cfg["sde"]["name"] == "subvp" and cfg["model"]["hidden"] == 16 and _step(out) == 20
    assert main(["sample", "--checkpoint", os.path.join(out, "checkpoint.pt"), "--steps=3", "--n", "8",
                 "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0


def test_trainer_resume_validates_everything_before_loading_anything(tmp_path):
    torch.manual_seed(0)
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, time_embedding_dim=8), sde)
    data = sd.data.load("eight_gaussians", n=64)
    config = sd.TrainConfig(steps=3, batch_size=16, progress=False, out_dir=str(tmp_path))
    sd.Trainer(model, sde, data, config).train()
    torch.manual_seed(1)
    fresh = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, time_embedding_dim=8), sde)
    weights = {k: v.clone() for k, v in fresh.state_dict().items()}
    other = sd.TrainConfig(steps=3, batch_size=8, progress=False, out_dir=str(tmp_path))   # may change on resume
    trainer = sd.Trainer(fresh, sde, data.batches(8, fresh=False), other)                 # this may not
    with pytest.raises(ValueError, match="fresh=True.*this run has fresh=False"):
        trainer.resume()
    assert trainer.global_step == 0
    assert all(torch.equal(weights[k], v) for k, v in fresh.state_dict().items())      # nothing half-loaded


def test_checkpoint_files_are_clean(tmp_path):
    from scoresde.training import save_checkpoint

    orphan = tmp_path / "checkpoint.pt.abc123.tmp"          # what a write killed mid-way leaves
    orphan.write_bytes(b"partial")
    path = save_checkpoint({"format": "x"}, str(tmp_path / "checkpoint.pt"))
    assert not orphan.exists() and os.listdir(tmp_path) == ["checkpoint.pt"]
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_the_cli_trains_on_user_arrays_and_image_folders(tmp_path):
    g = np.random.default_rng(0)
    np.save(tmp_path / "points.npy", g.normal(size=(200, 2)).astype(np.float32))
    np.savez(tmp_path / "two.npz", a=g.normal(size=(200, 2)).astype(np.float32), b=np.zeros((3, 3)))
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(g.integers(0, 256, size=(8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    common = ["--steps=3", "--batch_size=8", "--progress=false", "--device=cpu"]
    assert main(["train", "--out", str(tmp_path / "r1"), f"--data.name={tmp_path / 'points.npy'}"] + common) == 0
    assert main(["train", "--out", str(tmp_path / "r2"), f"--data.name={tmp_path / 'two.npz'}", "--data.key=a",
                 "--data.test_fraction=0.1", "--eval_every=3", "--num_eval=8"] + common) == 0
    assert "nll" in _records(str(tmp_path / "r2"))[-1]
    assert main(["train", "--out", str(tmp_path / "r3"), f"--data.name={folder}", "--model.net=unet",
                 "--model.channels=8"] + common) == 0
    assert yaml.safe_load(open(tmp_path / "r2" / "config.yaml"))["data"]["key"] == "a"


@pytest.fixture
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "run")
    assert main(["train", "--out", out, "--steps=3"] + SMALL) == 0
    return out


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoints(folder):
    """(name, bytes) of files that are not checkpoints: truncated, empty, garbage, and a pickle that runs code."""
    good = open(os.path.join(folder, "checkpoint.pt"), "rb").read()
    marker = os.path.join(folder, "EXECUTED")
    malicious = os.path.join(folder, "malicious.pt")
    torch.save({"format": "scoresde.checkpoint/1", "model": _RunsCode(marker)}, malicious)
    return [("truncated", good[: len(good) // 2]), ("empty", b""), ("garbage", os.urandom(4096)),
            ("malicious", open(malicious, "rb").read())], marker


def test_bad_checkpoints_are_refused_in_one_line_without_running_anything(run, capsys):
    cases, marker = _bad_checkpoints(run)
    for name, payload in cases:
        bad = os.path.join(run, f"{name}.pt")
        with open(bad, "wb") as fh:
            fh.write(payload)
        import shutil

        folder = os.path.join(run, name)
        os.makedirs(folder, exist_ok=True)
        shutil.copy(os.path.join(run, "config.yaml"), folder)
        shutil.copy(bad, os.path.join(folder, "checkpoint.pt"))
        assert main(["sample", "--checkpoint", os.path.join(folder, "checkpoint.pt"), "--n", "4", "--out",
                     os.path.join(run, "s")]) == 2, name
        err = capsys.readouterr().err
        assert "not a valid scoresde checkpoint" in err and "Traceback" not in err, (name, err)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr=abc"], "lr must be a positive number; got 'abc' (str)"),
    (["train", "--sde.beta_max=abc"], "sde: beta_max must be a number; got 'abc' (str)"),
    (["train", "--data.n=abc"], "data: n must be an integer or null; got 'abc' (str)"),
    (["train", "--train.adam_betas=0.5"], "adam_betas must be a pair"),
    (["train", "--device=gpu"], "unknown device 'gpu'; available here: cpu"),
    (["train", "--lr=1e10", "--steps=200", "--grad_clip=null"] + SMALL[:3], "non-finite"),
])
def test_faults_are_one_line_errors(argv, message, tmp_path, capsys):
    assert main(argv[:1] + ["--out", str(tmp_path / "r")] + argv[1:]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_more_faults_are_one_line_errors(run, tmp_path, capsys, monkeypatch):
    ckpt = os.path.join(run, "checkpoint.pt")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    section = tmp_path / "scalar.yaml"
    section.write_text("train: 5\n")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        (["sample", "--checkpoint", ckpt, "--device", "cuda"] if not torch.cuda.is_available() else None,
         "device 'cuda' is not available here"),
        (["sample", "--checkpoint", ckpt, "--out", str(a_file)], "is an existing file"),
        (["train", "--out", str(a_file)], "is an existing file"),
        (["train", "--out", str(a_file / "sub"), "--steps=2"] + SMALL, "Not a directory"),
        (["likelihood", "--checkpoint", ckpt, "--n", "0"], "--n must be a positive integer"),
        (["likelihood", "--checkpoint", ckpt, "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["train", "--config", str(section)], "config section 'train' must be a mapping"),
        (["train", "--out", str(tmp_path / "z"), f"--data.name={corrupt}"], "corrupt.npz"),
    ]
    for argv, message in cases:
        if argv is None:
            continue
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
    # A full disk while the checkpoint is written: one line, and the previous checkpoint is intact.
    before = open(ckpt, "rb").read()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("scoresde.training.checkpoint.torch.save", full)
    assert main(["train", "--out", run, "--resume", "--steps=6"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert open(ckpt, "rb").read() == before and [f for f in os.listdir(run) if f.endswith(".tmp")] == []


def test_an_atomic_write_removes_only_its_own_leftovers(tmp_path):
    """A killed write of ``ref`` leaves ``ref.<random>.tmp``, removed by the next write of ``ref``; another file's
    in-flight temporary (``ref.npz.<random>.tmp``) is not touched."""
    from scoresde._utils import write_atomically

    (tmp_path / "ref.abc123.tmp").write_text("killed")
    (tmp_path / "ref.npz.t9rrqi2e.tmp").write_text("in flight")
    write_atomically(str(tmp_path / "ref"), lambda fh: fh.write("new"), binary=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref", "ref.npz.t9rrqi2e.tmp"]
    assert (tmp_path / "ref").read_text() == "new"
