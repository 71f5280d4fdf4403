"""Linear measurements: the operator and its adjoint, and the exact Gaussian steps against dense linear algebra."""
import math

import pytest
import torch

import scoresde as sd

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _matrix(m, d, seed=0):
    return torch.randn(m, d, dtype=F64, generator=_gen(seed))


def _measurements():
    g = _gen(3)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    return [
        sd.LinearMeasurement(_matrix(2, 6), torch.randn(2, dtype=F64, generator=g), 0.3),        # m < d
        sd.LinearMeasurement(_matrix(9, 6), torch.randn(9, dtype=F64, generator=g), 0.2),        # m > d
        sd.LinearMeasurement(sd.Mask(mask), torch.randn(2, 3, dtype=F64, generator=g), 0.4),
    ]


def _dense_x(meas, B=5, seed=1):
    shape = (B,) + (meas.sample_shape if meas.mask is not None else (meas.dim,))
    return torch.randn(shape, dtype=F64, generator=_gen(seed))


@pytest.mark.parametrize("meas", _measurements(), ids=["wide", "tall", "mask"])
def test_adjoint_is_the_transpose(meas):
    x = _dense_x(meas)
    v = torch.randn(meas.forward(x).shape, dtype=F64, generator=_gen(2))
    lhs = (meas.forward(x) * v).reshape(5, -1).sum(1)
    rhs = (x * meas.adjoint(v, x)).reshape(5, -1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    A, y = meas.dense()
    torch.testing.assert_close(meas.forward(x).reshape(5, -1)[:, :A.shape[0]] if meas.mask is None else
                               meas.forward(x).reshape(5, -1)[:, meas.mask.mask.reshape(-1)], x.reshape(5, -1) @ A.T)


@pytest.mark.parametrize("meas", _measurements(), ids=["wide", "tall", "mask"])
def test_solve_outer_matches_a_dense_solve(meas):
    A, _ = meas.dense()
    v = meas.forward(_dense_x(meas)) + 0.1
    if meas.mask is not None:
        v = v * meas.mask.mask
    a, b = 0.3, torch.tensor([0.5, 1.0, 2.0, 0.1, 3.0], dtype=F64)
    got = meas.solve_outer(v, a, b)
    flat = v.reshape(5, -1)[:, meas.mask.mask.reshape(-1)] if meas.mask is not None else v
    for i in range(5):
        ref = torch.linalg.solve(a * torch.eye(A.shape[0], dtype=F64) + b[i] * A @ A.T, flat[i])
        out = got[i].reshape(-1)[meas.mask.mask.reshape(-1)] if meas.mask is not None else got[i]
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("meas", _measurements(), ids=["wide", "tall", "mask"])
def test_proximal_is_the_dense_gaussian_mean(meas):
    A, y = meas.dense()
    x = _dense_x(meas)
    rho = 0.7
    prec = A.T @ A / meas.noise_std ** 2 + torch.eye(meas.dim, dtype=F64) / rho ** 2
    ref = torch.linalg.solve(prec, (A.T @ y / meas.noise_std ** 2)[:, None] + x.reshape(5, -1).T / rho ** 2).T
    torch.testing.assert_close(meas.proximal(x, rho).reshape(5, -1), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("meas", _measurements(), ids=["wide", "tall", "mask"])
def test_sample_proximal_has_the_exact_moments(meas):
    """z | x ~ N(C (Aᵀy/σ² + x/ρ²), C), C = (AᵀA/σ² + I/ρ²)⁻¹: Monte Carlo mean and covariance within 5 standard
    errors (n = 40,000)."""
    A, _ = meas.dense()
    n, rho = 40_000, 0.7
    x = _dense_x(meas, B=1).expand((n,) + _dense_x(meas, B=1).shape[1:])
    z = meas.sample_proximal(x, rho, _gen(4)).reshape(n, -1)
    cov = torch.linalg.inv(A.T @ A / meas.noise_std ** 2 + torch.eye(meas.dim, dtype=F64) / rho ** 2)
    mean = meas.proximal(x[:1], rho).reshape(-1)
    se = (torch.diagonal(cov) / n).sqrt()
    assert bool(((z.mean(0) - mean).abs() < 5 * se).all())
    emp = torch.cov(z.T)
    se_cov = ((cov ** 2 + torch.outer(torch.diagonal(cov), torch.diagonal(cov))) / n).sqrt()
    assert bool(((emp - cov).abs() < 5 * se_cov + 1e-12).all())


def test_noiseless_proximal_is_the_projection_onto_the_data():
    A = _matrix(2, 5)
    y = torch.tensor([0.5, -1.0], dtype=F64)
    meas = sd.LinearMeasurement(A, y, 0.0)
    x = torch.randn(4, 5, dtype=F64, generator=_gen(1))
    z = meas.proximal(x, 0.8)
    torch.testing.assert_close(z @ A.T, y.expand(4, 2), rtol=1e-12, atol=1e-12)
    # z − x lies in the row space of A (the nearest point of the affine set).
    P = A.T @ torch.linalg.solve(A @ A.T, A)
    torch.testing.assert_close((z - x) @ P, z - x, rtol=1e-10, atol=1e-10)
    # and the draw has no spread along the rows: A z = y for every draw
    torch.testing.assert_close(meas.sample_proximal(x, 0.8, _gen(2)) @ A.T, y.expand(4, 2), rtol=1e-10, atol=1e-10)


def test_inflated_adds_rho_squared_A_At():
    A = _matrix(3, 4)
    meas = sd.LinearMeasurement(A, torch.zeros(3, dtype=F64), 0.2)
    torch.testing.assert_close(meas.inflated(0.5).noise_covariance(), 0.04 * torch.eye(3, dtype=F64) + 0.25 * A @ A.T)
    mask = sd.LinearMeasurement(sd.Mask(torch.tensor([True, False])), torch.zeros(2, dtype=F64), 0.3)
    assert mask.inflated(0.4).noise_std == pytest.approx(0.5)


def test_per_sample_observations_broadcast_and_check_the_batch():
    A = _matrix(2, 3)
    y = torch.randn(4, 2, dtype=F64, generator=_gen(1))
    meas = sd.LinearMeasurement(A, y, 0.1)
    x = torch.zeros(4, 3, dtype=F64)
    torch.testing.assert_close(meas.residual(x), y)
    with pytest.raises(ValueError, match="one observation per sample"):
        meas.residual(torch.zeros(3, 3, dtype=F64))


def test_a_mask_acts_on_images():
    mask = sd.Mask.from_spec("top", (1, 4, 4))
    assert mask.observed == 8 and bool(mask.mask[0, :2].all()) and not bool(mask.mask[0, 2:].any())
    left = sd.Mask.from_spec("left", (1, 4, 4))
    assert bool(left.mask[0, :, :2].all()) and not bool(left.mask[0, :, 2:].any())
    rnd = sd.Mask.from_spec("random:0.5", (1, 8, 8), _gen(0))
    assert 16 < rnd.observed < 48
    assert sd.Mask.from_spec("first:1", (2,)).mask.tolist() == [True, False]
    x = torch.randn(3, 1, 4, 4, dtype=F64, generator=_gen(1))
    meas = sd.LinearMeasurement(mask, x[0], 0.0)
    assert meas.forward(x).shape == x.shape
    assert torch.equal(meas.forward(x)[:, 0, 2:], torch.zeros(3, 2, 4, dtype=F64))


@pytest.mark.parametrize("build, match", [
    (lambda: sd.LinearMeasurement(torch.ones(3, dtype=F64), torch.ones(3), 0.1), r"shape \(m, d\)"),
    (lambda: sd.LinearMeasurement(torch.ones(2, 3, dtype=F64), torch.ones(3), 0.1), r"y must have shape \(2,\)"),
    (lambda: sd.LinearMeasurement(torch.ones(2, 3, dtype=F64), torch.ones(2), -0.1), "noise_std must be"),
    (lambda: sd.LinearMeasurement(torch.zeros(2, 3, dtype=F64), torch.ones(2), 0.1), "A is zero"),
    (lambda: sd.LinearMeasurement(torch.ones(2, 3, dtype=F64), torch.ones(2), noise_cov=-torch.eye(2)),
     "positive semi-definite"),
    (lambda: sd.LinearMeasurement(sd.Mask(torch.tensor([True, False])), torch.ones(3), 0.1), "one sample's shape"),
    (lambda: sd.Mask(torch.zeros(3, dtype=torch.bool)), "observes nothing"),
    (lambda: sd.Mask(torch.tensor([0.5, 1.0])), "boolean"),
    (lambda: sd.Mask.from_spec("bottom", (1, 4, 4)), "valid choices"),
    (lambda: sd.LinearMeasurement("A", torch.ones(2), 0.1), "tensor or a scoresde.Mask"),
])
def test_bad_input_is_refused_with_what_was_expected(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_x_of_the_wrong_shape_is_refused():
    meas = sd.LinearMeasurement(sd.Mask(torch.ones(1, 4, 4, dtype=torch.bool)), torch.zeros(1, 4, 4), 0.0)
    with pytest.raises(ValueError, match=r"mask has one sample's shape \(1, 4, 4\)"):
        meas.forward(torch.zeros(2, 1, 4, 5))
    dense = sd.LinearMeasurement(torch.ones(2, 3, dtype=F64), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="samples must have 3 entries"):
        dense.forward(torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="noise_std > 0"):
        dense_noiseless = sd.LinearMeasurement(torch.ones(2, 3, dtype=F64), torch.zeros(2), 0.0)
        dense_noiseless.require_isotropic("dps_score", positive=True)
    general = sd.LinearMeasurement(torch.ones(2, 3, dtype=F64), torch.zeros(2), noise_cov=torch.eye(2))
    with pytest.raises(ValueError, match="isotropic"):
        general.proximal(torch.zeros(1, 3, dtype=F64), 0.5)
