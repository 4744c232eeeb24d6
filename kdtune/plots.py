"""Figures: matplotlib (Agg) PNGs, and the Pareto front as an HTML page with hover tooltips
(MLflow previews HTML artifacts). Axes carry readable metric names and say which direction is
better."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kdtune.atomic import atomic_path  # noqa: E402

# metric names as the figures spell them
METRIC_WORDS = {"acc": "accuracy", "top5": "top-5 accuracy", "nll": "NLL", "ece": "ECE",
                "adaptive_ece": "adaptive ECE", "classwise_ece": "class-wise ECE", "mce": "MCE",
                "rmsce": "RMS calibration error", "brier": "Brier score",
                "conf_gap": "confidence - accuracy", "oe": "overconfidence error",
                "linearity_gain": "vicinal linearity gain (teacher - student)"}  # fmt: skip
SPLIT_WORDS = {"val": "validation", "test": "test", "train": "training"}


def metric_label(name: str, mode: str | None = None) -> str:
    """'test_ece_ts' -> 'test ECE after temperature scaling'; with a mode, which way is better."""
    split, _, rest = name.partition("_")
    scaled = rest.endswith("_ts")
    base = rest.removesuffix("_ts")
    if split not in SPLIT_WORDS or not base:
        words = name.replace("_", " ")
    else:
        words = f"{SPLIT_WORDS[split]} {METRIC_WORDS.get(base, base.replace('_', ' '))}"
        words += " after temperature scaling" if scaled else ""
    if mode is None:
        return words
    return f"{words} ({'higher' if mode == 'max' else 'lower'} is better)"


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as temp:
        fig.savefig(temp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _panel_row(count: int, height: float = 4.2) -> tuple[plt.Figure, Sequence[plt.Axes]]:
    """A row of `count` panels, spaced so each keeps its axis label to itself."""
    fig, axes = plt.subplots(1, count, figsize=(4.8 * count, height), squeeze=False)
    fig.subplots_adjust(wspace=0.35)
    return fig, axes[0]


@dataclass(frozen=True)
class FrontPoints:
    """The front as a study reports it: each member's seed means, their standard errors (NaN
    where unknown: no bar) and a text per member."""

    x: Sequence[float]
    y: Sequence[float]
    x_err: Sequence[float]
    y_err: Sequence[float]
    text: Sequence[str]

    def sorted(self) -> list[tuple[float, float, float, float, str]]:
        return sorted(zip(self.x, self.y, self.x_err, self.y_err, self.text))


def pareto_scatter(
    x: Sequence[float], y: Sequence[float], on_front: Sequence[bool], groups: Sequence[str], *,
    front: FrontPoints, x_label: str, y_label: str, path: str | Path,
    title: str = "Pareto front", stopped: Sequence[bool] = (),
) -> Path:  # fmt: skip
    """All trials coloured by group (method), ringed where their configuration is on the
    front, those `stopped` early hollow (at the values they stopped with); the front drawn as a
    line through its members' seed means, with bars of one standard error."""
    x, y, on_front = np.asarray(x, float), np.asarray(y, float), np.asarray(on_front, bool)
    early = _flags(stopped, len(x))
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for i, group in enumerate(sorted(set(groups))):
        mask = np.array([g == group for g in groups])
        ax.scatter(x[mask & ~early], y[mask & ~early], color=f"C{i % 10}", label=group, alpha=0.7)
        if (mask & early).any():
            ax.scatter(x[mask & early], y[mask & early], facecolors="none",
                       edgecolors=f"C{i % 10}", alpha=0.7,
                       label=f"{group}, stopped early")  # fmt: skip
    ax.scatter(x[on_front], y[on_front], facecolors="none", edgecolors="black", s=110,
               label="a trial of a front configuration")  # fmt: skip
    members = np.array([m[:4] for m in front.sorted()], float).reshape(-1, 4)
    ax.errorbar(members[:, 0], members[:, 1], xerr=np.nan_to_num(members[:, 2]),
                yerr=np.nan_to_num(members[:, 3]), fmt="k--D", ms=5, capsize=3,
                label="front of the seed means (± 1 SE)")  # fmt: skip
    ax.set(xlabel=x_label, ylabel=y_label, title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _at(value: float, ticks: np.ndarray, low: float, high: float) -> float:
    """Where `value` lies between `low` and `high` (pixels) on an axis spanning `ticks`."""
    return low + (value - ticks[0]) / max(ticks[-1] - ticks[0], 1e-12) * (high - low)


def _svg_axes(x_ticks: np.ndarray, y_ticks: np.ndarray, x_label: str, y_label: str,
              width: int, height: int, margin: int) -> list[str]:  # fmt: skip
    """Grid lines, tick values and axis labels of `pareto_html`'s plot."""
    svg = []
    for tick in x_ticks:
        at_x = _at(tick, x_ticks, margin, width - margin / 2)
        svg.append(f'<line x1="{at_x}" y1="{margin / 2}" x2="{at_x}" y2="{height - margin}" '
                   f'stroke="#eee"/><text x="{at_x}" y="{height - margin + 16}" '
                   f'text-anchor="middle">{tick:.4g}</text>')  # fmt: skip
    for tick in y_ticks:
        at_y = _at(tick, y_ticks, height - margin, margin / 2)
        svg.append(f'<line x1="{margin}" y1="{at_y}" x2="{width - margin / 2}" y2="{at_y}" '
                   f'stroke="#eee"/><text x="{margin - 6}" y="{at_y + 4}" '
                   f'text-anchor="end">{tick:.4g}</text>')  # fmt: skip
    svg.append(f'<text x="{(width + margin / 2) / 2}" y="{height - 24}" text-anchor="middle">'
               f'{_escape(x_label)}</text><text transform="translate(18,{height / 2}) rotate(-90)"'
               f' text-anchor="middle">{_escape(y_label)}</text>')  # fmt: skip
    return svg


def pareto_html(
    x: Sequence[float], y: Sequence[float], on_front: Sequence[bool], groups: Sequence[str],
    hover: Sequence[str], *, front: FrontPoints, x_label: str, y_label: str, path: str | Path,
    title: str, stopped: Sequence[bool] = (), routes: Sequence[str] = (), server: str = "",
) -> Path:  # fmt: skip
    """The Pareto scatter as a page to explore: every trial a point whose tooltip (hover) holds
    its run name, hyperparameters and objectives, and a click its run in the MLflow UI (`routes`,
    at the server the page is served from, else at `server`); the wheel zooms, a drag pans, a
    double click resets; the front of the seed means drawn with its standard errors, each
    member's tooltip its means, and listed. SVG with a small script, no download: it works in
    MLflow's sandboxed artifact preview (which opens no tab: the link is shown to copy),
    offline, at any study size."""
    from matplotlib.ticker import MaxNLocator

    x, y, on_front = np.asarray(x, float), np.asarray(y, float), np.asarray(on_front, bool)
    early = _flags(stopped, len(x))
    routes = list(routes) or [""] * len(x)
    shown = np.isfinite(x) & np.isfinite(y)
    width, height, margin = 760, 520, 70
    x_ticks = MaxNLocator(6).tick_values(np.nanmin(x[shown]), np.nanmax(x[shown]))
    y_ticks = MaxNLocator(6).tick_values(np.nanmin(y[shown]), np.nanmax(y[shown]))

    def at(a: float, b: float) -> tuple[float, float]:
        return (_at(a, x_ticks, margin, width - margin / 2),
                _at(b, y_ticks, height - margin, margin / 2))  # fmt: skip

    colors = {g: matplotlib.colors.to_hex(f"C{i % 10}")
              for i, g in enumerate(sorted(set(groups)))}  # fmt: skip
    members = front.sorted()
    svg = [f'<svg id="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="100%" style="max-width:{width}px;cursor:grab" font-family="sans-serif" '
           'font-size="12">',
           *_svg_axes(x_ticks, y_ticks, x_label, y_label, width, height, margin),
           *_svg_front_line(members, at),
           *(_svg_trial(at(x[i], y[i]), colors[groups[i]], on_front[i], early[i], hover[i],
                        routes[i]) for i in np.flatnonzero(shown)),
           *(_svg_member(m, at) for m in members),
           *_svg_legend(colors, width - 150, margin / 2), "</svg>"]  # fmt: skip
    path = Path(path)
    with atomic_path(path) as temp:
        temp.write_text(_pareto_page(title, "".join(svg), members, server))
    return path


def _pareto_page(title: str, svg: str, members: Sequence[tuple[float, float, float, float, str]],
                 server: str) -> str:  # fmt: skip
    """pareto.html around its SVG: what to do with it, the front listed, the page's script."""
    listed = "".join(f"<li>{_escape(m[4]).replace(chr(10), '; ')}</li>" for m in members)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_escape(title)}</title>"
            f"</head><body style='font-family:sans-serif'><h3>{_escape(title)}</h3>"
            "<p>Hover a point for its run: name, hyperparameters, objectives; click it to open "
            "the run in MLflow. The wheel zooms, a drag pans, a double click resets. Ringed "
            "points are trials of a configuration on the Pareto front; the black diamonds on "
            "the dashed line are the front's seed means, with bars of one standard error, "
            "listed below; hollow points were stopped early by the scheduler, at the values "
            "they had then.</p>"
            f"{svg}<p id='picked'></p><h4>Pareto front (seed means)</h4>"
            f"<ul>{listed}</ul><script>const SERVER = {json.dumps(server.rstrip('/'))};"
            f"{_PAGE_SCRIPT}</script></body></html>")  # fmt: skip


