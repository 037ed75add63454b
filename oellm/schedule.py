"""schedule-eval: request -> plan -> run dir -> executor, in one direction (DESIGN section 2)."""

from __future__ import annotations

import getpass
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from oellm import __version__, arrays, plan
from oellm.clusters import (
    LOCAL,
    ClusterConfig,
    detect_cluster,
    expand,
    format_minutes,
    load_clusters,
    require_resolved,
)
from oellm.errors import OellmError
from oellm.render import render_sbatch
from oellm.rundir import EvalRow, RunDir, creating, existing_results, new_run_stamp, write_jobs, write_json


@dataclass
class Request:
    """Everything `oellm schedule-eval` was asked; see `oellm.cli.schedule_eval` for the meaning of each."""

    models: str | list[str] | None = None
    tasks: str | list[str] | None = None
    n_shot: int | str | list[int] = 0
    eval_csv_path: Path | None = None
    limit: float | None = None
    lm_eval_include_path: str | list[str] | None = None
    cluster: str | None = None
    clusters_file: Path | None = None
    output_dir: Path | None = None
    checkpoint_stride: int = 1
    last_n_checkpoints: int | None = None
    evals_per_task: int | None = None
    batch_size: str | None = None
    log_samples: bool = False
    workers: int | None = None
    force: bool = False
    dry_run: bool = False
    precache: bool = True
    download_only: bool = False
    command_line: list[str] = field(default_factory=lambda: list(sys.argv))


def output_root(req: Request, cluster: ClusterConfig) -> Path:
    """--output_dir, else $EVAL_OUTPUT_DIR/$USER, else the cluster's default."""
    if req.output_dir:
        return Path(req.output_dir).expanduser().resolve()
    if os.environ.get("EVAL_OUTPUT_DIR"):
        return Path(os.environ["EVAL_OUTPUT_DIR"]).expanduser().resolve() / getpass.getuser()
    if not cluster.output_root:
        raise OellmError(f"cluster {cluster.name} has no output_root; pass --output_dir or set EVAL_OUTPUT_DIR")
    return Path(expand(cluster.output_root, f"cluster {cluster.name}.output_root")).resolve()


def include_paths(req: Request) -> list[str]:
    paths = [Path(p).expanduser().resolve() for p in plan.split_list(req.lm_eval_include_path)]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise OellmError(f"--lm_eval_include_path: no such directory: {', '.join(missing)}")
    return [str(p) for p in paths]


def plan_rows(req: Request, includes: Sequence[str]) -> tuple[list[EvalRow], int]:
    """Rows from flags or from an eval CSV (not both), with every task name validated."""
    limit = plan.check_limit(req.limit)
    if req.eval_csv_path and (req.models or req.tasks):
        raise OellmError("give either --eval_csv_path or --models/--tasks, not both")
    if req.eval_csv_path:
        rows, dropped = plan.rows_from_csv(Path(req.eval_csv_path), limit), 0
    else:
        if not req.models or not req.tasks:
            raise OellmError("nothing to evaluate: pass --models and --tasks (and --n_shot), or --eval_csv_path FILE")
        shots = plan.parse_shots(req.n_shot)
        if not shots:
            raise OellmError("--n_shot: give at least one shot count, e.g. --n_shot 0,5")
        rows, dropped = plan.build_rows(plan.parse_models(req.models), plan.parse_tasks(req.tasks), shots, limit,
                                        req.checkpoint_stride, req.last_n_checkpoints)
    from oellm.tasks import validate_tasks

    validate_tasks(sorted({r.task for r in rows}), list(includes))
    return rows, dropped


