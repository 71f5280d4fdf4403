"""The oracle: a Gaussian mixture pushed through any linear SDE stays a Gaussian mixture.

With components N(μ_k, Σ_k) and weights w_k, the marginal at time t of a LinearSDE with scale s(t) and std σ(t) is

    p_t(x) = Σ_k w_k N(x; s μ_k, s² Σ_k + σ² I),

so its density and score are exact at every t. Every sampler, likelihood and loss is tested against it. Σ_k is
diagonal (``stds``) or full (``covariances``); a full one is stored as its eigen-decomposition Σ_k = U_k Λ_k U_kᵀ,
so s² Σ_k + σ² I = U_k (s² Λ_k + σ²) U_kᵀ and every formula is the diagonal one in the rotated coordinates U_kᵀ x.

Under a linear-Gaussian measurement y = A x₀ + n, n ~ N(0, R), the posterior is again a mixture (`posterior`):

    S_k = A Σ_k Aᵀ + R,   G_k = Σ_k Aᵀ S_k⁻¹,   m_k = μ_k + G_k (y − A μ_k),   C_k = Σ_k − G_k A Σ_k,
    w'_k ∝ w_k N(y; A μ_k, S_k),

the Kalman form of C_k = (Σ_k⁻¹ + Aᵀ R⁻¹ A)⁻¹, m_k = C_k (Σ_k⁻¹ μ_k + Aᵀ R⁻¹ y), which also holds for R = 0 (a
noiseless mask conditions each Gaussian on the observed entries; C_k is then singular). S_k, G_k and C_k do not
depend on y: for one observation per row, y (B, m), the B posteriors share them and differ only in m_ik and w'_ik
(`PosteriorMixtures`), and `GaussianMixture.measurement_score` is the exact conditional model
``(x, t, y) -> ∇ log p_t(x | y)`` with a continuous condition (an all-NaN row of y: the unconditional score).

With ``labels`` (component k belongs to class c(k)) every class's law stays a mixture too, and the noisy
classifier is exact:

    p_t(x | c) = Σ_{k: c(k)=c} w_k N_k,t(x) / Σ_{k: c(k)=c} w_k,     p_t(c | x) = Σ_{k: c(k)=c} w_k N_k,t(x) / p_t(x),

so ∇ log p_t(x) + ∇ log p_t(c | x) = ∇ log p_t(x | c) (Bayes): classifier guidance at γ = 1 with the exact
classifier *is* the exact conditional score.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .. import conversions
from .._utils import ScoreFn, as_time
from ..guidance.labels import check_labels
from ..inverse.measurement import LinearMeasurement, Mask
from ..score import Score

Tensor = torch.Tensor


class _Mixtures:
    """What a Gaussian mixture and a batch of mixtures sharing its covariances compute alike.

    A subclass sets ``means`` ((K, D), or (B, K, D): one set of component means per row of the data), ``weights``
    ((K,) or (B, K)), ``stds`` (K, D) (for full covariances the square roots of their eigenvalues), ``_basis``
    ((K, D, D) eigenvectors U_k, or None for diagonal covariances), ``dim`` D and ``labels``. Every formula below
    broadcasts over the optional leading dimension, so the density, score and marginal are written once for both;
    with batched parameters, row i of x is evaluated under mixture i.
    """

    @property
    def device(self):
        return self.means.device

    @property
    def dtype(self):
        return self.means.dtype

    @property
    def covariances(self) -> Tensor:
        """Σ_k as (K, D, D) matrices (diagonal ones too)."""
        var = self.stds ** 2
        if self._basis is None:
            return torch.diag_embed(var)
        return self._basis @ (var[..., None] * self._basis.transpose(1, 2))

    @property
    def full(self) -> bool:
        """Whether the covariances are full (stored rotated) rather than diagonal."""
        return self._basis is not None

    # -- density at t = 0 ------------------------------------------------------------------------------
    def log_prob(self, x: Tensor) -> Tensor:
        """log p_0(x), shape (B,)."""
        if not bool((self.stds > 0).all()):
            raise ValueError("a component covariance is singular, so p_0 has no density (a noiseless posterior "
                             "is concentrated on A x = y): use log_prob_t at t > 0")
        flat = self._flatten(x)
        return self._log_prob(flat, self.means.to(flat), self.stds.to(flat) ** 2)

    # -- pushed through a linear SDE -----------------------------------------------------------------
    def marginal(self, sde, t: Tensor):
        """Component means (B, K, D) and variances (B, K, D) of p_t; ``sde`` is any LinearSDE, t is (B,). For full
        covariances the variances are along each component's principal axes (the columns of U_k)."""
        s = sde.scale(t).to(self.dtype)
        sigma = sde.std(t).to(self.dtype)
        means = self.means.to(t.device)
        var0 = self.stds.to(t.device) ** 2
        m = s[:, None, None] * means
        v = (s * s)[:, None, None] * var0[None] + (sigma * sigma)[:, None, None]
        return m, v

    def log_prob_t(self, sde, x: Tensor, t: Tensor) -> Tensor:
        """log p_t(x) of the mixture pushed through ``sde`` to time t: shape (B,)."""
        t = as_time(t, x)
        flat = self._flatten(x)
        m, v = self.marginal(sde, t.to(self.dtype))
        return self._log_prob(flat, m.to(flat), v.to(flat))

    def score_t(self, sde, x: Tensor, t: Tensor) -> Tensor:
        """∇_x log p_t(x), shape of x: the responsibility-weighted sum of the component scores."""
        return self._score_over(sde, x, t)

    def _score_over(self, sde, x: Tensor, t: Tensor, excluded: Optional[Tensor] = None) -> Tensor:
        """The responsibility-weighted component scores, leaving out the components ``excluded`` (B, K) marks:
        the score of the mixture of the remaining ones (all of them: ∇ log p_t)."""
        t = as_time(t, x)
        flat = self._flatten(x)
        m, v = self.marginal(sde, t.to(self.dtype))
        m, v = m.to(flat), v.to(flat)
        diff = self._rotate(flat[:, None, :] - m)                   # (B, K, D), principal axes
        log_comp = self._log_components(diff, v)                      # (B, K)
        if excluded is not None:
            log_comp = log_comp.masked_fill(excluded, -math.inf)
        resp = torch.softmax(log_comp, dim=1)                         # (B, K)
        return (-self._unrotate(resp[..., None] * diff / v).sum(1)).reshape(x.shape)

    def score(self, sde) -> ScoreFn:
        """The exact score function ``(x, t) -> ∇_x log p_t(x)`` of the mixture under ``sde``."""

        def exact_score(x: Tensor, t: Tensor) -> Tensor:
            return self.score_t(sde, x, t)

        return Score(exact_score, closed_form=True)

    def denoiser(self, sde) -> ScoreFn:
        """Tweedie's exact denoiser ``(x, t) -> E[x_0 | x_t = x] = (x + σ² score) / s``."""

        def exact_denoiser(x: Tensor, t: Tensor) -> Tensor:
            return conversions.denoise(sde, self.score(sde), x, t)

        exact_denoiser.closed_form = True
        return exact_denoiser

    # -- internals -----------------------------------------------------------------------------------
    def _draw(self, k: Tensor, means: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        """One draw from component k[j] around ``means[j]`` for every j: (n, D) from k (n,) and means (n, D)."""
        z = torch.randn((k.shape[0], self.dim), generator=generator, device=self.device, dtype=self.dtype)
        offset = self.stds[k] * z
        if self._basis is not None:
            offset = (self._basis[k] @ offset[..., None])[..., 0]
        return means + offset

    def _log_components_t(self, sde, x: Tensor, t: Tensor) -> Tensor:
        """log w_k N_k,t(x), shape (B, K)."""
        t = as_time(t, x)
        flat = self._flatten(x)
        m, v = self.marginal(sde, t.to(self.dtype))
        return self._log_components(self._rotate(flat[:, None, :] - m.to(flat)), v.to(flat))

    def _flatten(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x[0].numel() != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}) (or (B, *S) with {self.dim} elements per "
                             f"sample); got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim)

    def _rotate(self, diff: Tensor) -> Tensor:
        """Offsets (B, K, D) in each component's principal axes, U_kᵀ diff (unchanged when diagonal)."""
        if self._basis is None:
            return diff
        return torch.einsum("bkd,kde->bke", diff, self._basis.to(diff))

    def _unrotate(self, v: Tensor) -> Tensor:
        """U_k v: back from principal axes to the data's coordinates."""
        if self._basis is None:
            return v
        return torch.einsum("kde,bke->bkd", self._basis.to(v), v)

    def _log_components(self, diff: Tensor, var: Tensor) -> Tensor:
        """log w_k + log N(diff; 0, diag(var)) for rotated diff (B, K, D) and var broadcastable to it: (B, K)
        (the weights are (K,) or, batched, (B, K))."""
        log_w = torch.log(self.weights.to(diff))
        quad = (diff * diff / var).sum(-1)
        log_det = torch.log(var).sum(-1)
        return log_w - 0.5 * (quad + log_det + self.dim * math.log(2 * math.pi))

    def _log_prob(self, flat: Tensor, means: Tensor, var: Tensor) -> Tensor:
        """log Σ_k w_k N(flat; means_k, var_k) for means (K, D) or (B, K, D) and var broadcastable: (B,)."""
        diff = self._rotate(flat[:, None, :] - means)
        return torch.logsumexp(self._log_components(diff, var), dim=1)


class GaussianMixture(_Mixtures):
    """Mixture of K Gaussians in D dimensions, with diagonal or full covariances.

    Args:
        means: (K, D) component means.
        stds: (K,) isotropic or (K, D) diagonal component standard deviations, all > 0.
        weights: (K,) non-negative mixture weights (normalised here); uniform when omitted.
        labels: optional (K,) integer class of each component, every class 0 … C − 1 used at least once.
        covariances: instead of ``stds``, (K, D, D) symmetric positive semi-definite covariances (a singular one,
            as a noiseless posterior has, is fine at t > 0; ``log_prob`` at t = 0 then refuses).
        dtype: parameters are stored in this dtype (float64 by default, for sharp checks).

    Data may have shape (B, D) or (B, *S) with prod(S) = D; it is flattened internally.
    """

    def __init__(self, means, stds=None, weights=None, labels=None, covariances=None, dtype=torch.float64,
                 device=None):
        means = torch.as_tensor(means, dtype=dtype, device=device)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D); got {tuple(means.shape)}")
        K, D = means.shape
        _check_finite_rows(means, "means")
        self._basis = None
        if (stds is None) == (covariances is None):
            raise ValueError("give exactly one of stds ((K,) or (K, D)) and covariances ((K, D, D))")
        if covariances is not None:
            self._basis, stds = _eigen(covariances, K, D, dtype, means.device)
        stds = torch.as_tensor(stds, dtype=dtype, device=means.device)
        if stds.dim() == 0:
            stds = stds.expand(K)
        if stds.shape == (K,):
            stds = stds[:, None].expand(K, D)
        if stds.shape != (K, D):
            raise ValueError(f"stds must have shape (K,) = ({K},) or (K, D) = ({K}, {D}); got {tuple(stds.shape)}")
        _check_finite_rows(stds, "stds")
        if self._basis is None and not bool((stds > 0).all()):
            raise ValueError("stds must be positive")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=dtype, device=means.device)
        weights = torch.as_tensor(weights, dtype=dtype, device=means.device)
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape (K,) = ({K},); got {tuple(weights.shape)}")
        _check_finite_rows(weights, "weights")
        if not bool((weights >= 0).all()) or not float(weights.sum()) > 0:
            raise ValueError("weights must be non-negative with a positive sum")
        self.means, self.stds = means, stds.contiguous()
        self.weights = weights / weights.sum()
        self.dim = D
        self.labels = None if labels is None else _check_labels(labels, K, means.device)

    @classmethod
    def _from_parts(cls, means: Tensor, weights: Tensor, stds: Tensor, basis: Optional[Tensor],
                    labels: Optional[Tensor]) -> "GaussianMixture":
        """A mixture of already checked parts (normalised weights, an eigen-decomposition as `_eigen` gives)."""
        mixture = cls.__new__(cls)
        mixture.means, mixture.weights, mixture.stds, mixture._basis = means, weights, stds, basis
        mixture.dim, mixture.labels = means.shape[-1], labels
        return mixture

    @property
    def num_classes(self):
        """C, the number of classes (labels 0 … C − 1), or None for an unlabelled mixture."""
        return None if self.labels is None else int(self.labels.max()) + 1

    def _parameters(self, keep=None, **changes) -> dict:
        """Keyword arguments rebuilding this mixture (components ``keep`` only), with ``changes``."""
        keep = slice(None) if keep is None else keep
        args = dict(means=self.means[keep], weights=self.weights[keep], dtype=self.dtype, device=self.device)
        if self._basis is None:
            args["stds"] = self.stds[keep]
        else:
            args["covariances"] = self.covariances[keep]
        args.update(changes)
        return args

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        """A copy with parameters on ``device`` / in ``dtype``."""
        dtype = dtype or self.dtype
        args = self._parameters(labels=self.labels, dtype=dtype, device=device)
        return GaussianMixture(**{k: v.to(device=device, dtype=dtype) if torch.is_tensor(v) and v.is_floating_point()
                                  else v for k, v in args.items()})

    # -- sampling at t = 0 ----------------------------------------------------------------------------
    def sample(self, n: int, generator: Optional[torch.Generator] = None, return_labels: bool = False):
        """Draw n samples, shape (n, D), on the mixture's device and dtype; with ``return_labels`` also their
        classes, (n,) long (the same draws: the component is drawn first either way)."""
        k = torch.multinomial(self.weights, int(n), replacement=True, generator=generator)
        x = self._draw(k, self.means[k], generator)
        if not return_labels:
            return x
        self._require_labels("sample(return_labels=True)")
        return x, self.labels[k]

    def conditional(self, c: int) -> "GaussianMixture":
        """The law of class c: the mixture of its components, weights renormalised (unlabelled)."""
        keep = self.labels == self._check_class(c)
        return GaussianMixture(**self._parameters(keep))

    def entropy_mc(self, n: int = 100_000, generator: Optional[torch.Generator] = None) -> tuple:
        """Monte Carlo estimate of the differential entropy −E log p(x) in nats: (mean, standard error)."""
        lp = self.log_prob(self.sample(n, generator))
        return float(-lp.mean()), float(lp.std() / math.sqrt(n))

    # -- classes -------------------------------------------------------------------------------------
    def class_log_prob_t(self, sde, x: Tensor, t: Tensor) -> Tensor:
        """log p_t(c | x) for every class c: shape (B, C); each row's exponentials sum to one."""
        log_comp = self._log_components_t(sde, x, t)                                # (B, K)
        log_joint = torch.logsumexp(log_comp[:, None, :] + self._class_mask().to(log_comp), dim=2)   # (B, C)
        return log_joint - torch.logsumexp(log_comp, dim=1, keepdim=True)

    def classifier(self, sde):
        """The exact noisy classifier ``(x, t) -> log p_t(c | x)`` of shape (B, C) under ``sde``."""
        self._require_labels("classifier")

        def exact_classifier(x: Tensor, t: Tensor) -> Tensor:
            return self.class_log_prob_t(sde, x, t)

        exact_classifier.closed_form = True
        return exact_classifier

    def conditional_score_t(self, sde, x: Tensor, t: Tensor, cond) -> Tensor:
        """∇_x log p_t(x | c) for each row's class ``cond`` ((B,) or one int); ``cond == num_classes`` (∅) gives
        the unconditional score ∇_x log p_t(x) for that row."""
        num_classes = self._require_labels("conditional_score")
        cond = check_labels(cond, x.shape[0], num_classes, device=x.device, null_allowed=True)
        outside = (self.labels[None, :] != cond[:, None]) & (cond[:, None] < num_classes)
        return self._score_over(sde, x, t, excluded=outside)

    def conditional_score(self, sde):
        """The exact conditional score ``(x, t, cond) -> ∇_x log p_t(x | c)`` under ``sde``; ``cond`` is (B,) long
        (or one int), and the index ``num_classes`` (∅) means the unconditional score."""
        self._require_labels("conditional_score")

        def exact_conditional_score(x: Tensor, t: Tensor, cond) -> Tensor:
            return self.conditional_score_t(sde, x, t, cond)

        exact_conditional_score.num_classes = self.num_classes
        exact_conditional_score.closed_form = True
        return exact_conditional_score

    # -- inverse problems ------------------------------------------------------------------------------
    def posterior(self, measurement) -> "GaussianMixture | PosteriorMixtures":
        """The exact posterior p(x₀ | y) under a `scoresde.LinearMeasurement`: a mixture with full covariances (the
        module docstring gives the formulas), labels kept.

        One shared observation y (m,) gives a `GaussianMixture`; one per sample, y (B, m), gives the B posteriors
        at once as a `PosteriorMixtures` (shared covariances, means (B, K, D), weights (B, K)), whose row i is the
        posterior of y_i. The shared case is the B = 1 case of the same computation.

        A noiseless measurement gives singular covariances (C_k A ᵀ = 0): its score at t > 0 and its samples
        are exact, its density at t = 0 does not exist.
        """
        if getattr(measurement, "batched", None) is None:
            raise TypeError(f"posterior needs a scoresde.LinearMeasurement; got {type(measurement).__name__}")
        if measurement.dim != self.dim:
            raise ValueError(f"the measurement acts on {measurement.dim} entries; the mixture has D = {self.dim}")
        A, y = measurement.dense(dtype=self.dtype, device=self.device)
        R = measurement.noise_covariance(dtype=self.dtype, device=self.device)
        rows = _Conditioning(self, A, R)(y if measurement.batched else y[None])
        return rows if measurement.batched else rows.mixture(0)

    def log_evidence(self, measurement) -> float:
        """log p(y) = log Σ_k w_k N(y; A μ_k, A Σ_k Aᵀ + R) for one shared observation."""
        A, y = measurement.dense(dtype=self.dtype, device=self.device)
        R = measurement.noise_covariance(dtype=self.dtype, device=self.device)
        S = A @ self.covariances @ A.T + R
        dist = torch.distributions.MultivariateNormal(self.means @ A.T, covariance_matrix=(S + S.transpose(1, 2)) / 2)
        return float(torch.logsumexp(torch.log(self.weights) + dist.log_prob(y), dim=0))

    def measurement_score(self, sde, operator, noise_std: float = 0.0, noise_cov=None) -> "MeasurementScore":
        """The exact conditional score ``(x, t, y) -> ∇_x log p_t(x | y)`` under ``sde`` for observations
        y = A x₀ + n, n ~ N(0, σ_y² I) (or N(0, R)): a conditional model with a continuous condition.

        Args:
            sde: any LinearSDE.
            operator: A, an (m, D) matrix acting on the flattened sample, or a `scoresde.Mask` (then y holds the m
                observed entries in the flattened order).
            noise_std: σ_y ≥ 0, as `scoresde.LinearMeasurement`.
            noise_cov: instead of σ_y, an (m, m) covariance R (matrices only).

        Returns:
            a `MeasurementScore`: called with y (B, m), one observation per row (or (m,), one for every row); a row
            of y that is all NaN (``model.null_cond``) gets the unconditional score ∇_x log p_t(x), which is what
            `scoresde.classifier_free_guidance` needs. ``closed_form`` is True. Through `scoresde.conditional_score`
            and `scoresde.classifier_free_guidance` (which read a condition's first dimension as the batch) give one
            observation for every row as (1, m), not (m,).
        """
        if isinstance(operator, Mask):
            probe = torch.zeros(operator.shape)
        elif torch.is_tensor(operator) or hasattr(operator, "__array__"):
            probe = torch.zeros(torch.as_tensor(operator).shape[:1])     # LinearMeasurement checks A itself
        else:
            probe = torch.zeros(1)
        measurement = LinearMeasurement(operator, probe, noise_std, noise_cov)
        if measurement.dim != self.dim:
            raise ValueError(f"the operator acts on {measurement.dim} entries; the mixture has D = {self.dim}")
        A, _ = measurement.dense(dtype=self.dtype, device=self.device)
        R = measurement.noise_covariance(dtype=self.dtype, device=self.device)
        return MeasurementScore(self, sde, _Conditioning(self, A, R))

    # -- internals -----------------------------------------------------------------------------------
    def _require_labels(self, what: str):
        if self.labels is None:
            raise ValueError(f"GaussianMixture.{what} needs a labelled mixture: pass labels=(K,) class indices")
        return self.num_classes

    def _check_class(self, c) -> int:
        num_classes = self._require_labels("conditional")
        if isinstance(c, bool) or not isinstance(c, int) and not (torch.is_tensor(c) and c.numel() == 1):
            raise TypeError(f"the class must be an integer in [0, {num_classes}); got {c!r}")
        c = int(c)
        if not 0 <= c < num_classes:
            raise ValueError(f"the class must be in [0, {num_classes}); got {c}")
        return c

    def _class_mask(self) -> Tensor:
        """(C, K): 0 where component k belongs to class c, −inf elsewhere."""
        num_classes = self._require_labels("class_log_prob_t")
        member = self.labels[None, :] == torch.arange(num_classes, device=self.labels.device)[:, None]
        return torch.zeros(member.shape, dtype=self.dtype, device=self.device).masked_fill(~member, -math.inf)


