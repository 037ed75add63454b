"""Tables of collected results: the models x tasks leaderboard, as text or markdown, and the tidy
table written as CSV or parquet."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.results.records import PREFERRED
from oellm.rows import CHECKPOINT, DEFAULT_SUITE


def model_label(model: str, step: Any, args: str = "") -> str:
    """A short row label: `run@step100` for checkpoints, the basename for local dirs, the id for hub models."""
    name = model.rstrip("/")
    if name.startswith("/") or name.startswith("."):
        parts = name.split("/")
        name = parts[-2] if CHECKPOINT.match(parts[-1]) and len(parts) > 1 else parts[-1]
    try:
        label = f"{name}@step{int(step)}"
    except (TypeError, ValueError):  # None, NaN or pandas' NA: not a checkpoint
        label = name
    return f"{label} [{args}]" if args else label


def pick_metric(metrics: Sequence[str], wanted: str | None = None) -> str | None:
    """One "metric,filter" key per task: `wanted` (a name or name,filter), else acc_norm > acc > others."""
    if wanted:
        for key in metrics:
            if key == wanted or key.split(",")[0] == wanted:
                return key
        return None
    for name in PREFERRED:
        hits = [k for k in metrics if k.split(",")[0] == name]
        if hits:
            return next((k for k in hits if k.endswith(",none")), hits[0])
    return sorted(metrics)[0] if metrics else None


def leaderboard(df: Any, metric: str | None = None, task_metrics: dict[str, str] | None = None) -> Any:
    """Models (rows) x tasks (columns) of one metric per task: `metric` for all, else the task's entry in
    `task_metrics` (a task-groups file's), else acc_norm > acc > others. A column name carries the metric
    and shots."""
    if df.empty:
        return df
    df = df.reset_index(drop=True)
    # the same task name in two suites (hellaswag in lm-eval and lighteval) is two columns: they score differently
    suites = df["suite"] if "suite" in df else [None] * len(df)
    named = [t if s in (None, DEFAULT_SUITE) else f"{t} [{s}]" for t, s in zip(df["task"], suites, strict=True)]
    d = df.assign(key=df["metric"] + "," + df["filter"], named=named)
    per_task = task_metrics or {}
    chosen = {n: pick_metric(sorted(set(g["key"])), metric) if metric else
              pick_metric(sorted(set(g["key"])), per_task.get(g["task"].iloc[0])) or pick_metric(sorted(set(g["key"])))
              for n, g in d.groupby("named", sort=False)}
    d = d[d["key"] == d["named"].map(chosen)]
    if d.empty:
        available = ", ".join(sorted(set(df["metric"])))
        raise OellmError(f"--metric {metric!r}: no task reports it; available metrics: {available}")
    multi_shot = d.groupby("named")["n_shot"].nunique() > 1
    def column(task: str, key: str, n_shot: Any) -> str:
        name, filt = key.split(",", 1)
        return f"{task} {name}" + (f" {n_shot}-shot" if multi_shot[task] else "") + ("" if filt == "none" else f" ({filt})")

    d = d.assign(label=[model_label(m, s, a) for m, s, a in zip(d["model"], d["step"], d["model_args"], strict=True)],
                 column=[column(t, k, n) for t, k, n in zip(d["named"], d["key"], d["n_shot"], strict=True)],
                 order=d["step"].fillna(-1))
    table = d.pivot_table(index=["label", "order"], columns="column", values="value", aggfunc="first", sort=True)
    table.index = table.index.droplevel("order").rename("model")
    table.columns.name = None
    return table


def to_markdown(table: Any, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency)."""
    head = ["model", *map(str, table.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for label, values in table.iterrows():
        cells = ["" if v != v else f"{v:.{digits}f}" for v in values]
        lines.append("| " + " | ".join([str(label), *cells]) + " |")
    return "\n".join(lines)


def to_text(table: Any, digits: int = 4) -> str:
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
        return table.to_string(float_format=lambda v: f"{v:.{digits}f}", na_rep="-")


def write_table(df: Any, path: Path) -> None:
    """CSV, or parquet by extension (keeps dtypes; needs pyarrow)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            df.to_parquet(path, index=False)
        except ImportError as e:
            raise OellmError(f"--output_csv {path}: parquet needs pyarrow ({e}); use a .csv name") from None
    else:
        df.to_csv(path, index=False)
