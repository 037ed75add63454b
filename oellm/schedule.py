"""schedule-eval: request -> plan -> cache -> run dir -> executor, in one direction (DESIGN section 2).

Nothing here knows which executor it drives: SLURM and the local machine differ only behind
`oellm.executors.Executor`.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from oellm import __version__, claims
from oellm.cache.preflight import Proof
from oellm.cache.workerpaths import worker_paths
from oellm.clusters import ClusterConfig, detect_cluster, load_clusters
from oellm.container import Binds, inherited_env, plan_binds
from oellm.errors import OellmError
from oellm.executors import Capacity, Executor, NothingStarted, for_cluster
from oellm.ledger import Ledger
from oellm.plan.overrides import with_overrides
from oellm.plan.packing import RunPlan, gpu_hours
from oellm.plan.request import Request, include_paths, output_root
from oellm.plan.timelimit import for_request
from oellm.render import render_sbatch
from oellm.rows import EvalRow, shot_label
from oellm.rundir import RunDir, creating, new_run_stamp, write_jobs, write_json
from oellm.shipping import SHIP_DIR, ship
from oellm.sitevalues import format_minutes, nodelist_note
from oellm.suites import ask_images_of


@contextmanager
def _rows_kept() -> Iterator[None]:
    """Planning builds objects it keeps until the run dir is written and frees the rest by reference count:
    Python's cycle collector, triggered by the allocations, would walk every row again and again for cycles
    that are not there (a fifth of a 100k-row dry run). Paused for planning only, not for the pre-cache."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def cluster_of(req: Request) -> ClusterConfig:
    """The cluster a request runs on (named or detected) with its one-run overrides (a follower asks too)."""
    return with_overrides(detect_cluster(load_clusters(req.clusters_file), req.cluster), req)


def schedule(req: Request, log: Callable[[str], None] = print) -> Path | None:
    """Plan, write the run dir, then hand it to the cluster's executor; returns the run dir. The rows it
    schedules are claimed (`oellm.claims`) from before it asks which are done or in flight until their
    submission is on record (a local run: until it ended), so two oellm commands never evaluate a row twice."""
    with claims.held() as held:
        return _schedule(req, log, held)


def _schedule(req: Request, log: Callable[[str], None], held: claims.Claims) -> Path | None:
    cluster = cluster_of(req)
    limit = for_request(req, cluster)  # the one time limit per array task, before anything is planned
    executor = for_cluster(cluster, req.workers)
    includes = include_paths(req, cluster)
    # --venv_path's python answers for a suite missing here; nothing proves the workers' install on a dry run or
    # with --skip_checks (no pre-cache/preflight), so there a shipped task index may answer (oellm.suites)
    ask_images_of(cluster, req.worker_python(), req.dry_run or not (req.precache and req.preflight))
    root = output_root(req.output_dir, cluster)
    if root.exists() and not root.is_dir():
        raise OellmError(f"--output_dir {root}: not a directory; give the folder run dirs go into")
    with _rows_kept():
        rows, dropped = req.plan(includes)
        total = len(rows)
        if not req.force:  # done anywhere under the root: the ledger's answer (a shard of a done whole too)
            rows = Ledger.under(root).todo(rows)
        if dropped:
            log(f"dropped {dropped} duplicate row(s)")
        if total - len(rows):
            log(f"skipping {total - len(rows)} of {total} row(s) with results already under {root} (--force re-runs "
                "them)")
        if rows and not (req.dry_run or req.download_only):
            rows = held.take(root, rows, log)  # ours now: what is done or in flight cannot change under us
            if rows and not req.force:  # done by another holder while we planned
                rows = Ledger.under(root).todo(rows)
        if rows and not req.force:
            rows = executor.in_flight(root, rows, req.dry_run, log)
    if req.download_only:
        from oellm.cache.precache import precache

        precache(rows, cluster, includes, log=log)
        return None
    if not rows:
        log(f"nothing to do: all {total} row(s) already have results under {root} or are queued or running there")
        return None
    if req.evals_per_task is not None and req.evals_per_task < 1:
        raise OellmError(f"--evals_per_task: must be >= 1, got {req.evals_per_task}")
    capacity = Capacity()
    if not req.dry_run:
        executor.check_ready()
        capacity = executor.capacity()
    skipped = total - len(rows)
    with _rows_kept():
        rows, prediction = advise(req, rows, cluster, root, executor, log)
        plan = RunPlan.build(rows, cluster, req.evals_per_task, capacity.max_array, capacity.queued,
                             skipped=skipped, dropped=dropped, limit=limit)
    root.mkdir(parents=True, exist_ok=True)  # the workers write here: it is bound into the container
    # binds only matter inside a container (and finding local data files reads every task's YAML)
    bind_paths = worker_paths(rows, cluster, includes, root) if cluster.container else []
    binds = plan_binds(cluster, bind_paths) if cluster.container else Binds()
    note = nodelist_note(f"cluster {cluster.name}", cluster.sbatch_options)
    if note:
        log(note)
    for b in binds.unresolved:
        log(f"note: bind {b} of cluster {cluster.name} uses a variable not set here; paths under it are bound "
            "separately, and the preflight runs without it")
    python = req.worker_python()  # --venv_path's, else this one
    proof = Proof()
    if req.precache and not req.dry_run:
        proof = ensure_cached(rows, cluster, includes, binds, req.preflight, log, python)

    with creating(root, new_run_stamp(root)) as (tmp, final):
        write_jobs(tmp.jobs, plan.rows)
        ship(tmp.path / SHIP_DIR)  # the workers run this oellm, whatever the image or venv holds
        inherited = inherited_env(cluster, os.environ)
        tmp.script.write_text(render_sbatch(cluster, run_dir=str(final), job_name=f"oellm-{final.name}",
                                            time_minutes=plan.minutes, python=python, binds=binds,
                                            inherited=inherited))
        write_json(tmp.manifest, {**manifest(req, cluster, executor, includes, plan), "binds": [*binds.site, *binds.paths],
                                  # what the script was rendered from: a resubmit of a moved dir renders it again
                                  "run_dir": str(final), "dry_run": req.dry_run,
                                  "script": {"python": python, "inherited": inherited, "bind_paths": bind_paths},
                                  "model_revisions": proof.revisions, "worker_versions": proof.versions,
                                  "prediction": prediction})
    run = RunDir(final)
    log(summary(run, cluster, executor, plan))
    if req.dry_run:
        log(f"dry run: nothing started; the sbatch script is {run.script}")
        try:
            executor.check_ready()
        except OellmError as e:
            log(f"note: a real submission would stop here: {e}")
        return final
    try:
        with run.locked():
            executor.submit(run, plan.submission, log)
    except NothingStarted:
        shutil.rmtree(run.path, ignore_errors=True)  # nothing went in: leave no run behind
        raise
    if plan.submission.held_back:
        log(f"queue limit: {plan.submission.held_back} of {plan.n_tasks} array task(s) not submitted yet; "
            "resubmit them later")
    return run.path


