"""The run directory: jobs.csv, run.json, per-row results and state records.

Only this module turns rows into files and back, so the layout lives in one place:

    <run>/jobs.csv run.json submissions.jsonl submit_evals.sbatch slurm_logs/ results/<row_id>.json state/<row_id>.json
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from oellm import runlock
from oellm.atomic import atomic_open, read_json, write_json
from oellm.errors import OellmError
from oellm.rows import DEFAULT_SHOTS, DEFAULT_SUITE, EvalRow, shot_label

T = TypeVar("T")

JOBS_CSV = "jobs.csv"
MANIFEST = "run.json"
SBATCH_SCRIPT = "submit_evals.sbatch"
LOCK = "run.lock"
SUBMISSIONS = "submissions.jsonl"  # append-only: a crash between sbatch and the run.json write loses no job id
RUN_STAMP_FORMAT = "%Y-%m-%d-%H-%M-%S"
# A result is written whole (temp file, fsync, rename), so a smaller file (`{}`, zero bytes from a full
# disk or a hand-made file) is no evaluation: the row is not done. The worker checks content in full.
MIN_RESULT_BYTES = 32  # `{"results": {"t": {"acc,none": 1}}}` has 36


# oellm-eval's eval-CSV names where the tools share a field (model_path: the model, then its args, also apart in
# model_args), then the rows' lm-eval options as eval-CSV cells: `--eval_csv_path RUN/jobs.csv` (of either
# tool) plans the run again, oellm-eval's `collect --check` reads it. Older runs say model, task and suite.
COLUMNS = ["row_id", "task_index", "model_path", "model_args", "task_path", "n_shot", "limit", "step", "eval_suite",
           "shard", "num_shards", "options"]
_REQUIRED = COLUMNS[:8]  # the others are absent in runs written before rows had them
_OLD_NAMES = {"model": "model_path", "task": "task_path", "suite": "eval_suite"}


def write_jobs(path: Path, rows: Iterable[EvalRow]) -> None:
    """Write jobs.csv (plain csv module: 100k rows in ~0.2 s, no pandas import on the planning path), LF line
    ends as oellm-eval's."""
    from oellm.options import ROW_OPTIONS, csv_cells

    rows = list(rows)
    cells = {o: csv_cells(o) for o in {r.options for r in rows}}
    names = [k for k in ROW_OPTIONS if any(k in c for c in cells.values())]
    extra = {o: tuple(c.get(k, "") for k in names) for o, c in cells.items()}  # per distinct options, not per row
    with atomic_open(path) as fh:
        w = csv.writer(fh, lineterminator="\n")  # None is written as an empty cell
        w.writerow([*COLUMNS, *names])
        w.writerows([r.row_id, r.task_index, f"{r.model},{r.model_args}" if r.model_args else r.model, r.model_args,
                     r.task, shot_label(r.n_shot), _fmt_limit(r.limit), r.step, r.suite, r.shard,
                     r.num_shards, r.options, *extra[r.options]] for r in rows)


def _model(model_path: str, model_args: str) -> str:
    """The model of a `model_path` cell: its args follow it after a comma (jobs.csv has them apart too); a run
    written before holds the model alone there (its column was `model`)."""
    if model_args and model_path.endswith("," + model_args):
        return model_path[: len(model_path) - len(model_args) - 1]
    return model_path


def _read(path: Path, rows: Callable[[Any, dict[str, int]], list[T]]) -> list[T]:
    """The one jobs.csv reader: opens the file, checks its header and turns every failure into one clear
    error; `rows(csv_reader, column index)` only picks each row's fields (a list comprehension: 100k rows
    for status in a tenth of a second)."""
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            col = {name: i for i, name in enumerate(next(reader))}
            for was, now in _OLD_NAMES.items():  # a run written before the columns took oellm-eval's names
                if was in col and now not in col:
                    col[now] = col.pop(was)
            missing = [c for c in _REQUIRED if c not in col]
            if missing:
                raise KeyError(", ".join(missing))
            return rows(reader, col)
    except FileNotFoundError:
        raise OellmError(f"{path} not found: is this an oellm run directory?") from None
    except (StopIteration, KeyError, ValueError, IndexError) as e:
        raise OellmError(f"{path} is not a valid jobs.csv ({e!r}); expected columns {', '.join(_REQUIRED)}") from None


