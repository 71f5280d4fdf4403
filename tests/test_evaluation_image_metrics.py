"""The image metrics on features against independent formulas: FID vs scipy's sqrtm formula (well-conditioned and
N < F) and the closed form between Gaussians; KID vs the unbiased MMD² written out on whole sets; precision/recall
vs a brute-force k-NN; the Inception score's extreme cases; non-finite features refused with the first bad sample."""
import itertools

import numpy as np
import pytest
import torch

import scoresde.evaluation.metrics as metrics

scipy_linalg = pytest.importorskip("scipy.linalg")


def _fid_scipy(a, b):
    """pytorch-fid's formula: ‖Δμ‖² + tr Σa + tr Σb − 2 tr sqrtm(Σa Σb) with scipy (real part)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy_linalg.sqrtm(sa @ sb)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(root).real)


@pytest.mark.parametrize("n, f", [(400, 16), (30, 64)], ids=["well-conditioned", "N<F"])
def test_fid_matches_the_sqrtm_formula(n, f):
    rng = np.random.RandomState(0)
    mix = rng.randn(f, f) / np.sqrt(f)
    a = rng.randn(n, f) @ mix
    b = rng.randn(n, f) @ mix * 1.3 + 0.2
    expected = _fid_scipy(a, b)
    assert metrics.fid(a, b) == pytest.approx(expected, rel=1e-6)
    assert metrics.fid(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(expected, rel=1e-4)
    stats = metrics.feature_statistics(a) + metrics.feature_statistics(b)
    assert metrics.fid_from_stats(*stats) == pytest.approx(expected, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_real_when_covariances_are_singular():
    rng = np.random.RandomState(1)
    a = rng.randn(10, 50)                                 # rank-9 covariance in 50 dimensions
    assert abs(metrics.fid(a, a)) < 1e-9
    value = metrics.fid_from_stats(*metrics.feature_statistics(a), *metrics.feature_statistics(a + 1e-3))
    # 41 zero eigenvalues each leave a root of rounding noise, √(1e-16 ‖Σ‖) ≈ 1e-7: the error is ~1e-7 of tr Σ ≈ 50.
    assert np.isfinite(value) and value == pytest.approx(50 * 1e-6, abs=1e-5)


def test_fid_between_gaussians_is_the_closed_form():
    # Commuting covariances: FID = ‖Δμ‖² + Σ_i (√a_i − √b_i)².
    rng = np.random.RandomState(2)
    q, _ = np.linalg.qr(rng.randn(6, 6))
    a_eig, b_eig = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    mu_a, mu_b = rng.randn(6), rng.randn(6)
    sa, sb = q @ np.diag(a_eig) @ q.T, q @ np.diag(b_eig) @ q.T
    closed = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(a_eig) - np.sqrt(b_eig)) ** 2).sum()
    assert metrics.fid_from_stats(mu_a, sa, mu_b, sb) == pytest.approx(closed, rel=1e-10)
    # Σ_a = s I with any Σ_b: tr √(s Σ_b) = √s tr Σ_b^½.
    s = 0.7
    sb_eig = np.linalg.eigvalsh(sb)
    closed = ((mu_a - mu_b) ** 2).sum() + 6 * s + sb_eig.sum() - 2 * np.sqrt(s) * np.sqrt(sb_eig).sum()
    assert metrics.fid_from_stats(mu_a, s * np.eye(6), mu_b, sb) == pytest.approx(closed, rel=1e-10)


def test_fid_from_samples_converges_to_the_gaussian_closed_form_with_its_c_over_n_bias():
    rng = np.random.RandomState(3)
    f, n = 4, 20000
    a = rng.randn(n, f)
    b = rng.randn(n, f) * 2.0 + 1.0
    closed = f * 1.0 + f * (1.0 - 2.0) ** 2           # ‖Δμ‖² = 4, Σ(σa − σb)² = 4
    assert metrics.fid(a, b) == pytest.approx(closed, abs=0.15)
    # Same law on both sides: E FID_n > 0, and the 1/n fit on subsets pulls it back towards 0.
    c = rng.randn(2000, 32)
    biased = metrics.fid_from_stats(*metrics.feature_statistics(c), np.zeros(32), np.eye(32))
    extrapolated, slope = metrics.fid_extrapolated(c, np.zeros(32), np.eye(32))
    assert biased > 0.1 and slope > 0 and abs(extrapolated) < biased / 3


def _mmd2_unbiased_loops(x, y):
    def k(u, v):
        return (u @ v / x.shape[1] + 1.0) ** 3

    m = x.shape[0]
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_on_whole_sets_is_the_unbiased_mmd2():
    rng = np.random.RandomState(4)
    x, y = rng.randn(12, 5), rng.randn(12, 5) + 0.5
    mean, std = metrics.kid(x, y, subsets=1, subset_size=12)
    assert mean == pytest.approx(_mmd2_unbiased_loops(x, y), rel=1e-10) and std == 0.0
    again = metrics.kid(x, y, subsets=5, subset_size=8, seed=3)
    assert again == metrics.kid(x, y, subsets=5, subset_size=8, seed=3) and again[1] > 0
    with pytest.raises(ValueError, match="subset_size 13 exceeds"):
        metrics.kid(x, y, subsets=1, subset_size=13)


def _precision_recall_brute(gen, real, k):
    def radius(points, i):
        d = sorted(np.linalg.norm(points[i] - points[j]) for j in range(len(points)) if j != i)
        return d[k - 1]

    def inside(p, centres):
        return any(np.linalg.norm(p - centres[j]) <= radius(centres, j) for j in range(len(centres)))

    return (np.mean([inside(p, real) for p in gen]), np.mean([inside(p, gen) for p in real]))


@pytest.mark.parametrize("k", [1, 3])
def test_precision_recall_match_a_brute_force_knn(k):
    rng = np.random.RandomState(5)
    real = rng.randn(25, 3)
    gen = rng.randn(20, 3) * 0.6 + 0.8
    assert metrics.precision_recall(gen, real, k=k) == pytest.approx(_precision_recall_brute(gen, real, k))
    assert metrics.precision_recall(gen, real, k=k, batch_size=7) == metrics.precision_recall(gen, real, k=k)


def test_inception_score_is_one_for_uninformative_and_k_for_confident_balanced_logits():
    assert metrics.inception_score(np.zeros((20, 7)), splits=2) == pytest.approx((1.0, 0.0))
    confident = np.full((30, 3), -1e4)
    confident[np.arange(30), np.arange(30) % 3] = 0.0
    assert metrics.inception_score(confident, splits=1)[0] == pytest.approx(3.0)


def test_non_finite_features_are_refused_naming_the_first_bad_sample():
    x = np.random.RandomState(6).randn(10, 4)
    x[7, 2], x[9, 0] = np.nan, np.inf
    for fn in (lambda: metrics.fid(x, x[:5] * 0 + 1), lambda: metrics.kid(np.ones((10, 4)), x, 1, 5),
               lambda: metrics.precision_recall(x, np.ones((10, 4)))):
        with pytest.raises(ValueError, match="2 of 10 samples; the first is sample 7"):
            fn()
    with pytest.raises(ValueError, match="same feature dimension; got 4 and 3"):
        metrics.fid(np.ones((5, 4)), np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"shape \(N, F\)"):
        metrics.fid(np.ones(5), np.ones(5))
