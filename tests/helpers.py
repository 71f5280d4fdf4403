"""Small helpers shared by several test modules.

tests/conftest.py puts this folder on sys.path, so test modules import them with ``from helpers import ...``.
A helper used by one test module only stays in that module.
"""
import functools
import math

import numpy as np
import torch

import scoresde as sd
from scoresde._utils import expand_like

F64 = torch.float64
#: The end time of the Heun and DPM-Solver checks (tests/test_sampling_heun.py, tests/test_sampling_dpm.py).
EPS = 1e-3


class CountingScore:
    """Counts the calls of a score function, independently of a sampler's own bookkeeping."""

    def __init__(self, score):
        self.score, self.calls = score, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.score(x, t)


# -- user linear SDEs -------------------------------------------------------------------------------------
# Two different ones, each kept for the tests written against it: ``Wiggly`` (tests/test_sde.py,
# test_sampling_grids.py, test_sampling_heun.py, test_sampling_dpm.py) and ``PerturbedVPSDE``
# (tests/test_sampling_sde.py, test_sampling_ode.py, test_sampling_pc.py, as ``SDES["user"]``).
class Wiggly(sd.LinearSDE):
    """A user SDE written as the issue describes: only f(t) and g(t), both time-varying.

    f(t) = −1.5 + sin 3t, g(t) = 0.3 + t² + 0.2 cos 5t.
    """

    def drift_coef(self, t):
        return -1.5 + torch.sin(3 * t)

    def diffusion(self, t):
        return 0.3 + t**2 + 0.2 * torch.cos(5 * t)


class PerturbedVPSDE(sd.LinearSDE):
    """A user linear SDE, neither VE nor VP: f(t) = −β(t)/2, g(t)² = β(t)(1 + ½ sin 6t), β = 0.1 + 29.9 t².

    s(T) = exp(−½ ∫β) ≈ 0.0065, so the default prior N(0, σ(T)² I) matches p_T to within 0.013 in the mean.
    """

    def drift_coef(self, t):
        return -0.5 * (0.1 + 29.9 * t**2)

    def diffusion(self, t):
        return ((0.1 + 29.9 * t**2) * (1 + 0.5 * torch.sin(6 * t))).sqrt()


#: The SDEs of the Heun and DPM-Solver checks, by the names their test ids use.
SDE_FACTORIES = {"VP": sd.VPSDE, "subVP": sd.SubVPSDE, "VE": sd.VESDE, "Wiggly": Wiggly}
#: The SDEs of the reverse-SDE, PF-ODE and PC checks, by the names their test ids use.
SDES = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE, "user": PerturbedVPSDE}


# -- 16-D Gaussian mixtures -------------------------------------------------------------------------------
# Two different ones (same means, different stds and weights), each kept for the tests written against it.
def mixture_16d_diagonal() -> sd.GaussianMixture:
    """Four well-separated components in 16-D with unequal weights and per-dimension stds.

    The 16-D problem of ``oracle_problem`` (tests/test_sampling_heun.py, tests/test_sampling_dpm.py).
    """
    g = torch.Generator().manual_seed(16)
    means = 2.0 * torch.randn((4, 16), generator=g, dtype=F64)
    stds = 0.2 + 0.3 * torch.rand((4, 16), generator=g, dtype=F64)
    return sd.GaussianMixture(means, stds, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64))


def mixture_16d_isotropic() -> sd.GaussianMixture:
    """Four components in 16-D with one std each (0.5, 0.3, 0.4, 0.6) and weights 1 : 2 : 1 : 1.5.

    The 16-D problem of tests/test_sampling_sde.py, test_sampling_ode.py and test_sampling_pc.py.
    """
    g = torch.Generator().manual_seed(16)
    means = 2.0 * torch.randn(4, 16, generator=g, dtype=torch.float64)
    return sd.GaussianMixture(means, torch.tensor([0.5, 0.3, 0.4, 0.6]), torch.tensor([1.0, 2.0, 1.0, 1.5]))


# -- Heun and DPM-Solver: exact Gaussian flows, fitted orders, oracle problems with their noise floor -----
# (tests/test_sampling_heun.py, tests/test_sampling_dpm.py)

