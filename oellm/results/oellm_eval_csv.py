"""`oellm-eval collect`: oellm-eval's run dirs (and oellm's) into oellm-eval's CSV, one row per model, task
and shot count (`model_name,task,n_shot,performance,metric_name`), and with --check the scheduled
evaluations that have no result as a CSV that `schedule --eval_csv_path` takes.

Reading is oellm's (`oellm.results.gather`: lm-eval and lighteval files, newest result wins); this module
only finds oellm-eval's files (the lm_eval CLI's `results/<hex>_<date>.json`, lighteval's nested
`results/<hex>/results/<model>/results_*.json`), picks one metric per task and writes oellm-eval's columns.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from oellm.atomic import read_json
from oellm.errors import OellmError
from oellm.ledger import Ledger
from oellm.rows import EvalRow, shot_label
from oellm.rundir import JOBS_CSV, MANIFEST, read_jobs
from oellm.task_groups import parse_suite

COLUMNS = ["model_name", "task", "n_shot", "performance", "metric_name"]
MISSING_COLUMNS = ["model_path", "task_path", "n_shot", "eval_suite"]
# oellm-eval's choice of a task's metric when task_metrics names none (its collect, at 238bea9): each as
# the exact key, else the first key of that metric (any filter) in the order the result file has them
# oellm-eval's task_metrics (238bea9), as facts: task -> the metric its collect writes
UPSTREAM_METRICS = Path(__file__).with_name("oellm_eval_metrics.json")
PREFERENCE = ("acc,none", "acc", "accuracy", "acc_norm", "f1", "exact_match", "chrf++", "bleu")


@dataclass
class UpstreamCollect:
    """oellm-eval's collect options.

    Args:
        results_dir: A directory searched recursively for run dirs (oellm-eval's or oellm's) and result
            files; several runs' jobs.csv are merged (a later path wins).
        output_csv: Where the CSV goes (columns model_name,task,n_shot,performance,metric_name).
        check: Also write OUTPUT_missing.csv: the scheduled evaluations (jobs.csv rows) without a result,
            for `schedule --eval_csv_path`.
        task_groups_file: Task groups YAML whose task_metrics pick each task's metric (default: the one each
            oellm run was planned with, as its run.json records, over oellm-eval's own); other tasks take the
            first of acc, accuracy, acc_norm, f1, exact_match, chrf++, bleu, as oellm-eval does.
        verbose: Also list the result files that could not be read.
    """

    results_dir: Path
    output_csv: Path = Path("eval_results.csv")
    check: bool = False
    task_groups_file: Path | None = None
    verbose: bool = False


def collect(opts: UpstreamCollect) -> None:
    from oellm.results.gather import collect as gather
    root = Path(opts.results_dir).expanduser()
    if not root.is_dir():
        raise OellmError(f"--results_dir: {root} is not a directory")
    paths, jobs_files = find_inputs(root)
    got = gather(paths)
    rows = csv_rows(got.table, task_metrics(opts.task_groups_file, paths))
    output = Path(opts.output_csv)
    _write(output, COLUMNS, rows)
    print(f"wrote {len(rows)} row(s) ({len({r[0] for r in rows})} model(s), {len({r[1] for r in rows})} task(s)) "
          f"to {output}")
    if got.problems:
        print(f"{len(got.problems)} file(s) not read" + ("" if opts.verbose else " (--verbose lists them)"),
              file=sys.stderr)
        for path, why in got.problems if opts.verbose else ():
            print(f"  {path}: {why}", file=sys.stderr)
    if opts.check:
        _check(output, jobs_files, got)


def find_inputs(root: Path) -> tuple[list[Path], list[Path]]:
    """(what `gather` reads, every jobs.csv): an oellm run dir whole; of oellm-eval's run dirs and any other
    folder each JSON file, at any depth (lighteval nests its results)."""
    paths: list[Path] = []
    jobs: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        if JOBS_CSV in filenames:
            jobs.append(here / JOBS_CSV)
        if MANIFEST in filenames:
            paths.append(here)  # an oellm run: gather reads its results/ and knows its state files
            dirnames.clear()
            continue
        paths.extend(here / n for n in sorted(filenames) if n.endswith(".json") and not n.startswith("."))
    return paths, sorted(jobs)


def task_metrics(given: Path | None, paths: list[Path]) -> dict[str, str]:
    """--task_groups_file's task_metrics; else oellm-eval's (its collect has no such flag: it uses its own
    registry), with those of the registries the oellm runs among `paths` were planned with (run.json's
    task_groups_file) over them."""
    from oellm.task_groups import load_task_groups

    if given:
        return load_task_groups(given).metrics
    recorded = []
    for path in paths:
        if (path / MANIFEST).is_file():
            try:
                file = (read_json(path / MANIFEST) or {}).get("task_groups_file")
            except (OSError, ValueError, AttributeError):  # gather names a run.json it cannot read
                continue
            if file and Path(file).is_file() and file not in recorded:
                recorded.append(file)
    out = {k: v for k, v in read_json(UPSTREAM_METRICS).items() if not k.startswith("_")}  # oellm-eval's own
    for file in recorded:
        out.update(load_task_groups(file).metrics)
    return out


def csv_rows(table: Any, task_metrics: dict[str, str]) -> list[tuple[str, str, int | None, float, str]]:
    """One (model, task, n_shot) row each: the evaluated task or group itself (its subtasks only when it
    has no aggregate), its metric picked and named as oellm-eval does (`_metric`)."""
    import pandas as pd

    if table.empty:
        return []
    # a group's shots, when its file names none, are its subtasks' (as oellm-eval reads them)
    known = table.dropna(subset=["n_shot"]).drop_duplicates(["source", "evaluated"]).set_index(["source", "evaluated"])
    fill = [known["n_shot"].get((s, e), pd.NA) for s, e in zip(table["source"], table["evaluated"], strict=True)]
    table = table.assign(n_shot=table["n_shot"].fillna(pd.Series(fill, index=table.index, dtype="Int64")))
    top = table[table["task"] == table["evaluated"]]
    bare = table[~table["evaluated"].isin(set(top["evaluated"]))]  # a tag or group without an aggregate
    out = []
    for model, task, n_shot, part in _groups(pd.concat([top, bare])):
        values = {_key(m, f, s): v for m, f, s, v in zip(part["metric"], part["filter"], part["suite"], part["value"],
                                                          strict=True)}  # in the result file's order
        pick = _metric(values, task_metrics.get(task))
        if pick:
            out.append((model, task, n_shot, values[pick], pick))
    return out


def _groups(df: Any):
    import pandas as pd

    for (model, task, n_shot), part in df.groupby(["model", "task", "n_shot"], sort=True, dropna=False):
        yield model, task, None if pd.isna(n_shot) else int(n_shot), part


def _key(metric: str, filt: str, suite: str) -> str:
    """A metric as its result file spells it, which oellm-eval writes as metric_name: lm-eval's `acc,none`,
    `exact_match,strict-match`; lighteval's bare `chrf++`."""
    return metric if suite == "lighteval" else f"{metric},{filt}"


