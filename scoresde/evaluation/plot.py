"""Small matplotlib helpers for notebooks: samples, trajectories, score fields and error against NFE.

    fig = sd.plot.samples(x)                           # scatter (B, 2), histogram (B, 1), image grid (B, C, H, W)
    fig = sd.plot.trajectories(res)                    # res = sampler.sample(..., trajectory=True)
    fig = sd.plot.score_field(score, 0.3, extent=(-3, 3, -3, 3))
    fig = sd.plot.error_vs_nfe({"heun": rows_heun, "dpm++ 2M": rows_dpm})

Every helper returns the matplotlib ``Figure`` and takes an optional ``ax`` to draw into an existing axes (then
the returned figure is ``ax.figure``). matplotlib is imported inside the functions, so ``import scoresde`` never
imports it.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Tuple

import torch

from .._utils import ScoreFn

Tensor = torch.Tensor

if TYPE_CHECKING:  # matplotlib is imported lazily, inside the functions
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["samples", "trajectories", "score_field", "error_vs_nfe", "image_grid", "figure", "save_samples"]


def _axes(ax, figsize):
    """(fig, ax): a new figure with one axes, or the figure that owns ``ax``."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def figure(figsize=(5.0, 5.0)) -> "Figure":
    """A matplotlib Figure drawn by the Agg canvas, outside pyplot: no global state, no backend change (for
    scripts, the trainer and the command line)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_samples(x: Tensor, path: str, *, data_range: Optional[Tuple[float, float]] = None,
                 title: Optional[str] = None, reference: Optional[Tensor] = None, dpi: int = 120,
                 nrow: Optional[int] = None, labels: Optional[Tensor] = None) -> str:
    """Save `samples` of x as a PNG at ``path`` (folders created; images clipped to ``data_range``,
    default (−1, 1); ``nrow`` images per row; 2-D points coloured by ``labels``) through `figure`; returns
    ``path``."""
    fig = figure()
    samples(x, ax=fig.add_subplot(1, 1, 1), title=title, reference=reference,
            data_range=data_range or (-1.0, 1.0), nrow=nrow, labels=labels)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _as_cpu(x, name: str) -> Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    return x.detach().to("cpu", torch.float64)


def image_grid(x: Tensor, nrow: Optional[int] = None, padding: int = 1,
               data_range: Optional[Tuple[float, float]] = None) -> Tensor:
    """Tile images (B, C, H, W) into one (rows·(H+p)+p, nrow·(W+p)+p, C) array with values in [0, 1].

    Values are mapped from ``data_range`` (default: the min and max of x) to [0, 1] and clipped; the padding
    is white. ``nrow`` images per row (default ⌈√B⌉).
    """
    x = _as_cpu(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be images of shape (B, C, H, W); got {tuple(x.shape)}")
    b, c, h, w = x.shape
    lo, hi = (float(x.min()), float(x.max())) if data_range is None else (float(data_range[0]),
                                                                          float(data_range[1]))
    x = ((x - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    nrow = int(nrow) if nrow is not None else max(1, math.ceil(math.sqrt(b)))
    rows = math.ceil(b / nrow)
    grid = torch.ones(rows * (h + padding) + padding, nrow * (w + padding) + padding, c, dtype=x.dtype)
    for i in range(b):
        r, k = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[top:top + h, left:left + w] = x[i].permute(1, 2, 0)
    return grid


def samples(x: Tensor, ax: Optional["Axes"] = None, *, reference: Optional[Tensor] = None,
            title: Optional[str] = None, size: float = 2.0, alpha: float = 0.5, bins: int = 60,
            nrow: Optional[int] = None, data_range: Optional[Tuple[float, float]] = None, cmap: str = "gray",
            figsize=(4.5, 4.5), labels: Optional[Tensor] = None) -> "Figure":
    """Show samples: a scatter for (B, 2), a histogram for (B, 1) or (B,), an image grid for (B, C, H, W).

    Args:
        x: the samples.
        ax: draw into this axes (default: a new figure).
        reference: optional reference samples of the same per-sample shape: grey dots underneath a scatter
            (seen where the samples miss the data, never hiding the samples), a grey histogram underneath.
        title: the axes title.
        size: marker size and opacity of the scatter.
        alpha: as ``size``.
        bins: histogram bins (1-D data).
        nrow: image grid layout, value range mapped to black–white (default: min–max of x)
            and colour map (used for single-channel images).
        data_range: as ``nrow``.
        cmap: as ``nrow``.
        figsize: size of a new figure.
        labels: optional classes (B,) of 2-D points: each class in its own colour (C0, C1, …).

    Returns:
        the matplotlib Figure.
    """
    x = _as_cpu(x, "x")
    if labels is not None:
        labels = torch.as_tensor(labels).detach().cpu().reshape(-1)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"labels must have one entry per sample, ({x.shape[0]},); got {tuple(labels.shape)}")
    if x.dim() == 1:
        x = x[:, None]
    ref = None if reference is None else _as_cpu(reference, "reference")
    if ref is not None and ref.dim() == 1:
        ref = ref[:, None]
    if ref is not None and tuple(ref.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(f"reference must have the per-sample shape of x, {tuple(x.shape[1:])}; "
                         f"got {tuple(ref.shape[1:])}")
    fig, ax = _axes(ax, figsize)
    if x.dim() == 4:
        grid = image_grid(x, nrow=nrow, data_range=data_range)
        if grid.shape[-1] == 1:
            ax.imshow(grid[..., 0].numpy(), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(grid[..., :3].numpy(), interpolation="nearest")
        ax.set_axis_off()
    elif x.dim() == 2 and x.shape[1] == 2:
        if labels is None:
            ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=size, alpha=alpha, color="C0", label="samples",
                       zorder=2)
        else:
            for c in sorted(set(labels.tolist())):
                mine = labels == c
                ax.scatter(x[mine, 0].numpy(), x[mine, 1].numpy(), s=size, alpha=alpha, color=f"C{c % 10}",
                           label=f"class {c}", zorder=2)
        if ref is not None:           # underneath, grey: where the samples miss the data it shows
            ax.scatter(ref[:, 0].numpy(), ref[:, 1].numpy(), s=size, alpha=0.5, color="0.6", zorder=1,
                       label="reference")
        if ref is not None or labels is not None:
            ax.legend(fontsize=8, markerscale=4, loc="upper right")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    elif x.dim() == 2 and x.shape[1] == 1:
        if ref is not None:
            ax.hist(ref[:, 0].numpy(), bins=bins, density=True, color="0.7", alpha=0.7, label="reference")
        ax.hist(x[:, 0].numpy(), bins=bins, density=True, color="C0", alpha=0.6, label="samples")
        if ref is not None:
            ax.legend(fontsize=8)
        ax.set_xlabel("x")
        ax.set_ylabel("density")
    else:
        raise ValueError("samples() draws (B, 2) points, (B, 1) or (B,) values, or (B, C, H, W) images; "
                         f"got shape {tuple(x.shape)}")
    if title:
        ax.set_title(title)
    return fig


def trajectories(result_or_tensor, ax: Optional["Axes"] = None, *, times: Optional[Tensor] = None, n: int = 20,
                 dim: int = 0, title: Optional[str] = None, alpha: float = 0.6, figsize=(5.0, 4.0),
                 x_T: Optional[Tensor] = None) -> "Figure":
    """Draw sampling paths: in the plane for 2-D data, else one coordinate against time.

    Args:
        result_or_tensor: a [`scoresde.SampleResult`][scoresde.SampleResult] sampled with ``trajectory=True``, or a tensor of
            states (L, B, *D) (e.g. from ``sde.simulate``).
        ax: draw into this axes.
        times: the L times of a tensor's states (taken from the result otherwise; default 0 … L − 1).
        n: number of paths drawn (the first n of the batch).
        dim: for data that is not 2-D, the coordinate (of the flattened sample) drawn against time.
        title: the axes title.
        alpha: line opacity.
        figsize: size of a new figure.
        x_T: the starting state (B, *D) the sampler was given: a `SampleResult` records the state after each step,
            so without it the paths start after the first step (2-D paths only: against time, where its time
            is not known here, it is left out).

    Returns:
        the matplotlib Figure. 2-D paths start at a grey dot (x_T when given, else the first recorded state) and
        end at a black dot (the last state).
    """
    if torch.is_tensor(result_or_tensor):
        states = result_or_tensor
    else:
        states = getattr(result_or_tensor, "trajectory", None)
        if states is None:
            raise ValueError("the sample result has no trajectory: sample with trajectory=True, or pass a tensor "
                             "of states (L, B, *D)")
        if times is None:
            times = getattr(result_or_tensor, "times", None)
    states = _as_cpu(states, "trajectory")
    if states.dim() < 3:
        raise ValueError(f"trajectory must have shape (L, B, *D); got {tuple(states.shape)}")
    if x_T is not None:
        x_T = _as_cpu(x_T, "x_T")
        if tuple(x_T.shape) != tuple(states.shape[1:]):
            raise ValueError(f"x_T must have the shape of one state, {tuple(states.shape[1:])}; got "
                             f"{tuple(x_T.shape)}")
        states = torch.cat([x_T[None], states])
        if times is not None:
            times = torch.cat([torch.as_tensor([float("nan")], dtype=torch.float64),
                               _as_cpu(torch.as_tensor(times), "times").reshape(-1)])
    length, batch = states.shape[0], states.shape[1]
    flat = states.reshape(length, batch, -1)[:, : max(1, int(n))]
    if times is None:
        t = torch.arange(length, dtype=torch.float64)
    else:
        t = _as_cpu(torch.as_tensor(times), "times").reshape(-1)
        if t.shape[0] != length:
            raise ValueError(f"times must have one entry per state ({length}); got {t.shape[0]}")
    fig, ax = _axes(ax, figsize)
    if flat.shape[-1] == 2:
        for k in range(flat.shape[1]):
            ax.plot(flat[:, k, 0].numpy(), flat[:, k, 1].numpy(), linewidth=0.8, alpha=alpha)
        start = "start (prior draw, t = T)" if x_T is not None else "first recorded state"
        ax.scatter(flat[0, :, 0].numpy(), flat[0, :, 1].numpy(), s=8, color="0.6", zorder=3, label=start)
        ax.scatter(flat[-1, :, 0].numpy(), flat[-1, :, 1].numpy(), s=8, color="k", zorder=3, label="end")
        ax.legend(fontsize=8)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    else:
        if not 0 <= dim < flat.shape[-1]:
            raise ValueError(f"dim must be in [0, {flat.shape[-1]}); got {dim}")
        for k in range(flat.shape[1]):
            ax.plot(t.numpy(), flat[:, k, dim].numpy(), linewidth=0.8, alpha=alpha)
        ax.set_xlabel("t" if times is not None else "step")
        ax.set_ylabel(f"x[{dim}]")
    if title:
        ax.set_title(title)
    return fig


def score_field(score: ScoreFn, t: float, extent=(-3.0, 3.0, -3.0, 3.0),
                ax: Optional["Axes"] = None, *, n: int = 21, log_prob: Optional[Callable[[Tensor], Tensor]] = None,
                normalize: bool = True,
                title: Optional[str] = None, dtype: torch.dtype = torch.float64, device=None,
                figsize=(4.5, 4.5)) -> "Figure":
    """Quiver plot of a 2-D score field ``score(x, t)`` at one time t on an n × n grid.

    Args:
        score: ``score(x, t)`` with x (B, 2) and t (B,), e.g. ``gmm.score(sde)`` or a trained model.
        t: the time (a float).
        extent: (x_min, x_max, y_min, y_max) of the grid.
        ax: draw into this axes.
        n: grid points per axis.
        log_prob: optional ``log_prob(x) -> (B,)`` drawn as filled contours underneath (e.g.
            ``lambda x: gmm.log_prob_t(sde, x, torch.full((len(x),), t))``).
        normalize: draw unit arrows coloured by the score's norm (the norm spans orders of magnitude near the
            data); otherwise raw arrows scaled by matplotlib.
        title: the axes title (default "score at t = …").
        dtype: of the grid passed to ``score`` (default float64, CPU).
        device: as ``dtype``.
        figsize: size of a new figure.

    Returns:
        the matplotlib Figure.
    """
    if not callable(score):
        raise TypeError(f"score must be a callable score(x, t); got {type(score).__name__}")
    if len(extent) != 4 or not (extent[0] < extent[1] and extent[2] < extent[3]):
        raise ValueError(f"extent must be (x_min, x_max, y_min, y_max) with min < max; got {tuple(extent)}")
    if int(n) < 2:
        raise ValueError(f"n must be an integer >= 2; got {n!r}")
    n = int(n)
    xs = torch.linspace(float(extent[0]), float(extent[1]), n, dtype=dtype, device=device)
    ys = torch.linspace(float(extent[2]), float(extent[3]), n, dtype=dtype, device=device)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    times = torch.full((points.shape[0],), float(t), dtype=dtype, device=device)
    with torch.no_grad():
        s = score(points, times)
    if not torch.is_tensor(s) or tuple(s.shape) != tuple(points.shape):
        got = tuple(s.shape) if torch.is_tensor(s) else type(s).__name__
        raise ValueError(f"score(x, t) must return shape {tuple(points.shape)} for 2-D points; got {got}")
    s = s.detach().to("cpu", torch.float64)
    u, v = s[:, 0].reshape(n, n), s[:, 1].reshape(n, n)
    norm = torch.sqrt(u * u + v * v)
    fig, ax = _axes(ax, figsize)
    X, Y = gx.detach().cpu().numpy(), gy.detach().cpu().numpy()
    if log_prob is not None:
        fine = 4 * n
        fx = torch.linspace(float(extent[0]), float(extent[1]), fine, dtype=dtype, device=device)
        fy = torch.linspace(float(extent[2]), float(extent[3]), fine, dtype=dtype, device=device)
        fgx, fgy = torch.meshgrid(fx, fy, indexing="xy")
        with torch.no_grad():
            lp = log_prob(torch.stack([fgx.reshape(-1), fgy.reshape(-1)], dim=1))
        lp = lp.detach().to("cpu", torch.float64).reshape(fine, fine)
        ax.contourf(fgx.cpu().numpy(), fgy.cpu().numpy(), lp.clamp_min(float(lp.max()) - 20).numpy(), levels=20,
                    cmap="Greys", alpha=0.35)
    if normalize:
        unit = norm.clamp_min(1e-12)
        # Unit arrows drawn at 0.8 of the grid spacing, so they never overlap.
        spacing = min((extent[1] - extent[0]), (extent[3] - extent[2])) / (n - 1)
        q = ax.quiver(X, Y, (u / unit).numpy(), (v / unit).numpy(), norm.numpy(), cmap="viridis",
                      angles="xy", scale_units="xy", scale=1.0 / (0.8 * spacing), pivot="mid", width=0.006)
        fig.colorbar(q, ax=ax, label="‖score‖")
    else:
        ax.quiver(X, Y, u.numpy(), v.numpy(), angles="xy", pivot="mid")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_title(title if title is not None else f"score at t = {float(t):.3g}")
    return fig


def _row_values(rows, x: str, y: str):
    """(names, xs, ys) of rows that are objects with attributes or mappings with keys x, y (and "name")."""
    names, xs, ys = [], [], []
    for r in rows:
        get = (lambda k, r=r: r[k]) if isinstance(r, Mapping) else (lambda k, r=r: getattr(r, k))
        try:
            xv, yv = get(x), get(y)
        except (KeyError, AttributeError):
            raise ValueError(f"every row needs {x!r} and {y!r}; got {r!r}") from None
        try:
            name = get("name")
        except (KeyError, AttributeError):
            name = None
        if yv is None:
            continue
        names.append(name)
        xs.append(float(xv))
        ys.append(float(yv))
    return names, xs, ys


def error_vs_nfe(comparison_or_rows, ax: Optional["Axes"] = None, *, x: str = "nfe", y: str = "distance",
                 group: Optional[Callable[[str], str]] = None, noise_floor: Optional[float] = None,
                 annotate: Optional[bool] = None, title: Optional[str] = None, figsize=(6.0, 4.0)) -> "Figure":
    """Error against cost on log–log axes: one line per sampler family, or one labelled point per row.

    Args:
        comparison_or_rows: a [`scoresde.Comparison`][scoresde.Comparison], a sequence of rows (``ComparisonRow`` objects or
            dicts with keys ``name``, ``nfe``, ``wall_time``, ``distance``, ...), or a mapping label → one of
            those (each drawn as one line, sorted by x).
        ax: draw into this axes.
        x: the cost on the horizontal axis, "nfe" or "wall_time" (any row field works).
        y: the error on the vertical axis, "distance" by default (rows whose value is None are skipped).
        group: for a single table, ``group(name) -> label`` joins rows into lines (e.g. ``lambda n: n.split()[0]``);
            without it, every row is a labelled point.
        noise_floor: marked (default: the comparison's ``noise_floor``): on a linear axis as a grey band
            ±floor around 0, on a log axis as a dashed line with distances below it (the unbiased energy
            distance can be negative) drawn on it, since they are indistinguishable from the truth there. Without
            a floor a log axis draws the absolute value.
        annotate: write row names next to points (default: when points are not grouped into lines).
        title: the axes title.
        figsize: size of a new figure.

    Returns:
        the matplotlib Figure. The error axis is linear from 0 (the distance of the truth) when the values lie
        within a factor of 10 of each other, so that close values look close; when they span more, it is
        logarithmic, over whole decades with their values written, and its label says so.
    """
    data = comparison_or_rows
    if noise_floor is None:
        noise_floor = getattr(data, "noise_floor", None)
    if isinstance(data, Mapping):
        series = {}
        for label, value in data.items():
            if noise_floor is None:
                noise_floor = getattr(value, "noise_floor", None)
            series[str(label)] = _row_values(getattr(value, "rows", value), x, y)
        lines = True
    else:
        names, xs, ys = _row_values(getattr(data, "rows", data), x, y)
        if group is not None:
            series = {}
            for name, xv, yv in zip(names, xs, ys):
                entry = series.setdefault(str(group(name)), ([], [], []))
                entry[0].append(name)
                entry[1].append(xv)
                entry[2].append(yv)
            lines = True
        else:
            series = {"": (names, xs, ys)}
            lines = False
    if not any(len(v[1]) for v in series.values()):
        raise ValueError(f"nothing to plot: no row has a value for {y!r}")
    if annotate is None:
        annotate = not lines
    fig, ax = _axes(ax, figsize)
    drawn = [_on_log_axis(v, noise_floor) for _, _, ys_ in series.values() for v in ys_]
    log_y = max(drawn) > 10 * min(drawn)                 # spread over more than a decade: a log axis
    place = (lambda v: _on_log_axis(v, noise_floor)) if log_y else float
    for label, (names, xs, ys) in series.items():
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        px = [xs[i] for i in order]
        py = [place(ys[i]) for i in order]
        if lines:
            ax.plot(px, py, marker="o", markersize=4, label=label)
        else:
            ax.scatter(px, py, s=25, color="C0")
        if annotate:
            for i in order:
                if names[i] is not None:
                    ax.annotate(str(names[i]), (xs[i], place(ys[i])), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
    floor = None if noise_floor is None else abs(float(noise_floor))
    if floor is not None and log_y:
        ax.axhline(floor, color="grey", linestyle="--", linewidth=1, label="noise floor")
    elif floor is not None:
        ax.axhspan(-floor, floor, color="0.85", zorder=0, label="noise floor (±1 RMS)")
    if lines or floor is not None:
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, LogLocator, NullFormatter, ScalarFormatter
    if log_y:
        ax.set_yscale("log")
        low = min(drawn + ([floor] if floor else []))
        ax.set_ylim(10 ** math.floor(math.log10(0.9 * low)), 10 ** math.ceil(math.log10(max(drawn))))
        ax.yaxis.set_major_locator(LogLocator(base=10))
    else:                                  # from 0 (the truth's distance), or below it for negative estimates
        values = [float(v) for _, _, ys_ in series.values() for v in ys_] + ([-floor, floor] if floor else [])
        top = max(values)
        ax.set_ylim(min(0.0, min(values)) - 0.05 * top * (min(values) < 0), 1.1 * top)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))

    for axis in (ax.xaxis, ax.yaxis):        # minor tick labels of a short log range overlap the major ones
        axis.set_minor_formatter(NullFormatter())
    costs = sorted({v for _, xs_, _ in series.values() for v in xs_})
    if 1 < len(costs) <= 8:                  # few costs: label each one, in plain numbers
        ax.xaxis.set_major_locator(FixedLocator(costs))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(FixedLocator([]))
    xlabels = {"nfe": "NFE (score evaluations)", "wall_time": "wall time (s)"}
    ax.set_xlabel(xlabels.get(x, x))
    if log_y:
        ax.set_ylabel(f"{y} (log scale)" + ("" if floor is None else ";\nbelow the noise floor: drawn on it"))
    else:
        ax.set_ylabel(f"{y} (0: the truth)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _on_log_axis(value: float, floor: Optional[float]) -> float:
    """A distance as drawn on a log axis: values under the noise floor (negative ones included, since the unbiased
    estimate can be) are drawn on the floor, where they are indistinguishable from the truth; without a floor,
    the absolute value."""
    if floor is not None:
        return max(float(value), abs(float(floor)))
    return max(abs(float(value)), 1e-300)
