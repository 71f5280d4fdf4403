"""EDM's training recipe (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
Table 1 and Appendix F; github.com/NVlabs/edm ``train.py``) as scoresde losses, a net and run presets.

    sections = run_sections("edm/cifar10-ddpmpp-edm-cond")   # their train.py --arch=ddpmpp --precond=edm --cond=1
    config = scoresde.app.config.load_config(None, [("data.path", "data/")], base=sections)

**The model a run trains.** The net ``"edm"`` (`EDMNet`) is one of EDM's preconditioned denoisers D(x; σ) (their
``VPPrecond``, ``VEPrecond`` or ``EDMPrecond`` around a DDPM++ / NCSN++ ``SongUNet`` or an ADM ``DhariwalUNet``, built
from keyword arguments as their ``train.py`` builds them), called as ``net(x, t[, cond])`` = D(x; σ = t). A run
wraps it in ``ScoreModel(parameterization="x0", preconditioning=False)`` on `scoresde.EDMSDE` (s = 1, σ(t) = t),
so that the run's model is the score (D(x; t) − x)/t² and every sampler and likelihood of scoresde uses it as is.
The losses call that score model, as the Trainer hands it over (DistributedDataParallel included), and recover
the denoiser's residual from it by Tweedie: with x = y + σ n,

    D(x; σ) − y = σ n + σ² score(x, σ) = σ (n + σ score(x, σ)).

**The losses** (`EDMLoss` "edm", `VPLoss` "edm_vp", `VELoss` "edm_ve"). Each draws one noise level σ per image and
n ~ N(0, I), and weighs the denoiser's squared error per element,

    ℓ = λ(σ) (D(y + σ n; σ) − y)²,

=========  =====================================================  ==========================
loss       σ                                                      λ(σ)
=========  =====================================================  ==========================
EDMLoss    exp(P_mean + P_std ξ), ξ ~ N(0, 1); −1.2, 1.2          (σ² + σ_d²)/(σ σ_d)², σ_d 0.5
VPLoss     √(exp(½ β_d t² + β_min t) − 1), t ~ U(ε_t, 1);          1/σ²
           β_d 19.9, β_min 0.1, ε_t 1e-5
VELoss     σ_min (σ_max/σ_min)^u, u ~ U(0, 1); 0.02, 100           1/σ²
=========  =====================================================  ==========================

Their loss returns these per-element values; their training loop backpropagates ``loss.sum() / batch_gpu_total``
on each GPU and DistributedDataParallel averages the gradients, so the number they differentiate is the batch
mean of the per-image sum over all C·H·W elements, (1/B) Σ_i Σ_pixels ℓ_i. The losses here return exactly that
(`EDMLoss.per_element` gives the values their loss returns). Their logged "Loss/loss" is the mean per element,
1/(C·H·W) of it. Draws are taken in their order (ξ or u for the batch, then the augmentation's, then n), so on the
CPU a generator seeded like their global RNG gives their draws. VP's σ is computed in float64 with expm1 (their
float32 exp − 1 is a few percent off for t ≲ 1e-4, one draw in 10⁴).

**σ above T.** The score model is defined on (0, T] with T = the SDE's ``sigma_max``; a σ above T is evaluated at
T (σ = min(σ, T), its weight and noise included). The presets choose T so that only EDM's log-normal tail is
clamped: VP's σ(1) = 152.17 and VE's σ_max = 100 are T of their presets, while EDM's is T = 80 (their sampler's
σ_max), above which P(σ > 80) = Φ(−(ln 80 + 1.2)/1.2) = 1.6e-6 per image: about 330 of the 2·10⁸ images of the
recipe are trained at σ = 80 instead of their σ.

**Presets** (`names`, `run_sections`): the CIFAR-10 runs of their ``train.py`` (arch ddpmpp | ncsnpp | adm, precond
vp | ve | edm, with or without ``--cond``), converted to scoresde's sections as listed in `run_sections`.

**Augmentation.** Their CIFAR-10 recipe (``--augment=0.12``) trains on images through their non-leaking
augmentation pipeline (`scoresde.zoo.edm_augment.EDMAugment`: an x-flip of a random half of the images, and with
probability 0.12 each a y-flip, an isotropic and an anisotropic scaling, a rotation and a fractional translation)
and tells the network what was done through 9 augmentation labels (``augment_dim=9``). The losses do the same with
``augment_p`` > 0: y above is the augmented image and the model is called ``model(x, σ[, cond],
augment_labels=a)``, which `scoresde.ScoreModel` hands to `EDMNet`. Sampling and likelihoods call the model
without labels, i.e. with zero labels, as their sampler does. Under data parallelism (``shard=``) the augmentation is
drawn for the whole batch and applied to the shard's rows, so that the shards together compute the unsharded loss.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..guidance.condition import call_model
from ..losses import LOSSES, _shard
from ..nets import NETS
from ..sde import require_linear
from .._utils import expand_like, validated_times
from .edm import EDMPrecond, VEPrecond, VPPrecond, vp_sigma
from .edm_augment import CIFAR10, EDMAugment

Tensor = torch.Tensor

#: Their ``train.py --arch``: the network class and its keyword arguments (other arguments: the class defaults).
ARCHITECTURES: Dict[str, Dict[str, Any]] = {
    "ddpmpp": dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                   decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=128,
                   channel_mult=[2, 2, 2]),
    "ncsnpp": dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual", decoder_type="standard",
                   channel_mult_noise=2, resample_filter=[1, 3, 3, 1], model_channels=128, channel_mult=[2, 2, 2]),
    "adm": dict(model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4]),
}
#: Their ``train.py --precond``: our preconditioning class and the registry name of its loss.
PRECONDITIONINGS = {"vp": (VPPrecond, "edm_vp"), "ve": (VEPrecond, "edm_ve"), "edm": (EDMPrecond, "edm")}


def _number(name: str, value, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (value <= 0 if positive else value < 0):
        what = "a positive number" if positive else "a number >= 0"
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------------------------
# The net of a run
# ---------------------------------------------------------------------------------------------------------------

class EDMNet(nn.Module):
    """One of EDM's preconditioned denoisers, called ``net(x, t[, cond])`` = D(x; σ = t): the net ``"edm"``.

    Wrap it in ``ScoreModel(net, EDMSDE(...), parameterization="x0", preconditioning=False)``: the score is then
    (D(x; t) − x)/t² (see the module docstring). ``None`` for ``model_channels``, ``channel_mult``, ``num_blocks`` or
    ``attn_resolutions`` takes the architecture's value (`ARCHITECTURES`, then the network class's default).

    Args:
        img_channels: C of the images (B, C, H, W) (from the data).
        img_resolution: H = W (from the data).
        num_classes: K for a class-conditional net (their ``label_dim``), called with cond (B,) long in 0 … K, K
            being no label (∅: their all-zero label vector); None: unconditional.
        precond: their ``--precond``: "edm" (`EDMPrecond`), "vp" (`VPPrecond`) or "ve" (`VEPrecond`).
        arch: their ``--arch``: "ddpmpp", "ncsnpp" (SongUNet) or "adm" (DhariwalUNet).
        model_channels: their ``--cbase``.
        channel_mult: their ``--cres``.
        num_blocks: residual blocks per resolution.
        attn_resolutions: the sides with self-attention.
        dropout: their ``--dropout`` (0.13 on CIFAR-10).
        augment_dim: the number of augmentation labels the net takes (their 9 with augmentation; 0 without).
        label_dropout: probability of zeroing the class vector in training (theirs: 0).
        sigma_data: σ_d of `EDMPrecond`.
        beta_d: β_d of `VPPrecond` (use the same in `VPLoss`).
        beta_min: β_min of `VPPrecond`.
    """

    #: Constructor arguments that follow from the data's per-sample shape (see `shape_arguments`).
    shape_parameters = ("img_channels", "img_resolution")

    @staticmethod
    def shape_arguments(sample_shape) -> dict:
        """``img_channels`` and ``img_resolution`` of square images (C, H, W)."""
        shape = tuple(int(s) for s in sample_shape)
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"EDM's networks need square images (C, H, W); the data has per-sample shape {shape}")
        return {"img_channels": shape[0], "img_resolution": shape[1]}

    def __init__(self, img_channels: int = 3, img_resolution: int = 32, num_classes: Optional[int] = None,
                 precond: str = "edm", arch: str = "ddpmpp", model_channels: Optional[int] = None,
                 channel_mult: Optional[List[int]] = None, num_blocks: Optional[int] = None,
                 attn_resolutions: Optional[List[int]] = None, dropout: float = 0.13, augment_dim: int = 0,
                 label_dropout: float = 0.0, sigma_data: float = 0.5, beta_d: float = 19.9, beta_min: float = 0.1):
        super().__init__()
        if precond not in PRECONDITIONINGS:
            raise ValueError(f"unknown precond {precond!r}; valid choices: {', '.join(map(repr, PRECONDITIONINGS))}")
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {arch!r}; valid choices: {', '.join(map(repr, ARCHITECTURES))}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer (or None: unconditional); got {num_classes!r}")
        kwargs = dict(ARCHITECTURES[arch])
        for name, value in (("model_channels", model_channels), ("channel_mult", channel_mult),
                            ("num_blocks", num_blocks), ("attn_resolutions", attn_resolutions)):
            if value is not None:
                kwargs[name] = list(value) if isinstance(value, (list, tuple)) else value
        kwargs.update(dropout=dropout, augment_dim=augment_dim, label_dropout=label_dropout)
        cls = PRECONDITIONINGS[precond][0]
        extra = {"edm": {"sigma_data": sigma_data}, "vp": {"beta_d": beta_d, "beta_min": beta_min}, "ve": {}}[precond]
        self.denoiser = cls(img_resolution, img_channels, label_dim=num_classes or 0, **extra, **kwargs)
        self.num_classes, self.augment_dim = num_classes, int(augment_dim)
        self.precond, self.arch = precond, arch

    def labels(self, cond: Optional[Tensor], batch: int) -> Optional[Tensor]:
        """Their class vectors (B, K) for cond (B,) in 0 … K: one-hot, ∅ = K the zero vector; None → None (zero)."""
        if self.num_classes is None:
            if cond is not None:
                raise ValueError("this EDMNet is unconditional (num_classes=None); got cond")
            return None
        if cond is None:
            return None
        cond = torch.as_tensor(cond).reshape(-1)
        if cond.is_floating_point() or cond.numel() != batch or bool(((cond < 0) | (cond > self.num_classes)).any()):
            raise ValueError(f"cond must be integer labels (B,) = ({batch},) in 0 … {self.num_classes} (the last: no "
                             f"label); got {tuple(cond.shape)} {cond.dtype}")
        return nn.functional.one_hot(cond.long(), self.num_classes + 1)[:, :self.num_classes].float()

    def forward(self, x: Tensor, t: Tensor, cond: Optional[Tensor] = None,
                augment_labels: Optional[Tensor] = None) -> Tensor:
        """D(x; σ = t) (B, C, H, W) for x (B, C, H, W), t (B,) (σ > 0), class labels cond (B,) and augmentation
        labels (B, augment_dim) (None: zero, as at sampling)."""
        if augment_labels is not None and tuple(augment_labels.shape) != (x.shape[0], self.augment_dim):
            raise ValueError(f"augment_labels must be (B, augment_dim) = ({x.shape[0]}, {self.augment_dim}); got "
                             f"{tuple(augment_labels.shape)} (a loss with augment_p > 0 hands 9 labels: build the "
                             f"net with augment_dim=9, or train with augment_p=0)")
        return self.denoiser(x, t, self.labels(cond, x.shape[0]), augment_labels=augment_labels)


NETS.register("edm", EDMNet)


# ---------------------------------------------------------------------------------------------------------------
# The losses
# ---------------------------------------------------------------------------------------------------------------

def _check_sde(sde, who: str) -> float:
    """T of an SDE whose time is the noise level (s ≡ 1, σ(t) = t, as `scoresde.EDMSDE`), else a ValueError."""
    require_linear(sde, who)
    T = float(sde.T)
    probe = torch.tensor([T * 1e-3, T / 2, T], dtype=torch.float64)
    s, std = sde.scale(probe).to(torch.float64), sde.std(probe).to(torch.float64)
    if not (torch.allclose(s, torch.ones_like(s), rtol=1e-6, atol=0) and torch.allclose(std, probe, rtol=1e-6, atol=0)):
        raise ValueError(f"{who} trains a denoiser whose time is the noise level: it needs an SDE with s(t) = 1 and "
                         f"σ(t) = t, such as scoresde.EDMSDE; {type(sde).__name__} has s(T) = {float(s[-1]):.6g}, "
                         f"σ(T) = {float(std[-1]):.6g} at T = {T:g}")
    return T


class _DenoiserLoss:
    """What EDM's three losses share: draw σ (`sigma`), weigh the denoiser's squared error by λ(σ) (`weight`)."""

    name = "edm"

    def __init__(self, xflip: bool = False, augment_p: float = 0.0):
        if not isinstance(xflip, bool):
            raise ValueError(f"xflip must be true or false; got {xflip!r}")
        self.xflip = xflip
        self.augment_p = _number("augment_p", augment_p, positive=False)
        if self.augment_p > 1:
            raise ValueError(f"augment_p must be in [0, 1]; got {augment_p!r}")
        #: Their train.py's pipeline (`scoresde.zoo.edm_augment.CIFAR10`) at p = augment_p; None for 0.
        self.augment = EDMAugment(self.augment_p, **CIFAR10) if self.augment_p > 0 else None

    def sigma(self, batch: int, generator: Optional[torch.Generator], device, dtype) -> Tensor:
        """σ (batch,) drawn as theirs (one uniform or normal per image)."""
        raise NotImplementedError

    def weight(self, sigma: Tensor) -> Tensor:
        """λ(σ), σ's shape."""
        raise NotImplementedError

    def per_element(self, sde, model, x0: Tensor, cond: Optional[Tensor] = None,
                    generator: Optional[torch.Generator] = None,
                    shard: Optional[Tuple[int, int]] = None) -> Tensor:
        """λ(σ) (D(y + σ n; σ) − y)² per element (B, *D), what their loss returns (this shard's rows).

        Args:
            sde: an SDE with s = 1, σ(t) = t (`scoresde.EDMSDE`); σ above its T is evaluated at T.
            model: the score model ``model(x, t[, cond])`` on it (a ScoreModel around `EDMNet`, or DDP around one).
            x0: the images y (B, C, H, W) (the global batch with ``shard``).
            cond: class labels (B,) for a conditional model.
            generator: the source of the flips, σ, the augmentation and n (drawn in this order, theirs).
            shard: ``(rank, world_size)``: draw for the whole batch, evaluate rows ``rank::world_size`` (the
                augmentation too: drawn for the whole batch, applied to these rows).

        With ``augment_p`` > 0, y is the augmented image and the model is called with its labels,
        ``model(x, σ[, cond], augment_labels=a)`` (a (B, 9)).
        """
        who = f"{type(self).__name__} ({self.name!r})"
        T = _check_sde(sde, who)
        if not torch.is_tensor(x0) or x0.dim() < 2 or not x0.is_floating_point() or x0.shape[0] == 0:
            got = f"shape {tuple(x0.shape)}, dtype {x0.dtype}" if torch.is_tensor(x0) else type(x0).__name__
            raise ValueError(f"{who}: x0 must be a floating-point batch (B, *D) with B >= 1; got {got}")
        batch, device, dtype = x0.shape[0], x0.device, x0.dtype
        if self.xflip:
            flip = torch.rand(batch, generator=generator, device=device) < 0.5
            x0 = torch.where(expand_like(flip, x0), x0.flip(-1), x0)
        sigma = self.sigma(batch, generator, device, dtype).clamp(max=T)
        augment_labels = None
        if self.augment is not None:
            if x0.dim() != 4:
                raise ValueError(f"{who}: augmentation (augment_p > 0) needs images (B, C, H, W); got x0 of shape "
                                 f"{tuple(x0.shape)}")
            rows = None
            if shard is not None:
                _shard(shard, batch)                   # validates (rank, world_size)
                rows = slice(int(shard[0]), None, int(shard[1]))
            x0, augment_labels = self.augment(x0, generator, rows=rows)
            augment_labels = augment_labels.to(dtype)
        noise = torch.randn((batch, *x0.shape[1:]), generator=generator, device=device, dtype=dtype)
        if shard is not None:
            sigma, noise, cond = _shard(shard, batch, sigma, noise, cond)
            if self.augment is None:
                x0, = _shard(shard, batch, x0)
        s = expand_like(sigma, x0)
        with validated_times():                        # σ ∈ (0, T] by construction
            x = x0 + s * noise
            extra = {} if augment_labels is None else {"augment_labels": augment_labels}
            score = call_model(model, x, sigma, cond, **extra)
        if score.shape != x.shape:
            raise ValueError(f"{who}: the model returned shape {tuple(score.shape)} for x of shape {tuple(x.shape)}")
        residual = s * (noise + s * score)             # D(x; σ) − y, with D = x + σ² score
        return expand_like(self.weight(sigma), x0) * residual.square()

    def __call__(self, sde, model, x0: Tensor, cond: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None, shard: Optional[Tuple[int, int]] = None) -> Tensor:
        """The number their training loop backpropagates: (1/B) Σ_i Σ_elements λ(σ_i) (D − y_i)², the batch mean of
        each image's sum (over this shard's rows; see `per_element`)."""
        values = self.per_element(sde, model, x0, cond=cond, generator=generator, shard=shard)
        return values.reshape(values.shape[0], -1).sum(-1).mean()