# pareto.html's script: a click opens a point's run (at the server that shows the page, itself
# or, in MLflow's preview, the frame's parent; else SERVER); MLflow's preview is a sandbox that
# opens no tab, so the link is also shown.
# The wheel zooms about the pointer, a drag pans, a double click resets, all on the viewBox.
_PAGE_SCRIPT = r"""
const plot = document.getElementById('plot'), picked = document.getElementById('picked');
const full = plot.viewBox.baseVal, home = [full.x, full.y, full.width, full.height];
const served = [location.origin, ...(location.ancestorOrigins || [])];
const base = served.find(origin => origin.startsWith('http')) || SERVER;
plot.addEventListener('click', event => {
  const point = event.target.closest('[data-route]');
  if (!point || moved) return;
  const url = base + '/' + point.dataset.route;
  const name = point.querySelector('title').textContent.split('\n')[0];
  picked.textContent = name + ': ';
  const link = picked.appendChild(document.createElement('a'));
  link.href = link.textContent = url; link.target = '_blank';
  window.open(url, '_blank');
});
function toSvg(event) {
  const box = plot.getBoundingClientRect(), view = plot.viewBox.baseVal;
  return [view.x + (event.clientX - box.left) / box.width * view.width,
          view.y + (event.clientY - box.top) / box.height * view.height];
}
plot.addEventListener('wheel', event => {
  event.preventDefault();
  const view = plot.viewBox.baseVal, [px, py] = toSvg(event);
  const k = event.deltaY > 0 ? 1.2 : 1 / 1.2;
  view.x = px - (px - view.x) * k; view.y = py - (py - view.y) * k;
  view.width *= k; view.height *= k;
}, {passive: false});
let start = null, moved = false;
plot.addEventListener('mousedown', event => { start = toSvg(event); moved = false; });
plot.addEventListener('mousemove', event => {
  if (!start || !event.buttons) return;
  const [px, py] = toSvg(event), view = plot.viewBox.baseVal;
  if (Math.abs(px - start[0]) + Math.abs(py - start[1]) > 2) moved = true;
  view.x -= px - start[0]; view.y -= py - start[1];
});
plot.addEventListener('mouseup', () => { start = null; });
plot.addEventListener('dblclick', () => {
  [full.x, full.y, full.width, full.height] = home;
});
"""