def schedule(req: Request, log: Callable[[str], None] = print) -> Path | None:
    """Plan, write the run dir, then submit (SLURM) or run (local); returns the run dir."""
    cluster = detect_cluster(load_clusters(req.clusters_file), req.cluster)
    includes = include_paths(req)
    rows, dropped = plan_rows(req, includes)
    root = output_root(req, cluster)
    total = len(rows)
    local = cluster.name == LOCAL
    done = set() if req.force else existing_results(root)
    if done:
        rows = [r for r in rows if r.row_id not in done]
    skipped = total - len(rows)
    if dropped:
        log(f"dropped {dropped} duplicate row(s)")
    if skipped:
        log(f"skipping {skipped} of {total} row(s) with results already under {root} (--force re-runs them)")
    if rows and not local and not req.force:
        rows = _skip_in_flight(rows, root, req.dry_run, log)
        skipped = total - len(rows)
    if req.download_only:
        from oellm.cache import precache

        precache(rows, cluster, includes, log=log)
        return None
    if not rows:
        log(f"nothing to do: all {total} row(s) already have results under {root} or are queued or running there")
        return None
    if req.evals_per_task is not None and req.evals_per_task < 1:
        raise OellmError(f"--evals_per_task: must be >= 1, got {req.evals_per_task}")
    per_task = req.evals_per_task or arrays.default_evals_per_task(cluster)
    rows = arrays.pack(rows, per_task)
    n_tasks = arrays.count_tasks(rows)
    minutes = arrays.time_limit(cluster, min(per_task, len(rows)))
    slurm_max, queued = None, 0
    if not local and not req.dry_run:
        from oellm import slurm

        require_resolved(cluster)
        slurm_max, queued = slurm.max_array_size(), slurm.queued_jobs()
    sub = arrays.plan_submission(range(n_tasks), cluster, slurm_max, queued)
    revisions = ensure_cached(rows, cluster, includes, log) if req.precache and not req.dry_run else {}

    with creating(root, new_run_stamp(root)) as (tmp, final):
        write_jobs(tmp.jobs, rows)
        tmp.script.write_text(render_sbatch(cluster, run_dir=str(final), job_name=f"oellm-{final.name}",
                                            time_minutes=minutes, python=sys.executable, extra_binds=(str(root),)))
        write_json(tmp.manifest, {**manifest(req, cluster, includes, rows, per_task, n_tasks, minutes, sub),
                                  "model_revisions": revisions})
    run = RunDir(final)
    log(summary(run, cluster, rows, per_task, n_tasks, minutes, sub, skipped))
    if req.dry_run:
        log(f"dry run: nothing {'run' if local else 'submitted'}; the sbatch script is {run.script}")
        if not local:
            try:
                require_resolved(cluster)
            except OellmError as e:
                log(f"note: a real submission would stop here: {e}")
        return final
    if local:
        return _run_local(run, req, cluster, rows, n_tasks, log)
    return _submit(run, sub, log)


def _skip_in_flight(rows: list[EvalRow], root: Path, dry_run: bool, log: Callable[[str], None]) -> list[EvalRow]:
    """Drop rows that an earlier run under `root` still has queued or running: a re-run never duplicates them."""
    from oellm.lifecycle import rows_in_flight

    try:
        busy = rows_in_flight(root, retries=0 if dry_run else 2)
    except OellmError as e:  # SlurmError, or no squeue on this host
        if not dry_run:
            raise
        log(f"note: cannot ask SLURM which rows earlier runs still run ({e}); a real submission would")
        return rows
    keep = [r for r in rows if r.row_id not in busy]
    if len(keep) < len(rows):
        runs = sorted({str(busy[r.row_id]) for r in rows if r.row_id in busy})
        more = f" and {len(runs) - 3} more" if len(runs) > 3 else ""
        log(f"skipping {len(rows) - len(keep)} row(s) queued or running in earlier run(s): {', '.join(runs[:3])}"
            f"{more} (`oellm status` shows them)")
    return keep


def ensure_cached(rows: list[EvalRow], cluster: ClusterConfig, includes: Sequence[str],
                  log: Callable[[str], None]) -> dict[str, str]:
    """Pre-cache, then prove offline that a worker finds everything: compute nodes cannot fetch what is
    missing, so a gap found here costs seconds instead of a queue wait and a failed array."""
    from oellm.cache import check_cache, precache

    revisions = precache(rows, cluster, includes, log=log)
    missing = check_cache(rows, cluster, includes, revisions)
    if missing:
        raise OellmError(f"nothing submitted: {len(missing)} item(s) would be missing on the offline compute "
                         "nodes: " + "; ".join(missing))
    return revisions


def _submit(run: RunDir, sub: arrays.SubmitPlan, log: Callable[[str], None]) -> Path:
    from oellm.executors.slurm import submit_chunks

    if not sub.chunks:
        log(f"queue limit reached: no array task submitted; {sub.held_back} task(s) wait in {run.path}")
        return run.path
    try:
        submit_chunks(run, sub, log=log)
    except OellmError:
        if not run.read_manifest().get("submissions"):
            shutil.rmtree(run.path, ignore_errors=True)  # nothing went in: leave no run behind
        raise
    if sub.held_back:
        log(f"queue limit: {sub.held_back} of {sub.n_tasks} array task(s) not submitted yet; resubmit them later")
    return run.path


