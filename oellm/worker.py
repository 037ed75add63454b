"""One array task: evaluate its rows of a run dir with lm-eval, offline, each model loaded once.

Shaped like submitit's `process_job`: the task knows only the run dir and its index, reads its
identity from the environment in one place (`JobEnv`), writes every outcome through a temp file and
a rename, and exits non-zero when a row failed. A row that has a result file is never redone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oellm.clusters import ClusterConfig
from oellm.errors import OellmError
from oellm.models import RowFailure
from oellm.rundir import EvalRow, RunDir, atomic_open, read_jobs, read_json, utc_now

log = logging.getLogger(__name__)

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}


@dataclass(frozen=True)
class JobEnv:
    """Who we are, read from the environment in one place (SLURM_* under SLURM, else None)."""

    host: str
    job_id: str | None
    array_job_id: str | None
    array_task_id: int | None
    restart_count: int = 0  # times SLURM requeued this task (node failure, preemption)

    @classmethod
    def from_environ(cls, env: Any = os.environ) -> JobEnv:
        task = env.get("SLURM_ARRAY_TASK_ID")
        return cls(host=socket.gethostname(), job_id=env.get("SLURM_JOB_ID"),
                   array_job_id=env.get("SLURM_ARRAY_JOB_ID"), array_task_id=int(task) if task else None,
                   restart_count=int(env.get("SLURM_RESTART_COUNT") or 0))


class Interrupted(BaseException):
    """SIGTERM (scancel, time limit) or SIGINT mid-row; a BaseException so that no `except Exception`
    inside lm-eval or datasets swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def run(run_dir: Path | str, index: int | None = None, index_offset: int = 0) -> int:
    """Evaluate the rows of array task `index_offset + index`; return how many failed.

    When interrupted, records the row as "interrupted" and raises SystemExit(128 + signal number)."""
    os.environ.update(OFFLINE_ENV)  # before any HF import: compute nodes have no network
    if not logging.getLogger().handlers:  # INFO to stderr: the SLURM .err log
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = JobEnv.from_environ()
    index = env.array_task_id if index is None else index
    if index is None:
        raise OellmError("no array index: pass --index or run inside a SLURM array job (SLURM_ARRAY_TASK_ID)")
    rd = RunDir(Path(run_dir))
    manifest = rd.read_manifest()
    task = index_offset + index
    # `oellm resubmit` may override settings (a smaller batch size after an OOM) for some tasks
    ctx = _Context(rd, {**manifest, **(manifest.get("task_overrides") or {}).get(str(task), {})}, env, task)
    rows = [r for r in read_jobs(rd.jobs) if r.task_index == ctx.index]
    todo = [r for r in rows if not rd.result_path(r.row_id).exists()]
    log.info("array task %d: %d row(s), %d already done", ctx.index, len(rows), len(rows) - len(todo))
    for sub in (rd.results, rd.states):
        sub.mkdir(parents=True, exist_ok=True)
    limit = int((manifest.get("cluster_config") or {}).get("max_requeues", ClusterConfig.max_requeues))
    if env.restart_count > limit:
        return _give_up(ctx, todo, limit)
    try:
        with _signals_raise(), ctx.tail.attached():
            return sum(not ok for ok in _evaluate_rows(ctx, todo))
    except Interrupted as e:
        log.error("%s; exiting", e)
        raise SystemExit(128 + e.signum) from None


def _give_up(ctx: _Context, rows: list[EvalRow], limit: int) -> int:
    """SLURM requeues a task after every node failure or preemption, without end; past the cluster's
    max_requeues the rows are marked failed instead, so a node that keeps failing costs no more."""
    msg = (f"array task requeued {ctx.env.restart_count} time(s) after node failure or preemption "
           f"(max_requeues {limit}); not run again: `oellm resubmit` retries it")
    log.error(msg)
    for row in rows:
        now = utc_now()
        _write_record(ctx, row, "failed", "requeue_limit", msg, started=now, ended=now, wall_s=0.0,
                      attempt=_previous_attempt(ctx.run, row) + 1)
    return len(rows)