@LOSSES.register("edm")
class EDMLoss(_DenoiserLoss):
    """EDM's loss: ln σ ~ N(P_mean, P_std²), λ(σ) = (σ² + σ_d²)/(σ σ_d)² (Karras et al. 2022, Table 1).

    ``loss(sde, model, x0, cond=None, generator=None, shard=None)`` is the batch mean of each image's summed
    λ(σ) (D − y)² (see the module docstring).

    Args:
        P_mean: mean of ln σ.
        P_std: standard deviation of ln σ.
        sigma_data: σ_d.
        xflip: mirror each image left–right with probability ½ first (their dataset's ``--xflip``; off in their
            recipe).
        augment_p: their ``--augment``: the probability of each transform of their augmentation pipeline
            (`scoresde.zoo.edm_augment.EDMAugment` with their train.py's multipliers; 0.12 in their recipe), whose
            9 labels the model receives as ``augment_labels``; 0: no augmentation (the model gets no labels).
    """

    name = "edm"

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5, xflip: bool = False,
                 augment_p: float = 0.0):
        super().__init__(xflip, augment_p)
        if isinstance(P_mean, bool) or not isinstance(P_mean, (int, float)) or not math.isfinite(P_mean):
            raise ValueError(f"P_mean must be a finite number; got {P_mean!r}")
        self.P_mean, self.P_std = float(P_mean), _number("P_std", P_std)
        self.sigma_data = _number("sigma_data", sigma_data)

    def sigma(self, batch, generator, device, dtype):
        xi = torch.randn(batch, generator=generator, device=device, dtype=dtype)
        return (xi * self.P_std + self.P_mean).exp()

    def weight(self, sigma):
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2

    def __repr__(self) -> str:
        return (f"EDMLoss(P_mean={self.P_mean:g}, P_std={self.P_std:g}, sigma_data={self.sigma_data:g}, "
                f"xflip={self.xflip}, augment_p={self.augment_p:g})")


