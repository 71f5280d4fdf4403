"""sd.plot: each helper draws what it is given (data in the artists, not just a figure) and imports lazily."""
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import scoresde as sd  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.mark.slow
def test_import_scoresde_does_not_import_matplotlib():
    code = "import sys, scoresde; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_samples_scatter_holds_the_points():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, generator=gen, dtype=F64)
    ref = torch.randn(30, 2, generator=gen, dtype=F64)
    fig = sd.plot.samples(x, reference=ref, title="eight")
    (ax,) = fig.axes
    x_pts, ref_pts = (c.get_offsets() for c in ax.collections)      # the reference is drawn on top
    np.testing.assert_allclose(np.asarray(x_pts), x.numpy())
    np.testing.assert_allclose(np.asarray(ref_pts), ref.numpy())
    assert ax.get_title() == "eight"


def test_samples_into_given_axes_and_histogram():
    fig, (a, b) = plt.subplots(1, 2)
    x = torch.linspace(-1, 1, 200, dtype=F64)
    out = sd.plot.samples(x, ax=b, bins=10)
    assert out is fig and len(a.patches) == 0
    heights = np.array([p.get_height() for p in b.patches])
    # density=True over 10 equal bins of width 0.2 holding 20 points each: every bar is 20/(200·0.2) = 0.5.
    assert len(heights) == 10
    np.testing.assert_allclose(heights, 0.5, rtol=1e-12)


def test_samples_image_grid_places_pixels():
    x = torch.zeros(3, 1, 2, 2, dtype=F64)
    x[1] = 1.0  # the second image white, the others black
    fig = sd.plot.samples(x, nrow=3, data_range=(0.0, 1.0))
    (ax,) = fig.axes
    (im,) = ax.images
    grid = np.asarray(im.get_array())
    # 1 row of 3 images of 2×2 with 1 pixel of padding: (1·3 + 1) × (3·3 + 1).
    assert grid.shape == (4, 10)
    np.testing.assert_array_equal(grid[1:3, 1:3], 0.0)
    np.testing.assert_array_equal(grid[1:3, 4:6], 1.0)
    np.testing.assert_array_equal(grid[1:3, 7:9], 0.0)
    np.testing.assert_array_equal(grid[0], 1.0)  # white padding


def test_samples_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        sd.plot.samples(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="per-sample shape"):
        sd.plot.samples(torch.zeros(5, 2), reference=torch.zeros(5, 1))


def test_trajectories_from_a_sample_result_in_the_plane():
    gmm = sd.eight_gaussians()
    sde = sd.VPSDE()
    gen = torch.Generator().manual_seed(1)
    res = sd.HeunSampler(steps=4).sample(sde, gmm.score(sde), (6, 2), gen, trajectory=True, dtype=F64)
    fig = sd.plot.trajectories(res, n=3)
    (ax,) = fig.axes
    assert len(ax.lines) == 3
    for k, line in enumerate(ax.lines):
        np.testing.assert_allclose(line.get_xdata(), res.trajectory[:, k, 0].numpy())
        np.testing.assert_allclose(line.get_ydata(), res.trajectory[:, k, 1].numpy())


def test_trajectories_of_one_coordinate_against_time():
    states = torch.arange(12, dtype=F64).reshape(4, 3, 1)
    times = torch.tensor([1.0, 0.5, 0.25, 0.0], dtype=F64)
    fig = sd.plot.trajectories(states, times=times)
    (ax,) = fig.axes
    assert len(ax.lines) == 3 and ax.get_xlabel() == "t"
    np.testing.assert_allclose(ax.lines[2].get_xdata(), times.numpy())
    np.testing.assert_allclose(ax.lines[2].get_ydata(), states[:, 2, 0].numpy())
    with pytest.raises(ValueError, match="trajectory=True"):
        sd.plot.trajectories(sd.SampleResult(x=torch.zeros(2, 2), nfe=1))
    with pytest.raises(ValueError, match="one entry per state"):
        sd.plot.trajectories(states, times=times[:3])