def _flags(given: Sequence[bool], n: int) -> np.ndarray:
    """A per-trial flag as an array; none given is False for each of the n."""
    return np.asarray(given, bool) if len(given) else np.zeros(n, bool)


def _svg_trial(at: tuple[float, float], color: str, on_front: bool, stopped: bool,
               hover: str, route: str = "") -> str:  # fmt: skip
    """A trial's point: filled, ringed on the front, hollow if it was stopped early; with a
    `route`, a click opens its run (the page's script)."""
    paint = (f'fill="white" stroke="{color}" stroke-width="1.5"' if stopped else
             f'fill="{color}"' + (' stroke="black" stroke-width="2"' if on_front else ""))
    link = f' data-route="{_escape(route)}" style="cursor:pointer"' if route else ""
    return (f'<circle cx="{at[0]:.1f}" cy="{at[1]:.1f}" r="{7 if on_front else 5}" {paint} '
            f'opacity="0.85"{link}><title>{_escape(hover)}</title></circle>')


def _svg_front_line(members: Sequence[tuple[float, float, float, float, str]],
                    at: Callable[[float, float], tuple[float, float]]) -> list[str]:  # fmt: skip
    """The dashed line through the front's seed means (none for an empty front)."""
    if not members:
        return []
    points = " ".join("{:.1f},{:.1f}".format(*at(m[0], m[1])) for m in members)
    return [f'<polyline points="{points}" fill="none" stroke="black" stroke-dasharray="6,4"/>']


