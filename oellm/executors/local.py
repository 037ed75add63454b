"""Local executor (the embedded default): the run's array tasks drained by a pool of worker processes.

Each slot runs `python -m oellm worker --index I` for one array task at a time, exactly what a SLURM
array task runs, so a laptop and a cluster produce the same run dir. One slot per visible GPU
(`CUDA_VISIBLE_DEVICES` pinned per slot), or N CPU slots sharing the cores.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oellm.clusters import ClusterConfig
from oellm.errors import OellmError
from oellm.executors import Capacity, SchedulerView
from oellm.plan.packing import SubmitPlan
from oellm.rows import EvalRow
from oellm.rundir import RunDir, read_job_refs
from oellm.shipping import SHIP_DIR, pythonpath, worker_python
from oellm.sitevalues import expand_env

POLL_S = 0.5
STOP_GRACE_S = 15


class LocalExecutor:
    """Runs the array tasks now, in the foreground, over one worker slot per visible GPU or N CPU slots;
    submit returns when all are done (or on Ctrl-C). Nothing outlives the command, so there is no queue
    to ask, resubmit to or cancel: running the same command again evaluates what is missing."""

    name = "local"
    label = "local executor"
    tracks_queue = False

    def __init__(self, cluster: ClusterConfig, workers: int | None = None):
        self.cluster = cluster
        self.workers = workers or cluster.local_workers

    def capacity(self) -> Capacity:
        return Capacity()

    def check_ready(self) -> None:
        return None

    def in_flight(self, output_root: Path, rows: Sequence[EvalRow], dry_run: bool,
                  log: Callable[[str], None]) -> list[EvalRow]:
        # a local run holds no queued work once its command has ended; while it runs, it holds its rows'
        # claims (`oellm.claims`, taken by schedule()), so another command skips them
        return list(rows)

    def describe(self, plan: Any) -> list[str]:
        return []

    def submit(self, run: RunDir, plan: SubmitPlan, log: Callable[[str], None],
               options: Sequence[str] = ()) -> None:
        from oellm.results.records import score_table
        from oellm.rundir import read_jobs, read_json

        env = expand_env(self.cluster.env, os.environ, f"cluster {self.cluster.name}.env")
        envs = slot_envs(self.workers, visible_gpus(), env)
        rows = read_jobs(run.jobs)
        log(f"running {plan.n_tasks} task(s) on this machine with {len(envs)} worker(s)")
        python = worker_python((read_json(run.manifest).get("script") or {}).get("python"))  # --venv_path's
        res = run_tasks(run, range(plan.n_tasks), envs, python, n_rows=len(rows), log=log)
        done = len(run.done_ids() & {r.row_id for r in rows})  # not the merged results of sharded rows
        log(f"finished: {done} of {len(rows)} row(s) done; results in {run.results}")
        if done:  # a sharded evaluation shows once, merged
            log(score_table(run, list({r.whole.row_id: r.whole for r in rows}.values())))
        if res.interrupted:
            raise OellmError(f"interrupted: {done} of {len(rows)} row(s) done in {run.path}; "
                             "run the same command again to evaluate the rest")
        if done < len(rows):
            raise OellmError(f"{len(rows) - done} row(s) failed; see the state records in {run.states} "
                             f"and the logs in {run.logs}")

    def states(self, manifest: dict[str, Any], needed: set[str]) -> SchedulerView:
        return SchedulerView(None)  # the state records are all there is

    def max_parallel(self, manifest: dict[str, Any]) -> int:
        return len(slot_envs(self.workers, visible_gpus(), {}))

    def require_control(self, run: RunDir, what: str) -> None:
        raise OellmError(f"{run.path} is a local run: {what} applies to SLURM runs; a local run is stopped with "
                         "Ctrl-C and finished by running the same schedule-eval command again (done rows are skipped)")

    def cancel(self, run: RunDir, manifest: dict[str, Any]) -> list[str]:
        self.require_control(run, "cancel")
        return []


@dataclass
class LocalResult:
    tasks_ok: int = 0
    tasks_failed: int = 0
    interrupted: bool = False


def visible_gpus() -> list[str]:
    """GPU ids from CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`; no torch import on this path."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
    return []


def slot_envs(workers: int | None, gpus: Sequence[str], base_env: dict[str, str]) -> list[dict[str, str]]:
    """One environment per slot: a GPU each, or CPU slots splitting the cores between them."""
    if gpus:
        return [{**base_env, "CUDA_VISIBLE_DEVICES": g} for g in gpus[: workers or len(gpus)]]
    n = max(1, workers or 1)
    threads = str(max(1, (os.cpu_count() or 1) // n))
    return [{**base_env, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads} for _ in range(n)]


def run_tasks(run: RunDir, task_ids: Sequence[int], envs: Sequence[dict[str, str]], python: str = sys.executable,
              n_rows: int | None = None, log: Callable[[str], None] = print) -> LocalResult:
    """Drain `task_ids` over the slots; Ctrl-C stops the workers cleanly and keeps finished results."""
    queue = list(task_ids)
    running: dict[int, tuple[subprocess.Popen, int]] = {}  # slot -> (process, task)
    result = LocalResult()
    bar = _progress(run, n_rows, log)
    try:
        while queue or running:
            for slot in range(len(envs)):
                if slot not in running and queue:
                    task = queue.pop(0)
                    running[slot] = (_start(run, task, envs[slot], python), task)
            time.sleep(POLL_S)
            for slot, (proc, task) in list(running.items()):
                if proc.poll() is not None:
                    del running[slot]
                    if proc.returncode == 0:
                        result.tasks_ok += 1
                    else:
                        result.tasks_failed += 1
                        bar.note(f"task {task} exited with code {proc.returncode} (log: {run.logs}/local_{task}.err)")
            bar.update()
    except KeyboardInterrupt:
        result.interrupted = True
        bar.note("interrupted: stopping workers (finished results are kept)")
        _stop([p for p, _ in running.values()])
    finally:
        bar.close()
    return result


def _start(run: RunDir, task: int, env: dict[str, str], python: str) -> subprocess.Popen:
    out = open(run.logs / f"local_{task}.out", "ab")  # noqa: SIM115 -- owned by the child for its lifetime
    err = open(run.logs / f"local_{task}.err", "ab")  # noqa: SIM115
    try:
        # A new session, so a Ctrl-C on the terminal reaches only us; we stop the workers ourselves.
        # the oellm shipped into the run dir first, as on SLURM (a --venv_path venv needs no oellm of its own)
        return subprocess.Popen([python, "-m", "oellm", "worker", "--run_dir", str(run.path), "--index", str(task)],
                                env={**os.environ, **env, "PYTHONPATH": pythonpath(run.path / SHIP_DIR)},
                                stdout=out, stderr=err,
                                start_new_session=True, cwd=run.path)  # not the user's dir: see WORKER_ENV
    finally:
        out.close()
        err.close()


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class _progress:
    """Rows done / failed / running with ETA on a terminal (tqdm); one plain line per change otherwise."""

    def __init__(self, run: RunDir, total: int | None, log: Callable[[str], None]):
        self.run, self.total, self.log = run, total, log
        self.ids = {r.row_id for r in read_job_refs(run.jobs)}  # merged results of shards are no rows
        self.tty = sys.stderr.isatty()
        self.last: tuple[int, int, int] | None = None
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="row", desc="evaluating", dynamic_ncols=True)

    def counts(self) -> tuple[int, int, int]:
        states = self.run.read_states()
        done = len(self.run.done_ids() & self.ids)
        failed = sum(1 for s in states.values() if s.get("state") == "failed")
        running = sum(1 for s in states.values() if s.get("state") == "running")
        return done, failed, running

    def update(self) -> None:
        done, failed, running = now = self.counts()
        if now == self.last:
            return
        self.last = now
        if self.bar is not None:
            self.bar.n = done + failed
            self.bar.set_postfix(done=done, failed=failed, running=running, refresh=False)
            self.bar.refresh()
        else:
            self.log(f"rows: {done} done, {failed} failed, {running} running" + (f" of {self.total}" if self.total else ""))

    def note(self, msg: str) -> None:
        (self.bar.write if self.bar is not None else self.log)(msg)

    def close(self) -> None:
        self.update()
        if self.bar is not None:
            self.bar.close()


EXECUTOR = LocalExecutor