def advise(req: Request, rows: list[EvalRow], cluster: ClusterConfig, root: Path, executor: Executor,
           log: Callable[[str], None]) -> tuple[list[EvalRow], dict | None]:
    """--num_shards auto: shard by the advisor's choice; a dry run (or a deadline) shows its predictions.
    Returns the rows to plan and the chosen prediction (recorded in run.json, compared by `status`)."""
    if "num_shards" in getattr(req, "HIDDEN", ()):  # oellm bench: no shards
        return rows, None
    auto = req.shard_count() is None
    if req.deadline and not auto:
        raise OellmError("--deadline: give it with --num_shards auto (it picks the shard count that meets it)")
    if not (auto or req.dry_run):
        return rows, None
    from oellm.plan import advisor

    wholes = list({r.whole.row_id: r.whole for r in rows}.values()) if any(r.num_shards for r in rows) else rows
    hist = advisor.history(root, cluster)
    parallel = executor.max_parallel({"cluster_config": asdict(cluster)})
    predictions = advisor.predict(wholes, cluster, hist,
                                  for_request(req, cluster).evals_per_task(cluster, req.evals_per_task), parallel)
    chosen = advisor.choose(predictions, req.deadline) if auto else \
        next((p for p in predictions if p.num_shards == req.shard_count()), None)
    unit = "GPU" if cluster.gpus_per_task else "CPU"
    log("\n".join(advisor.table(predictions, hist, chosen and chosen.num_shards, unit)))
    if auto and chosen:
        rows = [s for w in wholes for s in w.shards(chosen.num_shards)]
    return rows, chosen and {"num_shards": chosen.num_shards, "wall_s": round(chosen.wall_s, 1),
                             "gpu_hours": round(chosen.gpu_hours, 3), "parallel": parallel}


