"""Registries: names → classes beside each family, signature-checked building, import paths, user entries."""
import sys
import types

import pytest
import torch

import scoresde as sd
from scoresde._registry import OptionError, Registry


class Toy:
    def __init__(self, a: int = 1, b: float = 2.0):
        self.a, self.b = a, b


def test_register_build_and_fixed_arguments():
    reg = Registry("toy")
    reg.register("toy", Toy)
    reg.register("toy3", Toy, a=3)

    @reg.register("decorated")
    class Other(Toy):
        pass

    assert reg.names() == ["toy", "toy3", "decorated"] and "toy" in reg and len(reg) == 3
    built = reg.build("toy3", b=5.0)
    assert (built.a, built.b) == (3, 5.0) and isinstance(reg.build("decorated"), Other)
    assert reg.parameters("toy3") == ["b"]
    with pytest.raises(OptionError, match=r"unknown option\(s\) c for toy 'toy'; valid options: a, b"):
        reg.build("toy", c=1)
    with pytest.raises(ValueError, match=r"unknown toy 'nope'; valid choices: 'toy', 'toy3', 'decorated'"):
        reg.get("nope")
    with pytest.raises(ValueError, match="without ':'"):
        reg.register("a:b", Toy)


def test_import_path_names_a_users_class_without_registering(monkeypatch):
    module = types.ModuleType("user_components_for_test")
    module.Toy = Toy
    monkeypatch.setitem(sys.modules, "user_components_for_test", module)
    reg = Registry("toy")
    assert reg.build("user_components_for_test:Toy", a=7).a == 7
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        reg.get("user_components_for_test:Nope")
    with pytest.raises(ValueError, match="cannot import module"):
        reg.get("no_such_module_anywhere:Toy")


@pytest.mark.parametrize("registry, names", [
    (sd.SDES, {"vp", "subvp", "ve", "edm", "rectified_flow", "cosine_vp", "discrete_vp", "ve_score_sde"}),
    (sd.NETS, {"mlp", "unet", "score_sde_pytorch", "edm"}),
    (sd.LOSSES, {"dsm", "score_sde", "edm", "edm_vp", "edm_ve"}),
    (sd.SAMPLERS, {"euler_maruyama", "reverse_sde", "probability_flow", "pc", "heun", "dpm_solver", "ddim",
                   "dpm_solver_sde", "unipc", "lms", "deis", "ancestral", "dpm_adaptive", "inpainting", "split_gibbs"}),
    (sd.PARAMETERIZATIONS, {"eps", "score", "x0", "v", "velocity"}),
    (sd.DATASETS, {"eight_gaussians", "rings", "checkerboard", "swiss_roll", "moons", "digits", "cifar10",
                   "array", "image_folder"}),
    (sd.WEIGHTINGS, {"sigma2", "likelihood", "flow_matching", "none", "x0", "snr", "min_snr", "edm"}),
    (sd.losses.TIME_DISTRIBUTIONS, {"uniform", "importance", "log_snr", "log_normal"}),
    (sd.INVERSE_METHODS, {"dps", "pigdm", "tweedie_moment", "replacement", "repaint", "split_gibbs", "red"}),
])
def test_every_family_has_its_registry(registry, names):
    assert set(registry.names()) == names


def test_registry_entries_are_the_public_classes():
    assert sd.SDES.get("vp")[0] is sd.VPSDE and sd.NETS.get("unet")[0] is sd.nets.UNet
    assert sd.SAMPLERS.get("ddim")[0] is sd.DDIMSampler
    fixed = sd.Registry("sampler")
    fixed.register("ddim", sd.DPMSolver, order=1)              # a name with fixed keyword arguments
    assert fixed.get("ddim") == (sd.DPMSolver, {"order": 1}) and fixed.build("ddim", steps=4).order == 1
    assert sd.PARAMETERIZATIONS.build("v").name == "v"


def test_a_registered_user_sde_is_built_like_the_builtin_ones():
    class Constant(sd.LinearSDE):
        def __init__(self, rate: float = 1.0, T: float = 1.0):
            self.rate = float(rate)
            super().__init__(T)

        def drift_coef(self, t):
            return torch.full_like(t, -0.5 * self.rate)

        def diffusion(self, t):
            return torch.full_like(t, self.rate ** 0.5)

    sd.SDES.register("constant_for_test", Constant)
    try:
        sde = sd.SDES.build("constant_for_test", rate=2.0)
        t = torch.tensor([0.5], dtype=torch.float64)
        # VP with constant β = 2: s = exp(−t), σ² = 1 − exp(−2t).
        torch.testing.assert_close(sde.std(t) ** 2, 1 - torch.exp(-2 * t), rtol=1e-7, atol=0)
    finally:
        sd.SDES._entries.pop("constant_for_test")


def test_weighting_functions_are_usable_directly_by_the_loss():
    sde = sd.VPSDE()
    gmm = sd.eight_gaussians()
    x0 = gmm.sample(64, torch.Generator().manual_seed(0))
    t = torch.full((64,), 0.3, dtype=torch.float64)
    by_name = sd.dsm_loss(sde, gmm.score(sde), x0, weighting="likelihood", t=t, reduce="none",
                          generator=torch.Generator().manual_seed(1))
    by_function = sd.dsm_loss(sde, gmm.score(sde), x0, weighting=lambda sde, t: sde.diffusion(t) ** 2, t=t,
                              reduce="none", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(by_name, by_function)
