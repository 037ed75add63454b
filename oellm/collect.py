"""`oellm collect-results`: every metric of every result file of one or more runs -> one tidy table.

Inputs may be oellm run dirs (`jobs.csv`, `run.json`, `results/<row_id>.json`), folders of result
JSONs copied from other clusters (any depth, run dirs inside them are recognised), plain lm-eval
output dirs (`<out>/<model>/results_<ts>.json`) or single result files. Files are parsed with plain
`json` into column lists (no pandas per file) and in several processes when there are many, so
100k files take seconds. Unreadable files are reported with their path, never silently dropped.

Duplicates: a value (model, model args, task, shots, limit, metric, filter) found in several files
keeps the one from an evaluation OF that task over one reported as a group's subtask, then the
NEWEST (by the evaluation's end time; ties: the later file in input order). Files that lose every
value (re-runs of the same evaluation) are reported as superseded.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.results import COLUMNS, IDENTITY, records
from oellm.rundir import JOBS_CSV, MANIFEST, EvalRow, RunDir, read_jobs

try:  # optional: parses result files ~1.5x faster than json
    from orjson import loads as _json_loads
except ImportError:  # pragma: no cover - depends on the environment
    from json import loads as _json_loads

PARALLEL_FROM = 2000  # files; below this a process pool costs more than it saves
_CHUNK = 2000


@dataclass
class Collected:
    """The tidy table plus what the user should hear about: bad files, superseded files, run dirs."""

    table: Any  # pandas.DataFrame with COLUMNS
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    superseded: list[str] = field(default_factory=list)  # files whose every value a newer file replaced
    runs: list[RunDir] = field(default_factory=list)  # oellm run dirs found (for --check)
    n_files: int = 0
    done: set[str] = field(default_factory=set)  # row ids with a readable result, before deduplication


def collect_results(
    run_dirs: str | list[str],
    output_csv: Path | None = None,
    format: str = "table",
    metric: str | None = None,
    plot: Path | None = None,
    check: bool = False,
) -> None:
    """Collect every metric of one or more runs into a tidy table, a leaderboard, plots, a missing list.

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
    """
    from oellm import results

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
    if not df.empty:
        print(f"collected {len(df)} values from {got.n_files} file(s): {df['model'].nunique()} model(s), "
              f"{df['task'].nunique()} task(s)", file=sys.stderr)
        board = results.leaderboard(df, metric)  # a bad --metric fails before anything is written
        if output_csv:
            write_table(df, Path(output_csv))
            print(f"wrote {output_csv}", file=sys.stderr)
        if format != "none":
            print(results.to_markdown(board) if format == "markdown" else results.to_text(board))
        if plot:
            from oellm.plots import plot_all

            for p in plot_all(df, Path(plot), metric):
                print(f"wrote {p}", file=sys.stderr)
    if check:
        _check(got)


def _split(value: str | list[str]) -> list[str]:
    items = [value] if isinstance(value, (str, Path)) else list(value)
    return [s.strip() for item in items for s in str(item).split(",") if s.strip()]


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


# ---------------------------------------------------------------- finding and reading files


def find_files(paths: list[Path]) -> tuple[list[tuple[str, str, str | None]], list[RunDir]]:
    """(file, run name, cluster) for every candidate result file, and the oellm run dirs met on the way."""
    files: list[tuple[str, str, str | None]] = []
    runs: list[RunDir] = []
    for path in paths:
        if path.is_file():
            files.append((str(path), path.parent.name, None))
        elif not path.is_dir():
            raise OellmError(f"--run_dirs: {path} does not exist")
        elif _is_run(path):
            runs.append(RunDir(path))
        else:
            for dirpath, dirnames, filenames in os.walk(path):
                d = Path(dirpath)
                if _is_run(d) and d != path:
                    runs.append(RunDir(d))
                    dirnames.clear()
                    continue
                dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
                files.extend((os.path.join(dirpath, n), path.name, None) for n in sorted(filenames)
                             if n.endswith(".json") and not n.startswith("."))
    for run in runs:
        cluster = _cluster(run)
        files.extend((p, run.path.name, cluster) for p in _json_files(run.results))
    return files, runs


def _is_run(path: Path) -> bool:
    return (path / JOBS_CSV).is_file() or (path / MANIFEST).is_file()


def _json_files(folder: Path) -> list[str]:
    """Plain strings, not Paths: 100k Path objects alone cost a second."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.path for e in it if e.name.endswith(".json") and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def _cluster(run: RunDir) -> str | None:
    try:
        return json.loads(run.manifest.read_text()).get("cluster")
    except (OSError, ValueError, AttributeError):
        return None


def read_chunk(items: list[tuple[str, str, str | None]]) -> tuple[list[tuple], list[tuple[str, str]]]:
    """Parse result files into columns (one tuple per COLUMN: transposed here, in the worker process);
    an unreadable or non-result file becomes a problem."""
    rows: list[tuple] = []
    problems: list[tuple[str, str]] = []
    for path, run, cluster in items:
        try:
            with open(path, "rb") as fh:
                data = _loads(fh.read())
        except (OSError, ValueError) as e:  # orjson.JSONDecodeError is a ValueError too
            problems.append((path, f"unreadable ({type(e).__name__}: {str(e)[:120]})"))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            problems.append((path, "not an lm-eval result (no 'results' object)"))
            continue
        got = records(data, path, run, cluster)
        if not got:
            problems.append((path, "holds no numeric metric"))
        rows.extend(got)
    return list(zip(*rows, strict=True)) if rows else [() for _ in COLUMNS], problems


