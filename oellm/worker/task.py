"""One array task: evaluate its rows of a run dir, offline, each model loaded once.

Shaped like submitit's `process_job`: the task knows only the run dir and its index, reads its
identity from the environment in one place (`JobEnv`), writes every outcome through a temp file and
a rename, and exits non-zero when a row failed. A row that has a complete result is never redone.
The evaluation itself is the row's suite's (`oellm.suites`); this module records what happened.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oellm.cache.paths import nltk_dir
from oellm.clusters import ClusterConfig
from oellm.errors import OellmError
from oellm.offline import WORKER_ENV
from oellm.rows import EvalRow, shot_label
from oellm.rundir import RunDir, atomic_open, read_jobs, read_json, utc_now
from oellm.suites.base import RowFailure, Suite
from oellm.worker import gpus
from oellm.worker.support import Interrupted, JobEnv, LogTail, Once, signals_raise

log = logging.getLogger("oellm.worker")



def _process_start() -> float:
    """When this process started (epoch s): its start-up (interpreter, imports) is part of `process_s`."""
    try:
        import psutil  # in the worker's stack (accelerate needs it); else the import of this module

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - only a less exact start-up figure
        return time.time()


PROCESS_T0 = _process_start()


def run(run_dir: Path | str, index: int | None = None, index_offset: int = 0) -> int:
    """Evaluate the rows of array task `index_offset + index`; return how many failed.

    When interrupted, records the row as "interrupted" and raises SystemExit(128 + signal number)."""
    os.environ.update(WORKER_ENV)  # before any HF import: compute nodes have no network
    os.environ.setdefault("NLTK_DATA", str(nltk_dir(os.environ)))  # where the pre-cache put what tasks download
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
    mine = gpus.assigned()
    if mine is not None:  # worker k of n of this task (one per GPU): the rows its parent gave it
        rows = [r for r in rows if r.row_id in mine]
    todo = [r for r in rows if not rd.has_result(r.row_id)]
    log.info("array task %d: %d row(s), %d already done", ctx.index, len(rows), len(rows) - len(todo))
    for sub in (rd.results, rd.states):
        sub.mkdir(parents=True, exist_ok=True)
    limit = int((manifest.get("cluster_config") or {}).get("max_requeues", ClusterConfig.max_requeues))
    if env.restart_count > limit:
        return _give_up(ctx, todo, limit)
    failed_workers = gpus.fan_out(rd.path, index, index_offset, [r.row_id for r in todo], ctx.settings)
    if failed_workers is not None:
        return failed_workers
    try:
        with signals_raise(), ctx.tail.attached():
            return sum(not ok for ok in _evaluate_rows(ctx, todo))
    except Interrupted as e:
        log.error("%s; exiting", e)
        raise SystemExit(128 + e.signum) from None


@dataclass
class _Context:
    run: RunDir
    settings: dict[str, Any]  # run.json with this task's overrides
    env: JobEnv
    index: int  # the global array index
    tail: LogTail = field(default_factory=LogTail)


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


def _evaluate_rows(ctx: _Context, rows: list[EvalRow]) -> Iterator[bool]:
    """Rows grouped by suite and model, in jobs.csv order; one load per model."""
    from oellm.suites import by_suite, get_suite

    for name, suite_rows in by_suite(rows).items():
        suite = get_suite(name)
        by_model: dict[tuple[str, str], list[EvalRow]] = {}
        for r in suite_rows:
            by_model.setdefault((r.model, r.model_args), []).append(r)
        for group in by_model.values():
            ref = group[0].ref
            loaded = Once(lambda ref=ref, suite=suite: suite.load(ref, ctx.settings))
            for row in group:
                yield _evaluate_row(ctx, suite, row, loaded, suite_rows)
            del loaded
            suite.unload()


def _evaluate_row(ctx: _Context, suite: Suite, row: EvalRow, loaded: Once, rows: list[EvalRow]) -> bool:
    """Evaluate one row and record its state; True when done."""
    ctx.tail.lines.clear()
    t0, started = time.perf_counter(), utc_now()
    attempt = _previous_attempt(ctx.run, row) + 1

    def record(state: str, kind: str | None = None, error: str = "", **extra: Any) -> None:
        ended = None if state == "running" else utc_now()
        _write_record(ctx, row, state, kind, error, started=started, ended=ended,
                      wall_s=None if ended is None else round(time.perf_counter() - t0, 3), attempt=attempt, **extra)

    try:
        record("running")
        log.info("row %s: %s | %s | %s-shot", row.row_id, row.model, row.task, shot_label(row.n_shot))
        model, info = loaded.get()
        t_eval = time.perf_counter()
        out, samples = suite.evaluate(model, info, row, rows, ctx.settings)
        suite_s = time.perf_counter() - t_eval
        out["oellm"] = _provenance(ctx, row, out, info, started, time.perf_counter() - t0, suite_s)
        write_result(ctx.run, row, out, samples)
        record("done")
        if row.num_shards:
            _merge(ctx, suite, row, info)
        return True
    except Interrupted as e:
        record("interrupted", "interrupted", str(e))
        raise
    except Exception as e:  # noqa: BLE001 - one row's failure must not stop the others
        kind = e.kind if isinstance(e, RowFailure) else "oom" if _is_oom(e) else "exception"
        log.error("row %s failed (%s): %s", row.row_id, kind, e)
        record("failed", kind, f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-8000:])
        if kind == "oom":
            suite.unload()
        return False


def _merge(ctx: _Context, suite: Suite, row: EvalRow, info: dict[str, Any]) -> None:
    """The last shard to finish merges; a failed merge leaves the shard done (collect-results retries it)."""
    from oellm.worker.merge import merge_if_complete

    try:
        merge_if_complete(ctx.run, suite, row, ctx.settings, info["args"], write_result)
    except Exception as e:  # noqa: BLE001 - the shard itself succeeded
        log.error("merging the shards of %s failed (%s: %s); `oellm collect-results` merges them later",
                  row.whole.row_id, type(e).__name__, e)


def _provenance(ctx: _Context, row: EvalRow, out: dict[str, Any], info: dict[str, Any], started: str,
                wall_s: float, suite_s: float) -> dict[str, Any]:
    """What ran where, with which versions, and how long: stored beside the suite's own output."""
    from importlib.metadata import version

    import oellm

    shots = out.get("n-shot") or {}
    uniform = set(shots.values())
    return {"row": row.record(),
            **({"shard": row.shard, "num_shards": row.num_shards} if row.num_shards else {}),
            # a task's YAML may fix its shot count whatever was asked: record what was used
            "n_shot_used": shots.get(row.task, uniform.pop() if len(uniform) == 1 else shots),
            "model_revision": info["revision"], "lm_eval_version": version("lm_eval"),
            "oellm_version": oellm.__version__, "host": ctx.env.host, "device": info["device"],
            "gpu": info["gpu"], "slurm_job_id": ctx.env.job_id, "slurm_array_job_id": ctx.env.array_job_id,
            "slurm_array_task_id": ctx.env.array_task_id, "array_task_id": ctx.index,
            "slurm_restart_count": ctx.env.restart_count, "started": started, "ended": utc_now(),
            "wall_s": round(wall_s, 3), "lm_eval_s": round(suite_s, 3),
            "process_s": round(time.time() - PROCESS_T0, 3),  # start-up + load + rows so far (the advisor)
            "lm_eval_reported_s": out.get("total_evaluation_time_seconds"),
            "model_load": {k: info[k] for k in ("pid", "started", "seconds", "loads_in_process", "load_s") if k in info}}


def write_result(run: RunDir, row: EvalRow, out: dict[str, Any], samples: dict[str, list] | None) -> None:
    """Samples first, then the result (on disk before its rename): a result file means the row is complete."""
    if samples is not None:
        with atomic_open(run.results / f"{row.row_id}.samples.jsonl") as fh:
            for task, items in samples.items():
                fh.writelines(json.dumps({"task": task, **s}, default=_json_default, ensure_ascii=False) + "\n"
                              for s in items)
    with atomic_open(run.result_path(row.row_id), fsync=True) as fh:
        json.dump(out, fh, indent=1, default=_json_default, ensure_ascii=False)


def _json_default(o: Any) -> Any:
    """Numbers of numpy as numbers, sets as lists, anything else as its text (as lm-eval writes its own)."""
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=str)
    if type(o).__module__ == "numpy" and hasattr(o, "item"):
        return o.item()
    return str(o)


def _is_oom(e: BaseException) -> bool:
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()


def _previous_attempt(run: RunDir, row: EvalRow) -> int:
    try:
        return int(read_json(run.state_path(row.row_id)).get("attempt", 0))
    except (OSError, ValueError, AttributeError):
        return 0