class PosteriorMixtures(_Mixtures):
    """The exact posteriors p(x₀ | y_i), i < B, of one linear-Gaussian measurement at B observations y_i: B mixtures
    that share their component covariances. Built by `GaussianMixture.posterior` (y of shape (B, m)) and by
    `GaussianMixture.measurement_score`, not by hand.

    Why a class of its own rather than a GaussianMixture with batched means: C_k = Σ_k − G_k A Σ_k does not depend
    on y, so the B posteriors share the eigen-decompositions of C_k and differ only in their means m_ik and weights
    w_ik ∝ w_k N(y_i; A μ_k, S_k). The density, score and marginal broadcast over that leading dimension and are
    inherited from the common base, written once; what a single mixture offers beyond them (n draws, class laws,
    a further posterior, its evidence) has no per-row meaning and is not offered, so no method silently means
    something else here.

    Row i of every batch belongs to posterior i: ``log_prob(x)``, ``log_prob_t``, ``score_t``, ``score`` and
    ``denoiser`` take x of batch B. ``sample(generator)`` draws one x₀ per row, (B, D); for n draws from posterior
    i use ``mixture(i).sample(n)``, for n from each condition on y repeated n times.

    Attributes:
        means: (B, K, D) posterior component means m_ik = μ_k + G_k (y_i − A μ_k).
        weights: (B, K) posterior weights, each row summing to one.
        stds: (K, D) square roots of the eigenvalues of C_k (shared); ``covariances`` gives C_k (K, D, D).
        labels: the prior's (K,) labels or None.
    """

    def __init__(self, means: Tensor, weights: Tensor, stds: Tensor, basis: Tensor, labels: Optional[Tensor] = None):
        if means.dim() != 3 or weights.shape != means.shape[:2] or stds.shape != means.shape[1:]:
            raise ValueError(f"PosteriorMixtures needs means (B, K, D), weights (B, K) and stds (K, D); got "
                             f"{tuple(means.shape)}, {tuple(weights.shape)} and {tuple(stds.shape)}")
        self.means, self.weights, self.stds, self._basis = means, weights, stds, basis
        self.dim, self.labels = means.shape[2], labels

    def __len__(self) -> int:
        """B, the number of posteriors (rows)."""
        return self.means.shape[0]

    def __repr__(self) -> str:
        B, K, D = self.means.shape
        return f"PosteriorMixtures(B={B}, K={K}, D={D})"

    def mixture(self, i: int) -> GaussianMixture:
        """Posterior i as a `GaussianMixture` (sharing this one's tensors)."""
        if isinstance(i, bool) or not isinstance(i, int) or not -len(self) <= i < len(self):
            raise IndexError(f"posterior index must be an integer in [0, {len(self)}); got {i!r}")
        return GaussianMixture._from_parts(self.means[i], self.weights[i], self.stds, self._basis, self.labels)

    def sample(self, generator: Optional[torch.Generator] = None) -> Tensor:
        """One draw from each posterior: row i of the (B, D) result is drawn from p(x₀ | y_i)."""
        k = torch.multinomial(self.weights, 1, replacement=True, generator=generator)[:, 0]          # (B,)
        return self._draw(k, self.means[torch.arange(len(self), device=self.device), k], generator)

    def marginal(self, sde, t: Tensor):
        """Component means (B, K, D) and variances (B, K, D) of each posterior pushed to its row's time t (B,)."""
        if not torch.is_tensor(t) or t.shape != (len(self),):
            raise ValueError(f"t must have shape (B,) = ({len(self)},), one time per posterior; got "
                             f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
        return super().marginal(sde, t)

    def _flatten(self, x: Tensor) -> Tensor:
        flat = super()._flatten(x)
        if flat.shape[0] != len(self):
            raise ValueError(f"row i of x is evaluated under posterior i: x must have batch B = {len(self)} (one "
                             f"row per observation); got {tuple(x.shape)}")
        return flat


class _Conditioning:
    """Conditioning a mixture on y = A x₀ + n, n ~ N(0, R), for many y: the part that does not depend on y is
    computed once (S_k = A Σ_k Aᵀ + R by Cholesky, the gains G_k = Σ_k Aᵀ S_k⁻¹ and the eigen-decompositions of the
    posterior covariances C_k = Σ_k − G_k A Σ_k); calling it with y (B, m) adds the means and weights."""

    def __init__(self, prior: GaussianMixture, A: Tensor, R: Tensor):
        K, D = prior.means.shape
        cov = prior.covariances                                           # (K, D, D)
        cov_at = cov @ A.T                                                # Σ_k Aᵀ, (K, D, m)
        S = A @ cov_at + R                                                # (K, m, m)
        S = (S + S.transpose(1, 2)) / 2
        chol, info = torch.linalg.cholesky_ex(S)
        if bool((info != 0).any()):
            raise ValueError("A Σ_k Aᵀ + R is singular for some component (a noiseless measurement with dependent "
                             "rows of A): give noise_std > 0 or independent rows")
        self.prior, self.m, self.chol = prior, A.shape[0], chol
        self.gain = torch.cholesky_solve(cov_at.transpose(1, 2), chol).transpose(1, 2)    # G_k = Σ_k Aᵀ S_k⁻¹
        self.observed_means = prior.means @ A.T                           # A μ_k, (K, m)
        self.half_log_det = torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)         # ½ log det S_k, (K,)
        post = cov - self.gain @ cov_at.transpose(1, 2)
        self.basis, self.stds = _eigen((post + post.transpose(1, 2)) / 2, K, D, prior.dtype, prior.device)

    def __call__(self, y: Tensor) -> PosteriorMixtures:
        """The posteriors of the rows of y (B, m), in the prior's dtype and on its device."""
        prior = self.prior
        y = y.to(dtype=prior.dtype, device=prior.device)
        innovation = y[:, None, :] - self.observed_means                  # y_i − A μ_k, (B, K, m)
        means = prior.means + (self.gain @ innovation[..., None])[..., 0]
        white = torch.linalg.solve_triangular(self.chol, innovation[..., None], upper=False)[..., 0]
        log_evidence = -0.5 * (white * white).sum(-1) - self.half_log_det - 0.5 * self.m * math.log(2 * math.pi)
        log_w = torch.log(prior.weights) + log_evidence                   # (B, K)
        weights = torch.softmax(torch.where(prior.weights > 0, log_w, torch.full_like(log_w, -math.inf)), dim=1)
        return PosteriorMixtures(means, weights, self.stds, self.basis, prior.labels)