def _metric(values: dict[str, float], wanted: str | None) -> str | None:
    """oellm-eval's pick: task_metrics' metric (`M,none`, `M`, else its first key), else the first of
    PREFERENCE (the exact key, else the metric's first key: gsm8k's strict-match, as lm-eval writes it first)."""
    tries = [([f"{wanted},none", wanted], wanted)] if wanted else []
    for exact, name in [*tries, *(([c], c.split(",")[0]) for c in PREFERENCE)]:
        found = next((k for k in exact if k in values), None) or \
            next((k for k in values if k == name or k.startswith(f"{name},")), None)
        if found:
            return found
    return None


def _check(output: Path, jobs_files: list[Path], got: Any) -> None:
    """The merged jobs.csv rows with no result of their identity (`oellm.ledger`: the same model and args,
    task, shots, suite, limit and options), never a substring of a model name: checkpoint-100 does not
    cover checkpoint-1000, and a row planned with the task's default shots is matched as it was run.
    oellm-eval's jobs.csv records no limit (its --limit is a flag of the run): its rows are matched by a
    result of any limit."""
    if not jobs_files:
        raise OellmError(f"--check: no {JOBS_CSV} under the results dir, so nothing says what was scheduled")
    jobs: dict[tuple[str, str, str], tuple[list[str], EvalRow, bool]] = {}
    for path in jobs_files:
        for job, row, limit_known in _planned(path):
            jobs[(job[0], job[1], job[2])] = (job, row, limit_known)  # a later jobs.csv wins
    ledger = Ledger.of(got.done)
    limits = {None if v != v else float(v) for v in got.table["limit"].dropna().unique()} if len(got.table) else set()

    def done(row: EvalRow, limit_known: bool) -> bool:
        return any(ledger.is_done(replace(row, limit=lim)) for lim in ({row.limit} if limit_known else {None, *limits}))

    missing = [job for job, row, known in jobs.values() if not done(row, known)]
    target = output.with_name(f"{output.stem}_missing.csv")
    _write(target, MISSING_COLUMNS, missing)
    print(f"{len(jobs) - len(missing)} of {len(jobs)} scheduled evaluation(s) have a result; {len(missing)} missing "
          f"-> {target}" + (f" (run them with: oellm-eval schedule --eval_csv_path {target})" if missing else ""))


def _planned(path: Path) -> list[tuple[list[str], EvalRow, bool]]:
    """A jobs.csv as (model_path, task_path, n_shot, eval_suite) with the row it plans and whether its limit
    is known: oellm's own rows exactly (read_jobs), oellm-eval's columns as the evaluation they name (model
    args inside model_path; no limit recorded)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        upstream = [dict(r) for r in reader] if {"model_path", "task_path", "n_shot"} <= cols else None
    if "row_id" in cols:
        return [([",".join(p for p in (r.model, r.model_args) if p), r.task, shot_label(r.n_shot), r.suite], r, True)
                for r in read_jobs(path)]
    if upstream is None:
        raise OellmError(f"{path}: neither oellm-eval's columns (model_path,task_path,n_shot) nor oellm's")
    out = []
    for r in upstream:
        name, _, args = r["model_path"].partition(",")
        shots = (r["n_shot"] or "").strip()
        suite = parse_suite(r.get("eval_suite"), "eval_suite")
        row = EvalRow(model=name, model_args=args, task=r["task_path"],
                      n_shot=int(shots) if shots.lstrip("-").isdigit() else None, suite=suite)
        out.append(([r["model_path"], r["task_path"], r["n_shot"], suite], row, False))
    return out


def _write(path: Path, columns: list[str], rows: list) -> None:
    """Written whole to a temp file, then renamed: a failure leaves no half-written CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")  # LF, as oellm-eval's pandas writes it
        writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    os.replace(tmp, path)
