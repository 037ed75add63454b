"""Finding and reading result files into one tidy table (the reading half of `oellm collect-results`).

Inputs may be oellm run dirs (`jobs.csv`, `run.json`, `results/<row_id>.json`), folders of result
JSONs copied from other clusters (any depth, run dirs inside them are recognised), plain lm-eval
or lighteval output dirs (`<out>/<model>/results_<ts>.json`), bigcodebench's `*_pass_at_k.json` (both read
through `oellm.formats`) or single result files. Files are parsed with plain
`json` into column lists (no pandas per file) and in several processes when there are many, so
100k files take seconds. Unreadable files are reported with their path, never silently dropped.

Duplicates: a value (model, model args, task, shots, limit, metric, filter) found in several files
keeps the one from an evaluation OF that task over one reported as a group's subtask, then the
NEWEST (by the evaluation's end time; ties: the later file in input order). Files that lose every
value (re-runs of the same evaluation) are reported as superseded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oellm import formats
from oellm.errors import OellmError
from oellm.options import parse_row_options
from oellm.results.records import COLUMNS, IDENTITY, records
from oellm.rundir import JOBS_CSV, MANIFEST, RunDir

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
        files.extend((p, run.path.name, cluster) for p in json_files(run.results))
    return files, runs


def _is_run(path: Path) -> bool:
    return (path / JOBS_CSV).is_file() or (path / MANIFEST).is_file()


def json_files(folder: Path) -> list[str]:
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


def read_chunk(items: list[tuple[str, str, str | None]]) -> tuple[list[tuple], list[tuple[str, str]], list[str]]:
    """Parse result files into columns (one tuple per COLUMN: transposed here, in the worker process);
    an unreadable or non-result file becomes a problem; a shard's result (responses, no metrics yet) only
    says its row is done."""
    rows: list[tuple] = []
    problems: list[tuple[str, str]] = []
    shards: list[str] = []
    for path, run, cluster in items:
        try:
            data = _loads(_read_bytes(path))
        except (OSError, ValueError) as e:  # orjson.JSONDecodeError is a ValueError too
            problems.append((path, f"unreadable ({type(e).__name__}: {str(e)[:120]})"))
            continue
        if isinstance(data, dict) and formats.is_lighteval(data):  # a lighteval output folder copied here
            data = formats.from_lighteval(data, path)
        elif isinstance(data, dict) and formats.is_pass_at_k(path):  # bigcodebench's scores
            data = formats.from_pass_at_k(data, path)
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            problems.append((path, "not an lm-eval, lighteval or bigcodebench result (no 'results' object)"))
            continue
        if isinstance(data.get("oellm"), dict) and data["oellm"].get("shard") is not None:
            shards.append(data["oellm"]["row"]["row_id"])
            continue
        got = records(data, path, run, cluster)
        row = (data.get("oellm") or {}).get("row") or {}
        if not got and parse_row_options(row.get("options") or "").get("predict_only"):
            shards.append(row["row_id"])  # --predict_only: done, with samples and no metrics by design
        elif not got:
            problems.append((path, "holds no numeric metric"))
        rows.extend(got)
    return list(zip(*rows, strict=True)) if rows else [() for _ in COLUMNS], problems, shards


def _read_bytes(path: str, block: int = 1 << 20) -> bytes:
    """A whole file through os.read: a result is one read, 20% less CPU than a buffered `open` (100k files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while chunk := os.read(fd, block):  # until EOF: a parallel file system may return short reads
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


_TOP_KEY = re.compile(rb'\n "([^"]*)": ')
_WANTED = {b"results", b"groups", b"group_subtasks", b"n-shot", b"config", b"date", b"lm_eval_version", b"oellm",
           b"bench", b"config_general", b"split", b"subset", b"suite", b"chat_template", b"system_instruction",
           b"fewshot_as_multiturn"}  # the last three: the options of a plain lm_eval CLI file
_WANTED_OELLM = {b"results", b"group_subtasks", b"n-shot", b"oellm", b"bench"}  # the provenance has the rest
_CUTS = tuple(b'\n "%s": ' % k for k in (b"configs", b"versions", b"higher_is_better", b"oellm"))


def _loads(raw: bytes) -> Any:
    """Parse only the top-level keys `records` reads, when the file has the worker's layout (indent 1:
    a top-level key, and only one, follows a newline and ONE space; JSON strings hold no raw newline).
    lm-eval's `configs` and `pretty_env_info` are most of the bytes and unused here (damage inside them
    goes unnoticed; a truncated file does not). Else parse it all."""
    if raw[:4] == b'{\n "' and raw.rstrip().endswith(b"\n}"):  # complete: only the top level closes at column 0
        c = raw.find(_CUTS[0])  # each search starts where the last ended: one pass over the bytes, not four
        v = raw.find(_CUTS[1], c)
        h = raw.find(_CUTS[2], v)
        o = raw.rfind(_CUTS[3])  # the last key: found from the end
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


def _read_all(files: list[tuple[str, str, str | None]], workers: int | None) -> Iterator[tuple[list, list, list]]:
    workers = workers or min(cpus(), 8)
    if workers < 2 or len(files) < PARALLEL_FROM:
        yield read_chunk(files)
        return
    from concurrent.futures import ProcessPoolExecutor  # 10 ms of imports `oellm --help` need not pay

    chunks = [files[i:i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(read_chunk, chunks)


def cpus() -> int:
    """CPUs this process may use (SLURM/cgroup limits); macOS has no sched_getaffinity."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def collect(paths: list[Path], workers: int | None = None) -> Collected:
    """Read everything under `paths` into the tidy table; resolve duplicates (newest wins)."""
    import pandas as pd

    files, runs = find_files(paths)
    cols: list[list] = [[] for _ in COLUMNS]
    problems: list[tuple[str, str]] = []
    shards: list[str] = []
    for chunk, p, sh in _read_all(files, workers):
        for col, values in zip(cols, chunk, strict=True):
            col.extend(values)
        problems.extend(p)
        shards.extend(sh)
    df = pd.DataFrame({c: pd.Series(v, dtype=_DTYPES.get(c, "object")) for c, v in zip(COLUMNS, cols, strict=True)})
    done = set(df["row_id"]) | set(shards)
    df, superseded = newest_wins(df)
    return Collected(df, problems, superseded, runs, len(files), done)


_DTYPES = {"step": "Int64", "n_shot": "Int64", "limit": "float64", "value": "float64", "stderr": "float64",
           "batch_size": "Int64", "input_tokens": "Int64", "output_tokens": "Int64"}


def newest_wins(df: Any) -> tuple[Any, list[str]]:
    """Keep the newest value of each evaluation identity; return the files that lost everything."""
    if df.empty or not df.duplicated(IDENTITY).any():  # the common case: 4x cheaper than sorting first
        return df, []
    order = df.assign(_direct=df["task"] == df["evaluated"], _date=df["date"].fillna(""), _pos=range(len(df)))
    order = order.sort_values(["_direct", "_date", "_pos"], kind="stable")
    dup = order.duplicated(IDENTITY, keep="last")
    kept = order[~dup].drop(columns=["_direct", "_date", "_pos"]).sort_index().reset_index(drop=True)
    lost = set(order.loc[dup, "source"]) - set(kept["source"])
    return kept, sorted(lost)
