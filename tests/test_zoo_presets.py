"""score_sde_pytorch's published configs as presets: every file of their configs/ tree by name, published values,
deep copies, and the errors of get and merge. Needs neither their checkout nor ml_collections."""
import pytest

from scoresde.zoo import presets

# Every file under score_sde_pytorch's configs/ (commit cb1f359) except the three default_*_configs.py bases.
EXPECTED = (
    [f"subvp/cifar10_{m}_continuous" for m in ("ddpm", "ddpmpp", "ddpmpp_deep", "ncsnpp", "ncsnpp_deep")]
    + ["ve/bedroom_ncsnpp_continuous", "ve/celeba_ncsnpp", "ve/celebahq_256_ncsnpp_continuous",
       "ve/celebahq_ncsnpp_continuous", "ve/church_ncsnpp_continuous", "ve/cifar10_ddpm", "ve/cifar10_ncsnpp",
       "ve/cifar10_ncsnpp_continuous", "ve/cifar10_ncsnpp_deep_continuous", "ve/ffhq_256_ncsnpp_continuous",
       "ve/ffhq_ncsnpp_continuous"]
    + [f"ve/ncsn/{d}{s}" for d in ("celeba", "cifar10") for s in ("", "_124", "_1245", "_5")]
    + ["ve/ncsnv2/bedroom", "ve/ncsnv2/celeba", "ve/ncsnv2/cifar10"]
    + ["vp/cifar10_ddpmpp", "vp/cifar10_ddpmpp_continuous", "vp/cifar10_ddpmpp_deep_continuous",
       "vp/cifar10_ncsnpp", "vp/cifar10_ncsnpp_continuous", "vp/cifar10_ncsnpp_deep_continuous"]
    + [f"vp/ddpm/{d}" for d in ("bedroom", "celebahq", "church", "cifar10", "cifar10_continuous",
                                "cifar10_unconditional")]
)
SECTIONS = {"training", "sampling", "eval", "data", "model", "optim", "seed"}


def test_every_config_of_their_tree_is_a_preset():
    assert len(EXPECTED) == 39
    assert presets.names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", ["vp/ddpm/cifar10", "ve/ncsnv2/celeba", "subvp/cifar10_ddpm_continuous"])
def test_presets_keep_every_section_and_no_device(name):
    config = presets.get(name)
    assert set(config) == SECTIONS and isinstance(config["seed"], int)
    assert all(isinstance(config[s], dict) and config[s] for s in SECTIONS - {"seed"})


def test_published_values():
    deep = presets.get("vp/cifar10_ddpmpp_deep_continuous")
    assert deep["model"]["num_res_blocks"] == 8 and deep["model"]["nf"] == 128
    assert deep["model"]["ch_mult"] == [1, 2, 2, 2] and deep["model"]["attn_resolutions"] == [16]
    assert deep["training"]["continuous"] is True and deep["training"]["sde"] == "vpsde"
    assert deep["model"]["beta_min"] == 0.1 and deep["model"]["beta_max"] == 20
    assert deep["data"]["centered"] is True

    ve = presets.get("ve/cifar10_ncsnpp_continuous")
    assert ve["training"]["sde"] == "vesde" and ve["model"]["name"] == "ncsnpp"
    assert ve["model"]["sigma_max"] == 50 and ve["model"]["sigma_min"] == 0.01
    assert ve["model"]["fourier_scale"] == 16 and ve["model"]["scale_by_sigma"] is True
    assert ve["data"]["centered"] is False and ve["data"]["image_size"] == 32

    assert presets.get("vp/ddpm/cifar10")["model"]["name"] == "ddpm"
    assert presets.get("vp/ddpm/cifar10")["training"]["continuous"] is False
    ncsnv2 = presets.get("ve/ncsnv2/cifar10")
    assert ncsnv2["model"]["name"] == "ncsnv2_64" and ncsnv2["model"]["num_scales"] == 232
    ncsn = presets.get("ve/ncsn/cifar10")
    assert ncsn["model"]["name"] == "ncsn" and ncsn["model"]["sigma_max"] == 1 and ncsn["model"]["num_scales"] == 10
    ffhq = presets.get("ve/ffhq_256_ncsnpp_continuous")
    assert ffhq["model"]["sigma_max"] == 348 and ffhq["data"]["image_size"] == 256
    assert presets.get("subvp/cifar10_ddpmpp_continuous")["training"]["sde"] == "subvpsde"


def test_get_returns_a_deep_copy():
    a = presets.get("vp/ddpm/cifar10")
    a["model"]["ch_mult"].append(99)
    a["model"]["nf"] = 1
    b = presets.get("vp/ddpm/cifar10")
    assert b["model"]["nf"] == 128 and 99 not in b["model"]["ch_mult"]


def test_unknown_name_lists_the_closest_and_valid_names():
    with pytest.raises(ValueError) as info:
        presets.get("vp/cifar10_ddpmpp_deep_continous")
    message = str(info.value)
    assert "closest: vp/cifar10_ddpmpp_deep_continuous" in message
    assert all(name in message for name in EXPECTED)
    with pytest.raises(ValueError, match="unknown"):
        presets.get(3)


def test_merge_nested_and_dotted_overrides():
    base = presets.get("vp/cifar10_ddpmpp_continuous")
    merged = presets.merge(base, {"model.nf": 64, "training.sde": "subvpsde", "optim": {"lr": 1e-4},
                                  "model": {"ch_mult": (1, 2)}, "seed": 7})
    assert merged["model"]["nf"] == 64 and merged["training"]["sde"] == "subvpsde"
    assert merged["optim"]["lr"] == 1e-4 and merged["model"]["ch_mult"] == [1, 2] and merged["seed"] == 7
    assert merged["model"]["num_res_blocks"] == base["model"]["num_res_blocks"]       # untouched fields kept
    assert base["model"]["nf"] == 128 and base["seed"] == 42                           # the input is unchanged
    assert presets.merge(base, {"model.sigma_max": 90.5})["model"]["sigma_max"] == 90.5   # a float for an int
    assert presets.merge(base, {"model.beta_max": 10})["model"]["beta_max"] == 10         # an int for a float


def test_merge_errors_name_the_field_and_the_valid_ones():
    base = presets.get("vp/cifar10_ddpmpp_continuous")
    with pytest.raises(ValueError) as info:
        presets.merge(base, {"model.nfs": 64})
    assert "'model.nfs'" in str(info.value) and "num_res_blocks" in str(info.value) and "nf," in str(info.value)
    with pytest.raises(ValueError, match="training"):
        presets.merge(base, {"trainig": {"sde": "vpsde"}})
    with pytest.raises(ValueError, match="expected a number"):
        presets.merge(base, {"model.nf": "64"})
    with pytest.raises(ValueError, match="expected a bool"):
        presets.merge(base, {"training": {"continuous": 1}})
    with pytest.raises(ValueError, match="expected a list"):
        presets.merge(base, {"model.ch_mult": 2})
    with pytest.raises(ValueError, match="is a section"):
        presets.merge(base, {"model": 3})
    with pytest.raises(TypeError, match="overrides"):
        presets.merge(base, [("model.nf", 64)])


def test_resolve_name_pair_and_dict():
    assert presets.resolve("vp/ddpm/cifar10") == presets.get("vp/ddpm/cifar10")
    assert presets.resolve(("vp/ddpm/cifar10", {"training.batch_size": 64}))["training"]["batch_size"] == 64
    mine = {"model": {"nf": 3}}
    resolved = presets.resolve(mine)
    assert resolved == mine and resolved is not mine
    with pytest.raises(TypeError, match="preset name"):
        presets.resolve(42)
