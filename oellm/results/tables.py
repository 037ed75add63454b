"""Tables of collected results: the models x tasks leaderboard (as text or markdown), and the tidy table
written as CSV or parquet.

The leaderboard never hides a value: every model gets a label no other model shares, a limited run
(`--limit`) is a row of its own, a cell with several candidate values keeps the newest and says so (a
note), the metric and filter of each column are chosen by one rule (`pick_metric`) and named in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.options import label as option_label
from oellm.results.records import PREFERRED
from oellm.rows import CHECKPOINT, DEFAULT_SUITE

OVERALL = "average"
PRIMARY_FILTERS = ("none", "strict-match")  # lm-eval's unfiltered score, then gsm8k-style tasks' exact one


# ---------------------------------------------------------------- labels


def _run_parts(model: str) -> tuple[str, ...]:
    """A local model's path components without its checkpoint dir (the run it belongs to); a hub id whole."""
    name = model.rstrip("/") or model
    if not name.startswith(("/", ".", "~")):
        return (name,)
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if len(parts) > 1 and CHECKPOINT.match(parts[-1]):
        parts = parts[:-1]
        if len(parts) > 1 and parts[-1] == "hf":  # run/hf/iter_N (upstream's layout): the run is above hf/
            parts = parts[:-1]
    return parts or (name,)


def short_names(models: Iterable[str]) -> dict[str, str]:
    """Each model's shortest path suffix that no other model (run) shares; hub ids stay whole. The
    checkpoints of one training run share their run's name (their step tells them apart)."""
    parts = {m: _run_parts(m) for m in set(models)}
    distinct = set(parts.values())
    k = dict.fromkeys(distinct, 1)
    while True:
        names = {p: "/".join(p[-k[p]:]) for p in distinct}
        seen = Counter(names.values())
        grow = [p for p in distinct if seen[names[p]] > 1 and k[p] < len(p)]
        if not grow:
            return {m: names[p] for m, p in parts.items()}
        for p in grow:
            k[p] += 1


def _fmt_step(step: Any) -> str:
    try:
        return f"@step{int(step)}"
    except (TypeError, ValueError):  # None, NaN or pandas' NA: not a checkpoint
        return ""


def with_labels(df: Any) -> Any:
    """Adds `base` (the run: name, model args, limit) and `label` (base with the checkpoint step): a
    limited evaluation (`--limit`) is another evaluation, so it gets a row of its own, never a cell.
    Labelled once per distinct model (600k values of 100k files share a few thousand)."""
    import numpy as np

    keys = [c for c in ("model", "model_args", "step", "limit", "options") if c in df]
    codes = df.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    first = df.iloc[np.unique(codes, return_index=True)[1]]  # one row per code, in code order
    names = short_names(first["model"])
    limits = first["limit"] if "limit" in first else [None] * len(first)
    options = first["options"] if "options" in first else [""] * len(first)

    def text(model: str, step: Any, args: Any, limit: Any, opts: Any) -> str:
        tag = option_label(opts) if isinstance(opts, str) and opts else ""
        return (names[model] + _fmt_step(step) + (f" [{args}]" if isinstance(args, str) and args else "")
                + ("" if limit is None or limit != limit else f" limit={limit:g}") + (f" ({tag})" if tag else ""))

    cols = (first["model"], first["step"], first["model_args"], limits, options)
    # base groups a training run's checkpoints (several model paths); the label names one evaluation
    base = np.array([text(m, None, a, lim, o) for m, _, a, lim, o in zip(*cols, strict=True)], dtype=object)
    label = np.array(_unique([text(*c) for c in zip(*cols, strict=True)], list(zip(*cols, strict=True))), dtype=object)
    return df.assign(base=base[codes], label=label[codes])


def _unique(texts: list[str], keys: list[tuple]) -> list[str]:
    """No label names two evaluations: texts shared by different keys get a short hash of their key."""
    import hashlib

    import pandas as pd

    keys = [repr(tuple(None if not isinstance(v, str) and pd.isna(v) else v for v in k)) for k in keys]
    owners: dict[str, set[str]] = {}
    for t, k in zip(texts, keys, strict=True):
        owners.setdefault(t, set()).add(k)
    return [t if len(owners[t]) == 1 else f"{t} #{hashlib.sha1(k.encode()).hexdigest()[:6]}"
            for t, k in zip(texts, keys, strict=True)]


# ---------------------------------------------------------------- metric per task


def pick_metric(metrics: Sequence[str], wanted: str | None = None) -> str | None:
    """One "metric,filter" key of a task, from its keys in the result's order: `wanted` (a name or
    name,filter), else acc_norm > acc > exact_match > ...; among a metric's filters the primary one
    (none, then strict-match, then the task's first: lm-eval lists its filters primary first)."""
    def best(hits: list[str]) -> str | None:
        for f in PRIMARY_FILTERS:
            for k in hits:
                if k.split(",", 1)[1] == f:
                    return k
        return hits[0] if hits else None

    if wanted:
        return next((k for k in metrics if k == wanted), None) or best([k for k in metrics if k.split(",")[0] == wanted])
    for name in PREFERRED:
        hit = best([k for k in metrics if k.split(",")[0] == name])
        if hit:
            return hit
    return metrics[0] if metrics else None


# ---------------------------------------------------------------- the leaderboard