class MeasurementScore:
    """The exact conditional score ``model(x, t, y) = ∇_x log p_t(x | y)`` of a Gaussian mixture observed through
    y = A x₀ + n: made by `GaussianMixture.measurement_score`.

    p_t(x | y) is the posterior mixture (shared covariances, means and weights that depend on y) pushed through the
    SDE, so each row is scored exactly under its own observation; the y-independent work is done once, at
    construction. A row of y that is entirely NaN means "no observation" and gets the unconditional score
    ∇_x log p_t(x); a row with only some NaN entries is refused.

    Attributes:
        null_cond: (m,) all NaN, the condition meaning "unconditional" (what classifier-free guidance puts in
            its null rows).
        closed_form: True (an exact analytic score: integrated in t by default, `scoresde.Score`).
        network: False.
        m: the number of observations per row.
    """

    closed_form = True
    network = False

    def __init__(self, mixture: GaussianMixture, sde, conditioning: _Conditioning):
        self.mixture, self.sde, self.conditioning = mixture, sde, conditioning
        self.m = conditioning.m
        self.null_cond = torch.full((self.m,), math.nan, dtype=mixture.dtype, device=mixture.device)

    def __repr__(self) -> str:
        return f"MeasurementScore(m={self.m}, D={self.mixture.dim}, {type(self.sde).__name__})"

    def posterior(self, y: Tensor) -> PosteriorMixtures:
        """The exact posteriors p(x₀ | y_i) of the rows of y (B, m) (no NaN rows)."""
        y = self._check_y(y, None)
        if bool(torch.isnan(y).any()):
            raise ValueError("posterior needs observed rows; y has NaN (no observation) entries")
        return self.conditioning(y)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        flat = self.mixture._flatten(x)
        t = as_time(t, x)
        y = self._check_y(y, x.shape[0]).to(x.device)
        null = torch.isnan(y).all(1)
        out = torch.empty_like(flat)
        if bool(null.any()):
            out[null] = self.mixture.score_t(self.sde, flat[null], t[null])
        seen = ~null
        if bool(seen.any()):
            out[seen] = self.conditioning(y[seen]).score_t(self.sde, flat[seen], t[seen])
        return out.reshape(x.shape)

    def _check_y(self, y, batch: Optional[int]) -> Tensor:
        """y as (B, m): one observation per row, a (m,) one broadcast to the batch; NaN only in whole rows."""
        if not torch.is_tensor(y) or not y.is_floating_point():
            got = y.dtype if torch.is_tensor(y) else type(y).__name__
            raise TypeError(f"y must be a floating-point tensor of shape (B, {self.m}), one observation per row "
                            f"(a row of NaN: no observation); got {got}")
        if y.dim() == 1 and y.shape[0] == self.m and batch is not None:
            y = y.expand(batch, self.m)
        if y.dim() != 2 or y.shape[1] != self.m:
            raise ValueError(f"y must have shape (B, m) = (B, {self.m}), one observation per row; got "
                             f"{tuple(y.shape)}")
        if batch is not None and y.shape[0] != batch:
            raise ValueError(f"y holds {y.shape[0]} observations; x has batch {batch} (one observation per row)")
        nan = torch.isnan(y)
        if bool((nan.any(1) & ~nan.all(1)).any()):
            i = int((nan.any(1) & ~nan.all(1)).nonzero()[0, 0])
            raise ValueError(f"row {i} of y is partly NaN: a row is either observed (finite) or all NaN (no "
                             f"observation, model.null_cond)")
        if bool(torch.isinf(y).any()):
            raise ValueError("y must be finite (or whole rows of NaN for no observation)")
        return y


