"""One result file read back: its headline score (what a finished local run prints) and its tidy
records, the rows of the table `oellm collect-results` builds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from oellm import identity
from oellm.rows import DEFAULT_SUITE, EvalRow, ModelRef, checkpoint_step
from oellm.rundir import RunDir, read_json

PREFERRED = ("acc_norm", "acc", "exact_match", "f1", "bleu", "pass@1")


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
        result = read_json(path)
        best = headline(result, r.task)
        score = f"{best[0].split(',')[0]} {best[1]:.4f}" if best else "no metric"
        model = r.model if len(r.model) <= 40 else "..." + r.model[-37:]
        used = (result.get("n-shot") or {}).get(r.task, r.n_shot)  # the task's own count when n_shot is default
        lines.append(f"  {model:<40} {r.task:<28} {'?' if used is None else used:>2}-shot  {score}")
    return "\n".join(lines)


# ---------------------------------------------------------------- tidy records (collect-results)

COLUMNS = ["model", "model_args", "step", "task", "kind", "evaluated", "n_shot", "limit", "options", "metric", "filter", "value",
           "stderr", "row_id", "run", "cluster", "model_revision", "lm_eval_version", "oellm_version", "host", "gpu",
           "date", "source", "suite", "batch_size", "input_tokens", "output_tokens", "backend"]  # the last four: bench rows only
# step is provenance; the suite is identity: lm-eval and lighteval normalise acc_norm differently
IDENTITY = ["model", "model_args", "task", "n_shot", "limit", "options", "metric", "filter", "suite"]


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
        ref = ModelRef.from_lm_eval(config.get("model_args"))
        model = ref.name if ref else result.get("model_name") or config.get("model") or "?"
        args, revision = (ref.args, ref.revision) if ref else ("", None)
        limit, step = config.get("limit"), None
    if step is None and model:
        step = checkpoint_step(model)
    limit = None if limit is None else float(limit)
    date = prov.get("ended") or _iso(result.get("date"))
    lm_version = prov.get("lm_eval_version") or result.get("lm_eval_version")
    bench = result.get("bench") or {}
    suite = row.get("suite") or result.get("suite") or ("bench" if bench else DEFAULT_SUITE)
    # the columns after row_id are the same for every value of the file: one tuple, appended to each
    tail = (run, cluster, revision, lm_version, prov.get("oellm_version"), prov.get("host"), prov.get("gpu"), date,
            source, suite, *(bench.get(k) for k in ("batch_size", "input_tokens", "output_tokens", "backend")))
    shots = result.get("n-shot") or {}
    subtasks = {g: subs for g, subs in (result.get("group_subtasks") or {}).items() if subs}
    groups = set(result.get("groups") or ()) | set(subtasks)
    parent = {t: g for g, subs in subtasks.items() for t in subs}
    out = []
    found: dict[str, tuple[str, str]] = {}  # evaluated task -> (options, row id) of a file without provenance
    for task, metrics in (result.get("results") or {}).items():
        if not isinstance(metrics, dict):
            continue
        n_shot = shots.get(task, row.get("n_shot"))
        n_shot = int(n_shot) if isinstance(n_shot, (int, float)) else row.get("n_shot")
        evaluated = row.get("task") or task  # the task or group the evaluation ran: a group's subtasks differ
        while not row and evaluated in parent:
            evaluated = parent[evaluated]
        if row:
            options, row_id = row.get("options") or "", row.get("row_id")
        else:  # a file another tool wrote: its identity read as oellm's (oellm.identity), per evaluated task
            if evaluated not in found:
                opts = identity.cli_options(result, evaluated) if suite == DEFAULT_SUITE else ""
                found[evaluated] = (opts, identity.row_id(model, args, evaluated, identity.shots_as_run(result, evaluated),
                                                          limit, suite, opts))
            options, row_id = found[evaluated]
        kind = "group" if task in groups else "task"
        for key, value in metrics.items():
            name, sep, filt = key.partition(",")
            if not sep or "_stderr" in name or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            err = metrics.get(f"{name}_stderr,{filt}")
            err = float(err) if isinstance(err, (int, float)) and not isinstance(err, bool) else None
            out.append((model, args, step, task, kind, evaluated, n_shot, limit, options or "", name, filt, float(value),
                        err, row_id) + tail)
    return out


def _iso(epoch: Any) -> str | None:
    try:
        return datetime.fromtimestamp(float(epoch), timezone.utc).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