def _svg_legend(colors: Mapping[str, str], left: float, top: float) -> list[str]:
    """A dot and a name per group (method), one under the other."""
    return [f'<circle cx="{left}" cy="{top + 14 + 18 * row}" r="5" fill="{color}"/>'
            f'<text x="{left + 10}" y="{top + 18 + 18 * row}">{_escape(group)}</text>'
            for row, (group, color) in enumerate(colors.items())]  # fmt: skip


def _svg_member(member: tuple[float, float, float, float, str],
                at: Callable[[float, float], tuple[float, float]]) -> str:  # fmt: skip
    """A front member: a diamond at its seed means, bars of one standard error each way."""
    x, y, x_err, y_err, text = member
    cx, cy = at(x, y)
    bars = []
    for (a, b), (c, d) in ((at(x - x_err, y), at(x + x_err, y)),
                           (at(x, y - y_err), at(x, y + y_err))):  # fmt: skip
        if np.isfinite([a, b, c, d]).all():
            bars.append(f'<line x1="{a:.1f}" y1="{b:.1f}" x2="{c:.1f}" y2="{d:.1f}" '
                        'stroke="black"/>')  # fmt: skip
    return (f'<g>{"".join(bars)}<path d="M{cx:.1f},{cy - 6:.1f} l6,6 l-6,6 l-6,-6 z" '
            f'fill="black"><title>{_escape(text)}</title></path></g>')


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def reliability_diagram(
    bins: Mapping[str, Sequence[float]], *, path: str | Path, title: str
) -> Path:
    """Accuracy per confidence bin against the diagonal, the gap to each bin's confidence as a
    hatched outline, and below it how many samples each bin holds."""
    counts = np.asarray(bins["count"], float)
    accuracy = np.asarray(bins["accuracy"], float)
    confidence = np.asarray(bins["confidence"], float)
    width = 1 / len(counts)
    centres = (np.arange(len(counts)) + 0.5) * width
    filled = counts > 0
    ece = float(np.sum(counts / counts.sum() * np.abs(accuracy - confidence)))
    fig, (ax, below) = plt.subplots(2, 1, figsize=(5, 6), sharex=True,
                                    gridspec_kw={"height_ratios": [3, 1]})  # fmt: skip
    ax.bar(centres[filled], accuracy[filled], width=width, color="tab:blue", edgecolor="k",
           label="accuracy of the bin")  # fmt: skip
    ax.bar(centres[filled], confidence[filled] - accuracy[filled], bottom=accuracy[filled],
           width=width, fill=False, edgecolor="tab:red", hatch="///",
           label="gap to the bin's mean confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="accuracy", title=f"{title}\nECE = {ece:.4f}")
    ax.grid(alpha=0.3)
    below.bar(centres, counts, width=width, color="tab:gray", edgecolor="k")
    for x_at, n in zip(centres[filled], counts[filled]):
        below.annotate(f"{n:.0f}", (x_at, n), ha="center", va="bottom", fontsize=7)
    below.set(xlabel="confidence (max softmax probability)", ylabel="samples",
              ylim=(0, counts.max() * 1.35 if counts.max() else 1))  # fmt: skip
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, -0.04))  # fmt: skip
    return _save(fig, path)


