"""Samplers: reverse SDE, probability-flow ODE, predictor–corrector, EDM Heun, DPM-Solver."""
from ._base import SampleResult, Sampler, tweedie_denoise
from .grids import GRIDS, time_grid
