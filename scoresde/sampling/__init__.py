"""Samplers: reverse SDE, probability-flow ODE, predictor–corrector, EDM Heun, DPM-Solver."""
from ._base import SampleResult, Sampler, tweedie_denoise
from .grids import GRIDS, time_grid
from .dpm_solver import DPMSolver
from .heun import HeunSampler
from .pc import PCSampler
from .probability_flow import ProbabilityFlowSampler
from .reverse_sde import ReverseSDESampler
