"""Distances between sets of image features, as papers report them: FID, KID, Inception score, precision/recall.

    feats_a, feats_b = ...                              # (N, F) arrays or tensors, e.g. Inception pool3 (F = 2048)
    sd.metrics.fid(feats_a, feats_b)                    # Fréchet distance of the two Gaussian fits
    mu, sigma = sd.metrics.feature_statistics(feats_b)  # what a reference .npz stores
    sd.metrics.fid_from_stats(*sd.metrics.feature_statistics(feats_a), mu, sigma)
    sd.metrics.kid(feats_a, feats_b, subsets=100, subset_size=1000)   # (mean, std) of unbiased MMD²
    sd.metrics.precision_recall(generated, real, k=3)   # Kynkäänniemi et al. 2019
    sd.metrics.inception_score(logits, splits=10)       # (mean, std)

Everything is computed in float64 on the CPU (numpy), whatever the input's dtype and device. Features must be
finite: a NaN or an inf raises a ValueError naming the first bad sample. The conventions (covariance with N − 1,
KID's cubic kernel and subset draws, precision/recall's k-th neighbour radius, the Inception score's splits) are
torch-fidelity's, so the numbers agree with it on the same features.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

#: Below this many samples a FID is noticeably biased upwards (its bias is ≈ c/N; papers use N = 50,000).
FID_MIN_SAMPLES = 10_000


def as_features(x, name: str = "features") -> np.ndarray:
    """``x`` as a float64 numpy array of shape (N, F), checked finite (a ValueError names the first bad sample)."""
    if torch.is_tensor(x):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, F) with N, F >= 1; got {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} holds non-finite values (NaN or inf) in {int(bad.sum())} of {x.shape[0]} samples; "
                         f"the first is sample {i}")
    return x


def _same_width(a: np.ndarray, b: np.ndarray, names=("features_a", "features_b")) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same feature dimension; got {a.shape[1]} and "
                         f"{b.shape[1]}")


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """The mean μ (F,) and the covariance Σ (F, F) of (N, F) features, with the N − 1 normalisation (np.cov),
    as pytorch-fid, torch-fidelity and EDM's ``fid.py`` store them in reference ``.npz`` files."""
    x = as_features(features)
    if x.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 samples; got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance, its eigenvalues clamped at 0 (rounding makes tiny ones < 0)."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """tr √(Σ_a Σ_b) = tr √(Σ_a^½ Σ_b Σ_a^½): the eigenvalues of Σ_a Σ_b are those of the symmetric PSD matrix
    Σ_a^½ Σ_b Σ_a^½, so one symmetric eigendecomposition of each side gives real, non-negative roots even when
    Σ_a or Σ_b is singular (N < F) or near-singular: no complex sqrtm, no NaN."""
    root = _sqrt_psd(sigma_a)
    w = np.linalg.eigvalsh(root @ sigma_b @ root)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def fid_from_stats(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """Fréchet distance between N(μ_a, Σ_a) and N(μ_b, Σ_b) (Heusel et al. 2017, "GANs trained by a two time-scale
    update rule"):

        FID = ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr √(Σ_a Σ_b).

    The trace of the matrix root is computed as Σ_i √λ_i over the eigenvalues of Σ_a^½ Σ_b Σ_a^½ (symmetric
    positive semi-definite; negative rounding clamped at 0), which is exact, real and stable for singular
    covariances; pytorch-fid's ``sqrtm`` route needs an ε·I fix there and can return complex parts.

    Args:
        mu_a: mean of the first set, shape (F,).
        sigma_a: its covariance, shape (F, F).
        mu_b: mean of the second set, shape (F,).
        sigma_b: its covariance, shape (F, F).
    Returns:
        The distance, a float ≥ 0 (up to rounding).
    """
    mu_a, mu_b = (np.asarray(m, dtype=np.float64) for m in (mu_a, mu_b))
    sigma_a, sigma_b = (np.asarray(s, dtype=np.float64) for s in (sigma_a, sigma_b))
    f = mu_a.shape[0] if mu_a.ndim == 1 else -1
    for name, value, shape in (("mu_a", mu_a, (f,)), ("mu_b", mu_b, (f,)), ("sigma_a", sigma_a, (f, f)),
                               ("sigma_b", sigma_b, (f, f))):
        if f < 1 or value.shape != shape:
            raise ValueError(f"{name} must have shape {shape if f >= 1 else '(F,)'}; got {value.shape} "
                             f"(mu_a {mu_a.shape})")
        if not np.isfinite(value).all():
            raise ValueError(f"{name} holds non-finite values")
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * _trace_sqrt_product(sigma_a, sigma_b))


def fid(features_a, features_b) -> float:
    """FID between two feature sets (N_a, F) and (N_b, F): `fid_from_stats` of their `feature_statistics`.

    When both sets are smaller than F, tr √(Σ_a Σ_b) is the nuclear norm of A Bᵀ, with A = (X_a − μ_a)/√(N_a − 1)
    and B likewise (the non-zero eigenvalues of AᵀA BᵀB are those of (ABᵀ)(ABᵀ)ᵀ): an (N_a, N_b) SVD instead of
    two (F, F) eigendecompositions, and exact for the rank-deficient covariances of N < F.
    """
    a, b = as_features(features_a, "features_a"), as_features(features_b, "features_b")
    _same_width(a, b)
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"FID needs at least 2 samples on each side; got {a.shape[0]} and {b.shape[0]}")
    if max(a.shape[0], b.shape[0]) <= a.shape[1]:
        mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
        ca, cb = (a - mu_a) / np.sqrt(a.shape[0] - 1), (b - mu_b) / np.sqrt(b.shape[0] - 1)
        diff = mu_a - mu_b
        nuclear = np.linalg.svd(ca @ cb.T, compute_uv=False).sum()
        return float(diff @ diff + (ca * ca).sum() + (cb * cb).sum() - 2 * nuclear)
    return fid_from_stats(*feature_statistics(a), *feature_statistics(b))


def fid_extrapolated(features, mu_ref, sigma_ref, fractions: Sequence[float] = (0.25, 0.375, 0.5, 0.75, 1.0),
                     seed: int = 0) -> Tuple[float, float]:
    """FID at N → ∞ by a fit of FID_N = FID_∞ + c/N on random subsets (Chong & Forsyth 2020, "Effectively
    unbiased FID and Inception score and where to find them").

    FID from N samples overestimates the population value by ≈ c/N (the covariance estimate's noise enters
    the trace of the root); fitting a line in 1/N on subsets of the N features extrapolates that away.

    Args:
        features: (N, F) features of the generated samples.
        mu_ref: the reference mean (F,).
        sigma_ref: the reference covariance (F, F).
        fractions: subset sizes as fractions of N.
        seed: seed of the subset draws.
    Returns:
        (FID_∞, c): the intercept, and the slope c, so that FID at n samples is ≈ FID_∞ + c/n.
    """
    x = as_features(features)
    rng = np.random.RandomState(seed)
    sizes = sorted({max(2, int(round(f * x.shape[0]))) for f in fractions})
    if len(sizes) < 2:
        raise ValueError(f"fid_extrapolated needs at least two distinct subset sizes; got {sizes}")
    values = [fid_from_stats(*feature_statistics(x[rng.permutation(x.shape[0])[:n]]), mu_ref, sigma_ref)
              for n in sizes]
    slope, intercept = np.polyfit(1.0 / np.asarray(sizes, dtype=np.float64), values, 1)
    return float(intercept), float(slope)


def _mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² of two equal-size sets with the kernel k(x, y) = (x·y/F + 1)³ (torch-fidelity's "unbiased"
    estimator: diagonals dropped within each set, the whole cross term kept)."""
    m, f = a.shape
    k_aa, k_bb, k_ab = ((u @ v.T / f + 1.0) ** 3 for u, v in ((a, a), (b, b), (a, b)))
    within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within - 2 * k_ab.sum() / (m * m))


def kid(features_a, features_b, subsets: int = 100, subset_size: int = 1000, seed: int = 2020) -> Tuple[float, float]:
    """Kernel Inception distance (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased MMD² with the cubic
    polynomial kernel k(x, y) = (x·y/F + 1)³, averaged over random subsets.

        MMD²_u = 1/(m(m−1)) Σ_{i≠j} [k(a_i, a_j) + k(b_i, b_j)] − 2/m² Σ_{i,j} k(a_i, b_j)

    on ``subsets`` pairs of subsets of ``subset_size`` samples each, drawn without replacement (numpy's
    RandomState(seed), as torch-fidelity: its default seed 2020 gives its numbers).

    Returns:
        (mean, std) over the subsets (std with 1/subsets, as torch-fidelity).
    """
    a, b = as_features(features_a, "features_a"), as_features(features_b, "features_b")
    _same_width(a, b)
    subsets, subset_size = int(subsets), int(subset_size)
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"kid needs subsets >= 1 and subset_size >= 2; got {subsets} and {subset_size}")
    if subset_size > min(a.shape[0], b.shape[0]):
        raise ValueError(f"kid: subset_size {subset_size} exceeds the number of samples ({a.shape[0]} and "
                         f"{b.shape[0]}); pass subset_size <= {min(a.shape[0], b.shape[0])}")
    rng = np.random.RandomState(seed)
    values = np.array([_mmd2_unbiased(a[rng.choice(a.shape[0], subset_size, replace=False)],
                                      b[rng.choice(b.shape[0], subset_size, replace=False)])
                       for _ in range(subsets)])
    return float(values.mean()), float(values.std())


