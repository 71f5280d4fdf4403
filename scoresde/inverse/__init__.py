"""Inverse problems with a score prior, y = A x₀ + n.

- `measurement`: `LinearMeasurement` (A as a matrix or a `Mask`, isotropic or general Gaussian noise) and the
  exact Gaussian pieces every method needs (residuals, proximal draws, the inflated measurement);
- `posterior`: posterior scores for any sampler, ∇ log p_t(x) + ∇ log p(y | x_t) by Tweedie's moments: DPS, ΠGDM,
  Tweedie-moment guidance;
- `inpainting`: replacement and RePaint (`InpaintingSampler`), for a mask;
- `split_gibbs`: split Gibbs / PnP-DM (`SplitGibbsSampler`), the score as an exact prior step;
- `red`: RED's point estimate;
- `solve`: one entry point, `solve_inverse(name, ...)` over `INVERSE_METHODS`.

Both samplers are `scoresde.Sampler` subclasses registered in `scoresde.SAMPLERS` ("inpainting", "split_gibbs").
Against the oracle: a Gaussian-mixture prior under a linear-Gaussian measurement has an exact mixture posterior
(`scoresde.GaussianMixture.posterior`).
"""
from .inpainting import InpaintingSampler
from .measurement import LinearMeasurement, Mask
from .posterior import dps_score, pigdm_score, tweedie_moment_score
from .red import RedResult, red
from .solve import INVERSE_METHODS, solve_inverse
from .split_gibbs import SplitGibbsSampler

__all__ = ["LinearMeasurement", "Mask", "dps_score", "pigdm_score", "tweedie_moment_score", "red", "RedResult",
           "InpaintingSampler", "SplitGibbsSampler", "INVERSE_METHODS", "solve_inverse"]
