"""status and cancel of a run (resubmit: `resubmit`): the run dir joined with the executor's one
batched scheduler query.

Each refresh reads the run dir (jobs.csv, results/ names, the state records of rows not done) and
asks SLURM once (`sacct` for all of the run's array jobs, from its creation time) plus, only when
accounting lags behind for some element, one `squeue`: never a call per row or per chunk.
"""

from __future__ import annotations

import json as jsonlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oellm.clusters import ClusterConfig, detect_cluster, load_clusters
from oellm.errors import OellmError
from oellm.executors import for_run
from oellm.plan.request import output_root
from oellm.rundir import RunDir, read_job_refs, read_json, utc_now
from oellm.runs import states as st
from oellm.runs.report import View, to_json, to_text

WATCH_INTERVAL_S = float(os.environ.get("OELLM_WATCH_INTERVAL_S", "15"))
RECENT_RUNS = 20
DRY_RUN_NOTE = ("dry run: nothing was pre-cached, proven or submitted here; run the schedule-eval command without "
                "--dry_run to start it\n")
_ETA_SAMPLE = 50  # done records read for the mean time per row


def _records(run: RunDir, skip: set[str]) -> tuple[dict[str, dict[str, Any]], float | None]:
    """State records of rows not in `skip` (done), and the mean wall time of a sample of done ones."""
    records: dict[str, dict[str, Any]] = {}
    walls: list[float] = []
    folder = str(run.states)
    try:
        names = [e.name for e in os.scandir(folder) if e.name.endswith(".json") and not e.name.startswith(".")]
    except FileNotFoundError:
        names = []
    for name in names:
        row_id = name[:-5]
        if row_id in skip and len(walls) >= _ETA_SAMPLE:
            continue
        try:
            rec = read_json(os.path.join(folder, name))  # no Path per file: 3000 records in a big run
        except (OSError, ValueError):
            continue
        if row_id in skip:
            if isinstance(rec.get("wall_s"), (int, float)):
                walls.append(float(rec["wall_s"]))
        else:
            records[row_id] = rec
    return records, (sum(walls) / len(walls) if walls else None)


def view(run_dir: Path) -> View:
    run = RunDir(Path(run_dir))
    manifest = run.read_manifest()
    rows = read_job_refs(run.jobs)
    done = run.done_ids()
    records, mean_s = _records(run, done)
    executor = for_run(run, manifest)
    subs = manifest.get("submissions") or []
    sched = executor.states(manifest, st.needed_elements(rows, done, subs))
    states = st.join(rows, done, records, subs, sched.states)
    if is_dry_run(manifest):  # its rows were never submitted, not held back by a queue limit
        states = [s._replace(reason="dry run: never submitted") if s.state == "not submitted" else s for s in states]
    return View(run, manifest, states, sched.note, sched.calls, mean_s,
                sched.warning, executor.max_parallel(manifest),
                _measured_wall(run) if manifest.get("prediction") else None)


def is_dry_run(manifest: dict[str, Any]) -> bool:
    """A `--dry_run` dir: nothing pre-cached, proven or submitted. Older dirs did not record it: a SLURM run
    with no submission and nothing held back by the queue limit was never submitted."""
    if "dry_run" in manifest:
        return bool(manifest["dry_run"])
    return (manifest.get("executor") == "slurm" and not manifest.get("submissions")
            and not manifest.get("held_back_tasks") and not manifest.get("cancelled"))


def _measured_wall(run: RunDir) -> float | None:
    """First row started to last row ended, from the state records (read only for runs the advisor
    planned, to compare with its prediction)."""
    from datetime import datetime

    spans = [(r.get("started"), r.get("ended")) for r in run.read_states().values()]
    starts = [datetime.fromisoformat(a) for a, _ in spans if a]
    ends = [datetime.fromisoformat(b) for _, b in spans if b]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else None


