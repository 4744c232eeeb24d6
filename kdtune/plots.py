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
