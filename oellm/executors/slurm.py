"""SLURM executor: one `sbatch` per chunk of a run's array (recorded in run.json as it goes), states from
one `sacct` (plus one `squeue` while accounting lags), one `scancel` per run. The commands themselves
are `oellm.slurm`'s."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from oellm import slurm
from oellm.clusters import ClusterConfig, require_resolved
from oellm.errors import OellmError, SlurmError
from oellm.executors import Capacity, NothingStarted, SchedulerView
from oellm.plan.packing import SubmitPlan
from oellm.rows import EvalRow
from oellm.rundir import MANIFEST, RunDir, read_job_refs, utc_now
from oellm.sitevalues import format_minutes
from oellm.slurm import job_ids, task_elements


class SlurmExecutor:
    name = "slurm"
    label = "SLURM"
    tracks_queue = True

    def __init__(self, cluster: ClusterConfig, workers: int | None = None):
        self.cluster = cluster

    def capacity(self) -> Capacity:
        return Capacity(slurm.max_array_size(), slurm.queued_jobs())

    def check_ready(self) -> None:
        require_resolved(self.cluster)

    def in_flight(self, output_root: Path, rows: Sequence[EvalRow], dry_run: bool,
                  log: Callable[[str], None]) -> list[EvalRow]:
        """Drop rows that an earlier run under the root still has queued or running: a re-run never
        duplicates them (one squeue for all runs)."""
        try:
            busy = rows_in_flight(output_root, retries=0 if dry_run else 2)
        except OellmError as e:  # SlurmError, or no squeue on this host
            if not dry_run:
                raise
            log(f"note: cannot ask SLURM which rows earlier runs still run ({e}); a real submission would")
            return list(rows)
        if not busy:
            return list(rows)
        keep = [r for r in rows if r.row_id not in busy]
        if len(keep) < len(rows):
            runs = sorted({str(busy[r.row_id]) for r in rows if r.row_id in busy})
            more = f" and {len(runs) - 3} more" if len(runs) > 3 else ""
            log(f"skipping {len(rows) - len(keep)} row(s) queued or running in earlier run(s): {', '.join(runs[:3])}"
                f"{more} (`oellm status` shows them)")
        return keep

    def describe(self, plan: Any) -> list[str]:
        sub = plan.submission
        arrays = ", ".join(f"--array={c.array} (offset {c.offset})" for c in sub.chunks[:3])
        more = f", ... {len(sub.chunks) - 3} more" if len(sub.chunks) > 3 else ""
        less = sorted({c.minutes for c in sub.chunks if c.minutes is not None})
        return [f"time:      {format_minutes(plan.minutes)} limit per array task ({plan.time_from}"
                + (f": its fullest; smaller tasks ask {', '.join(map(format_minutes, less))})" if less else ")"),
                f"arrays:    {len(sub.chunks)} sbatch call(s): {arrays}{more}"
                + (f"; {sub.held_back} task(s) held back by the queue limit" if sub.held_back else "")]

    def submit(self, run: RunDir, plan: SubmitPlan, log: Callable[[str], None],
               options: Sequence[str] = ()) -> None:
        """Submit every chunk; a failure after some chunks went in keeps what was submitted on record."""
        if not plan.chunks:
            log(f"queue limit reached: no array task submitted; {plan.held_back} task(s) wait in {run.path}")
            return
        submitted: list[dict] = []
        try:
            for chunk in plan.chunks:
                name = f"oellm-{run.path.name}-{secrets.token_hex(4)}"  # unique: found again after a lost reply
                args = [str(chunk.offset), *([chunk.image] if chunk.image else [])]  # the script picks the image
                opts = list(options)
                if chunk.minutes is not None and not any(o.startswith("--time=") for o in opts):
                    opts.append(f"--time={format_minutes(chunk.minutes)}")  # its tasks' own limit, not the fullest's
                job_id = slurm.submit(run.script, array=chunk.array, args=args, options=opts, name=name)
                submitted.append({"job_id": job_id, "offset": chunk.offset, "size": chunk.size, "array": chunk.array,
                                  "submitted": utc_now(), "job_name": name, **({"image": chunk.image} if chunk.image else {}),
                                  **({"options": opts} if opts else {})})
                run.log_submission(submitted[-1])
                log(f"submitted array job {job_id}: tasks {chunk.offset}-{chunk.offset + chunk.size - 1} "
                    f"(--array={chunk.array})")
        except OellmError as e:
            if not submitted:
                raise NothingStarted(str(e)) from None
            _record(run)
            done = sum(s["size"] for s in submitted)
            raise OellmError(f"{e} -- {len(submitted)} of {len(plan.chunks)} chunk(s) ({done} tasks) were "
                             f"submitted and recorded in {run.manifest}; submit the rest later") from None
        _record(run)

    def states(self, manifest: dict[str, Any], needed: set[str]) -> SchedulerView:
        """One sacct; one squeue only for needed elements sacct does not name yet (it lags by seconds)."""
        ids = job_ids(manifest)
        if not ids:
            return SchedulerView({})
        try:
            # no retries: a status that waits 6 s on a down controller helps nobody; the user runs it again
            states = slurm.query_states(ids, manifest.get("created") or "now-30days", retries=0)
        except OellmError as e:  # SlurmError, or no sacct on this host at all
            return SchedulerView(None, f"SLURM accounting unavailable ({e})", calls=1)
        lagging = needed - states.keys()
        if not lagging:
            return SchedulerView(states, calls=1)
        try:
            states.update(slurm.queue_states(ids, retries=0))
        except SlurmError as e:  # e.g. the controller restarts: sacct (slurmdbd) still answers for the rest
            return SchedulerView(states, warning=f"squeue failed ({e}): {len(lagging)} array task(s) accounting "
                                 "does not show yet stay unknown", calls=2)
        return SchedulerView(states, calls=2)

    def max_parallel(self, manifest: dict[str, Any]) -> int:
        return int((manifest.get("cluster_config") or {}).get("max_running") or 1)

    def require_control(self, run: RunDir, what: str) -> None:
        return None

    def cancel(self, run: RunDir, manifest: dict[str, Any]) -> list[str]:
        ids = job_ids(manifest)
        slurm.cancel(ids)
        return ids


def _record(run: RunDir) -> None:
    """run.json gets what the append-only log already holds (read_manifest merges it in)."""
    run.update_manifest(submissions=run.read_manifest().get("submissions", []))


def rows_in_flight(root: Path, retries: int = 2) -> dict[str, Path]:
    """Rows (not done) of SLURM runs under `root` whose array task is still queued or running -> their run."""
    runs: dict[Path, dict[str, Any]] = {}
    try:
        entries = sorted(e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        return {}
    for path in map(Path, entries):
        try:  # with the submissions log: a submission in progress has its job ids there before run.json
            m = RunDir(path).read_manifest() if (path / MANIFEST).is_file() else {}
        except (OSError, ValueError, OellmError):
            continue
        if m.get("executor") == SlurmExecutor.name and m.get("submissions"):
            runs[path] = m
    active = slurm.queue_states([j for m in runs.values() for j in job_ids(m)], retries=retries)
    out: dict[str, Path] = {}
    for path, m in runs.items():
        tasks = {t for t, el in task_elements(m["submissions"]).items() if el in active}
        if tasks:
            run = RunDir(path)
            done = run.done_ids()
            out.update((r.row_id, path) for r in read_job_refs(run.jobs) if r.task_index in tasks
                       and r.row_id not in done)
    return out


EXECUTOR = SlurmExecutor
