"""scoresde: score-based diffusion models in continuous time, proven on an exact oracle.

    import scoresde as sd
    sde = sd.VPSDE()
    gmm = sd.GaussianMixture(means, stds, weights)
    score = gmm.score(sde)            # exact ∇ log p_t
"""
from .metrics import energy_distance, sliced_wasserstein
from .compare import Comparison, compare_samplers
from .discrete import alphas_cumprod, ddpm_betas, discrete_snr, ncsn_sigmas
from .oracle import GaussianMixture, eight_gaussians
from .sde import SDE, LinearSDE, ProbabilityFlowODE, ReverseSDE, SubVPSDE, VESDE, VPSDE
from .likelihood import (BitsPerDimResult, LikelihoodResult, bits_per_dim, bits_per_dim_from_log_prob, dequantize,
                         log_likelihood)
from . import nets
from .losses import dsm_loss, score_matching_loss, sliced_score_matching_loss
from .parameterization import ScoreModel
from . import data
from . import plot
from .training import EMA, NonFiniteLossError, TrainConfig, Trainer
from .sampling import SampleResult, Sampler, time_grid, tweedie_denoise
from .sampling import PCSampler, ProbabilityFlowSampler, ReverseSDESampler
from .sampling import DPMSolver, HeunSampler

__version__ = "0.1.0"

__all__ = [
    "SDE", "LinearSDE", "VESDE", "VPSDE", "SubVPSDE", "ReverseSDE", "ProbabilityFlowODE",
    "GaussianMixture", "eight_gaussians",
    "ddpm_betas", "alphas_cumprod", "discrete_snr", "ncsn_sigmas",
    "energy_distance", "sliced_wasserstein", "compare_samplers", "Comparison",
    "log_likelihood", "bits_per_dim", "bits_per_dim_from_log_prob", "dequantize", "LikelihoodResult", "BitsPerDimResult",
    "nets", "ScoreModel", "dsm_loss", "sliced_score_matching_loss", "score_matching_loss",
    "Sampler", "SampleResult", "time_grid", "tweedie_denoise",
    "ReverseSDESampler", "ProbabilityFlowSampler", "PCSampler",
    "HeunSampler", "DPMSolver",
    "data", "plot", "EMA", "TrainConfig", "Trainer", "NonFiniteLossError",
]