def pipe_print(text: str) -> None:
    """print, for output read through a pipe: when the reader has gone (`oellm status RUN | head`), stop
    quietly instead of a BrokenPipeError traceback (stdout now points at /dev/null for the exit flush)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None


def show(run_dir: Path, by: str | None, as_json: bool, watch: bool, out: Callable[[str], None] = pipe_print) -> View:
    """Print one refresh, or refresh every WATCH_INTERVAL_S until no row may still change."""
    if by not in (None, "model", "task"):
        raise OellmError(f"--by: {by!r} is not valid; use model or task")
    while True:
        v = view(run_dir)
        out(jsonlib.dumps({**to_json(v, by), "dry_run": is_dry_run(v.manifest)}, indent=1) if as_json else
            (DRY_RUN_NOTE if is_dry_run(v.manifest) else "") + to_text(v, by))
        # without a queue to ask, rows without a record stay "pending" after the run is over: wait on running ones
        waiting = st.UNFINISHED if for_run(v.run, v.manifest).tracks_queue else {"running"}
        if not watch or not any(s.state in waiting for s in v.states):
            return v
        time.sleep(WATCH_INTERVAL_S)
        if not as_json:
            out(f"--- {utc_now()}")


def list_runs(root: Path, out: Callable[[str], None] = pipe_print) -> None:
    """One line per recent run under `root`, counted from the run dir alone (no SLURM call per run)."""
    try:
        runs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                       and (p / "run.json").is_file()), key=lambda p: p.name, reverse=True)
    except FileNotFoundError:
        raise OellmError(f"output dir {root} does not exist; pass --output_dir or --run_dir") from None
    if not runs:
        out(f"no runs under {root}")
        return
    out(f"recent runs under {root} (newest first; `oellm status --run_dir DIR` asks SLURM):")
    for p in runs[:RECENT_RUNS]:
        run = RunDir(p)
        m = run.read_manifest()
        done = run.done_ids()
        recs, _ = _records(run, done)
        c: dict[str, int] = {"done": len(done)}
        for rec in recs.values():
            state = st.from_record(rec, "pending")[0]
            c[state] = c.get(state, 0) + 1
        n = int(m.get("n_rows") or 0)
        c["no record"] = max(0, n - sum(c.values()))
        flag = (" cancelled" if m.get("cancelled") else "") + (" dry run" if is_dry_run(m) else "")
        out(f"  {p.name}  {m.get('executor')}/{m.get('cluster')}{flag}  rows {n}: "
            + ", ".join(f"{k} {v}" for k, v in c.items() if v))
    if len(runs) > RECENT_RUNS:
        out(f"  ... {len(runs) - RECENT_RUNS} older run(s)")


def runs_root(output_dir: Path | None, cluster: str | None, clusters_file: Path | None = None) -> Path:
    """Where to list runs: as schedule-eval resolves it (--output_dir, $EVAL_OUTPUT_DIR/$USER, the
    cluster's output_root)."""
    if output_dir or os.environ.get("EVAL_OUTPUT_DIR"):
        return output_root(output_dir, None)
    try:
        conf: ClusterConfig = detect_cluster(load_clusters(clusters_file), cluster)
        return output_root(None, conf)
    except OellmError as e:  # listing runs needs only a folder: say that first
        raise OellmError(f"which runs? pass a run dir (`oellm status RUN_DIR`) or --output_dir DIR; {e}") from None


def cancel(run_dir: Path, out: Callable[[str], None] = print) -> None:
    """Stop every array task of a run (one scancel); rows already done keep their results."""
    run = RunDir(Path(run_dir))
    with run.locked():  # a resubmit in progress finishes first; then every job it submitted is cancelled too
        manifest = run.read_manifest()
        ids = for_run(run, manifest).cancel(run, manifest)
        run.update_manifest(cancelled=utc_now())
    out(f"cancelled {len(ids)} array job(s) of {run.path} ({', '.join(ids) or 'none submitted'}); "
        f"{len(run.done_ids())} result(s) kept; `oellm resubmit --run_dir {run.path}` submits the rest again")
