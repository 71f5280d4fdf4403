"""Measuring samples and models: the exact oracle (`GaussianMixture`), sample distances (`metrics`), sampler
comparisons at matched cost (`compare`) and figures (`plot`, which imports matplotlib only when it draws)."""
from .compare import Comparison, compare_samplers
from .metrics import energy_distance, sliced_wasserstein
from .oracle import GaussianMixture, MeasurementScore, PosteriorMixtures, eight_gaussians

__all__ = ["GaussianMixture", "PosteriorMixtures", "MeasurementScore", "eight_gaussians", "energy_distance", "sliced_wasserstein", "compare_samplers",
           "Comparison"]