def _kth_neighbour_radius(x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Distance of each row of x to its k-th nearest other row (the (k + 1)-th smallest, itself being the first)."""
    return torch.cat([torch.cdist(part, x).kthvalue(k + 1, dim=1).values for part in x.split(batch_size)])


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Whether each point lies in at least one ball B(centre_j, radius_j)."""
    return torch.cat([(torch.cdist(part, centres) <= radii).any(dim=1) for part in points.split(batch_size)])


def precision_recall(generated, real, k: int = 3, batch_size: int = 1000) -> Tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls around
    its samples with radius the distance to the k-th nearest neighbour in the same set.

        precision = fraction of generated samples inside the real manifold,
        recall    = fraction of real samples inside the generated manifold.

    Args:
        generated: (N_g, F) features of generated samples.
        real: (N_r, F) features of data.
        k: the neighbourhood (3 in the paper and torch-fidelity).
        batch_size: rows per distance block (a block of 1000 rows against 50,000 samples is 400 MB in float64).
    Returns:
        (precision, recall), floats in [0, 1].
    """
    g, r = as_features(generated, "generated"), as_features(real, "real")
    _same_width(g, r, ("generated", "real"))
    k = int(k)
    if not 1 <= k < min(g.shape[0], r.shape[0]):
        raise ValueError(f"precision_recall needs 1 <= k < the size of each set; got k={k}, {g.shape[0]} generated "
                         f"and {r.shape[0]} real samples")
    g, r = torch.from_numpy(g), torch.from_numpy(r)
    precision = _covered(g, r, _kth_neighbour_radius(r, k, batch_size), batch_size).double().mean()
    recall = _covered(r, g, _kth_neighbour_radius(g, k, batch_size), batch_size).double().mean()
    return float(precision), float(recall)


def inception_score(logits, splits: int = 10, seed: Optional[int] = 2020) -> Tuple[float, float]:
    """Inception score (Salimans et al. 2016): exp E_x KL(p(y|x) ‖ p(y)) from classifier logits (N, K), on
    ``splits`` equal parts of a shuffled copy (numpy RandomState(seed); ``seed=None``: no shuffle), as
    torch-fidelity computes it from Inception's ``logits_unbiased``.

    Returns:
        (mean, std) over the splits.
    """
    x = as_features(logits, "logits")
    splits = int(splits)
    if not 1 <= splits <= x.shape[0]:
        raise ValueError(f"inception_score needs 1 <= splits <= N; got splits={splits}, N={x.shape[0]}")
    if seed is not None:
        x = x[np.random.RandomState(seed).permutation(x.shape[0])]
    t = torch.from_numpy(x)
    p, log_p = t.softmax(dim=1), t.log_softmax(dim=1)
    n, scores = x.shape[0], []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        q = p[part].mean(dim=0, keepdim=True)
        scores.append(float((p[part] * (log_p[part] - q.log())).sum(dim=1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


def fid_bias_note(n: int, value: float, slope: Optional[float] = None) -> Optional[str]:
    """A warning for a FID from fewer than `FID_MIN_SAMPLES` samples (None at or above it)."""
    if n >= FID_MIN_SAMPLES:
        return None
    moved = "" if slope is None else (f"; the 1/n fit on subsets puts it at ≈ {value - slope / n:.4g} for n → ∞ "
                                      f"and ≈ {value - slope / n + slope / 50_000:.4g} at n = 50,000")
    return (f"FID {value:.4g} from n = {n} samples is biased upwards (≈ c/n) and is not comparable to papers' "
            f"n = 50,000 numbers{moved}; report n with it")