def read_jobs(path: Path) -> list[EvalRow]:
    """Read jobs.csv back into rows; a row id that no longer matches its fields is a corrupt file."""

    def rows(reader: Any, col: dict[str, int]) -> list[EvalRow]:
        out = []
        for rec in reader:
            f = {name: rec[i] for name, i in col.items()}
            row = EvalRow(model=_model(f["model_path"], f["model_args"]), model_args=f["model_args"], task=f["task_path"], n_shot=_shots(f["n_shot"]),
                          limit=float(f["limit"]) if f["limit"] else None, step=int(f["step"]) if f["step"] else None,
                          task_index=int(f["task_index"]), suite=f.get("eval_suite") or DEFAULT_SUITE,
                          shard=_int(f.get("shard")), num_shards=_int(f.get("num_shards")),
                          options=f.get("options") or "")
            if row.row_id != f["row_id"]:
                if f["row_id"] not in row.legacy_ids:
                    raise OellmError(f"{path}: line {reader.line_num}: row_id {f['row_id']} does not match its fields")
                row.__dict__["row_id"] = f["row_id"]  # a run planned before: its files keep their names
            out.append(row)
        return out

    return _read(path, rows)


class JobRef(NamedTuple):
    """A jobs.csv row as `oellm status` needs it: no hashing, no dataclass, so 100k rows read in ~0.2 s."""

    row_id: str
    task_index: int
    model: str
    task: str
    n_shot: int | None


def read_job_refs(path: Path) -> list[JobRef]:
    """Read jobs.csv for status (row ids trusted as written; `read_jobs` checks them)."""

    def refs(reader: Any, col: dict[str, int]) -> list[JobRef]:
        r, t, m, a, k, n = (col[c] for c in ("row_id", "task_index", "model_path", "model_args", "task_path", "n_shot"))
        return [JobRef(rec[r], int(rec[t]), _model(rec[m], rec[a]), rec[k], _shots(rec[n])) for rec in reader]

    return _read(path, refs)


def _fmt_limit(limit: float | None) -> str:
    return "" if limit is None else str(int(limit)) if float(limit).is_integer() else repr(limit)


def _shots(text: str) -> int | None:
    return None if text == DEFAULT_SHOTS else int(text)


def _int(text: str | None) -> int | None:
    return int(text) if text else None


# ---------------------------------------------------------------- run directory


