"""Samplers: reverse SDE, probability-flow ODE, predictor–corrector, EDM Heun, DPM-Solver, DDIM-η, SDE-DPM-Solver++,
UniPC, LMS, DEIS, ancestral and adaptive DPM-Solver (the inverse-problem samplers live in `scoresde.inverse` and
register here too).

Each sampler module registers its classes in `SAMPLERS` (name → class), which configs and the command
line read; a user's sampler is one subclass of `Sampler` and one ``SAMPLERS.register`` line.
"""
from ._base import SAMPLERS, SampleResult, Sampler
from .grids import GRIDS, TimeGrid, time_grid
from .reverse_sde import ReverseSDESampler
from .probability_flow import ProbabilityFlowSampler
from .pc import CORRECTORS, PREDICTORS, Corrector, PCSampler, Predictor
from .heun import HeunSampler
from .dpm_solver import DPMSolver
from .ddim import DDIMSampler
from .dpm_solver_sde import DPMSolverSDE
from .unipc import UniPCSampler
from .lms import LMSSampler
from .deis import DEISSampler
from .ancestral import AncestralSampler
from .dpm_adaptive import AdaptiveDPMSolver
from .optimize import GridSearchResult, optimize_grid
from .threshold import ClipThreshold, DynamicThreshold, Threshold
from .edit import sdedit

SAMPLERS.register("euler_maruyama", ReverseSDESampler)

__all__ = ["SAMPLERS", "Sampler", "SampleResult", "TimeGrid", "GRIDS", "time_grid", "ReverseSDESampler",
           "ProbabilityFlowSampler", "PCSampler", "HeunSampler", "DPMSolver", "DDIMSampler", "DPMSolverSDE", "UniPCSampler", "LMSSampler", "DEISSampler", "AncestralSampler", "AdaptiveDPMSolver",
           "optimize_grid", "GridSearchResult", "PREDICTORS", "CORRECTORS", "Predictor", "Corrector",
           "ClipThreshold", "DynamicThreshold", "Threshold", "sdedit"]
