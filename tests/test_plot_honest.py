"""Figures that do not mislead: the comparison's distance axis, and the demo's samples and trajectories."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import scoresde as sd  # noqa: E402


def _labels(ax):
    ax.figure.canvas.draw()
    lo, hi = ax.get_ylim()
    return [t.get_text() for t in ax.get_yticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi]


def test_close_distances_share_a_linear_axis_from_zero_with_numbers_and_the_noise_floor():
    # 0.6 % apart: on an autoscaled log axis they filled the whole height, with no number on it
    rows = [{"name": "a", "nfe": 10, "distance": 1.000e-2}, {"name": "b", "nfe": 20, "distance": 1.006e-2}]
    fig = sd.plot.error_vs_nfe(rows, noise_floor=1e-3)
    (ax,) = fig.axes
    assert ax.get_yscale() == "linear"
    lo, hi = ax.get_ylim()
    assert lo <= 0 and hi >= 1.006e-2 and (1.006e-2 - 1.000e-2) / (hi - lo) < 0.02
    assert len(_labels(ax)) >= 3
    assert any("noise floor" in str(a.get_label()) for a in ax.patches + ax.lines + ax.collections)


def test_spread_distances_keep_a_log_axis_with_labelled_decades():
    rows = [{"name": "a", "nfe": 10, "distance": 3e-1}, {"name": "b", "nfe": 20, "distance": 4e-3}]
    fig = sd.plot.error_vs_nfe(rows, noise_floor=1e-3)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and len(_labels(ax)) >= 2
    assert "log" in ax.get_ylabel()


def test_comparison_plot_has_numbers_on_its_distance_axis():
    gmm = sd.eight_gaussians()
    sde = sd.VPSDE()
    table = sd.compare_samplers(sde, gmm.score(sde), {f"dpm {n}": sd.DPMSolver(steps=n) for n in (8, 10)}, n=200,
                                reference=gmm)
    (ax,) = table.plot().axes
    assert len(_labels(ax)) >= 2


def test_samples_draws_the_reference_underneath_in_grey():
    gen = torch.Generator().manual_seed(0)
    fig = sd.plot.samples(torch.randn(50, 2, generator=gen), reference=torch.randn(30, 2, generator=gen))
    (ax,) = fig.axes
    samples, reference = ax.collections
    assert reference.get_zorder() < samples.get_zorder()
    r, g, b, _ = reference.get_facecolor()[0]
    assert r == g == b and 0.4 < r < 0.9                  # grey, as the demo's title says


def test_demo_figures_name_their_sampler_and_start_paths_at_the_prior(tmp_path):
    from scoresde.app import demo

    gmm, sde = sd.eight_gaussians(), sd.VPSDE()
    data = gmm.sample(300, torch.Generator().manual_seed(2))
    figs = demo._save_figures(sde, gmm.score(sde), data, str(tmp_path), torch.Generator().manual_seed(1), n=300)
    samples_ax, = figs["samples.png"].axes
    title = samples_ax.get_title()
    assert demo.FIGURE_SAMPLER in demo.comparison_samplers()          # the figure is one row of the table
    steps = demo.comparison_samplers()[demo.FIGURE_SAMPLER].steps
    assert demo.FIGURE_SAMPLER in title and f"NFE {steps}" in title and "grey" in title and "black" not in title
    traj_ax, = figs["trajectories.png"].axes
    assert demo.FIGURE_SAMPLER in traj_ax.get_title()
    paths = [line for line in traj_ax.lines if line.get_label().startswith("_")]
    starts = [c for c in traj_ax.collections if c.get_label() == "start (prior draw, t = T)"]
    assert len(starts) == 1 and len(paths) > 0
    first = np.array([[line.get_xdata()[0], line.get_ydata()[0]] for line in paths])
    np.testing.assert_allclose(np.asarray(starts[0].get_offsets())[: len(paths)], first)
    # the paths start at x_T ~ N(0, I), not after a first step towards the data: their spread is the prior's
    assert 0.6 < float(np.std(first)) < 1.4 and (tmp_path / "samples.png").is_file()
