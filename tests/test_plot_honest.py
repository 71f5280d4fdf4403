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