@LOSSES.register("edm_vp")
class VPLoss(_DenoiserLoss):
    """EDM's loss of the VP formulation: σ = √(exp(½ β_d t² + β_min t) − 1) with t ~ U(ε_t, 1), λ(σ) = 1/σ².

    Args:
        beta_d: β_d = β_max − β_min (19.9).
        beta_min: β_min (0.1).
        epsilon_t: ε_t, the smallest t (1e-5).
        xflip: as `EDMLoss`.
        augment_p: as `EDMLoss`.
    """

    name = "edm_vp"

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, epsilon_t: float = 1e-5, xflip: bool = False,
                 augment_p: float = 0.0):
        super().__init__(xflip, augment_p)
        self.beta_d, self.beta_min = _number("beta_d", beta_d), _number("beta_min", beta_min, positive=False)
        self.epsilon_t = _number("epsilon_t", epsilon_t)
        if not self.epsilon_t < 1:
            raise ValueError(f"epsilon_t must be in (0, 1); got {epsilon_t!r}")

    def sigma_of_t(self, t: Tensor) -> Tensor:
        """σ(t) = √(exp(½ β_d t² + β_min t) − 1) (`scoresde.zoo.edm.vp_sigma`), in t's dtype."""
        return vp_sigma(t, self.beta_d, self.beta_min)

    @property
    def sigma_max(self) -> float:
        """σ(1), the largest level (152.17 for the defaults)."""
        return float(vp_sigma(1.0, self.beta_d, self.beta_min))

    def sigma(self, batch, generator, device, dtype):
        u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
        return self.sigma_of_t(1 + u * (self.epsilon_t - 1))

    def weight(self, sigma):
        return 1 / sigma ** 2

    def __repr__(self) -> str:
        return (f"VPLoss(beta_d={self.beta_d:g}, beta_min={self.beta_min:g}, epsilon_t={self.epsilon_t:g}, "
                f"xflip={self.xflip}, augment_p={self.augment_p:g})")


