"""Run configs: component sections checked against the registries, resolved defaults in config.yaml, override
order, user classes by import path, and runs written before the registries."""
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

import scoresde as sd
from scoresde.app.cli import main
from scoresde.app.config import ConfigError, RunConfig, build_data, build_model, build_sde, load_config

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy_run")


@pytest.fixture
def legacy_run(tmp_path):
    out = tmp_path / "legacy"
    shutil.copytree(LEGACY, out)
    return str(out)


def test_a_run_written_before_the_registries_loads_and_scores_the_same(legacy_run):
    run = sd.load(os.path.join(legacy_run, "checkpoint.pt"))
    sde, model, cfg, shape = run.sde, run.model, run.config, run.sample_shape
    assert isinstance(sde, sd.VPSDE) and shape == (2,)
    assert cfg.model["net"] == "mlp" and cfg.model["hidden"] == 16 and "channels" not in cfg.model
    assert cfg.sde == {"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "T": 1.0}
    ref = np.load(os.path.join(legacy_run, "expected_score.npz"))
    with torch.no_grad():
        score = model(torch.from_numpy(ref["x"]), torch.from_numpy(ref["t"]))
    # The same weights and float32 arithmetic in another order (another CPU's kernels): a first-order worst case of
    # the MLP's roundings, (n + 1) u ‖W‖‖h‖ per layer, amplified by 1/σ(t) at t = 1e-3, is 4e-4 relative to
    # 1 + |score|; 10× that. Weights loaded into the wrong places change the score by O(1).
    torch.testing.assert_close(score, torch.from_numpy(ref["score"]), rtol=5e-3, atol=5e-3)


def test_a_legacy_run_samples_and_resumes_from_the_command_line(legacy_run, tmp_path):
    ckpt = os.path.join(legacy_run, "checkpoint.pt")
    assert main(["sample", "--checkpoint", ckpt, "--sampler", "heun", "--steps=4", "--n", "20",
                 "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    assert np.load(str(tmp_path / "s" / "samples.npz"))["x"].shape == (20, 2)
    legacy = yaml.safe_load(open(os.path.join(legacy_run, "config.yaml")))
    legacy["train"]["out_dir"] = legacy_run
    path = tmp_path / "legacy.yaml"
    path.write_text(yaml.safe_dump(legacy))
    assert main(["train", "--config", str(path), "--resume", "--steps=25"]) == 0
    assert torch.load(ckpt, weights_only=True)["step"] == 25


def test_config_yaml_records_the_resolved_component_defaults(tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, "--steps=2", "--batch_size=8", "--data.n=32", "--progress=false",
                 "--model.hidden=8", "--model.depth=1", "--device=cpu", "--sde.name=ve"]) == 0
    cfg = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert cfg["sde"] == {"name": "ve", "sigma_min": 0.01, "sigma_max": 50.0, "T": 1.0, "grid": 1024}
    assert cfg["model"]["net"] == "mlp" and cfg["model"]["hidden"] == 8 and cfg["model"]["fourier_scale"] == 1.0
    assert "dim" not in cfg["model"] and "channels" not in cfg["model"]
    assert cfg["data"]["name"] == "eight_gaussians" and cfg["data"]["n"] == 32 and "dtype" not in cfg["data"]
    # The written config reads back to the same run.
    again = RunConfig.from_dict({k: v for k, v in cfg.items() if k != "sample_shape"})
    assert again.to_dict() == {k: v for k, v in cfg.items() if k != "sample_shape"}


def test_component_options_are_checked_against_the_constructor():
    with pytest.raises(ConfigError, match=r"sde: unknown option\(s\) beta_max for sde 've'; valid options: "
                                          r"sigma_min, sigma_max, T, grid"):
        load_config(None, [("sde.name", "ve"), ("sde.beta_max", 3.0)])
    with pytest.raises(ConfigError, match=r"unknown option\(s\) channels for model 'mlp'; valid options: hidden"):
        load_config(None, [("model.channels", 8)])
    with pytest.raises(ConfigError, match="dim cannot be set in a config"):
        load_config(None, [("model.dim", 3)])
    with pytest.raises(ConfigError, match="unknown net 'resnet'; valid choices: 'mlp', 'unet'"):
        load_config(None, [("model.net", "resnet")])


def test_name_overrides_apply_first_and_bare_keys_follow_the_component():
    a = load_config(None, [("sigma_max", 100.0), ("sde.name", "ve")])
    b = load_config(None, [("sde.name", "ve"), ("sigma_max", 100.0)])
    assert a.sde == b.sde == {"name": "ve", "sigma_max": 100.0}
    assert isinstance(build_sde(a), sd.VESDE) and build_sde(a).sigma_max == 100.0
    unet = load_config(None, [("model.net", "unet"), ("channels", 8), ("data.name", "digits")])
    model = build_model(unet, build_sde(unet), build_data(unet, "test").shape)
    assert isinstance(model.net, sd.nets.UNet) and model.net.input.out_channels == 8


def test_a_users_sde_net_and_sampler_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "user_parts_for_test.py").write_text(
        "import torch\n"
        "import scoresde as sd\n\n"
        "class HalfVP(sd.VPSDE):\n"
        "    def __init__(self, beta_max: float = 10.0):\n"
        "        super().__init__(beta_min=0.1, beta_max=beta_max)\n\n"
        "class Tiny(torch.nn.Module):\n"
        "    shape_parameters = ('dim',)\n\n"
        "    @staticmethod\n"
        "    def shape_arguments(shape):\n"
        "        return {'dim': int(torch.tensor(shape).prod())}\n\n"
        "    def __init__(self, dim, width: int = 4):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(dim + 1, dim)\n\n"
        "    def forward(self, x, t):\n"
        "        return self.lin(torch.cat([x, t[:, None]], 1))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, "--sde.name=user_parts_for_test:HalfVP", "--sde.beta_max=8",
                 "--model.net=user_parts_for_test:Tiny", "--model.width=3", "--steps=3", "--batch_size=8",
                 "--data.n=32", "--progress=false", "--device=cpu"]) == 0
    cfg = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert cfg["sde"] == {"name": "user_parts_for_test:HalfVP", "beta_max": 8}
    assert main(["sample", "--checkpoint", os.path.join(out, "checkpoint.pt"), "--sampler",
                 "scoresde.sampling.heun:HeunSampler", "--steps=3", "--n", "10", "--out", str(tmp_path / "s"),
                 "--device", "cpu"]) == 0


def test_a_data_path_alone_names_its_folder_or_file(tmp_path):
    # --data.path=DIR without --data.name: the folder is the data set, not an option of the default data set
    (tmp_path / "imgs").mkdir()
    cfg = load_config(None, [("data.path", str(tmp_path / "imgs"))])
    assert cfg.data["name"] == "image_folder" and cfg.data["path"] == str(tmp_path / "imgs")
    cfg = load_config(None, [("data.path", str(tmp_path / "x.npz"))])
    assert cfg.data["name"] == "array" and cfg.data["path"] == str(tmp_path / "x.npz")
    cfg = load_config(None, [("data.name", "cifar10"), ("data.path", str(tmp_path / "imgs"))])
    assert cfg.data["name"] == "cifar10" and cfg.data["path"] == str(tmp_path / "imgs")
    with pytest.raises(ConfigError, match="path"):
        load_config(None, [("data.path", str(tmp_path / "missing"))])