def _eigen(covariances, K: int, D: int, dtype, device):
    """(U, √λ) of symmetric positive semi-definite (K, D, D) covariances: U (K, D, D) orthonormal, √λ (K, D)."""
    cov = torch.as_tensor(covariances, dtype=dtype, device=device)
    if cov.shape != (K, D, D):
        raise ValueError(f"covariances must have shape (K, D, D) = ({K}, {D}, {D}); got {tuple(cov.shape)}")
    _check_finite_rows(cov, "covariances")
    scale = cov.abs().amax(dim=(1, 2)).clamp_min(torch.finfo(dtype).tiny)
    # relative tolerances: float64's fixed ones, or the rounding of a D×D eigenproblem in a narrower dtype (a
    # float32 posterior of a noiseless measurement is singular by construction: its zero eigenvalues come out
    # as ±D·eps·scale)
    rounding = 8 * D * torch.finfo(dtype).eps
    asym = (cov - cov.transpose(1, 2)).abs().amax(dim=(1, 2))
    if bool((asym > max(1e-8, rounding) * scale).any()):
        k = int((asym > max(1e-8, rounding) * scale).nonzero()[0, 0])
        raise ValueError(f"covariances must be symmetric; component {k} is not")
    lam, U = torch.linalg.eigh((cov + cov.transpose(1, 2)) / 2)
    low = lam.amin(dim=1) < -max(1e-9, rounding) * scale
    if bool(low.any()):
        k = int(low.nonzero()[0, 0])
        raise ValueError(f"covariances must be positive semi-definite; component {k} has eigenvalue "
                         f"{float(lam[k].min()):.3g}")
    lam = torch.where(lam > max(1e-12, rounding) * scale[:, None], lam, torch.zeros_like(lam))
    return U, lam.sqrt()


