"""PNG figures of a sweep's results (matplotlib, Agg): grouped bars per benchmark, accuracy against epoch.

A missing result is drawn as a gap marked "n/a", never as a zero-height bar or a point at zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from eval.table5 import COLUMNS, Row  # noqa: E402


@dataclass(frozen=True)
class Curve:
    """One run's results over training: x (epoch, or step when epochs are unknown) -> value per column."""

    run: str
    x_label: str  # "epoch" or "optimizer step"
    points: tuple[tuple[float, tuple[float | None, ...]], ...]
    spread: tuple[tuple[float | None, ...], ...] = ()  # per point: the sd over seeds (mean_curve), drawn as a band


def mean_curve(label: str, curves: Sequence[Curve]) -> Curve:
    """The mean of runs' curves (seeds of one recipe) at each x any of them has, with the sample sd per point."""
    import statistics

    if len(curves) == 1:
        return Curve(label, curves[0].x_label, curves[0].points)
    xs = sorted({round(x, 9) for c in curves for x, _ in c.points})
    points, spread = [], []
    for x in xs:
        means, sds = [], []
        for col in range(len(COLUMNS)):
            values = [v[col] for c in curves for px, v in c.points if round(px, 9) == x and v[col] is not None]
            means.append(statistics.fmean(values) if values else None)
            sds.append(statistics.stdev(values) if len(values) > 1 else None)
        points.append((x, tuple(means)))
        spread.append(tuple(sds))
    labels = {c.x_label for c in curves}
    return Curve(label, labels.pop() if len(labels) == 1 else "epoch or step", tuple(points), tuple(spread))


def whole_epoch_ticks(ax) -> None:
    """Ticks only at whole epochs (or steps): no 0.5-epoch labels between checkpoints."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _short(header: str) -> str:
    return header.replace("What'sUp ", "WU ").replace(" indiv", "\nindiv").replace(" pairs", "\npairs")


def grouped_bars(
    rows: Sequence[Row],
    chance: Row | None,
    path: Path,
    title: str,
    errors: Sequence[Sequence[float | None] | None] | None = None,
) -> Path:
    """One group of bars per Table-5 column, one bar per row (starting weights and each run, or each seed group's
    mean); chance as a dash; `errors` (per row, per column: the sd over seeds) as error bars."""
    n = max(1, len(rows))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(10, 1.1 * len(COLUMNS) + 0.12 * n * len(COLUMNS)) + 3, 5.5))
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    for i, row in enumerate(rows):
        xs = [c + (i - (n - 1) / 2) * width for c in range(len(COLUMNS))]
        present = [(x, v) for x, v in zip(xs, row.values, strict=True) if v is not None]
        sd = errors[i] if errors is not None and i < len(errors) and errors[i] is not None else None
        if present:
            yerr = None
            if sd is not None:
                yerr = [s or 0.0 for s, v in zip(sd, row.values, strict=True) if v is not None]
            bars = ax.bar(
                [x for x, _ in present], [v for _, v in present], width, label=row.label, color=cmap(i % cmap.N),
                yerr=yerr, capsize=2 if yerr else 0, error_kw={"elinewidth": 0.8},
            )  # fmt: skip
            # Printed values tell a real 0.0 apart from a missing result.
            ax.bar_label(bars, fmt="%.1f", fontsize=6, rotation=90, padding=2)
        else:  # keep the row in the legend, so its "n/a" marks can be told apart
            ax.bar([xs[0]], [0], width, label=f"{row.label}: no results", color=cmap(i % cmap.N), linewidth=0)
        for x, v in zip(xs, row.values, strict=True):
            if v is None:
                ax.text(x, 1, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
    if chance is not None:
        for c, value in enumerate(chance.values):
            if value is not None:
                ax.hlines(value, c - 0.45, c + 0.45, colors="black", linestyles="dashed", linewidth=1)
        ax.plot([], [], "k--", linewidth=1, label="random chance")
    ax.set_xticks(range(len(COLUMNS)), [_short(c[0]) for c in COLUMNS], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_by_epoch(curves: Sequence[Curve], chance: Row | None, path: Path, title: str) -> Path:
    """One panel per Table-5 column, one line per run."""
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5), sharex=True)
    cmap = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for c, ax in enumerate(axes.flat):
        drawn = False
        for i, curve in enumerate(curves):
            pts = [(x, values[c]) for x, values in curve.points if values[c] is not None]
            if pts:
                ax.plot([x for x, _ in pts], [v for _, v in pts], "o-", ms=3, color=cmap(i % cmap.N), label=curve.run)
                drawn = True
            band = [
                (x, values[c], sd[c])
                for (x, values), sd in zip(curve.points, curve.spread, strict=False)
                if values[c] is not None and sd[c] is not None
            ]
            if band:
                ax.fill_between([x for x, _, _ in band], [v - s for _, v, s in band], [v + s for _, v, s in band],
                                color=cmap(i % cmap.N), alpha=0.2, linewidth=0)  # fmt: skip
        if not drawn:
            ax.text(0.5, 0.5, "no results", transform=ax.transAxes, ha="center", va="center", color="0.4")
        if chance is not None and chance.values[c] is not None:
            ax.axhline(chance.values[c], color="black", linestyle="--", linewidth=1)
        ax.set_title(COLUMNS[c][0], fontsize=9)
        ax.set_ylim(0, 100)
        whole_epoch_ticks(ax)
        ax.grid(alpha=0.3)
    x_label = curves[0].x_label if curves else "epoch"
    for ax in axes[-1]:
        ax.set_xlabel(x_label)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1:]:  # a run may have results only for some columns
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if chance is not None:
        handles.append(plt.Line2D([], [], color="black", linestyle="--", linewidth=1))
        labels.append("random chance")
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _save_with_side_legend(fig, ax, path: Path) -> Path:
    """The legend (if any) beside the axes, then the figure written to `path` and closed."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_by_epoch(curve: Curve, chance: Row | None, path: Path) -> Path:
    """One run: every Table-5 column against epoch in one axes (chance values as dotted lines of the same colour)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab10")
    for c, (header, _, _) in enumerate(COLUMNS):
        pts = [(x, values[c]) for x, values in curve.points if values[c] is not None]
        if pts:
            ax.plot([x for x, _ in pts], [v for _, v in pts], "o-", ms=3, color=cmap(c), label=header)
        if chance is not None and chance.values[c] is not None:
            ax.axhline(chance.values[c], color=cmap(c), linestyle=":", linewidth=0.8)
    if not any(v is not None for _, values in curve.points for v in values):
        ax.text(0.5, 0.5, "no results yet", transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_xlabel(curve.x_label)
    whole_epoch_ticks(ax)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(curve.run)
    ax.grid(alpha=0.3)
    if chance is not None and any(v is not None for v in chance.values):
        ax.plot([], [], color="0.3", linestyle=":", linewidth=0.8, label="random chance (dotted, per column)")
    return _save_with_side_legend(fig, ax, path)


@dataclass(frozen=True)
class LossCurve:
    run: str
    steps: tuple[int, ...]
    losses: tuple[float, ...]


def training_loss(curves: Sequence[LossCurve], path: Path, title: str) -> Path:
    """Every run's training loss (metrics.jsonl) against the optimizer step, one line per run."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for curve in curves:
        if curve.steps:
            ax.plot(curve.steps, curve.losses, "-", linewidth=1.2, label=curve.run)
    if not any(c.steps for c in curves):
        ax.text(0.5, 0.5, "no training logged yet", transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{title}: training loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return _save_with_side_legend(fig, ax, path)