def _write_record(ctx: _Context, row: EvalRow, state: str, kind: str | None, error: str, *, started: str,
                  ended: str | None, wall_s: float | None, attempt: int, **extra: Any) -> None:
    """A row's state record: what happened, where (host, SLURM ids, restarts) and the last log lines."""
    ctx.run.write_state(row.row_id, {
        "state": state, "error_kind": kind, "error": error, "log_tail": list(ctx.tail.lines),
        "host": ctx.env.host, "started": started, "ended": ended, "wall_s": wall_s,
        "slurm_job_id": ctx.env.job_id, "slurm_array_job_id": ctx.env.array_job_id, "array_task_id": ctx.index,
        "slurm_restart_count": ctx.env.restart_count, "attempt": attempt, **extra})


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn the first SIGTERM/SIGINT into `Interrupted`; ignore repeats, so recording the state finishes."""
    fired: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Once:
    """A value built at first use; a failure is kept and raised again for every later row."""

    def __init__(self, build: Callable[[], Any]):
        self._build: Callable[[], Any] | None = build
        self._value: Any = None
        self._error: Exception | None = None

    def get(self) -> Any:
        if self._build is not None:
            try:
                self._value = self._build()
            except Exception as e:  # noqa: BLE001 - kept and re-raised for each row that needs it
                self._error = e
            self._build = None
        if self._error is not None:
            raise self._error
        return self._value


class _LogTail(logging.Handler):
    """The last lines logged during a row, for its state record (a bounded deque: no file, no copying)."""

    def __init__(self, n: int = 20):
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=n)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)

    @contextmanager
    def attached(self) -> Iterator[None]:
        """On the root logger, and on lm-eval's too if lm-eval has stopped it propagating."""
        loggers = [logging.getLogger()] + [lg for lg in [logging.getLogger("lm_eval")] if not lg.propagate]
        for lg in loggers:
            lg.addHandler(self)
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeHandler(self)


@dataclass
class _Context:
    run: RunDir
    manifest: dict[str, Any]
    env: JobEnv
    index: int  # the global array index
    tail: _LogTail = field(default_factory=_LogTail)


def _evaluate_rows(ctx: _Context, rows: list[EvalRow]) -> Iterator[bool]:
    """Rows grouped by model, in jobs.csv order; one TaskManager, one load per model."""
    from oellm import models, tasks

    include = list(ctx.manifest.get("include_paths") or [])
    task_manager = _Once(lambda: tasks.task_manager_for(sorted({r.task for r in rows}), include))
    by_model: dict[tuple[str, str], list[EvalRow]] = {}
    for r in rows:
        by_model.setdefault((r.model, r.model_args), []).append(r)
    for (model, model_args), group in by_model.items():
        loaded = _Once(lambda m=model, a=model_args: models.load_model(m, a, ctx.manifest))
        for row in group:
            yield _evaluate_row(ctx, row, loaded, task_manager)
        del loaded
        models.free_memory()


def _evaluate_row(ctx: _Context, row: EvalRow, loaded: _Once, task_manager: _Once) -> bool:
    """Evaluate one row and record its state; True when done."""
    import lm_eval

    from oellm import tasks

    ctx.tail.lines.clear()
    t0, started = time.perf_counter(), utc_now()
    attempt = _previous_attempt(ctx.run, row) + 1

    def record(state: str, kind: str | None = None, error: str = "", **extra: Any) -> None:
        ended = None if state == "running" else utc_now()
        _write_record(ctx, row, state, kind, error, started=started, ended=ended,
                      wall_s=None if ended is None else round(time.perf_counter() - t0, 3), attempt=attempt, **extra)

    try:
        record("running")
        log.info("row %s: %s | %s | %d-shot", row.row_id, row.model, row.task, row.n_shot)
        lm, info = loaded.get()
        t_eval = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model=lm, model_args=info["args"], tasks=[row.task], num_fewshot=row.n_shot,
            limit=_limit(row.limit), task_manager=tasks.with_metadata(task_manager.get(), info["metadata"]),
            log_samples=bool(ctx.manifest.get("log_samples", False)), batch_size=info["batch_size"],
            device=info["device"], use_cache=None, cache_requests=False)
        lm_eval_s = time.perf_counter() - t_eval
        samples = out.pop("samples", None) if out else None
        if not _has_metrics(out):
            raise RowFailure("no_metrics", f"lm-eval finished task {row.task} but reported no metrics")
        out["oellm"] = _provenance(ctx, row, out, info, started, time.perf_counter() - t0, lm_eval_s)
        _write_result(ctx.run, row, out, samples)
        record("done")
        return True
    except Interrupted as e:
        record("interrupted", "interrupted", str(e))
        raise
    except Exception as e:  # noqa: BLE001 - one row's failure must not stop the others
        kind = e.kind if isinstance(e, RowFailure) else "oom" if _is_oom(e) else "exception"
        log.error("row %s failed (%s): %s", row.row_id, kind, e)
        record("failed", kind, f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-8000:])
        if kind == "oom":
            from oellm import models

            models.free_memory()
        return False


