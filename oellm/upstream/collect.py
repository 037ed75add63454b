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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.rundir import JOBS_CSV, MANIFEST

COLUMNS = ["model_name", "task", "n_shot", "performance", "metric_name"]
MISSING_COLUMNS = ["model_path", "task_path", "n_shot", "eval_suite"]
# oellm-eval's choice of a task's metric when task_metrics names none (its collect, at 238bea9)
PREFERENCE = ("acc", "accuracy", "acc_norm", "f1", "exact_match", "chrf++", "bleu")
FILTERS = ("none", "flexible-extract", "strict-match")  # a metric's filter, in this order of preference


@dataclass
class UpstreamCollect:
    """oellm-eval's collect options.

    Args:
        results_dir: A directory searched recursively for run dirs (oellm-eval's or oellm's) and result
            files; several runs' jobs.csv are merged (a later path wins).
        output_csv: Where the CSV goes (columns model_name,task,n_shot,performance,metric_name).
        check: Also write OUTPUT_missing.csv: the scheduled evaluations (jobs.csv rows) without a result,
            for `schedule --eval_csv_path`.
        task_groups_file: Task groups YAML whose task_metrics pick each task's metric (default: as
            schedule-eval); other tasks take the first of acc, accuracy, acc_norm, f1, exact_match, chrf++, bleu.
        verbose: Also list the result files that could not be read.
    """

    results_dir: Path
    output_csv: Path = Path("eval_results.csv")
    check: bool = False
    task_groups_file: Path | None = None
    verbose: bool = False


def collect(opts: UpstreamCollect) -> None:
    from oellm.results.gather import collect as gather
    from oellm.task_groups import load_task_groups

    root = Path(opts.results_dir).expanduser()
    if not root.is_dir():
        raise OellmError(f"--results_dir: {root} is not a directory")
    paths, jobs_files = find_inputs(root)
    got = gather(paths)
    rows = csv_rows(got.table, load_task_groups(opts.task_groups_file).metrics)
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
        _check(output, jobs_files, rows)


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


def csv_rows(table: Any, task_metrics: dict[str, str]) -> list[tuple[str, str, int | None, float, str]]:
    """One (model, task, n_shot) row each: the evaluated task or group itself (its subtasks only when it
    has no aggregate), with task_metrics' metric or the first of PREFERENCE, filter `none` first."""
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
        values = {(m, f): v for m, f, v in zip(part["metric"], part["filter"], part["value"], strict=True)}
        pick = _metric(values, task_metrics.get(task))
        if pick:
            out.append((model, task, n_shot, values[pick], pick[0]))
    return out


def _groups(df: Any):
    import pandas as pd

    for (model, task, n_shot), part in df.groupby(["model", "task", "n_shot"], sort=True, dropna=False):
        yield model, task, None if pd.isna(n_shot) else int(n_shot), part


def _metric(values: dict[tuple[str, str], float], wanted: str | None) -> tuple[str, str] | None:
    names = [wanted] if wanted else []
    for name in [*names, *PREFERENCE]:
        found = sorted((k for k in values if k[0] == name),
                       key=lambda k: FILTERS.index(k[1]) if k[1] in FILTERS else len(FILTERS))
        if found:
            return found[0]
    return None


def _check(output: Path, jobs_files: list[Path], rows: list[tuple]) -> None:
    """The merged jobs.csv rows with no row in the CSV; oellm-eval's matching: the same task and shots, and
    the scheduled model path ending with or containing the result's model name."""
    jobs: dict[tuple[str, str, str], list[str]] = {}
    for path in jobs_files:
        for job in _jobs(path):
            jobs[tuple(job[:3])] = job  # a later jobs.csv wins
    if not jobs_files:
        raise OellmError(f"--check: no {JOBS_CSV} under the results dir, so nothing says what was scheduled")
    done: dict[tuple[str, int | None], set[str]] = {}
    for model, task, n_shot, *_ in rows:
        done.setdefault((task, n_shot), set()).add(str(model))
    missing = [job for job in jobs.values()
               if not any(job[0] == m or job[0].endswith(m) or m in job[0]
                          for m in done.get((job[1], int(job[2]) if job[2].isdigit() else None), ()))]
    target = output.with_name(f"{output.stem}_missing.csv")
    _write(target, MISSING_COLUMNS, missing)
    print(f"{len(jobs) - len(missing)} of {len(jobs)} scheduled evaluation(s) have a result; {len(missing)} missing "
          f"-> {target}" + (f" (run them with: oellm-eval schedule --eval_csv_path {target})" if missing else ""))


def _jobs(path: Path) -> list[list[str]]:
    """A jobs.csv as (model_path, task_path, n_shot, eval_suite): oellm-eval's columns, or oellm's (its
    model args go inside model_path, as an eval CSV takes them)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if {"model_path", "task_path", "n_shot"} <= cols:
            return [[r["model_path"], r["task_path"], r["n_shot"], r.get("eval_suite") or "lm_eval"] for r in reader]
        if {"model", "task", "n_shot"} <= cols:
            return [[",".join(p for p in (r["model"], r.get("model_args") or "") if p), r["task"], r["n_shot"],
                     r.get("suite") or "lm_eval"] for r in reader]
    raise OellmError(f"{path}: neither oellm-eval's columns (model_path,task_path,n_shot) nor oellm's")


def _write(path: Path, columns: list[str], rows: list) -> None:
    """Written whole to a temp file, then renamed: a failure leaves no half-written CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    os.replace(tmp, path)
