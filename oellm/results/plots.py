"""Figures of a leaderboard (`tables.Board`): learning curves over checkpoint steps and a model x task
heatmap, as PNGs (`--plot`), drawn from the leaderboard's board: the data the HTML report embeds.

matplotlib (Agg, no display needed on a login node) is imported inside the functions, so only `--plot`
needs it installed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.results.tables import Board

_MARKERS = "os^Dvx*P"
MAX_LEGEND = 16


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise OellmError(f"--plot needs matplotlib ({e}): pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "model"


def curve_points(b: Board) -> Any:
    """Every value of the board with a step, averages included (their stderr: the root of the summed
    squares over the number of tasks, as for a mean of independent estimates): base, step, column,
    value, stderr."""
    import pandas as pd

    cells = b.cells[b.cells["step"].notna()]
    points = cells[["label", "base", "step", "column", "value", "stderr"]]
    if points.empty or not b.averages:
        return points.drop(columns="label")
    first = points.drop_duplicates("label").set_index("label")
    err = points.pivot(index="label", columns="column", values="stderr")
    extra = []
    for name, members in b.averages.items():
        values = b.table.loc[first.index, name]
        se = (err.reindex(columns=members) ** 2).sum(axis=1, min_count=len(members)) ** 0.5 / len(members)
        extra.append(pd.DataFrame({"base": first["base"], "step": first["step"], "column": name,
                                   "value": values, "stderr": se.reindex(first.index)}))
    allp = pd.concat([points.drop(columns="label"), *extra], ignore_index=True)
    return allp[allp["value"].notna()]


def curves_figure(points: Any, title: str, by: str) -> Any:
    """Score vs step; one line per `by` value (a run, or a column), stderr as error bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (name, g) in enumerate(points.groupby(by, sort=True)):
        g = g.sort_values("step")
        err = g["stderr"].astype(float)
        ax.errorbar(g["step"].astype(float), g["value"].astype(float),
                    yerr=err.fillna(0) if err.notna().any() else None, marker=_MARKERS[i // 10 % len(_MARKERS)],
                    color=f"C{i % 10}", label=str(name), capsize=3, elinewidth=0.7, alpha=0.9)
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(ax.lines) <= MAX_LEGEND:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:  # a legend of 50 runs hides the plot; the leaderboard's filters tell them apart
        ax.set_title(f"{title} ({points[by].nunique()} lines)")
    fig.tight_layout()
    return fig


def heatmap_figure(table: Any, title: str) -> Any:
    """A table as a colour grid with the values written in."""
    plt = pyplot()
    rows, cols = table.shape
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * cols + 3), max(3, 0.45 * rows + 2)))
    values = table.to_numpy(dtype=float)
    im = ax.imshow(values, aspect="auto", cmap="viridis")
    ax.set_xticks(range(cols), [str(c) for c in table.columns], rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(rows), [str(r) for r in table.index], fontsize=8)
    mean = table.stack().mean()
    for r in range(rows):
        for c in range(cols):
            if values[r, c] == values[r, c]:
                ax.text(c, r, f"{values[r, c]:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if values[r, c] < mean else "black")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="score")
    fig.tight_layout()
    return fig


def save(fig: Any, path: Path) -> Path:
    plt = pyplot()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(b: Board, out: Path) -> list[Path]:
    """The heatmap, learning curves per run with checkpoints (one line per column) and per column with
    several runs (one line per run)."""
    out.mkdir(parents=True, exist_ok=True)
    written = [save(heatmap_figure(b.table, "models x tasks"), out / "heatmap.png")]
    points = curve_points(b)
    for name, g in points.groupby("base", sort=True):
        if g["step"].nunique() > 1:
            fig = curves_figure(g, f"{name}: score vs checkpoint step", by="column")
            written.append(save(fig, out / f"curves_{_slug(name)}.png"))
    for col, g in points.groupby("column", sort=True):
        if g["base"].nunique() > 1 and g["step"].nunique() > 1:
            fig = curves_figure(g, f"{col}: score vs checkpoint step", by="base")
            written.append(save(fig, out / f"curves_task_{_slug(col)}.png"))
    return written
