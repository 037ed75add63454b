"""collect-results: every metric of every result file of one or more runs -> one tidy table, written as
CSV/parquet, printed as a leaderboard, plotted, or checked against the runs' plans (--check).
Finding and reading the files, and which of two results of one evaluation wins: `gather`.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oellm.errors import OellmError
from oellm.ledger import Ledger
from oellm.results import bench, tables
from oellm.results.gather import Collected, collect, json_files
from oellm.rows import EvalRow
from oellm.rundir import RunDir, read_jobs


@dataclass
class Collect:
    """What to collect and what to make of it.

    Args:
        run_dirs: Comma-separated run dirs, folders of result JSONs copied from other clusters, plain
            lm-eval output dirs or result files, e.g. "runs/2025-01-01-10-00-00,copied_from_lumi". An
            evaluation found more than once keeps its newest result (the others are reported).
        output_csv: Write the tidy table (one row per model, step, task, shots, metric, filter) here:
            CSV, or parquet when the name ends in .parquet.
        format: Leaderboard printed to stdout: "table" (terminal), "markdown" or "none".
        metric: Leaderboard metric for every task (a name like "acc" or "acc,none"); default: acc_norm,
            else acc, else the task's first metric.
        plot: Write learning curves (metric vs checkpoint step) and a model x task heatmap as PNGs here.
        check: List planned evaluations (jobs.csv) without a result and write them to <run>/missing.csv,
            ready for `oellm schedule-eval --eval_csv_path`.
        task_groups_file: Task groups YAML whose `task_metrics` name each task's leaderboard metric and whose
            groups get an average column (default: $OELLM_TASK_GROUPS_FILE, else the shipped one).
        html: Write one self-contained HTML report here (leaderboard, per-language views, learning curves,
            bench rows, provenance, what is missing); it opens offline, e.g. after scp to a laptop.
    """

    run_dirs: str | list[str]
    output_csv: Path | None = None
    format: str = "table"
    metric: str | None = None
    plot: Path | None = None
    check: bool = False
    task_groups_file: Path | None = None
    html: Path | None = None


RowStates = Callable[[RunDir], dict[str, tuple[str, str]]]  # run -> {row_id: (state, reason)}


def collect_results(opts: Collect, row_states: RowStates | None = None) -> None:
    """Read, deduplicate, report; then write, print, plot, render and check as asked. `row_states` gives
    the report the state (and why) of rows without a result; `oellm status` decides them, a layer up."""
    run_dirs, output_csv, format, metric, plot, check = (opts.run_dirs, opts.output_csv, opts.format, opts.metric,
                                                         opts.plot, opts.check)
    if format not in ("table", "markdown", "none"):
        raise OellmError(f"--format {format!r}: expected table, markdown or none")
    paths = [Path(p) for p in _split(run_dirs)]
    if not paths:
        raise OellmError("--run_dirs: give at least one run dir or result folder")
    got = collect(paths)
    _report(got)
    df = got.table
    if df.empty and not check:
        raise OellmError(f"no results found in {', '.join(map(str, paths))} ({got.n_files} file(s) read)")
    from oellm.task_groups import load_task_groups

    groups = load_task_groups(opts.task_groups_file)
    board = perf_table = None
    if not df.empty:
        print(f"collected {len(df)} values from {got.n_files} file(s): {df['model'].nunique()} model(s), "
              f"{df['task'].nunique()} task(s)", file=sys.stderr)
        scores, perf = bench.split(tables.with_labels(df))  # one label per model in both tables
        # a bad --metric fails before anything is written
        board = tables.board(scores, metric, groups.metrics, groups.groups) if not scores.empty else None
        for note in board.notes if board else []:
            print(f"oellm: note: {note}", file=sys.stderr)
        perf_table = bench.bench_table(perf, board) if not perf.empty else None
        if output_csv:
            tables.write_table(df, Path(output_csv))
            print(f"wrote {output_csv}", file=sys.stderr)
        if format != "none":
            for t in ([board.table] if board else []) + ([perf_table] if perf_table is not None else []):
                print(tables.to_markdown(t) if format == "markdown" else tables.to_text(t))
        if plot:
            from oellm.results.plots import plot_all

            written = plot_all(board, Path(plot)) if board else []
            for p in written + (bench.plot_bench(perf, Path(plot)) if not perf.empty else []):
                print(f"wrote {p}", file=sys.stderr)
    if opts.html:
        from oellm.results.report import write_report

        states = {run.path: row_states(run) for run in got.runs if run.jobs.is_file()} if row_states else {}
        write_report(Path(opts.html), got, board, perf_table, missing_rows(got), states, groups.groups)
        print(f"wrote {opts.html}", file=sys.stderr)
    if check:
        _check(got)


def run_dirs_of(opts: Collect) -> list[RunDir]:
    """The oellm run dirs among --run_dirs (those with a jobs.csv)."""
    return [RunDir(p) for p in map(Path, _split(opts.run_dirs)) if (p / "jobs.csv").is_file()]


def _split(value: str | list[str]) -> list[str]:
    items = [value] if isinstance(value, (str, Path)) else list(value)
    return [s.strip() for item in items for s in str(item).split(",") if s.strip()]


def _report(got: Collected) -> None:
    for path, why in got.problems:
        print(f"oellm: skipped {path}: {why}", file=sys.stderr)
    if got.superseded:
        print(f"oellm: {len(got.superseded)} file(s) superseded by newer results of the same evaluation "
              f"(newest wins): " + ", ".join(got.superseded[:5]) + (" ..." if len(got.superseded) > 5 else ""),
              file=sys.stderr)
    for run in got.runs:
        if not json_files(run.results):
            print(f"oellm: run {run.path} has no results yet", file=sys.stderr)


# ---------------------------------------------------------------- --check


def missing_rows(got: Collected) -> dict[Path, list[EvalRow]]:
    """Planned rows (jobs.csv of each run dir) with no result among everything collected (`oellm.ledger`)."""
    ledger = Ledger.of(got.done)
    return {run.path: ledger.todo(read_jobs(run.jobs)) for run in got.runs if run.jobs.is_file()}


def write_missing(path: Path, rows: list[EvalRow]) -> None:
    """The --eval_csv_path format: model_path (model args quoted inside it), task_path, n_shot, eval_suite,
    num_shards; a missing shard is its whole evaluation again (planning skips the shards already done)."""
    from oellm.options import ROW_OPTIONS, csv_cells
    from oellm.rows import shot_label

    wholes = {(r.whole.row_id): r for r in rows}
    options = [o for o in ROW_OPTIONS if any(o in csv_cells(r.options) for r in wholes.values())]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model_path", "task_path", "n_shot", "eval_suite", "num_shards", *options])
        for r in wholes.values():
            cells = csv_cells(r.options)
            w.writerow([f"{r.model},{r.model_args}" if r.model_args else r.model, r.task, shot_label(r.n_shot),
                        r.suite, r.num_shards or 1, *(cells.get(o, "") for o in options)])


def _check(got: Collected) -> None:
    per_run = missing_rows(got)
    if not per_run:
        raise OellmError("--check needs an oellm run dir (with jobs.csv) among --run_dirs")
    for run_path, rows in per_run.items():
        if not rows:
            print(f"{run_path}: every planned evaluation has a result")
            continue
        by_limit: dict[float | None, list[EvalRow]] = {}
        for r in rows:
            by_limit.setdefault(r.limit, []).append(r)
        print(f"{run_path}: {len(rows)} planned evaluation(s) without a result:")
        for r in rows:
            print(f"  {r.row_id}  {r.model}{' [' + r.model_args + ']' if r.model_args else ''}  {r.task}  "
                  f"{'default' if r.n_shot is None else r.n_shot}-shot")
        for limit, group in by_limit.items():  # the CSV has no limit column: one file per limit
            name = "missing.csv" if len(by_limit) == 1 else f"missing-limit-{'none' if limit is None else f'{limit:g}'}.csv"
            write_missing(run_path / name, group)
            flag = ("" if limit is None else f" --limit {limit:g}") + _task_sources(run_path)
            print(f"wrote {run_path / name}; rerun: oellm schedule-eval --eval_csv_path {run_path / name}{flag}")


def _task_sources(run_path: Path) -> str:
    """The run's own task sources as flags: a rerun of missing.csv must find the same custom tasks."""
    import shlex

    try:
        sources = RunDir(run_path).read_manifest().get("include_paths") or []
    except (OellmError, OSError, ValueError):
        return ""
    yaml_dirs = [s for s in sources if not s.endswith(".py")]
    custom = [s for s in sources if s.endswith(".py")]
    return ((f" --lm_eval_include_path {shlex.quote(','.join(yaml_dirs))}" if yaml_dirs else "")
            + (f" --lighteval_custom_tasks {shlex.quote(custom[0])}" if custom else ""))
