"""PNG charts for evaluation, benchmark and profile reports (matplotlib, Agg canvas).

Figures are built with the object API on an Agg canvas, so nothing depends on a display or
on pyplot's global state. Each function takes the data as it appears in ``metrics.json`` /
``profile.json`` and writes one PNG atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scrclf import atomic

DPI = 110
CALIBRATED_COLOUR = "#1f77b4"
DEFAULT_COLOUR = "#ff7f0e"
EXTRA_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic.write_bytes(path, buf.getvalue())


def _colour(i: int) -> str:
    return (CALIBRATED_COLOUR, DEFAULT_COLOUR, *EXTRA_COLOURS)[i % (2 + len(EXTRA_COLOURS))]


def confusion_chart(
    task_name: str, labels: Sequence[str], confusion: Any, path: str | Path
) -> None:
    """A heat map of a single-label confusion matrix, or a grid of 2x2 matrices per label.

    ``confusion`` is a ``KxK`` list (rows true, columns predicted) for a single-label task, or
    a mapping label -> ``[[tn, fp], [fn, tp]]`` for a multi-label task.
    """
    if isinstance(confusion, Mapping):
        n = len(labels)
        cols = min(4, n)
        rows = math.ceil(n / cols)
        fig = _figure(2.6 * cols, 2.4 * rows)
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        for ax, label in zip(axes, labels, strict=False):
            _heat(ax, np.asarray(confusion[label]), ["no", "yes"], ["no", "yes"], small=True)
            ax.set_title(label, fontsize=8)
        for ax in axes[n:]:
            ax.set_axis_off()
        fig.suptitle(
            f"{task_name}: per-label confusion (rows true, columns predicted)", fontsize=10
        )
    else:
        matrix = np.asarray(confusion)
        size = max(4.0, 0.7 * len(labels) + 2.5)
        fig = _figure(size, size * 0.85)
        ax = fig.subplots()
        _heat(ax, matrix, list(labels), list(labels))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{task_name}: confusion matrix")
    _save(fig, path)


def _heat(ax, matrix: np.ndarray, rows: list[str], cols: list[str], small: bool = False) -> None:
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(
        range(len(cols)),
        cols,
        rotation=45 if not small else 0,
        ha="right" if not small else "center",
        fontsize=7 if small else 8,
    )
    ax.set_yticks(range(len(rows)), rows, fontsize=7 if small else 8)
    high = matrix.max() if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(int(value)),
            ha="center",
            va="center",
            fontsize=7 if small else 8,
            color="white" if high and value > high / 2 else "black",
        )


# A reliability bin with fewer predictions than this is drawn hollow: its accuracy is noise.
MIN_BIN_COUNT = 10


def reliability_chart(
    task_name: str, bins_by_setting: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path
) -> None:
    """Reliability diagram: accuracy against confidence per bin, one line per decision setting.

    Each marker's area grows with the number of predictions in its bin; bins holding fewer
    than :data:`MIN_BIN_COUNT` are drawn hollow and labelled with their count. The bars
    underneath show how many predictions fall in each bin (first setting).
    """
    fig = _figure(5.5, 5.0)
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    first = None
    for i, (setting, bins) in enumerate(bins_by_setting.items()):
        used = [b for b in bins if b["count"]]
        conf = [b["confidence"] for b in used]
        acc = [b["accuracy"] for b in used]
        counts = np.asarray([b["count"] for b in used], dtype=np.float64)
        colour = _colour(i)
        ax.plot(conf, acc, color=colour, linewidth=1, label=setting)
        if len(used):
            sizes = 12 + 160 * np.sqrt(counts / counts.max())
            small = counts < MIN_BIN_COUNT
            ax.scatter(
                np.asarray(conf)[~small], np.asarray(acc)[~small], s=sizes[~small], color=colour
            )
            ax.scatter(
                np.asarray(conf)[small],
                np.asarray(acc)[small],
                s=sizes[small],
                facecolors="none",
                edgecolors=colour,
            )
            for x, y, n in zip(conf, acc, counts, strict=True):
                if n < MIN_BIN_COUNT:
                    ax.annotate(
                        f"n={int(n)}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7
                    )
        first = first if first is not None else bins
    ax.set_ylabel("observed frequency / accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, title=f"hollow: < {MIN_BIN_COUNT} in bin", title_fontsize=7)
    ax.set_title(f"{task_name}: reliability (marker area ~ items in bin)")
    if first:
        centres = [(b["lower"] + b["upper"]) / 2 for b in first]
        widths = [b["upper"] - b["lower"] for b in first]
        ax_count.bar(
            centres, [b["count"] for b in first], width=widths, color="lightgrey", edgecolor="grey"
        )
    ax_count.set_xlabel("predicted probability / confidence")
    ax_count.set_ylabel("count")
    _save(fig, path)


def per_label_f1_chart(
    task_name: str,
    labels: Sequence[str],
    per_label_by_setting: Mapping[str, Mapping[str, Mapping[str, Any]]],
    path: str | Path,
) -> None:
    """Per-label F1 bars, one group per label and one bar per decision setting.

    Where an entry has ``f1_interval`` the bar carries its bootstrap interval.
    """
    settings = list(per_label_by_setting)
    fig = _figure(max(5.0, 0.75 * len(labels) * max(1, len(settings)) / 1.5 + 2), 4.2)
    ax = fig.subplots()
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(settings))
    for i, setting in enumerate(settings):
        entries = per_label_by_setting[setting]
        values = [entries[label]["f1"] for label in labels]
        err = None
        if all("f1_interval" in entries[label] for label in labels):
            lows = [values[k] - entries[label]["f1_interval"][0] for k, label in enumerate(labels)]
            highs = [entries[label]["f1_interval"][1] - values[k] for k, label in enumerate(labels)]
            err = np.clip(np.asarray([lows, highs]), 0, None)
        ax.bar(
            x + (i - (len(settings) - 1) / 2) * width,
            values,
            width,
            yerr=err,
            capsize=2,
            color=_colour(i),
            label=setting,
        )
    ax.set_xticks(x, labels, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1")
    ax.set_title(f"{task_name}: F1 per label")
    ax.legend(fontsize=8)
    _save(fig, path)


def profile_chart(result: Mapping[str, Any], path: str | Path) -> None:
    """Grouped bars of label shares, annotated beside predicted, one panel per view.

    Panels: themes as primary, themes in any position, then each single-label task; plus
    the histogram of recommendations per review.
    """
    panels: list[tuple[str, list[str], dict[str, list[float]]]] = []
    for name, entry in result["tasks"].items():
        labels = entry["labels"]
        sources = [s for s in ("annotated", "predicted") if s in entry]
        if entry["type"] == "multi_label":
            for view, title in (("primary", "primary theme"), ("any", "theme in any position")):
                panels.append(
                    (
                        f"{name}: {title}",
                        labels,
                        {s: [entry[s][view][lab] or 0.0 for lab in labels] for s in sources},
                    )
                )
        else:
            panels.append(
                (
                    name,
                    labels,
                    {s: [entry[s]["share"][lab] or 0.0 for lab in labels] for s in sources},
                )
            )
    n = len(panels) + 1
    cols = 2
    rows = math.ceil(n / cols)
    fig = _figure(12, 3.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (title, labels, series) in zip(axes, panels, strict=False):
        x = np.arange(len(labels))
        width = 0.8 / max(1, len(series))
        for i, (source, values) in enumerate(series.items()):
            ax.bar(
                x + (i - (len(series) - 1) / 2) * width,
                values,
                width,
                color=_colour(i),
                label=source,
            )
        ax.set_xticks(x, labels, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel("share of items")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    ax = axes[len(panels)]
    hist = result["per_review"]["histogram"]
    ax.bar([h["bin"] for h in hist], [h["reviews"] for h in hist], color="grey")
    ax.set_xlabel("recommendations per review")
    ax.set_ylabel("reviews")
    per = result["per_review"]
    mean = f"{per['mean']:.1f}" if per["mean"] is not None else "n/a"
    ax.set_title(f"recommendations per review (mean {mean}, max {per['max']})", fontsize=10)
    for extra in axes[n:]:
        extra.set_axis_off()
    _save(fig, path)


def headline_chart(rows: Sequence[Mapping[str, Any]], title: str, path: str | Path) -> None:
    """Horizontal bars of a headline score with its interval, one bar per system.

    ``rows``: mappings with ``system``, ``value``, ``interval`` ([low, high] or None) and
    ``kind`` ("model" or "baseline").
    """
    fig = _figure(7, 0.45 * len(rows) + 1.5)
    ax = fig.subplots()
    y = np.arange(len(rows))
    values = [r["value"] for r in rows]
    colours = [CALIBRATED_COLOUR if r.get("kind") == "model" else "grey" for r in rows]
    err = None
    if all(r.get("interval") for r in rows):
        err = np.clip(
            np.asarray(
                [
                    [r["value"] - r["interval"][0] for r in rows],
                    [r["interval"][1] - r["value"] for r in rows],
                ]
            ),
            0,
            None,
        )
    ax.barh(y, values, xerr=err, color=colours, capsize=3)
    ax.set_yticks(y, [r["system"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean macro-F1 over tasks")
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def learning_curve_chart(
    rows: Sequence[Mapping[str, Any]], points: Sequence[Mapping[str, Any]], path: str | Path
) -> None:
    """Mean macro-F1 against training items, one line per system with its interval band.

    ``rows``: per system and share, ``system``, ``train_items``, ``mean_macro_f1`` and
    ``mean_macro_f1_interval``; ``points``: the single runs (``system``, ``train_items``,
    ``mean_macro_f1``), drawn as dots.
    """
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    systems = list(dict.fromkeys(r["system"] for r in rows))
    for i, system in enumerate(systems):
        mine = sorted((r for r in rows if r["system"] == system), key=lambda r: r["train_items"])
        x = [r["train_items"] for r in mine]
        colour = _colour(i)
        ax.plot(x, [r["mean_macro_f1"] for r in mine], marker="o", color=colour, label=system)
        if all(r.get("mean_macro_f1_interval") for r in mine):
            ax.fill_between(
                x,
                [r["mean_macro_f1_interval"][0] for r in mine],
                [r["mean_macro_f1_interval"][1] for r in mine],
                color=colour,
                alpha=0.15,
                linewidth=0,
            )
        runs = [p for p in points if p["system"] == system]
        ax.scatter(
            [p["train_items"] for p in runs],
            [p["mean_macro_f1"] for p in runs],
            s=10,
            color=colour,
            alpha=0.6,
        )
        for r in mine:
            ax.annotate(
                f"{r['fraction']:g}",
                (r["train_items"], r["mean_macro_f1"]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
                color=colour,
            )
    ax.set_xlabel("training items (label: share of the training reviews)")
    ax.set_ylabel("mean macro-F1 over tasks")
    ax.set_title("Learning curve: mean over seeds, band = review-bootstrap interval", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