def _has_metrics(out: dict[str, Any] | None) -> bool:
    """True when some task reports a number for a metric (lm-eval's "metric,filter" keys)."""
    from numbers import Number

    return any("," in k and "_stderr," not in k and isinstance(v, Number) and not isinstance(v, bool)
               for res in ((out or {}).get("results") or {}).values() for k, v in res.items())


def _provenance(ctx: _Context, row: EvalRow, out: dict[str, Any], info: dict[str, Any], started: str,
                wall_s: float, lm_eval_s: float) -> dict[str, Any]:
    """What ran where, with which versions, and how long: stored beside lm-eval's own output."""
    from importlib.metadata import version

    import oellm

    shots = out.get("n-shot") or {}
    uniform = set(shots.values())
    return {"row": {"row_id": row.row_id, "model": row.model, "model_args": row.model_args, "task": row.task,
                    "n_shot": row.n_shot, "limit": row.limit, "step": row.step},
            "n_shot_used": shots.get(row.task, uniform.pop() if len(uniform) == 1 else shots),
            "model_revision": info["revision"], "lm_eval_version": version("lm_eval"),
            "oellm_version": oellm.__version__, "host": ctx.env.host, "device": info["device"],
            "gpu": info["gpu"], "slurm_job_id": ctx.env.job_id, "slurm_array_job_id": ctx.env.array_job_id,
            "slurm_array_task_id": ctx.env.array_task_id, "array_task_id": ctx.index,
            "slurm_restart_count": ctx.env.restart_count, "started": started, "ended": utc_now(),
            "wall_s": round(wall_s, 3), "lm_eval_s": round(lm_eval_s, 3),
            "lm_eval_reported_s": out.get("total_evaluation_time_seconds"),
            "model_load": {k: info[k] for k in ("pid", "started", "seconds", "loads_in_process")}}


def _write_result(run: RunDir, row: EvalRow, out: dict[str, Any], samples: dict[str, list] | None) -> None:
    """Samples first, then the result: a result file always means the row is complete."""
    from lm_eval.utils import handle_non_serializable as default

    if samples is not None:
        with atomic_open(run.results / f"{row.row_id}.samples.jsonl") as fh:
            for task, items in samples.items():
                fh.writelines(json.dumps({"task": task, **s}, default=default, ensure_ascii=False) + "\n"
                              for s in items)
    with atomic_open(run.result_path(row.row_id)) as fh:
        json.dump(out, fh, indent=1, default=default, ensure_ascii=False)


def _is_oom(e: BaseException) -> bool:
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()


def _limit(limit: float | None) -> int | float | None:
    """jobs.csv stores limits as floats; lm-eval reads a float < 1 as a fraction, anything else as a count."""
    return int(limit) if limit is not None and limit >= 1 and float(limit).is_integer() else limit


def _previous_attempt(run: RunDir, row: EvalRow) -> int:
    try:
        return int(read_json(run.state_path(row.row_id)).get("attempt", 0))
    except (OSError, ValueError, AttributeError):
        return 0