@LOSSES.register("edm_ve")
class VELoss(_DenoiserLoss):
    """EDM's loss of the VE formulation: σ = σ_min (σ_max/σ_min)^u with u ~ U(0, 1) (ln σ uniform), λ(σ) = 1/σ².

    Args:
        sigma_min: σ_min (0.02).
        sigma_max: σ_max (100).
        xflip: as `EDMLoss`.
        augment_p: as `EDMLoss`.
    """

    name = "edm_ve"

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0, xflip: bool = False,
                 augment_p: float = 0.0):
        super().__init__(xflip, augment_p)
        self.sigma_min, self.sigma_max = _number("sigma_min", sigma_min), _number("sigma_max", sigma_max)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"need sigma_min < sigma_max; got {sigma_min!r}, {sigma_max!r}")

    def sigma(self, batch, generator, device, dtype):
        u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** u

    def weight(self, sigma):
        return 1 / sigma ** 2

    def __repr__(self) -> str:
        return (f"VELoss(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, xflip={self.xflip}, "
                f"augment_p={self.augment_p:g})")


# ---------------------------------------------------------------------------------------------------------------
# Presets: their train.py on CIFAR-10
# ---------------------------------------------------------------------------------------------------------------

#: Their ``train.py`` options and defaults that the presets translate (``duration``, ``batch``, ``ema`` in their
#: units: Mimg, images, Mimg; ``augment`` the probability p of their augmentation pipeline, 0: off).
OPTIONS: Dict[str, Any] = {"duration": 200.0, "batch": 512, "lr": 1e-3, "ema": 0.5, "dropout": 0.13,
                           "cbase": None, "cres": None, "augment": 0.12, "xflip": False, "seed": 0}