def _run_local(run: RunDir, req: Request, cluster: ClusterConfig, rows: list[EvalRow], n_tasks: int,
               log: Callable[[str], None]) -> Path:
    from oellm.executors.local import run_tasks, slot_envs, visible_gpus

    env = {k: expand(v, f"cluster {cluster.name}.env.{k}") for k, v in cluster.env.items()}
    envs = slot_envs(req.workers or cluster.local_workers, visible_gpus(), env)
    log(f"running {n_tasks} task(s) on this machine with {len(envs)} worker(s)")
    res = run_tasks(run, range(n_tasks), envs, n_rows=len(rows), log=log)
    from oellm.results import score_table

    done = len(run.done_ids())
    log(f"finished: {done} of {len(rows)} row(s) done; results in {run.results}")
    if done:
        log(score_table(run, rows))
    if res.interrupted:
        raise OellmError(f"interrupted: {done} of {len(rows)} row(s) done in {run.path}; "
                         "run the same command again to evaluate the rest")
    if done < len(rows):
        raise OellmError(f"{len(rows) - done} row(s) failed; see the state records in {run.states} "
                         f"and the logs in {run.logs}")
    return run.path


def manifest(req: Request, cluster: ClusterConfig, includes: Sequence[str], rows: list[EvalRow], per_task: int,
             n_tasks: int, minutes: int, sub: arrays.SubmitPlan) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        lm_eval_version = version("lm_eval")
    except PackageNotFoundError:
        lm_eval_version = None
    return {
        "created": datetime.now().isoformat(timespec="seconds"), "cluster": cluster.name,
        "executor": "local" if cluster.name == LOCAL else "slurm", "cluster_config": asdict(cluster),
        "oellm_version": __version__, "lm_eval_version": lm_eval_version, "command_line": req.command_line,
        "include_paths": list(includes), "batch_size": req.batch_size or cluster.batch_size,
        "log_samples": req.log_samples, "limit": req.limit, "n_rows": len(rows), "evals_per_task": per_task,
        "n_tasks": n_tasks, "time_limit": format_minutes(minutes), "submissions": [],
        "held_back_tasks": sub.held_back, "model_revisions": {},
    }


def summary(run: RunDir, cluster: ClusterConfig, rows: list[EvalRow], per_task: int, n_tasks: int, minutes: int,
            sub: arrays.SubmitPlan, skipped: int) -> str:
    models = len({(r.model, r.model_args) for r in rows})
    tasks = len({r.task for r in rows})
    shots = sorted({r.n_shot for r in rows})
    gpu_h = len(rows) * cluster.minutes_per_eval / 60 * max(1, cluster.gpus_per_task)
    lines = [
        f"run dir:   {run.path}",
        f"cluster:   {cluster.name} ({'local executor' if cluster.name == LOCAL else 'SLURM'})",
        f"rows:      {len(rows)} = {models} model(s) x {tasks} task(s) x shots {','.join(map(str, shots))}"
        + (f" ({skipped} already done or in flight, skipped)" if skipped else ""),
        f"packing:   up to {per_task} row(s) of one model per array task -> {n_tasks} array task(s)"
        + ("" if cluster.name == LOCAL else f", time limit {format_minutes(minutes)} each"),
    ]
    if cluster.name != LOCAL:
        arrays_txt = ", ".join(f"--array={c.array} (offset {c.offset})" for c in sub.chunks[:3])
        more = f", ... {len(sub.chunks) - 3} more" if len(sub.chunks) > 3 else ""
        lines.append(f"arrays:    {len(sub.chunks)} sbatch call(s): {arrays_txt}{more}"
                     + (f"; {sub.held_back} task(s) held back by the queue limit" if sub.held_back else ""))
    amount = f"{gpu_h:.1f} {'GPU' if cluster.gpus_per_task else 'CPU'}-hours" if gpu_h >= 1 else \
        f"{gpu_h * 60:.0f} {'GPU' if cluster.gpus_per_task else 'CPU'}-minutes"
    lines.append(f"estimate:  {amount} at {cluster.minutes_per_eval} min per evaluation")
    return "\n".join(lines)