#: Energy-distance acceptance: ED(samples, fresh oracle) ≤ ED_MULTIPLE × floor. Under the null (an exact
#: sampler) the statistic has the law of ED between two independent oracle sets: mean 0 (unbiased
#: U-statistic) and standard deviation ``floor`` (the RMS over independent oracle pairs), with a right skew
#: (a degenerate U-statistic is a weighted sum of centred χ²₁ terms). In 30 seeded null trials on the
#: eight Gaussians the largest value was 2.5 floors; 5 floors leaves room for that skew, while samplers with a
#: real bias fail it (see ``test_energy_distance_detects_a_coarse_sampler`` in tests/test_sampling_heun.py).
ED_MULTIPLE = 5.0


def registered_example(registry, name: str):
    """The small ``example()`` of a registered sampler or SDE, with the registry entry's fixed arguments."""
    cls, fixed = registry.get(name)
    return cls.example(**fixed)


def gaussian_flow(sde, c: float):
    """Data x0 ~ N(0, c² I): the exact score of p_t and the exact probability-flow map x_T -> x_t.

    p_t = N(0, v(t)² I) with v(t)² = s(t)² c² + σ(t)², so the PF-ODE flow is x_t = x_T v(t) / v(T).
    """

    def score(x, t):
        var = sde.scale(t) ** 2 * c * c + sde.std(t) ** 2
        return -x / expand_like(var, x)

    def flow(x_T, t_end):
        ends = torch.tensor([sde.T, t_end], dtype=F64)
        v = (sde.scale(ends) ** 2 * c * c + sde.std(ends) ** 2).sqrt()
        return x_T * (v[1] / v[0])

    return sd.Score(score, closed_form=True), flow


def fitted_order(steps, errors) -> float:
    """Minus the slope of the least-squares line through (log N, log error)."""
    return -float(np.polyfit(np.log(np.asarray(steps, float)), np.log(np.asarray(errors, float)), 1)[0])


def convergence(make_sampler, sde, steps, c: float = 0.5):
    """Relative errors at t = EPS of the sampler against the exact Gaussian flow, for each N in steps."""
    score, flow = gaussian_flow(sde, c)
    x_T = torch.tensor([[1.0, -0.5], [0.3, 0.8]], dtype=F64) * sde.prior_std()
    exact = flow(x_T, EPS)
    errors = []
    for n in steps:
        x = make_sampler(n).sample(sde, score, x_T.shape, x_T=x_T).x
        errors.append(float((x - exact).norm() / exact.norm()))
    return errors


@functools.lru_cache(maxsize=None)
def oracle_problem(sde_name: str, dim: int, n: int, seed: int = 0):
    """(sde, gmm, x_T, reference, floor) for the 2-D eight Gaussians or the 16-D mixture.

    x_T is drawn from the exact p_T (oracle samples pushed forward through the SDE's kernel), so the only
    error left is the sampler's; ``reference`` is a fresh draw from p_eps, the law the ODE samplers target;
    ``floor`` is the RMS of the same statistic over 16 pairs of independent p_eps samples of size n.
    """
    sde = SDE_FACTORIES[sde_name]()
    gmm = sd.eight_gaussians() if dim == 2 else mixture_16d_diagonal()
    g = torch.Generator().manual_seed(seed)

    def draw(t):
        return sde.sample_marginal(gmm.sample(n, g), torch.full((n,), t, dtype=F64), generator=g)[0]

    x_T, reference = draw(sde.T), draw(EPS)
    floor = math.sqrt(sum(float(sd.energy_distance(draw(EPS), draw(EPS))) ** 2 for _ in range(16)) / 16)
    return sde, gmm, x_T, reference, floor


@functools.lru_cache(maxsize=None)
def accurate_flow(sde_name: str, n: int = 128):
    """(x_T, x_eps): the first n starts of ``oracle_problem(sde_name, 2, 1000)`` carried to t = EPS by the
    library's PF ODE with dopri5 at rtol = atol = 1e-10, a reference far more accurate than the samplers."""
    sde, gmm, x_T, _, _ = oracle_problem(sde_name, 2, 1000)
    x_T = x_T[:n]
    xs, _ = sde.probability_flow(gmm.score(sde)).solve(x_T, [sde.T, EPS], rtol=1e-10, atol=1e-10)
    return x_T, xs[-1]


def rms_error(x, exact) -> float:
    return float((x - exact).pow(2).flatten(1).sum(1).mean().sqrt())