#: The network's augmentation labels with augmentation on (their train.py's ``augment_dim``: 9).
AUGMENT_DIM = EDMAugment(**CIFAR10).label_dim
#: Fixed in their ``training_loop``: lr ramp-up 10 Mimg, EMA ramp-up ratio 0.05; a tick is 50 kimg and a snapshot
#: every 50 ticks.
LR_RAMPUP_KIMG, EMA_RAMPUP, TICK_KIMG, SNAPSHOT_TICKS = 10_000, 0.05, 50, 50
#: The noise range (σ_min, T) of each preconditioning's `EDMSDE`: their sampler's range [max(0.002, σ_min),
#: min(80, σ_max)], except that T covers the training range where it is bounded (VP's σ(1), VE's 100).
SDE_RANGES = {"edm": (0.002, 80.0), "ve": (0.02, 100.0), "vp": (0.002, VPLoss().sigma_max)}


def names() -> List[str]:
    """The presets: ``edm/cifar10-<arch>-<precond>`` (unconditional, their default) and ``…-cond`` (``--cond=1``)."""
    return [f"edm/cifar10-{arch}-{precond}{suffix}" for arch in ARCHITECTURES for precond in ("edm", "vp", "ve")
            for suffix in ("", "-cond")]


def _parse(preset: str) -> Tuple[str, str, bool]:
    if preset not in names():
        raise ValueError(f"unknown EDM preset {preset!r}; valid names: {', '.join(names())}")
    parts = preset.split("/", 1)[1].split("-")
    return parts[1], parts[2], len(parts) == 4


