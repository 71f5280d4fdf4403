"""Thresholding of the data prediction x̂_0 = (x + σ² score)/s at every score evaluation of a sampler.

A threshold maps x̂_0 to a bounded x̂_0'; the sampler then sees the score whose data prediction is x̂_0',

    score'(x, t) = (s x̂_0' − x)/σ²,

so every solver step that reads x̂_0 (DPM-Solver++), ε̂ = (x − s x̂_0)/σ (DPM-Solver, DDIM) or the score (Heun, LMS)
uses the thresholded prediction. This is where diffusers applies it: on the x0 prediction in the scheduler's
``convert_model_output`` (DPMSolverMultistepScheduler, DEIS, UniPC; for their noise-prediction algorithms the noise
is recomputed from the thresholded x0, as here), the final denoising included.

- `ClipThreshold` (diffusers' ``clip_sample``): x̂_0' = clamp(x̂_0, −m, m).
- `DynamicThreshold` (Imagen, Saharia et al. 2022, §2.3; diffusers' ``thresholding``): per sample,
  s_q = clamp(quantile(|x̂_0|, ratio), 1, m) over all its entries, and x̂_0' = clamp(x̂_0, −s_q, s_q)/s_q.
"""
from __future__ import annotations

import abc
import math
from typing import Optional

import torch

from .. import conversions
from ..score import Score, as_score

Tensor = torch.Tensor


class Threshold(abc.ABC):
    """Maps a batch of data predictions x̂_0 (B, *D) to thresholded ones of the same shape."""

    @abc.abstractmethod
    def __call__(self, x0: Tensor) -> Tensor:
        """The thresholded x̂_0, shape (B, *D)."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


class ClipThreshold(Threshold):
    """diffusers' ``clip_sample``: x̂_0' = clamp(x̂_0, −max_value, max_value).

    Args:
        max_value: m > 0, the bound of the data (1 for images in [−1, 1]).
    """

    def __init__(self, max_value: float = 1.0):
        self.max_value = _positive(max_value, "max_value")

    def __call__(self, x0: Tensor) -> Tensor:
        return x0.clamp(-self.max_value, self.max_value)


class DynamicThreshold(Threshold):
    """Imagen's dynamic thresholding (diffusers' ``thresholding=True``).

    Per sample b, s_b = clamp(quantile(|x̂_0[b]|, ratio), min=1, max=max_value) over its entries, then
    x̂_0'[b] = clamp(x̂_0[b], −s_b, s_b)/s_b. With max_value < 1 the clamp returns max_value (torch's rule, and
    diffusers'), i.e. x̂_0 is clipped to ±max_value and rescaled to ±1.

    Args:
        ratio: the quantile, in (0, 1] (Imagen: 0.995).
        max_value: the largest s (diffusers' ``sample_max_value``).
    """

    def __init__(self, ratio: float = 0.995, max_value: float = 1.0):
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0 < ratio <= 1):
            raise ValueError(f"ratio must be a number in (0, 1]; got {ratio!r}")
        self.ratio, self.max_value = float(ratio), _positive(max_value, "max_value")

    def __call__(self, x0: Tensor) -> Tensor:
        flat = x0.reshape(x0.shape[0], -1)
        wide = flat.abs() if flat.dtype in (torch.float32, torch.float64) else flat.abs().float()  # quantile's dtypes
        s = torch.quantile(wide, self.ratio, dim=1).to(flat.dtype).clamp(min=1, max=self.max_value).unsqueeze(1)
        return (torch.clamp(flat, -s, s) / s).reshape(x0.shape)


def check_threshold(threshold, sampler: str) -> Optional[Threshold]:
    """None or a `Threshold` (any callable x̂_0 → x̂_0 is accepted, as a user's own rule)."""
    if threshold is None or isinstance(threshold, Threshold) or callable(threshold):
        return threshold
    raise TypeError(f"{sampler}(threshold=...) takes sd.ClipThreshold(max_value) or sd.DynamicThreshold(ratio, "
                    f"max_value) (or a callable x0 -> x0); got {type(threshold).__name__}")


def thresholded_score(sde, score, threshold) -> Score:
    """The score whose data prediction is ``threshold(x̂_0)``: (s threshold((x + σ² score)/s) − x)/σ², with s, σ
    the SDE's scale and std at t; it keeps what the wrapped score says about itself."""
    inner = as_score(score)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        s, sigma = conversions.scale_std(sde, t, x)
        x0 = threshold(conversions.score_to_x0(x, inner(x, t), s, sigma))
        return conversions.x0_to_score(x, x0, s, sigma)

    return inner.wrap(fn)
