"""Linear-Gaussian measurements y = A x₀ + n, n ~ N(0, σ_y² I) (or N(0, R)), for inverse problems.

    meas = sd.LinearMeasurement(A, y, noise_std=0.1)            # A: (m, d) acting on the flattened sample
    meas = sd.LinearMeasurement(sd.Mask(mask), y)               # inpainting: observe where mask is True

``y`` is one observation shared by the batch ((m,) for a matrix, one sample's shape (*D) for a mask) or one per
sample ((B, m) / (B, *D)). A matrix is decomposed once by a thin SVD A = U S Vᵀ (rank r); a mask is diagonal. With
them every Gaussian step the methods need is exact in O(B r d):

- ``solve_outer(v, a, b)``: (a I + b A Aᵀ)⁻¹ v (ΠGDM's covariance), a ≥ 0, b ≥ 0 numbers or (B,) tensors.
- ``proximal(x, rho)``: the mean of z ∝ exp(−‖y − A z‖²/2σ_y²) N(z; x, ρ² I), the proximal map of the data term
  (σ_y = 0: the projection of x onto A z = y); ``sample_proximal`` draws z from that Gaussian. Along each right
  singular vector v_i the data's share is α_i = S_i² ρ² / (S_i² ρ² + σ_y²):
      vᵢᵀ z = α_i (uᵢᵀ y)/S_i + (1 − α_i) vᵢᵀ x + √(ρ² σ_y² / (S_i² ρ² + σ_y²)) nᵢ,   and z = x + ρ n off the range of Aᵀ.

A general noise covariance R (``noise_cov``, (m, m), matrices only) is for the exact posterior
(`scoresde.GaussianMixture.posterior`); ``inflated(rho)`` is the measurement with noise R + ρ² A Aᵀ, whose
posterior the split-Gibbs chain targets at a fixed coupling ρ.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .._utils import expand_like

Tensor = torch.Tensor


class Mask:
    """An inpainting operator: observe the entries where ``mask`` is True (A x = x restricted to them).

    Args:
        mask: boolean (or 0/1) tensor of one sample's shape (*D), e.g. (1, 8, 8) for a one-channel image.
    """

    def __init__(self, mask):
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError("mask must be boolean or hold only 0 and 1")
            mask = mask != 0
        if mask.dim() == 0:
            raise ValueError("mask must have one sample's shape (*D), e.g. (2,) or (1, 8, 8); got a scalar")
        if not bool(mask.any()):
            raise ValueError("mask observes nothing: at least one entry must be True")
        self.mask = mask

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.mask.shape)

    @property
    def observed(self) -> int:
        """m, the number of observed entries."""
        return int(self.mask.sum())

    @classmethod
    def from_spec(cls, spec: str, shape, generator: Optional[torch.Generator] = None) -> "Mask":
        """A named mask for one sample's ``shape``: ``"top"`` / ``"left"`` (observe the top / left half of an image,
        or the first half of a vector), ``"random:p"`` (each entry observed with probability p), ``"first:k"``
        (the first k entries of the flattened sample)."""
        shape = tuple(int(s) for s in shape)
        numel = math.prod(shape)
        if spec in ("top", "left"):
            mask = torch.zeros(shape, dtype=torch.bool)
            if len(shape) >= 2:
                axis = len(shape) - 2 if spec == "top" else len(shape) - 1
                index = [slice(None)] * len(shape)
                index[axis] = slice(0, shape[axis] // 2)
                mask[tuple(index)] = True
            else:
                mask.view(-1)[: max(numel // 2, 1)] = True
            return cls(mask)
        name, _, value = str(spec).partition(":")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if name == "random" and 0 < number <= 1:
            u = torch.rand(shape, generator=generator)
            mask = u < number
            if not bool(mask.any()):
                mask.view(-1)[0] = True
            return cls(mask)
        if name == "first" and number == int(number) and 1 <= number <= numel:
            mask = torch.zeros(numel, dtype=torch.bool)
            mask[: int(number)] = True
            return cls(mask.reshape(shape))
        raise ValueError(f"unknown mask {spec!r}; valid choices: 'top', 'left', 'random:p' with 0 < p <= 1, "
                         f"'first:k' with 1 <= k <= {numel}")


class LinearMeasurement:
    """y = A x₀ + n with n ~ N(0, σ_y² I) (``noise_std``) or N(0, R) (``noise_cov``).

    Args:
        operator: an (m, d) matrix acting on the flattened sample, or a `Mask`.
        y: the observation: (m,) or (B, m) for a matrix; (*D) or (B, *D) for a mask (unobserved entries ignored).
        noise_std: σ_y ≥ 0 (0: noiseless; the methods that divide by it say so).
        noise_cov: instead of σ_y, a symmetric positive semi-definite (m, m) covariance R (matrices only; used by
            the exact posterior; the sampling methods need isotropic noise).
    """

    def __init__(self, operator, y, noise_std: float = 0.0, noise_cov=None):
        if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not (
                math.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number >= 0; got {noise_std!r}")
        self.noise_std = float(noise_std)
        if isinstance(operator, Mask):
            self.mask: Optional[Mask] = operator
            self.matrix = None
            self.dim = math.prod(operator.shape)
            self.sample_shape = operator.shape
            self.m = operator.observed
            meas_shape = operator.shape
        else:
            if not torch.is_tensor(operator) and not hasattr(operator, "__array__"):
                raise TypeError(f"A must be an (m, d) tensor or a scoresde.Mask; got {type(operator).__name__}")
            A = torch.as_tensor(operator)
            if A.dim() != 2 or A.shape[0] < 1 or A.shape[1] < 1 or not A.is_floating_point():
                raise ValueError(f"A must be a floating-point matrix of shape (m, d) acting on the flattened "
                                 f"sample; got {tuple(A.shape)} of dtype {A.dtype}")
            if not bool(torch.isfinite(A).all()):
                raise ValueError("A must be finite")
            self.mask, self.matrix = None, A
            self.m, self.dim = A.shape
            self.sample_shape = None
            meas_shape = (self.m,)
            a64 = A.to(torch.float64)
            U, S, Vh = torch.linalg.svd(a64, full_matrices=False)
            keep = S > S.max() * max(A.shape) * torch.finfo(torch.float64).eps
            if not bool(keep.any()):
                raise ValueError("A is zero: it observes nothing")
            self._svd = (U[:, keep], S[keep], Vh[keep].T)          # U (m, r), S (r,), V (d, r)
        self.meas_shape = tuple(meas_shape)
        y = torch.as_tensor(y)
        if not y.is_floating_point():
            y = y.to(torch.get_default_dtype())
        if tuple(y.shape) != self.meas_shape and tuple(y.shape[1:]) != self.meas_shape:
            what = f"({self.m},) or (B, {self.m})" if self.mask is None else \
                f"one sample's shape {self.meas_shape} or (B, *{self.meas_shape})"
            raise ValueError(f"y must have shape {what}; got {tuple(y.shape)}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError("y must be finite")
        self.y = y
        self.batched = tuple(y.shape) != self.meas_shape
        self.noise_cov = None
        if noise_cov is not None:
            if self.mask is not None:
                raise ValueError("noise_cov is for a matrix A; a Mask takes noise_std (isotropic noise)")
            R = torch.as_tensor(noise_cov).to(torch.float64)
            if R.shape != (self.m, self.m) or not bool(torch.isfinite(R).all()):
                raise ValueError(f"noise_cov must be a finite ({self.m}, {self.m}) matrix; got {tuple(R.shape)}")
            if not torch.allclose(R, R.T, rtol=1e-8, atol=1e-12) or float(torch.linalg.eigvalsh(R).min()) < \
                    -1e-10 * max(float(R.abs().max()), 1.0):
                raise ValueError("noise_cov must be symmetric positive semi-definite")
            self.noise_cov = (R + R.T) / 2

    # -- description ----------------------------------------------------------------------------------
    def __repr__(self) -> str:
        op = f"Mask({self.m} of {self.dim} observed)" if self.mask is not None else f"A ({self.m}, {self.dim})"
        noise = "R (general)" if self.noise_cov is not None else f"noise_std={self.noise_std:g}"
        return f"LinearMeasurement({op}, {noise}{', y per sample' if self.batched else ''})"

    def require_isotropic(self, what: str, positive: bool = False) -> float:
        """σ_y, refusing a general covariance (and σ_y = 0 when ``positive``)."""
        if self.noise_cov is not None:
            raise ValueError(f"{what} needs isotropic measurement noise (noise_std); this measurement has a general "
                             f"noise_cov")
        if positive and not self.noise_std > 0:
            raise ValueError(f"{what} divides by the measurement noise: it needs noise_std > 0; got noise_std = 0 "
                             f"(use a method that handles noiseless data: pigdm, tweedie_moment, replacement, "
                             f"repaint, split_gibbs, red, or dps with normalized=True)")
        return self.noise_std

    def noise_covariance(self, dtype=torch.float64, device=None) -> Tensor:
        """R as a dense (m, m) matrix (σ_y² I when isotropic)."""
        if self.noise_cov is not None:
            return self.noise_cov.to(device=device, dtype=dtype)
        return torch.eye(self.m, dtype=dtype, device=device) * self.noise_std ** 2

    def dense(self, dtype=torch.float64, device=None) -> Tuple[Tensor, Tensor]:
        """A as a dense (m, d) matrix over the flattened sample (a mask: its observed rows of the identity) and
        y as (m,) or (B, m) in the same coordinates."""
        if self.mask is None:
            return self.matrix.to(device=device, dtype=dtype), self.y.to(device=device, dtype=dtype)
        flat = self.mask.mask.reshape(-1).to(device)
        A = torch.eye(self.dim, dtype=dtype, device=device)[flat]
        y = self.y.to(device=device, dtype=dtype)
        y = y.reshape(-1)[flat] if not self.batched else y.reshape(y.shape[0], -1)[:, flat]
        return A, y

    def inflated(self, rho: float) -> "LinearMeasurement":
        """The same A and y with noise covariance R + ρ² A Aᵀ: the law the split-Gibbs chain's x samples at a
        fixed coupling ρ."""
        if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho >= 0):
            raise ValueError(f"rho must be a finite number >= 0; got {rho!r}")
        if self.mask is not None:
            return LinearMeasurement(self.mask, self.y, math.sqrt(self.noise_std ** 2 + rho ** 2))
        A = self.matrix.to(torch.float64)
        return LinearMeasurement(self.matrix, self.y, noise_cov=self.noise_covariance() + rho ** 2 * A @ A.T)

    # -- the operator --------------------------------------------------------------------------------
    def check_x(self, x: Tensor) -> None:
        if not torch.is_tensor(x) or x.dim() < 2:
            raise ValueError(f"x must be a batch (B, *D); got {getattr(x, 'shape', type(x).__name__)}")
        if self.mask is not None and tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"the mask has one sample's shape {self.sample_shape}; x has samples of shape "
                             f"{tuple(x.shape[1:])}")
        if self.mask is None and x[0].numel() != self.dim:
            raise ValueError(f"A is ({self.m}, {self.dim}): samples must have {self.dim} entries; x has shape "
                             f"{tuple(x.shape)}")
        if self.batched and self.y.shape[0] != x.shape[0]:
            raise ValueError(f"y holds one observation per sample ({self.y.shape[0]}); x has batch {x.shape[0]}")

    def _mask_like(self, x: Tensor) -> Tensor:
        return self.mask.mask.to(x.device)[None]

    def forward(self, x: Tensor) -> Tensor:
        """A x: (B, m) for a matrix, (B, *D) with the unobserved entries zero for a mask."""
        self.check_x(x)
        if self.mask is not None:
            return x * self._mask_like(x)
        return x.reshape(x.shape[0], -1) @ self.matrix.to(x).T

    def adjoint(self, v: Tensor, like: Tensor) -> Tensor:
        """Aᵀ v shaped like the sample batch ``like`` (B, *D)."""
        if self.mask is not None:
            return v * self._mask_like(like)
        return (v @ self.matrix.to(v)).reshape(like.shape)

    def observation(self, x: Tensor) -> Tensor:
        """y in x's dtype and device, broadcast to x's batch: (B, m) or (B, *D)."""
        y = self.y.to(device=x.device, dtype=x.dtype)
        if not self.batched:
            y = y.unsqueeze(0).expand((x.shape[0],) + self.meas_shape)
        if self.mask is not None:
            y = y * self._mask_like(x)
        return y

    def residual(self, x: Tensor) -> Tensor:
        """y − A x, (B, m) or (B, *D) (zero on unobserved entries)."""
        return self.observation(x) - self.forward(x)

    # -- exact Gaussian steps ----------------------------------------------------------------------------
    def _factors(self, x: Tensor):
        U, S, V = self._svd
        return U.to(x), S.to(x), V.to(x)

    def solve_outer(self, v: Tensor, a, b) -> Tensor:
        """(a I + b A Aᵀ)⁻¹ v for v of the measurement's shape (B, m) / (B, *D); a, b ≥ 0 numbers or (B,)."""
        a, b = _per_sample(a, v), _per_sample(b, v)
        if self.mask is not None:
            return v * self._mask_like(v) / (a + b)
        U, S, _ = self._factors(v)
        c = v @ U                                                          # (B, r)
        inside = c / (a + b * S * S)
        if U.shape[1] == self.m:                                           # full row rank: no complement
            return inside @ U.T
        return (v - c @ U.T) / a + inside @ U.T

    def proximal(self, x: Tensor, rho) -> Tensor:
        """argmin_z ‖y − A z‖²/(2σ_y²) + ‖z − x‖²/(2ρ²), shape of x (σ_y = 0: the nearest z with A z = y)."""
        return self._proximal(x, rho, None)

    def sample_proximal(self, x: Tensor, rho, generator: Optional[torch.Generator] = None) -> Tensor:
        """z ~ N(proximal(x, ρ), (AᵀA/σ_y² + I/ρ²)⁻¹): the likelihood step of split Gibbs, exact."""
        return self._proximal(x, rho, generator if generator is not None else True)

    def _proximal(self, x: Tensor, rho, noise) -> Tensor:
        sigma_y = self.require_isotropic("the proximal step")
        self.check_x(x)
        rho = _per_sample(rho, x)
        y = self.observation(x)
        draw = None
        if noise is not None:
            generator = None if noise is True else noise
            from ..sampling._base import randn_like          # per-sample generators too

            draw = randn_like(x, generator)
        if self.mask is not None:
            keep = self._mask_like(x)
            alpha = rho * rho / (rho * rho + sigma_y ** 2)
            z = torch.where(keep, alpha * y + (1 - alpha) * x, x)
            if draw is not None:
                std_in = rho * sigma_y / torch.sqrt(rho * rho + sigma_y ** 2)
                z = z + torch.where(keep, std_in, rho) * draw
            return z
        U, S, V = self._factors(x)
        flat = x.reshape(x.shape[0], -1)
        rho2 = (rho * rho).reshape(-1, 1)
        alpha = S * S * rho2 / (S * S * rho2 + sigma_y ** 2)               # (B, r)
        coef_x = flat @ V                                                  # (B, r)
        target = (y @ U) / S
        z = flat + (alpha * (target - coef_x)) @ V.T
        if draw is not None:
            n = draw.reshape(x.shape[0], -1)
            std_in = torch.sqrt(rho2 * sigma_y ** 2 / (S * S * rho2 + sigma_y ** 2))
            z = z + rho.reshape(-1, 1) * n + ((std_in - rho.reshape(-1, 1)) * (n @ V)) @ V.T
        return z.reshape(x.shape)


def _per_sample(value, like: Tensor) -> Tensor:
    """A number or (B,) tensor as a tensor broadcasting against ``like`` (B, …)."""
    if torch.is_tensor(value) and value.dim() > 0:
        return expand_like(value.to(device=like.device, dtype=like.dtype), like)
    return torch.as_tensor(float(value), device=like.device, dtype=like.dtype)
