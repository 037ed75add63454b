"""Reading result files back: the headline scores a finished local run prints, the tidy records
`oellm collect-results` builds its table from, and the models x tasks leaderboard."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from oellm.errors import OellmError
from oellm.rundir import EvalRow, RunDir, read_json

PREFERRED = ("acc_norm", "acc", "exact_match", "f1", "bleu")


def headline(result: dict[str, Any], task: str) -> tuple[str, float] | None:
    """The task's (or group's) main metric: acc_norm over acc over others, first filter."""
    metrics = result.get("results", {}).get(task) or {}
    values = {k: v for k, v in metrics.items() if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
    for name in PREFERRED:
        for key, value in values.items():
            if key.split(",")[0] == name:
                return key, float(value)
    return next(iter(values.items()), None)


def score_table(run: RunDir, rows: Sequence[EvalRow]) -> str:
    """One line per row with a result: model, task, shots, headline metric."""
    lines = []
    for r in rows:
        path = run.result_path(r.row_id)
        if not path.exists():
            continue
        best = headline(read_json(path), r.task)
        score = f"{best[0].split(',')[0]} {best[1]:.4f}" if best else "no metric"
        model = r.model if len(r.model) <= 40 else "..." + r.model[-37:]
        lines.append(f"  {model:<40} {r.task:<28} {r.n_shot:>2}-shot  {score}")
    return "\n".join(lines)


# ---------------------------------------------------------------- tidy records (collect-results)

COLUMNS = ["model", "model_args", "step", "task", "kind", "evaluated", "n_shot", "limit", "metric", "filter", "value",
           "stderr", "row_id", "run", "cluster", "model_revision", "lm_eval_version", "date", "source"]
IDENTITY = ["model", "model_args", "task", "n_shot", "limit", "metric", "filter"]  # step is provenance
_CHECKPOINT = re.compile(r"^(?:checkpoint|global_step|step|iter)[-_]?0*(\d+)$")


def records(result: dict[str, Any], source: str, run: str, cluster: str | None) -> list[tuple]:
    """Every (task or group, metric, filter) value of one result file as tuples in COLUMNS order.

    Plain Python on purpose: the collector calls this for 100k files, so no pandas per file. A file
    without oellm provenance (a plain lm-eval output) gets its model, args and limit from lm-eval's
    `config` and a row id computed as oellm would have, so both kinds deduplicate against each other."""
    prov = result.get("oellm") or {}
    row = prov.get("row") or {}
    config = result.get("config") or {}
    if row:
        model, args, limit, step = row.get("model"), row.get("model_args") or "", row.get("limit"), row.get("step")
        revision = prov.get("model_revision")
    else:
        model, args, revision = _split_model_args(config.get("model_args"))
        model = model or result.get("model_name") or config.get("model") or "?"
        limit, step = config.get("limit"), None
    if step is None and model:
        m = _CHECKPOINT.match(model.rstrip("/").rsplit("/", 1)[-1])
        step = int(m.group(1)) if m else None
    limit = None if limit is None else float(limit)
    date = prov.get("ended") or _iso(result.get("date"))
    lm_version = prov.get("lm_eval_version") or result.get("lm_eval_version")
    shots = result.get("n-shot") or {}
    subtasks = {g: subs for g, subs in (result.get("group_subtasks") or {}).items() if subs}
    groups = set(result.get("groups") or ()) | set(subtasks)
    parent = {t: g for g, subs in subtasks.items() for t in subs}
    out = []
    for task, metrics in (result.get("results") or {}).items():
        if not isinstance(metrics, dict):
            continue
        n_shot = shots.get(task, row.get("n_shot"))
        n_shot = int(n_shot) if isinstance(n_shot, (int, float)) else row.get("n_shot")
        evaluated = row.get("task") or task  # the task or group the evaluation ran: a group's subtasks differ
        while not row and evaluated in parent:
            evaluated = parent[evaluated]
        row_id = row.get("row_id") or _row_id(model, args, evaluated, shots.get(evaluated, n_shot), limit)
        kind = "group" if task in groups else "task"
        for key, value in metrics.items():
            name, sep, filt = key.partition(",")
            if not sep or "_stderr" in name or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            err = metrics.get(f"{name}_stderr,{filt}")
            err = float(err) if isinstance(err, (int, float)) and not isinstance(err, bool) else None
            out.append((model, args, step, task, kind, evaluated, n_shot, limit, name, filt, float(value), err, row_id,
                        run, cluster, revision, lm_version, date, source))
    return out


def _split_model_args(value: Any) -> tuple[str | None, str, str | None]:
    """lm-eval's `model_args` ("pretrained=x,dtype=y" or a dict) -> (model, other args, revision)."""
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        pairs = [tuple(p.split("=", 1)) for p in str(value or "").split(",") if "=" in p]
    kv = dict(pairs)
    rest = ",".join(f"{k}={v}" for k, v in pairs if k != "pretrained")
    return kv.get("pretrained"), rest, kv.get("revision")


def _row_id(model: str, args: str, task: str, n_shot: int | None, limit: float | None) -> str:
    return EvalRow(model=model, model_args=args, task=task, n_shot=-1 if n_shot is None else n_shot,
                   limit=limit).row_id


def _iso(epoch: Any) -> str | None:
    try:
        return datetime.fromtimestamp(float(epoch), timezone.utc).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


# ---------------------------------------------------------------- leaderboard


def model_label(model: str, step: Any, args: str = "") -> str:
    """A short row label: `run@step100` for checkpoints, the basename for local dirs, the id for hub models."""
    name = model.rstrip("/")
    if name.startswith("/") or name.startswith("."):
        parts = name.split("/")
        name = parts[-2] if _CHECKPOINT.match(parts[-1]) and len(parts) > 1 else parts[-1]
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


def leaderboard(df: Any, metric: str | None = None) -> Any:
    """Models (rows) x tasks (columns) of one metric per task; a column name carries the metric and shots."""
    if df.empty:
        return df
    df = df.reset_index(drop=True)
    d = df.assign(key=df["metric"] + "," + df["filter"])
    chosen = {t: pick_metric(sorted(set(g["key"])), metric) for t, g in d.groupby("task", sort=False)}
    d = d[d["key"] == d["task"].map(chosen)]
    if d.empty:
        available = ", ".join(sorted(set(df["metric"])))
        raise OellmError(f"--metric {metric!r}: no task reports it; available metrics: {available}")
    multi_shot = d.groupby("task")["n_shot"].nunique() > 1
    def column(task: str, key: str, n_shot: Any) -> str:
        name, filt = key.split(",", 1)
        return f"{task} {name}" + (f" {n_shot}-shot" if multi_shot[task] else "") + ("" if filt == "none" else f" ({filt})")

    d = d.assign(label=[model_label(m, s, a) for m, s, a in zip(d["model"], d["step"], d["model_args"], strict=True)],
                 column=[column(t, k, n) for t, k, n in zip(d["task"], d["key"], d["n_shot"], strict=True)],
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