def test_score_field_arrows_follow_the_score():
    # For a centred Gaussian data law N(0, I) under VP, p_t = N(0, I) at every t, so score(x, t) = −x:
    # unit arrows point at the origin and are coloured by ‖x‖.
    sde = sd.VPSDE()
    gmm = sd.GaussianMixture(torch.zeros(1, 2), torch.ones(1))
    fig = sd.plot.score_field(gmm.score(sde), 0.5, extent=(-2, 2, -1, 1), n=5,
                              log_prob=lambda x: gmm.log_prob_t(sde, x, torch.full((len(x),), 0.5, dtype=F64)))
    ax = fig.axes[0]
    (q,) = [c for c in ax.collections if c.__class__.__name__ == "Quiver"]
    xy = np.asarray(q.XY if hasattr(q, "XY") else q.get_offsets())
    r = np.linalg.norm(xy, axis=1)
    keep = r > 0
    np.testing.assert_allclose(q.U[keep], -xy[keep, 0] / r[keep], atol=1e-12)
    np.testing.assert_allclose(q.V[keep], -xy[keep, 1] / r[keep], atol=1e-12)
    np.testing.assert_allclose(np.asarray(q.get_array()), r, atol=1e-12)
    assert len(fig.axes) == 2  # the colour bar
    assert ax.get_title() == "score at t = 0.5"


def test_score_field_checks_the_score_shape():
    with pytest.raises(ValueError, match=r"shape \(9, 2\)"):
        sd.plot.score_field(lambda x, t: x[:, :1], 0.1, n=3)
    with pytest.raises(ValueError, match="extent"):
        sd.plot.score_field(lambda x, t: x, 0.1, extent=(1, 0, 0, 1))


def test_error_vs_nfe_lines_sorted_by_cost_with_noise_floor():
    rows = [{"name": "heun 8", "nfe": 15, "distance": 1e-2}, {"name": "heun 4", "nfe": 7, "distance": 1e-1},
            {"name": "dpm 10", "nfe": 10, "distance": 3e-3}, {"name": "em 100", "nfe": 100, "distance": None}]
    fig = sd.plot.error_vs_nfe(rows, group=lambda name: name.split()[0], noise_floor=-1e-4)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.lines}
    np.testing.assert_allclose(lines["heun"].get_xdata(), [7, 15])
    np.testing.assert_allclose(lines["heun"].get_ydata(), [1e-1, 1e-2])
    np.testing.assert_allclose(lines["dpm"].get_xdata(), [10])
    assert "em" not in lines  # its distance is None
    np.testing.assert_allclose(lines["noise floor"].get_ydata(), [1e-4, 1e-4])  # |negative U-statistic|


def test_error_vs_nfe_from_comparisons():
    gmm = sd.eight_gaussians()
    sde = sd.VPSDE()
    samplers = {f"dpm {n}": sd.DPMSolver(steps=n) for n in (2, 4)}
    table = sd.compare_samplers(sde, gmm.score(sde), samplers, n=200, reference=gmm)
    fig = sd.plot.error_vs_nfe(table)
    (ax,) = fig.axes
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["dpm 2", "dpm 4"]
    offsets = np.asarray(ax.collections[0].get_offsets())
    np.testing.assert_allclose(offsets[:, 0], [2, 4])
    np.testing.assert_allclose(offsets[:, 1], [abs(r.distance) for r in table.rows])
    fig2 = sd.plot.error_vs_nfe({"dpm": table}, x="wall_time")
    (ax2,) = fig2.axes
    (line,) = [line for line in ax2.lines if line.get_label() == "dpm"]
    np.testing.assert_allclose(sorted(line.get_xdata()), sorted(r.wall_time for r in table.rows))
    assert ax2.get_xlabel() == "wall time (s)"
    with pytest.raises(ValueError, match="nothing to plot"):
        sd.plot.error_vs_nfe([{"name": "a", "nfe": 1, "distance": None}])


def test_distances_below_the_noise_floor_are_drawn_on_it_not_below():
    # The unbiased energy distance of an exact sampler is often negative; |value| on a log axis drew such rows
    # (and the floor itself) up to 20x below the floor, as if they beat the truth.
    rows = [{"name": "exact", "nfe": 10, "distance": -3e-4}, {"name": "coarse", "nfe": 20, "distance": 5e-2},
            {"name": "tiny", "nfe": 40, "distance": 1e-5}]
    fig = sd.plot.error_vs_nfe(rows, noise_floor=2e-3, group=lambda name: "all")
    ys = list(fig.axes[0].lines[0].get_ydata())
    assert ys == [2e-3, 5e-2, 2e-3]
    assert "noise floor" in fig.axes[0].get_ylabel()
    plt.close(fig)