def _check_finite_rows(values: Tensor, name: str) -> None:
    """Raise a ValueError naming the first component (row) of ``values`` with a NaN or an inf."""
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        k = int((~finite).reshape(values.shape[0], -1).any(1).nonzero()[0, 0])
        raise ValueError(f"{name} must be finite; got a NaN or inf in component {k}: {values[k].tolist()}")


def _check_labels(labels, K: int, device) -> Tensor:
    labels = torch.as_tensor(labels, device=device)
    if labels.shape != (K,) or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of shape (K,) = ({K},), the class of each component; "
                         f"got {tuple(labels.shape)} of dtype {labels.dtype}")
    labels = labels.long()
    if bool((labels < 0).any()):
        raise ValueError(f"labels must be class indices >= 0; got {labels.tolist()}")
    missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"labels must use every class 0 … {int(labels.max())} at least once; classes {missing} "
                         f"have no component")
    return labels


def eight_gaussians(radius: float = 2.0, std: float = 0.1, num_classes: int = 8, dtype=torch.float64,
                    device=None) -> GaussianMixture:
    """Eight equally weighted Gaussians evenly spaced on a circle: the classic 2-D benchmark.

    Component k (at angle 2πk/8) has the label k mod ``num_classes`` (1 ≤ num_classes ≤ 8): with 8 every
    Gaussian is its own class, with 4 each class is a pair of opposite Gaussians.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= 8:
        raise ValueError(f"num_classes must be an integer in [1, 8]; got {num_classes!r}")
    angles = torch.arange(8, dtype=dtype) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(means, torch.full((8,), std, dtype=dtype), labels=torch.arange(8) % num_classes,
                           dtype=dtype, device=device)