def ensure_cached(rows: Sequence[EvalRow], cluster: ClusterConfig, includes: Sequence[str], binds: Binds,
                  preflight: bool, log: Callable[[str], None], python: str = sys.executable) -> Proof:
    """Pre-cache, then prove offline, through the workers' own container or `python` (a --venv_path venv's),
    that they find everything: compute nodes cannot fetch what is missing, so a gap found here costs seconds
    instead of a queue wait."""
    from oellm.cache.precache import precache
    from oellm.cache.preflight import prove

    revisions = precache(rows, cluster, includes, log=log)
    if not preflight:
        return Proof(revisions=revisions)
    proof = prove(rows, cluster, includes, revisions, binds, python=python)
    proof.revisions = revisions
    where = (f"through {cluster.container.runtime} exec {cluster.container.image}" if cluster.container
             else "in a fresh interpreter" if python == sys.executable else f"with {python}")
    if proof.missing:
        raise OellmError(f"nothing submitted: {len(proof.missing)} item(s) would fail on the compute nodes "
                         f"(preflight {where}): " + "; ".join(proof.missing) + "; --no_preflight skips this check")
    if proof.checked:
        log(f"preflight: {proof.checked} item(s) load offline {where} ({proof.seconds:.1f} s)")
    else:
        log(f"preflight: all {proof.remembered} item(s) proven earlier {where}; nothing to load")
    for line in proof.code:  # which oellm the image imported: the copy shipped into the run dir
        log(f"preflight: {line}")
    return proof


def manifest(req: Request, cluster: ClusterConfig, executor: Executor, includes: Sequence[str],
             plan: RunPlan) -> dict:
    from oellm.cache.fetch import versions
    from oellm.task_groups import groups_file

    lm_eval_version = versions()["lm_eval"]
    return {
        "created": datetime.now().isoformat(timespec="seconds"), "cluster": cluster.name,
        "executor": executor.name, "cluster_config": asdict(cluster),
        "oellm_version": __version__, "lm_eval_version": lm_eval_version, "login_versions": versions(), "command_line": req.command_line,
        "include_paths": list(includes), "task_groups_file": str(groups_file(req.task_groups_file).resolve()), "batch_size": req.batch_size or cluster.batch_size,
        "log_samples": req.log_samples, "limit": req.limit, "n_rows": len(plan.rows),
        "max_batch_size": req.max_batch_size, "bootstrap_iters": req.bootstrap_iters,
        "confirm_run_unsafe_code": req.confirm_run_unsafe_code, "lm_eval_options": req.row_options(),
        "parallelize": cluster.spreads, "gpu_mode": cluster.gpu_mode if cluster.gpus_per_task > 1 else None,
        "evals_per_task": plan.evals_per_task, "n_tasks": plan.n_tasks, "time_limit": format_minutes(plan.minutes),
        "time_limit_from": plan.time_from,
        "submissions": [], "held_back_tasks": plan.submission.held_back, "model_revisions": {},
        "slurm_overrides": {**req.cluster_fields(), **({"time_limit": req.time_limit} if req.time_limit else {})},
    }


def _gpu_use(cluster: ClusterConfig) -> str:
    return ("one model spread over them" if cluster.spreads
            else "one worker per GPU, each taking the task's rows in turn")


def summary(run: RunDir, cluster: ClusterConfig, executor: Executor, plan: RunPlan) -> str:
    rows = plan.rows
    models = len({(r.model, r.model_args) for r in rows})
    tasks = len({r.task for r in rows})
    shots = [shot_label(n) for n in sorted({r.n_shot for r in rows}, key=lambda n: -1 if n is None else n)]
    sharded = sorted({r.num_shards for r in rows if r.num_shards})
    evaluations = len({r.whole.row_id for r in rows}) if sharded else len(rows)
    unit = "GPU" if cluster.gpus_per_task else "CPU"
    whole = [r for r in rows if not r.num_shards or r.shard == 0]  # a sharded evaluation costs about one row
    hours = gpu_hours(whole, cluster)
    amount = f"{hours:.1f} {unit}-hours" if hours >= 1 else f"{hours * 60:.0f} {unit}-minutes"
    return "\n".join([
        f"run dir:   {run.path}",
        f"cluster:   {cluster.name} ({executor.label})",
        *([f"from the environment: {', '.join(f'{k}={v}' for k, v in cluster.from_environment.items())}"] if cluster.from_environment else []),
        f"rows:      {len(rows)} = {models} model(s) x {tasks} task(s) x shots {','.join(map(str, shots))}"
        + (f" ({plan.skipped} already done or in flight, skipped)" if plan.skipped else "")
        + (f"; {evaluations} evaluation(s) in {'/'.join(map(str, sharded))} shards each" if sharded else ""),
        f"packing:   up to {plan.evals_per_task} row(s) of one model per array task -> {plan.n_tasks} array task(s)",
        *plan.notes,
        *executor.describe(plan),
        f"estimate:  {amount} booked at {cluster.minutes_per_eval} min per evaluation"
        + (f" ({cluster.gpus_per_task} GPUs per task: {_gpu_use(cluster)})" if cluster.gpus_per_task > 1 else ""),
    ])