def temperature_tradeoff(
    temperature: Sequence[float], metrics: Mapping[str, Sequence[float]], groups: Sequence[str],
    *, path: str | Path, title: str, on_front: Sequence[bool] = (),
) -> Path:  # fmt: skip
    """One panel per metric against the KD temperature (log axis), one colour per method, the
    trials `on_front` (the study's Pareto front) ringed."""
    temperature = np.asarray(temperature, float)
    front = _flags(on_front, len(temperature))
    fig, axes = _panel_row(len(metrics))
    for ax, (name, values) in zip(axes, metrics.items()):
        values = np.asarray(values, float)
        for group in sorted(set(groups)):
            mask = np.array([g == group for g in groups])
            # markers only: the other hyperparameters differ between trials, so no line joins them
            ax.plot(temperature[mask], values[mask], "o", label=group, alpha=0.8)
        if front.any():
            ax.plot(temperature[front], values[front], "o", mfc="none", mec="black", ms=11,
                    label="Pareto front")  # fmt: skip
        ax.set(xscale="log", xlabel="KD temperature T", ylabel=metric_label(name))
        ax.set_xticks([1, 2, 4, 8, 16], labels=["1", "2", "4", "8", "16"])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def importance_panels(rows: Sequence[Mapping[str, object]], *, path: str | Path,
                      title: str, top: int = 8) -> Path:  # fmt: skip
    """One horizontal bar chart per objective: its most important hyperparameters."""
    objectives = list(dict.fromkeys(str(r["objective"]) for r in rows))
    fig, axes = _panel_row(len(objectives), height=3.8)
    for ax, objective in zip(axes, objectives):
        ranked = [r for r in rows if r["objective"] == objective][:top][::-1]
        ax.barh([str(r["parameter"]) for r in ranked],
                [float(r["importance"]) for r in ranked], color="tab:blue")  # type: ignore[arg-type]
        ax.set(title=objective if objective == "pareto front" else metric_label(objective),
               xlabel="importance", xlim=(0, 1))
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    return _save(fig, path)


