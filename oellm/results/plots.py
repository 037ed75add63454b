"""Figures of a collected table: learning curves over checkpoint steps and a model x task heatmap.

matplotlib (Agg, no display needed on a login node) is imported inside the functions, so only
`--plot` needs it installed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.results.tables import leaderboard, model_label, pick_metric

_MARKERS = "os^Dvx*P"
_STYLES = ["-", "--", ":", "-."]


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


def plot_all(df: Any, out: Path, metric: str | None = None) -> list[Path]:
    """Learning curves (per model with checkpoints, per task with several models) + the heatmap."""
    out.mkdir(parents=True, exist_ok=True)
    df = df.reset_index(drop=True)
    written = [heatmap(df, out / "heatmap.png", metric)]
    stepped = df[df["step"].notna()]
    if stepped.empty:
        return written
    base = stepped.assign(base=[model_label(m, None, a) for m, a in zip(stepped["model"], stepped["model_args"], strict=True)])
    for name, g in base.groupby("base", sort=True):
        if g["step"].nunique() > 1:
            written.append(learning_curves(g, out / f"curves_{_slug(name)}.png", f"{name}: metric vs checkpoint step",
                                           by="task", metric=metric))
    for task, g in base.groupby("task", sort=True):
        if g["base"].nunique() > 1 and g["step"].nunique() > 1:
            written.append(learning_curves(g, out / f"curves_task_{_slug(task)}.png",
                                           f"{task}: metric vs checkpoint step", by="base", metric=metric))
    return written


def _chosen(df: Any, metric: str | None) -> Any:
    """Rows of the one metric per task that the leaderboard shows."""
    key = df["metric"] + "," + df["filter"]
    chosen = {t: pick_metric(sorted(set(k)), metric) for t, k in key.groupby(df["task"])}
    return df[key == df["task"].map(chosen)].assign(key=key)


def learning_curves(df: Any, path: Path, title: str, by: str = "task", metric: str | None = None) -> Path:
    """Metric vs step; one colour per `by` value, one line style + marker per shot count; stderr bars."""
    plt = pyplot()
    d = _chosen(df, metric)
    shots = sorted(d["n_shot"].dropna().unique())
    fig, ax = plt.subplots(figsize=(10, 5))
    names = sorted(d[by].unique())
    for (name, n_shot, key), g in d.groupby([by, "n_shot", "key"], sort=True):
        g = g.sort_values("step")
        j = shots.index(n_shot) if n_shot in shots else 0
        color = f"C{names.index(name) % 10}"
        label = f"{name} {key.split(',')[0]} ({n_shot}-shot)"
        err = g["stderr"].astype(float)
        ax.errorbar(g["step"].astype(float), g["value"], yerr=err.fillna(0) if err.notna().any() else None,
                    linestyle=_STYLES[j % 4], marker=_MARKERS[j % len(_MARKERS)], color=color, label=label,
                    capsize=3, elinewidth=0.7, alpha=0.9)
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel(metric or "score (acc_norm, else acc, else first metric)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="task metric (shots)" if by == "task"
              else "model metric (shots)", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def heatmap(df: Any, path: Path, metric: str | None = None) -> Path:
    """The leaderboard as a colour grid with the values written in."""
    plt = pyplot()
    table = leaderboard(df, metric)
    rows, cols = table.shape
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * cols + 3), max(3, 0.45 * rows + 2)))
    im = ax.imshow(table.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    ax.set_xticks(range(cols), [str(c) for c in table.columns], rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(rows), [str(r) for r in table.index], fontsize=8)
    for (r, c), v in _cells(table):
        ax.text(c, r, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white" if v < table.stack().mean() else "black")
    ax.set_xlabel("task metric")
    ax.set_ylabel("model")
    ax.set_title(f"models x tasks ({metric or 'acc_norm, else acc'})")
    fig.colorbar(im, ax=ax, label="score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cells(table: Any) -> list[tuple[tuple[int, int], float]]:
    values = table.to_numpy(dtype=float)
    return [((r, c), values[r, c]) for r in range(values.shape[0]) for c in range(values.shape[1])
            if values[r, c] == values[r, c]]
