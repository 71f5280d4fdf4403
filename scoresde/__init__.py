"""scoresde: score-based diffusion models in continuous time, proven on an exact oracle.

    import scoresde as sd
    sde = sd.VPSDE()
    gmm = sd.GaussianMixture(means, stds, weights)
    score = gmm.score(sde)            # exact ∇ log p_t
    guided = sd.classifier_free_guidance(model, cond=3, scale=2.0)   # conditional models: a score(x, t) too
    meas = sd.LinearMeasurement(A, y, noise_std=0.1)                 # inverse problems: exact posterior ...
    exact = gmm.posterior(meas)
    res = sd.solve_inverse("split_gibbs", sde, score, meas, (256, 2)) # ... against every method
"""
from .evaluation.metrics import energy_distance, sliced_wasserstein
from .evaluation import metrics
from .evaluation.compare import Comparison, compare_samplers
from .discrete import alphas_cumprod, ddpm_betas, discrete_snr, ncsn_sigmas
from .score import Score
from .evaluation.oracle import GaussianMixture, MeasurementScore, PosteriorMixtures, eight_gaussians
from .sde import (SDE, SDES, CosineVPSDE, DiscreteVPSDE, EDMSDE, LinearSDE, LinearSDEProtocol, ProbabilityFlowODE,
                  PRIOR_SNR_THRESHOLD, PriorMismatchWarning, RectifiedFlowSDE, ReverseSDE, ScoreSDEVESDE, SubVPSDE,
                  VESDE, VPSDE)
from . import conversions
from .conversions import denoise as tweedie_denoise
from .data import dequantize
from .likelihood import (BitsPerDimResult, EvaluationResult, LikelihoodResult, bits_per_dim,
                         bits_per_dim_from_log_prob, evaluate_likelihood, log_likelihood)
from . import nets
from .nets import NETS
from .losses import (LOSSES, WEIGHTINGS, DSMLoss, classifier_loss, dsm_loss, score_matching_loss,
                     sliced_score_matching_loss)
from . import guidance
from .interop import as_denoiser, from_denoiser, from_diffusers, from_velocity
from .guidance import classifier_free_guidance, classifier_guidance, conditional_score
from . import inverse
from .inverse import (INVERSE_METHODS, InpaintingSampler, LinearMeasurement, Mask, RedResult, SplitGibbsSampler,
                      dps_score, pigdm_score, red, solve_inverse, tweedie_moment_score)
from .parameterization import PARAMETERIZATIONS, Parameterization, ScoreModel
from . import data
from .data import DATASETS
from .evaluation import plot
from .training import EMA, NonFiniteLossError, TrainConfig, Trainer, TrainingInterrupted, post_hoc_ema
from ._utils import NonFiniteError
from .sampling import SAMPLERS, GridSearchResult, SampleResult, Sampler, TimeGrid, optimize_grid, time_grid
from .sampling import PCSampler, ProbabilityFlowSampler, ReverseSDESampler
from .sampling import ClipThreshold, DynamicThreshold, sdedit
from .sampling import (DDIMSampler, DPMSolver, DPMSolverSDE, HeunSampler, AdaptiveDPMSolver, AncestralSampler,
                       DEISSampler, LMSSampler, UniPCSampler)
from ._registry import Registry
from .app.runs import Run, load
from ._adapters import ODE_SOLVERS
from . import zoo
from .zoo import from_edm, from_score_sde_pytorch

__version__ = "0.1.0"

__all__ = [
    "Score", "SDE", "LinearSDE", "LinearSDEProtocol", "VESDE", "VPSDE", "SubVPSDE", "ReverseSDE", "ProbabilityFlowODE",
    "PriorMismatchWarning", "PRIOR_SNR_THRESHOLD",
    "EDMSDE", "RectifiedFlowSDE", "CosineVPSDE", "DiscreteVPSDE", "ScoreSDEVESDE", "zoo", "from_score_sde_pytorch", "from_edm",
    "Registry", "ODE_SOLVERS", "load", "Run", "SDES", "NETS", "SAMPLERS", "PARAMETERIZATIONS", "DATASETS", "WEIGHTINGS",
    "conversions", "Parameterization", "TimeGrid", "evaluate_likelihood", "EvaluationResult",
    "GaussianMixture", "PosteriorMixtures", "MeasurementScore", "eight_gaussians", "LinearMeasurement", "Mask",
    "ddpm_betas", "alphas_cumprod", "discrete_snr", "ncsn_sigmas",
    "energy_distance", "sliced_wasserstein", "metrics", "compare_samplers", "Comparison",
    "log_likelihood", "bits_per_dim", "bits_per_dim_from_log_prob", "dequantize", "LikelihoodResult", "BitsPerDimResult",
    "as_denoiser", "from_denoiser", "from_diffusers", "from_velocity", "guidance", "conditional_score", "classifier_free_guidance", "classifier_guidance", "classifier_loss",
    "nets", "ScoreModel", "dsm_loss", "DSMLoss", "LOSSES", "sliced_score_matching_loss", "score_matching_loss",
    "Sampler", "SampleResult", "time_grid", "optimize_grid", "GridSearchResult", "tweedie_denoise",
    "ReverseSDESampler", "ProbabilityFlowSampler", "PCSampler", "ClipThreshold", "DynamicThreshold", "sdedit",
    "HeunSampler", "DPMSolver", "DDIMSampler", "DPMSolverSDE", "UniPCSampler", "LMSSampler", "DEISSampler", "AncestralSampler", "AdaptiveDPMSolver", "InpaintingSampler", "SplitGibbsSampler",
    "inverse", "INVERSE_METHODS", "solve_inverse", "dps_score", "pigdm_score", "tweedie_moment_score", "red", "RedResult",
    "data", "plot", "EMA", "post_hoc_ema", "TrainConfig", "Trainer", "NonFiniteLossError", "TrainingInterrupted", "NonFiniteError",
]
