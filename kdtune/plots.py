"""Figures (matplotlib Agg, PNG): Pareto scatter, reliability diagram, temperature trade-off."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kdtune.atomic import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as temp:
        fig.savefig(temp, dpi=120)
    plt.close(fig)
    return path


def pareto_scatter(
    x: Sequence[float],
    y: Sequence[float],
    on_front: Sequence[bool],
    groups: Sequence[str],
    *,
    x_label: str,
    y_label: str,
    path: str | Path,
    title: str = "Pareto front",
) -> Path:
    """All trials coloured by group (method); the front drawn as a line through its points."""
    x, y, on_front = np.asarray(x, float), np.asarray(y, float), np.asarray(on_front, bool)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for group in sorted(set(groups)):
        mask = np.array([g == group for g in groups])
        ax.scatter(x[mask], y[mask], label=group, alpha=0.7)
    order = np.argsort(x[on_front])
    ax.plot(x[on_front][order], y[on_front][order], "k--o", mfc="none", ms=11, label="Pareto front")
    ax.set(xlabel=x_label, ylabel=y_label, title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def reliability_diagram(
    bins: Mapping[str, Sequence[float]], *, path: str | Path, title: str
) -> Path:
    """Accuracy per confidence bin against the diagonal; bar width shows the bin."""
    counts = np.asarray(bins["count"], float)
    accuracy = np.asarray(bins["accuracy"], float)
    confidence = np.asarray(bins["confidence"], float)
    num_bins = len(counts)
    centres = (np.arange(num_bins) + 0.5) / num_bins
    filled = counts > 0
    gap = float(np.sum(counts / counts.sum() * np.abs(accuracy - confidence)))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(centres[filled], accuracy[filled], width=1 / num_bins, edgecolor="k", label="accuracy")
    ax.bar(
        centres[filled],
        confidence[filled] - accuracy[filled],
        bottom=accuracy[filled],
        width=1 / num_bins,
        color="tab:red",
        alpha=0.35,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence",
        ylabel="accuracy",
        title=f"{title}\nECE = {gap:.4f}",
    )
    ax.legend(loc="upper left")
    return _save(fig, path)


def temperature_tradeoff(
    temperature: Sequence[float],
    metrics: Mapping[str, Sequence[float]],
    groups: Sequence[str],
    *,
    path: str | Path,
) -> Path:
    """One panel per metric against the KD temperature (log axis), one colour per method."""
    temperature = np.asarray(temperature, float)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4), squeeze=False)
    for ax, (name, values) in zip(axes[0], metrics.items()):
        values = np.asarray(values, float)
        for group in sorted(set(groups)):
            mask = np.array([g == group for g in groups])
            # markers only: the other hyperparameters differ between trials, so no line joins them
            ax.plot(temperature[mask], values[mask], "o", label=group, alpha=0.8)
        ax.set(xscale="log", xlabel="KD temperature T", ylabel=name)
        ax.set_xticks([1, 2, 4, 8, 16], labels=["1", "2", "4", "8", "16"])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
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
    """One panel per metric of a seed summary (`results.seed_summary`): mean +- std against
    `x`, one line per `group`. Groups without an `x` value (baselines such as the student
    alone) are drawn as a horizontal line with a +-std band; `curves` adds reference lines
    (e.g. a closed form) to every panel."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 4), squeeze=False)
    groups = list(dict.fromkeys(str(e[group]) for e in summary))
    ticks = sorted({float(e[x]) for e in summary if e.get(x) is not None})  # type: ignore[arg-type]
    for ax, metric in zip(axes[0], metrics):
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
        ax.set(xlabel=x, ylabel=metric, xscale="log" if log_x else "linear")
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
    """One bar chart per metric: mean +- std per row of a seed summary, labelled by `label`;
    `reference` draws a horizontal line per metric (e.g. the teacher's value)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 4), squeeze=False)
    names = [str(e[label]) for e in summary]
    for ax, metric in zip(axes[0], metrics):
        mean, std = _band(summary, metric)
        ax.bar(np.arange(len(names)), mean, yerr=std, capsize=3, color="tab:blue", alpha=0.8)
        if reference and metric in reference:
            ax.axhline(reference[metric], color="k", ls="--", label="teacher")
            ax.legend(fontsize=8)
        ax.set_xticks(np.arange(len(names)), labels=names, rotation=45, ha="right")
        finite = mean[np.isfinite(mean)]
        if len(finite) and metric.endswith("acc"):  # accuracies differ in the last points
            ax.set_ylim(max(0.0, finite.min() - 0.05), min(1.0, finite.max() + 0.02))
        ax.set(ylabel=metric)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    return _save(fig, path)


def labelled_scatter(
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[str],
    *,
    x_label: str,
    y_label: str,
    path: str | Path,
    title: str,
    x_err: Sequence[float] | None = None,
    y_err: Sequence[float] | None = None,
    highlight: Sequence[bool] | None = None,
) -> Path:
    """Points with optional error bars, each named; `highlight` rings some of them."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.errorbar(x, y, xerr=x_err, yerr=y_err, fmt="o", capsize=3, alpha=0.8)
    for xi, yi, text in zip(x, y, labels):
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if highlight is not None:
        mask = np.asarray(highlight, bool)
        ax.plot(np.asarray(x, float)[mask], np.asarray(y, float)[mask], "o", ms=12, mfc="none",
                mec="k", label="front")  # fmt: skip
        ax.legend(fontsize=8)
    ax.set(xlabel=x_label, ylabel=y_label, title=title)
    ax.grid(alpha=0.3)
    return _save(fig, path)