def run_sections(preset: str, overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Dict[str, Any]]:
    """The sections of a scoresde run (data, sde, model, loss, train) that train ``preset`` as their train.py does.

    ``overrides`` changes their command-line options (`OPTIONS`: duration in Mimg, batch, lr, ema in Mimg, dropout,
    cbase, cres, augment, xflip, seed); anything else is a run override (``--model.num_blocks=2``). Their value → ours:

    - data: their ``images / 127.5 − 1`` → ``cifar10`` with data_range [−1, 1] (give ``data.path``); ``--xflip``
      (off by default) → the loss's ``xflip``; their labels with ``--cond``.
    - augmentation: ``--augment=0.12`` → the loss's ``augment_p`` 0.12 (their pipeline's x-flip of a random half,
      y-flip, scaling, rotation, anisotropy and translation, `scoresde.zoo.edm_augment`) and the net's
      ``augment_dim`` 9; ``augment=0`` → neither (``augment_dim`` 0, as their train.py).
    - net: `EDMNet` with their arch's settings (model_channels 128, channel_mult [2, 2, 2] for DDPM++ / NCSN++,
      192 and [1, 2, 3, 4] for ADM), dropout 0.13, num_classes 10 with ``--cond``; the run's model is
      ``ScoreModel(parameterization="x0", preconditioning=False)`` on `EDMSDE` (`SDE_RANGES`).
    - loss: `EDMLoss`, `VPLoss` or `VELoss` with their defaults.
    - Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8 (the Trainer's Adam) and no weight decay.
    - duration 200 Mimg → ``steps`` = ⌈200·10⁶/512⌉ = 390625; batch 512 → ``batch_size`` 512.
    - lr ramp-up lr · min(n B/10⁷, 1) at step n = 0, 1, … → ``warmup_steps`` = round(10⁷/B) = 19531, i.e.
      lr · min((n + 1)/19531, 1): one step ahead of theirs (their first step has lr 0).
    - EMA half-life 0.5 Mimg → ``ema_half_life`` = 500000 images, ramp-up 0.05 → ``ema_rampup`` 0.05 (half-life
      min(500000, 0.05 (n + 1) B) at update n; theirs has n B, also one step ahead).
    - gradients: they clip nothing and replace NaN by 0 and ±inf by ±1e5 before the step → ``grad_clip`` null;
      scoresde's Trainer instead stops with NonFiniteLossError at a non-finite loss or gradient norm (no update is
      applied). With float32 training that does not happen in a healthy run; where it does, theirs trains on,
      ours stops at the last checkpoint.
    - no label dropout (``cond_dropout`` 0; scoresde's default for a conditional model is 0.1).
    - snapshots every 50 ticks of 50 kimg → ``checkpoint_every`` = round(2.5·10⁶/B) = 4883; ``log_every`` 100;
      ``seed`` 0 (theirs is random unless given).
    """
    arch, precond, cond = _parse(preset)
    options = dict(OPTIONS)
    for key, value in dict(overrides or {}).items():
        if key not in OPTIONS:
            raise ValueError(f"unknown option {key!r} of their train.py for preset {preset!r}; valid: "
                             f"{', '.join(OPTIONS)} (other settings are run overrides such as --model.num_blocks=2)")
        options[key] = value
    augment = _number("augment", options["augment"], positive=False)
    if augment > 1:
        raise ValueError(f"augment must be a probability in [0, 1]; got {options['augment']!r}")
    batch = int(options["batch"])
    duration = _number("duration", options["duration"])
    if batch < 1:
        raise ValueError(f"batch must be a positive integer; got {options['batch']!r}")
    total_images = max(int(duration * 1000), 1) * 1000             # their total_kimg, in images
    model = {"net": "edm", "parameterization": "x0", "preconditioning": False, "precond": precond, "arch": arch,
             "dropout": float(options["dropout"]), "augment_dim": AUGMENT_DIM if augment else 0,
             "num_classes": 10 if cond else None}
    if options["cbase"] is not None:
        model["model_channels"] = int(options["cbase"])
    if options["cres"] is not None:
        model["channel_mult"] = [int(c) for c in options["cres"]]
    sigma_min, sigma_max = SDE_RANGES[precond]
    loss_name = PRECONDITIONINGS[precond][1]
    loss = {"name": loss_name, "xflip": bool(options["xflip"]), "augment_p": augment}
    if precond == "edm":
        loss.update(P_mean=-1.2, P_std=1.2, sigma_data=0.5)
    elif precond == "vp":
        loss.update(beta_d=19.9, beta_min=0.1, epsilon_t=1e-5)
    else:
        loss.update(sigma_min=0.02, sigma_max=100.0)
    train = {"steps": -(-total_images // batch), "batch_size": batch, "lr": float(options["lr"]),
             "warmup_steps": max(round(LR_RAMPUP_KIMG * 1000 / batch), 1), "lr_decay": "constant",
             "grad_clip": None, "adam_betas": [0.9, 0.999], "weight_decay": 0.0,
             "ema_half_life": float(int(float(options["ema"]) * 1000) * 1000), "ema_rampup": EMA_RAMPUP,
             "cond_dropout": 0.0, "seed": int(options["seed"]), "log_every": 100,
             "checkpoint_every": max(round(SNAPSHOT_TICKS * TICK_KIMG * 1000 / batch), 1)}
    return {"data": {"name": "cifar10", "data_range": [-1.0, 1.0]},
            "sde": {"name": "edm", "sigma_min": sigma_min, "sigma_max": sigma_max},
            "model": model, "loss": loss, "train": train}