@dataclass
class Board:
    """The leaderboard and what it was made of: `table` (label x columns: tasks, then averages), `cells`
    (one tidy row per value shown, with its provenance), `columns` (column -> task, suite, shots,
    metric, filter, direct), `averages` (average column -> its task columns) and `notes` for the user."""

    table: Any
    cells: Any
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    averages: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def board(df: Any, metric: str | None = None, task_metrics: dict[str, str] | None = None,
          groups: dict[str, list[Any]] | None = None) -> Board:
    """Models (rows) x tasks (columns) of one metric per task: `metric` for all, else the task's entry in
    `task_metrics` (a task-groups file's), else `pick_metric`'s rule. `groups` (name -> GroupTask list)
    add an average column per group whose tasks all have a column; `average` is the mean of the
    evaluated tasks (not subtasks a group reported): both only for rows that have every value."""
    import numpy as np
    import pandas as pd

    if df.empty:
        return Board(pd.DataFrame(), df)
    defaults = {"suite": DEFAULT_SUITE, "evaluated": df["task"], "limit": None, "date": None, "source": ""}
    df = df.assign(**{c: v for c, v in defaults.items() if c not in df})  # a hand-made table, as in tests
    df = (df if "label" in df else with_labels(df)).reset_index(drop=True)
    # the same task name in two suites (hellaswag in lm-eval and lighteval) is two columns: they score differently
    other = df["suite"] != DEFAULT_SUITE
    named = df["task"].where(~other, df["task"] + " [" + df["suite"].astype(str) + "]")
    d = df.assign(key=df["metric"] + "," + df["filter"], named=named)
    per_task = task_metrics or {}
    chosen = {}
    for n, g in d.groupby("named", sort=False):
        keys = list(dict.fromkeys(g["key"]))
        chosen[n] = (pick_metric(keys, metric) if metric else
                     pick_metric(keys, per_task.get(g["task"].iloc[0])) or pick_metric(keys))
    d = d[d["key"] == d["named"].map(chosen)]
    if d.empty:
        available = ", ".join(sorted(set(df["metric"])))
        raise OellmError(f"--metric {metric!r}: no task reports it; available metrics: {available}")
    multi_shot = (d.groupby("named")["n_shot"].nunique() > 1).to_dict()

    def column(task: str, key: str, n_shot: Any) -> str:
        name, filt = key.split(",", 1)
        return f"{task} {name}" + (f" {n_shot}-shot" if multi_shot[task] else "") + ("" if filt == "none" else f" ({filt})")

    parts = ["named", "key", "n_shot"]
    codes = d.groupby(parts, dropna=False, sort=False).ngroup().to_numpy()  # named once per distinct column
    first = d[parts].iloc[np.unique(codes, return_index=True)[1]]
    names = np.array([column(*c) for c in first.itertuples(index=False)], dtype=object)
    d = d.assign(column=names[codes])
    d, notes = _one_per_cell(d)
    columns = {c: {"task": g["task"].iloc[0], "suite": g["suite"].iloc[0], "n_shot": _int(g["n_shot"].iloc[0]),
                   "metric": g["metric"].iloc[0], "filter": g["filter"].iloc[0],
                   "direct": bool((g["task"] == g["evaluated"]).any())}
               for c, g in d.groupby("column", sort=True)}
    order = d.assign(_step=d["step"].astype("float64").fillna(-1)).drop_duplicates("label")
    rows = list(order.sort_values(["base", "_step", "label"], kind="stable")["label"])
    table = d.pivot(index="label", columns="column", values="value").reindex(index=rows, columns=list(columns))
    averages = _averages(columns, groups or {})
    for name, members in averages.items():
        table[name] = table[members].mean(axis=1, skipna=False)
    table.index.name, table.columns.name = "model", None
    return Board(table, d.drop(columns=["key"]).reset_index(drop=True), columns, averages, notes)


def leaderboard(df: Any, metric: str | None = None, task_metrics: dict[str, str] | None = None,
                groups: dict[str, list[Any]] | None = None) -> Any:
    """The models x tasks table of `board` (averages last)."""
    return board(df, metric, task_metrics, groups).table


def _int(v: Any) -> int | None:
    import pandas as pd

    return None if pd.isna(v) else int(v)


def _one_per_cell(d: Any) -> tuple[Any, list[str]]:
    """One value per (label, column): the newest evaluation (by its end date; ties: the later file), and
    a note naming the others; never the order the run dirs were given in."""
    d = d.assign(_date=d["date"].fillna("")).sort_values(["_date", "source"], kind="stable")
    dup = d.duplicated(["label", "column"], keep="last")
    notes = []
    if dup.any():
        lost = d[dup]
        for (label, col), g in lost.groupby(["label", "column"], sort=True):
            kept = d[~dup & (d["label"] == label) & (d["column"] == col)].iloc[0]
            notes.append(f"{label} / {col}: {len(g) + 1} values; showing the newest {kept['value']:.4f} "
                         f"({kept['date'] or 'no date'}, {kept['source']}); not shown: "
                         + ", ".join(f"{v:.4f} ({s})" for v, s in zip(g["value"], g["source"], strict=True)))
    return d[~dup].drop(columns=["_date"]).sort_index(), notes


def _averages(columns: dict[str, dict[str, Any]], groups: dict[str, list[Any]]) -> dict[str, list[str]]:
    """Average column -> its member task columns: a task group's when every (task, shots) of it has a
    column, and the overall one over the evaluated tasks when there are two or more."""
    out = {}
    for name, tasks in groups.items():
        members = []
        for t in tasks:
            hits = [c for c, m in columns.items() if m["task"] == t.task and m["suite"] == t.suite
                    and (m["n_shot"] in t.n_shots or m["n_shot"] is None)]
            if not hits:
                break
            members.extend(hits)
        else:
            out[f"avg {name}"] = list(dict.fromkeys(members))
    direct = [c for c, m in columns.items() if m["direct"]]
    if len(direct) >= 2:
        out[OVERALL] = direct
    return out


# ---------------------------------------------------------------- output


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