def _band(entries: Sequence[Mapping[str, object]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    mean = np.array([e.get(f"{metric}_mean") for e in entries], float)
    std = np.array([e.get(f"{metric}_std") or 0.0 for e in entries], float)
    return mean, std


def errorbar_panels(
    summary: Sequence[Mapping[str, object]],
    *,
    x: str,
    metrics: Sequence[str],
    group: str,
    path: str | Path,
    title: str,
    log_x: bool = False,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Path:
    """One panel per metric of a seed summary (`tables.seed_summary`): mean +- std against
    `x`, one line per `group`. Groups without an `x` value (baselines such as the student
    alone) are drawn as a horizontal line with a +-std band; `curves` adds reference lines
    (e.g. a closed form) to every panel."""
    fig, axes = _panel_row(len(metrics))
    groups = list(dict.fromkeys(str(e[group]) for e in summary))
    ticks = sorted({float(e[x]) for e in summary if e.get(x) is not None})  # type: ignore[arg-type]
    for ax, metric in zip(axes, metrics):
        for index, name in enumerate(groups):
            entries = [e for e in summary if str(e[group]) == name]
            mean, std = _band(entries, metric)
            color = f"C{index % 10}"
            if entries[0].get(x) is None:
                ax.axhline(mean[0], ls="--", color=color, label=name)
                ax.axhspan(mean[0] - std[0], mean[0] + std[0], color=color, alpha=0.15)
                continue
            order = np.argsort([float(e[x]) for e in entries])  # type: ignore[arg-type]
            xs = np.array([float(e[x]) for e in entries])[order]  # type: ignore[arg-type]
            ax.errorbar(xs, mean[order], yerr=std[order], marker="o", capsize=3, color=color,
                        label=name)  # fmt: skip
        for name, (xs, ys) in (curves or {}).items():
            ax.plot(xs, ys, "k:", lw=2, label=name)
        ax.set(xlabel=x, ylabel=metric_label(metric), xscale="log" if log_x else "linear")
        ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])  # the values run, not decades
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def bar_panels(
    summary: Sequence[Mapping[str, object]],
    *,
    label: str,
    metrics: Sequence[str],
    path: str | Path,
    title: str,
    reference: Mapping[str, float] | None = None,
) -> Path:
    """One bar chart per metric: mean +- std per row of a seed summary, labelled by `label`
    (no bar of error for a row of one seed, which has no spread to show); `reference` draws a
    horizontal line per metric (e.g. the teacher's value), always inside the panel; an accuracy
    axis that does not start at 0 says where it starts; the legend sits below the panels."""
    fig, axes = _panel_row(len(metrics), height=4.4)
    names = [str(e[label]) for e in summary]
    for ax, metric in zip(axes, metrics):
        mean, std = _band(summary, metric)
        spread = np.array([e.get(f"{metric}_std") is not None for e in summary])
        ax.bar(np.arange(len(names)), mean, yerr=np.where(spread, std, np.nan), capsize=3,
               color="tab:blue", alpha=0.8)  # fmt: skip
        line = (reference or {}).get(metric)
        if line is not None:
            ax.axhline(line, color="k", ls="--", label="teacher")
        shown = np.concatenate([mean + std, mean - std, [line] if line is not None else []])
        shown = shown[np.isfinite(shown)]
        axis_label = metric_label(metric)
        if len(shown) and metric.endswith("acc"):  # accuracies differ in the last points
            span = max(shown.max() - shown.min(), 0.01)
            low = max(0.0, shown.min() - 0.15 * span)
            ax.set_ylim(low, min(1.0, shown.max() + 0.15 * span))
            axis_label += f" (axis from {low:.2f})" if low > 0 else ""
        elif len(shown):
            ax.set_ylim(0, shown.max() * 1.15)
        ax.set_xticks(np.arange(len(names)), labels=names, rotation=45, ha="right")
        ax.set(ylabel=axis_label)
        ax.grid(alpha=0.3, axis="y")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", fontsize=8, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(title)
    return _save(fig, path)


def labelled_scatter(
    x: Sequence[float], y: Sequence[float], labels: Sequence[str], *, x_label: str, y_label: str,
    path: str | Path, title: str, x_err: Sequence[float] | None = None,
    y_err: Sequence[float] | None = None, highlight: Sequence[bool] | None = None,
) -> Path:  # fmt: skip
    """Points with optional error bars, each named: short names beside their point, long ones
    (a configuration) as a number there and a key below the axes; `highlight` rings some."""
    long = any(len(text) > 14 for text in labels)
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    ax.errorbar(x, y, xerr=x_err, yerr=y_err, fmt="o", capsize=3, alpha=0.8)
    for index, (xi, yi, text) in enumerate(zip(x, y, labels), start=1):
        ax.annotate(str(index) if long else text, (xi, yi), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)  # fmt: skip
    if highlight is not None:
        mask = np.asarray(highlight, bool)
        ax.plot(np.asarray(x, float)[mask], np.asarray(y, float)[mask], "o", ms=12, mfc="none",
                mec="k", label="front")  # fmt: skip
        ax.legend(fontsize=8)
    ax.set(xlabel=x_label, ylabel=y_label, title=title)
    ax.grid(alpha=0.3)
    if long:
        key = "\n".join(f"{i}: {text}" for i, text in enumerate(labels, start=1))
        fig.text(0.02, -0.02, key, va="top", ha="left", fontsize=8, family="monospace")
    return _save(fig, path)
