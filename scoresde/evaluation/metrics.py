"""Sample-based distances between distributions: energy distance and sliced W2 (against the oracle), and the image
metrics on features (FID, KID, Inception score, precision/recall; `scoresde.evaluation.image_metrics`)."""
from __future__ import annotations

from typing import Optional

import torch

Tensor = torch.Tensor


def _flat(x: Tensor, name: str) -> Tensor:
    if not torch.is_tensor(x) or x.dim() < 2:
        raise ValueError(f"{name} must be a tensor of shape (N, *D); got {getattr(x, 'shape', type(x).__name__)}")
    return x.reshape(x.shape[0], -1)


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    """Squared energy distance 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ (unbiased U-statistic), a 0-dim tensor.

    It is zero iff the two laws agree; for two independent samples of one law its expectation is 0, so
    compare against the same statistic between two independent reference samples (the noise floor).
    x: (N, *D), y: (M, *D) with the same D.
    """
    x, y = _flat(x, "x"), _flat(y, "y").to(x)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of dimensions; got {x.shape[1]} and {y.shape[1]}")
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("energy_distance needs at least 2 samples on each side")
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return 2 * xy - xx - yy


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """Sliced 2-Wasserstein distance over random unit directions (equal sample sizes), a 0-dim tensor."""
    x, y = _flat(x, "x"), _flat(y, "y").to(x)
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs x and y of equal shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    dirs = torch.randn((x.shape[1], int(n_projections)), generator=generator, device=x.device, dtype=x.dtype)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ dirs, dim=0)
    py, _ = torch.sort(y @ dirs, dim=0)
    return ((px - py) ** 2).mean().sqrt()


from .image_metrics import (as_features, feature_statistics, fid, fid_extrapolated, fid_from_stats,  # noqa: E402
                            inception_score, kid, precision_recall)

__all__ = ["energy_distance", "sliced_wasserstein", "fid", "fid_from_stats", "feature_statistics", "fid_extrapolated",
           "kid", "precision_recall", "inception_score", "as_features"]