@dataclass
class RunDir:
    """Paths of one run; construct with `RunDir(path)`."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    jobs = property(lambda self: self.path / JOBS_CSV)
    manifest = property(lambda self: self.path / MANIFEST)
    script = property(lambda self: self.path / SBATCH_SCRIPT)
    logs = property(lambda self: self.path / "slurm_logs")
    results = property(lambda self: self.path / "results")
    states = property(lambda self: self.path / "state")

    def result_path(self, row_id: str) -> Path:
        return self.results / f"{row_id}.json"

    def state_path(self, row_id: str) -> Path:
        return self.states / f"{row_id}.json"

    def has_result(self, row_id: str) -> bool:
        """The row is done: its result file is one (see `is_result`)."""
        return is_result(self.result_path(row_id))

    def read_manifest(self) -> dict[str, Any]:
        """run.json, with any submission the append-only log has that run.json does not (yet)."""
        try:
            data = read_json(self.manifest)
        except FileNotFoundError:
            raise OellmError(f"{self.manifest} not found: {self.path} is not an oellm run directory") from None
        try:
            logged = [json.loads(line) for line in (self.path / SUBMISSIONS).read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            return data
        known = {str(s["job_id"]) for s in data.get("submissions") or []}
        data["submissions"] = [*(data.get("submissions") or []), *(s for s in logged if str(s["job_id"]) not in known)]
        return data

    def log_submission(self, record: dict[str, Any]) -> None:
        """Append one accepted submission in a single O_APPEND write, fsynced, before anything else."""
        with open(self.path / SUBMISSIONS, "a") as fh:  # O_APPEND; one short line is one write
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def locked(self, wait_s: float = 120.0) -> contextlib.AbstractContextManager[None]:
        """Hold the run's lock (see `oellm.runlock`) around a read-change-write of run.json or a submission."""
        return runlock.locked(self.path / LOCK, wait_s)

    def update_manifest(self, **changes: Any) -> None:
        data = self.read_manifest()
        data.update(changes)
        write_json(self.manifest, data)

    def write_state(self, row_id: str, record: dict[str, Any]) -> None:
        write_json(self.state_path(row_id), {"row_id": row_id, **record})

    def read_states(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in self.states.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                out[p.stem] = read_json(p)
        return out

    def done_ids(self) -> set[str]:
        """Row ids whose result file is a result (`is_result`): the one definition of "done" that status,
        the skip on re-run, the worker and collect's --check share. Parsing 30k results costs ~0.7 s, so a
        file proven once is remembered by name, size and mtime in `results/.done` (best effort: a
        read-only run dir is checked in full each time)."""
        try:
            with os.scandir(self.results) as it:
                files = {e.name[:-5]: (st.st_size, st.st_mtime_ns) for e in it
                         if e.name.endswith(".json") and not e.name.startswith(".")
                         and (st := e.stat()).st_size >= MIN_RESULT_BYTES}
        except FileNotFoundError:
            return set()
        cache_path = self.results / DONE_CACHE
        try:
            cached = {k: tuple(v) for k, v in read_json(cache_path).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            cached = {}
        done = {i for i, key in files.items() if cached.get(i) == key}
        fresh = {i for i in files.keys() - done if is_result(self.result_path(i))}
        if fresh or len(cached) != len(done):
            with contextlib.suppress(OSError):
                write_json(cache_path, {i: files[i] for i in done | fresh})
        return done | fresh


DONE_CACHE = ".done"  # {row_id: [size, mtime_ns]} of result files proven complete


def is_result(path: Path) -> bool:
    """A result: a JSON object whose `results` is a mapping. A result is written whole (temp file, fsync,
    rename), so anything else (empty, truncated, hand-made) is no evaluation and the row is not done."""
    try:
        if path.stat().st_size < MIN_RESULT_BYTES:
            return False
        return isinstance(read_json(path).get("results"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def existing_results(output_root: Path) -> set[str]:
    """Row ids with a result in any run under `output_root` (one scandir per run, never per row)."""
    done: set[str] = set()
    try:
        runs = [e.path for e in os.scandir(output_root) if e.is_dir() and not e.name.startswith(".")]
    except FileNotFoundError:
        return done
    for run in runs:
        done |= RunDir(Path(run)).done_ids()
    return done


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_stamp(output_root: Path, now: datetime | None = None) -> str:
    """A fresh timestamped run name; a second run in the same second gets a suffix, never the same dir."""
    stamp = (now or datetime.now()).strftime(RUN_STAMP_FORMAT)
    name, n = stamp, 1
    while (output_root / name).exists() or (output_root / f".{name}.partial").exists():
        n += 1
        name = f"{stamp}-{n}"
    return name


@contextlib.contextmanager
def creating(output_root: Path, name: str) -> Iterator[tuple[RunDir, Path]]:
    """Yield (run dir to write into, its final path). The dir is built under a hidden temporary name
    and renamed into place only when complete, so a refused or crashed schedule never leaves a
    half-written dir that looks like a real run; files inside should name the final path."""
    output_root.mkdir(parents=True, exist_ok=True)
    final = output_root / name
    tmp = output_root / f".{name}.partial"
    tmp.mkdir()
    try:
        for sub in ("slurm_logs", "results", "state"):
            (tmp / sub).mkdir()
        yield RunDir(tmp), final
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
