"""status and cancel of a run (resubmit: oellm.resubmit): the run dir joined with one batched SLURM query.

Each refresh reads the run dir (jobs.csv, results/ names, the state records of rows not done) and
asks SLURM once (`sacct` for all of the run's array jobs, from its creation time) plus, only when
accounting lags behind for some element, one `squeue`: never a call per row or per chunk.
"""

from __future__ import annotations

import json as jsonlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oellm import status as st
from oellm.errors import OellmError, SlurmError
from oellm.rundir import MANIFEST, RunDir, read_job_refs, read_json, utc_now
from oellm.status import View, job_ids, to_json, to_text

WATCH_INTERVAL_S = float(os.environ.get("OELLM_WATCH_INTERVAL_S", "15"))
RECENT_RUNS = 20
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


def _slurm_states(manifest: dict[str, Any], needed: set[str]) -> tuple[dict[str, str] | None, str, str, int]:
    """One sacct; one squeue only for needed elements sacct does not name yet (it lags by seconds).

    Returns (states or None, why SLURM could not be asked, a warning about a partial answer, calls)."""
    from oellm import slurm

    ids = job_ids(manifest)
    if not ids:
        return {}, "", "", 0
    try:
        # no retries: a status that waits 6 s on a down controller helps nobody; the user runs it again
        states = slurm.query_states(ids, manifest.get("created") or "now-30days", retries=0)
    except SlurmError as e:
        return None, f"SLURM accounting unavailable ({e})", "", 1
    lagging = needed - states.keys()
    if not lagging:
        return states, "", "", 1
    try:
        states.update(slurm.queue_states(ids, retries=0))
    except SlurmError as e:  # e.g. the controller restarts: sacct (slurmdbd) still answers for the rest
        return states, "", f"squeue failed ({e}): {len(lagging)} array task(s) accounting does not show yet " \
            "stay unknown", 2
    return states, "", "", 2


def view(run_dir: Path) -> View:
    run = RunDir(Path(run_dir))
    manifest = run.read_manifest()
    rows = read_job_refs(run.jobs)
    done = run.done_ids()
    records, mean_s = _records(run, done)
    local = manifest.get("executor") == "local"
    subs = [] if local else manifest.get("submissions") or []
    if local:
        slurm_states, note, warning, calls = None, "", "", 0
    else:
        slurm_states, note, warning, calls = _slurm_states(manifest, st.needed_elements(rows, done, subs))
    return View(run, manifest, st.join(rows, done, records, subs, slurm_states), note, calls, mean_s, warning)


def show(run_dir: Path, by: str | None, as_json: bool, watch: bool, out: Callable[[str], None] = print) -> View:
    """Print one refresh, or refresh every WATCH_INTERVAL_S until no row may still change."""
    if by not in (None, "model", "task"):
        raise OellmError(f"--by: {by!r} is not valid; use model or task")
    while True:
        v = view(run_dir)
        out(jsonlib.dumps(to_json(v, by), indent=1) if as_json else to_text(v, by))
        # a local run's rows without a record stay "pending" after its process is gone: wait on running ones
        waiting = {"running"} if v.manifest.get("executor") == "local" else st.UNFINISHED
        if not watch or not any(s.state in waiting for s in v.states):
            return v
        time.sleep(WATCH_INTERVAL_S)
        if not as_json:
            out(f"--- {utc_now()}")


def list_runs(root: Path, out: Callable[[str], None] = print) -> None:
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
        flag = " cancelled" if m.get("cancelled") else ""
        out(f"  {p.name}  {m.get('executor')}/{m.get('cluster')}{flag}  rows {n}: "
            + ", ".join(f"{k} {v}" for k, v in c.items() if v))
    if len(runs) > RECENT_RUNS:
        out(f"  ... {len(runs) - RECENT_RUNS} older run(s)")