_TOP_KEY = re.compile(rb'\n "([^"]*)": ')
_WANTED = {b"results", b"groups", b"group_subtasks", b"n-shot", b"config", b"date", b"lm_eval_version", b"oellm"}
_WANTED_OELLM = {b"results", b"group_subtasks", b"n-shot", b"oellm"}  # the worker's provenance has the rest
_CUTS = tuple(b'\n "%s": ' % k for k in (b"configs", b"versions", b"higher_is_better", b"oellm"))


def _loads(raw: bytes) -> Any:
    """Parse only the top-level keys `records` reads, when the file has the worker's layout (indent 1:
    a top-level key, and only one, follows a newline and ONE space; JSON strings hold no raw newline).
    lm-eval's `configs` and `pretty_env_info` are most of the bytes and unused here (damage inside them
    goes unnoticed; a truncated file does not). Else parse it all."""
    if raw[:4] == b'{\n "' and raw.rstrip().endswith(b"\n}"):  # complete: only the top level closes at column 0
        c, v, h, o = (raw.find(k) for k in _CUTS)
        if 0 < c < v < h < o:  # the worker's key order: keep results..group_subtasks, versions..n-shot, oellm..
            try:
                return _json_loads(raw[:c] + raw[v:h] + raw[o:])
            except ValueError:
                pass
        keys = list(_TOP_KEY.finditer(raw))
        wanted = _WANTED_OELLM if keys and keys[-1].group(1) == b"oellm" else _WANTED
        parts = [raw[m.start() + 1:keys[i + 1].start() if i + 1 < len(keys) else raw.rfind(b"}")].rstrip(b",\n ")
                 for i, m in enumerate(keys) if m.group(1) in wanted]
        try:
            return _json_loads(b"{" + b",".join(parts) + b"}")
        except ValueError:
            pass
    return json.loads(raw)  # the stdlib also reads the NaN that lm-eval writes for some stderrs (orjson refuses)


def _read_all(files: list[tuple[str, str, str | None]], workers: int | None) -> Iterator[tuple[list, list]]:
    workers = workers or min(_cpus(), 8)
    if workers < 2 or len(files) < PARALLEL_FROM:
        yield read_chunk(files)
        return
    chunks = [files[i:i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(read_chunk, chunks)


def _cpus() -> int:
    """CPUs this process may use (SLURM/cgroup limits); macOS has no sched_getaffinity."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def collect(paths: list[Path], workers: int | None = None) -> Collected:
    """Read everything under `paths` into the tidy table; resolve duplicates (newest wins)."""
    import pandas as pd

    files, runs = find_files(paths)
    cols: list[list] = [[] for _ in COLUMNS]
    problems: list[tuple[str, str]] = []
    for chunk, p in _read_all(files, workers):
        for col, values in zip(cols, chunk, strict=True):
            col.extend(values)
        problems.extend(p)
    df = pd.DataFrame({c: pd.Series(v, dtype=_DTYPES.get(c, "object")) for c, v in zip(COLUMNS, cols, strict=True)})
    done = set(df["row_id"])
    df, superseded = newest_wins(df)
    return Collected(df, problems, superseded, runs, len(files), done)


_DTYPES = {"step": "Int64", "n_shot": "Int64", "limit": "float64", "value": "float64", "stderr": "float64"}


def newest_wins(df: Any) -> tuple[Any, list[str]]:
    """Keep the newest value of each evaluation identity; return the files that lost everything."""
    if df.empty:
        return df, []
    order = df.assign(_direct=df["task"] == df["evaluated"], _date=df["date"].fillna(""), _pos=range(len(df)))
    order = order.sort_values(["_direct", "_date", "_pos"], kind="stable")
    dup = order.duplicated(IDENTITY, keep="last")
    kept = order[~dup].drop(columns=["_direct", "_date", "_pos"]).sort_index().reset_index(drop=True)
    lost = set(order.loc[dup, "source"]) - set(kept["source"])
    return kept, sorted(lost)


def _report(got: Collected) -> None:
    for path, why in got.problems:
        print(f"oellm: skipped {path}: {why}", file=sys.stderr)
    if got.superseded:
        print(f"oellm: {len(got.superseded)} file(s) superseded by newer results of the same evaluation "
              f"(newest wins): " + ", ".join(got.superseded[:5]) + (" ..." if len(got.superseded) > 5 else ""),
              file=sys.stderr)
    for run in got.runs:
        if not _json_files(run.results):
            print(f"oellm: run {run.path} has no results yet", file=sys.stderr)


# ---------------------------------------------------------------- --check


def missing_rows(got: Collected) -> dict[Path, list[EvalRow]]:
    """Planned rows (jobs.csv of each run dir) with no valid result among everything collected."""
    done = got.done
    out = {}
    for run in got.runs:
        if run.jobs.is_file():
            out[run.path] = [r for r in read_jobs(run.jobs) if r.row_id not in done]
    return out


def write_missing(path: Path, rows: list[EvalRow]) -> None:
    """The --eval_csv_path format: model_path (model args quoted inside it), task_path, n_shot."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model_path", "task_path", "n_shot"])
        for r in rows:
            w.writerow([f"{r.model},{r.model_args}" if r.model_args else r.model, r.task, r.n_shot])


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
            print(f"  {r.row_id}  {r.model}{' [' + r.model_args + ']' if r.model_args else ''}  {r.task}  {r.n_shot}-shot")
        for limit, group in by_limit.items():  # the CSV has no limit column: one file per limit
            name = "missing.csv" if len(by_limit) == 1 else f"missing-limit-{'none' if limit is None else f'{limit:g}'}.csv"
            write_missing(run_path / name, group)
            flag = "" if limit is None else f" --limit {limit:g}"
            print(f"wrote {run_path / name}; rerun: oellm schedule-eval --eval_csv_path {run_path / name}{flag}")