# -- reverse SDE, PF ODE and PC: oracle-law checks ---------------------------------------------------------
# (tests/test_sampling_sde.py, tests/test_sampling_ode.py, tests/test_sampling_pc.py; the two checks of
# ``assert_oracle_law`` and their thresholds are explained in the docstring of tests/test_sampling_sde.py)
FLOOR_FACTOR = 5.0
N = 1000

_FLOORS = {}


def noise_floor(gmm, n, key):
    """RMS of ED between two independent oracle sets of size n (8 repeats)."""
    if key not in _FLOORS:
        g = torch.Generator().manual_seed(999)
        values = torch.stack([sd.energy_distance(gmm.sample(n, g), gmm.sample(n, g)) for _ in range(8)])
        _FLOORS[key] = float(values.pow(2).mean().sqrt())
    return _FLOORS[key]


def oracle_statistics(x, gmm, key, seed=7):
    """(ED, its noise floor, z-score of the mean log p_0 difference) of samples x against the oracle."""
    n = x.shape[0]
    ref = gmm.sample(n, torch.Generator().manual_seed(seed))
    ed = float(sd.energy_distance(x, ref))
    lq, lp = gmm.log_prob(x), gmm.log_prob(ref)
    z = float((lq.mean() - lp.mean()) / (lq.var() / n + lp.var() / n).sqrt())
    return ed, noise_floor(gmm, n, key), z


def assert_oracle_law(x, gmm, key, seed=7):
    ed, floor, z = oracle_statistics(x, gmm, key, seed)
    print(f"oracle check: ED {ed:.4f} (floor {floor:.4f}), log-density z {z:.2f}")
    assert math.isfinite(ed) and ed < FLOOR_FACTOR * floor, f"energy distance {ed:.3g} vs floor {floor:.3g}"
    assert abs(z) < 5, f"mean log-density differs by {z:.2f} standard errors"


def run(sampler, sde, gmm, n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return sampler.sample(sde, gmm.score(sde), (n, gmm.dim), generator=g, dtype=torch.float64)


#: Python source that makes ``import torch_fidelity`` work in a child process where PyPI's torchvision does not import
#: with a CPU torch (``operator torchvision::nms does not exist``): a stand-in for the torchvision names
#: torch-fidelity's modules touch at import or on the image-folder path — the data set classes and ``models`` (never
#: called there), ``Compose`` (applies the transforms in turn), and torchvision's own short definitions of
#: ``pil_to_tensor`` (the PIL image's array as (C, H, W) uint8) and ``normalize`` ((x − mean) / std per channel,
#: mean and std in x's dtype). Everything else is torch-fidelity's code. One thread, as the tests run. Ends with
#: ``import torch_fidelity``.
TORCH_FIDELITY_IMPORT = """
import sys, types
import numpy as np
import torch
torch.set_num_threads(1)          # as conftest pins the tests: the same reduction order as the parent process
try:
    import torchvision
except Exception:
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        del sys.modules[name]
    tv = types.ModuleType("torchvision")
    tv.datasets = types.ModuleType("torchvision.datasets")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
    tv.models = types.ModuleType("torchvision.models")
    for cls in ("CIFAR10", "STL10", "CIFAR100"):
        setattr(tv.datasets, cls, type(cls, (), {}))

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, image):
            for transform in self.transforms:
                image = transform(image)
            return image

    def pil_to_tensor(pic):
        array = np.array(pic, copy=True)
        array = array[:, :, None] if array.ndim == 2 else array
        return torch.as_tensor(array).permute(2, 0, 1)

    def normalize(tensor, mean, std, inplace=False):
        mean = torch.tensor(mean, dtype=tensor.dtype).reshape(-1, 1, 1)
        std = torch.tensor(std, dtype=tensor.dtype).reshape(-1, 1, 1)
        return (tensor - mean) / std

    tv.transforms.Compose = Compose
    tv.transforms.functional.pil_to_tensor = pil_to_tensor
    tv.transforms.functional.normalize = normalize
    sys.modules.update({"torchvision": tv, "torchvision.datasets": tv.datasets, "torchvision.transforms": tv.transforms,
                        "torchvision.transforms.functional": tv.transforms.functional, "torchvision.models": tv.models})
import torch_fidelity
"""