def rows_in_flight(root: Path, retries: int = 2) -> dict[str, Path]:
    """Rows (not done) of SLURM runs under `root` whose array task is still queued or running -> their run.

    Re-running a schedule-eval command must not submit them a second time; one squeue for all runs."""
    from oellm import slurm

    runs: dict[Path, dict[str, Any]] = {}
    try:
        entries = sorted(e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        return {}
    for path in map(Path, entries):
        try:
            m = read_json(path / MANIFEST)
        except (OSError, ValueError):
            continue
        if m.get("executor") == "slurm" and m.get("submissions"):
            runs[path] = m
    active = slurm.queue_states([j for m in runs.values() for j in job_ids(m)], retries=retries)
    out: dict[str, Path] = {}
    for path, m in runs.items():
        tasks = {t for t, el in st.elements(m["submissions"]).items() if el in active}
        if tasks:
            run = RunDir(path)
            done = run.done_ids()
            out.update((r.row_id, path) for r in read_job_refs(run.jobs) if r.task_index in tasks
                       and r.row_id not in done)
    return out


# ---------------------------------------------------------------- commands (the CLI maps to these)


def status(run_dir: Path | None = None, by: str | None = None, json: bool = False, watch: bool = False,
           output_dir: Path | None = None, cluster: str | None = None) -> None:
    """Show how far a run is: rows pending, running, done, failed, timed out, out of memory, cancelled.

    Args:
        run_dir: The run directory; without it, list the recent runs under the output dir.
        by: Break the counts down per "model" or per "task".
        json: Print one JSON document (for scripts) instead of text.
        watch: Refresh until no row is pending or running.
        output_dir: Where to look for runs when no --run_dir is given (default: as schedule-eval).
        cluster: Cluster whose output_root to list when neither --output_dir nor $EVAL_OUTPUT_DIR is set.
    """
    if run_dir is not None:
        show(run_dir, by, json, watch)
        return
    list_runs(_output_root(output_dir, cluster))


def _output_root(output_dir: Path | None, cluster: str | None) -> Path:
    """The same resolution as schedule-eval (--output_dir, $EVAL_OUTPUT_DIR/$USER, cluster output_root)."""
    from oellm.clusters import detect_cluster, load_clusters
    from oellm.schedule import Request, output_root

    req = Request(output_dir=output_dir, cluster=cluster)
    if output_dir or os.environ.get("EVAL_OUTPUT_DIR"):
        from oellm.clusters import ClusterConfig

        return output_root(req, ClusterConfig(name="none"))
    try:
        return output_root(req, detect_cluster(load_clusters(None), cluster))
    except OellmError as e:  # listing runs needs only a folder: say that first
        raise OellmError(f"which runs? pass a run dir (`oellm status RUN_DIR`) or --output_dir DIR; {e}") from None


def slurm_manifest(run: RunDir, what: str) -> dict[str, Any]:
    manifest = run.read_manifest()
    if manifest.get("executor") == "local":
        raise OellmError(f"{run.path} is a local run: {what} applies to SLURM runs; a local run is stopped with "
                         "Ctrl-C and finished by running the same schedule-eval command again (done rows are skipped)")
    return manifest


def cluster_of(run: RunDir, manifest: dict[str, Any]):
    from oellm.clusters import build_cluster

    data = {k: v for k, v in (manifest.get("cluster_config") or {}).items() if k != "name"}
    return build_cluster(manifest.get("cluster") or "run", data, str(run.manifest))


def cancel(run_dir: Path) -> None:
    """Cancel every array job of a run with one scancel; rows already done keep their results.

    Args:
        run_dir: The run directory.
    """
    from oellm import slurm

    run = RunDir(Path(run_dir))
    manifest = slurm_manifest(run, "cancel")
    ids = job_ids(manifest)
    slurm.cancel(ids)
    run.update_manifest(cancelled=utc_now())
    print(f"cancelled {len(ids)} array job(s) of {run.path} ({', '.join(ids) or 'none submitted'}); "
          f"{len(run.done_ids())} result(s) kept; `oellm resubmit --run_dir {run.path}` submits the rest again")
