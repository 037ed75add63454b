"""resubmit: the array tasks of a run that have rows to redo, with escalation for timeouts and OOM.

Built on one status refresh (`oellm.runs.view.view`), so a task SLURM may still run is never submitted
twice. Tasks are grouped by the sbatch options they need (a longer time limit for those that timed
out, more GPUs when asked), one `sbatch` per group and chunk; the workers skip rows already done.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oellm.clusters import ClusterConfig
from oellm.errors import OellmError
from oellm.executors import for_run
from oellm.plan.overrides import SlurmOverrides, with_overrides
from oellm.plan.packing import has_suite_images, image_keys, plan_submission
from oellm.plan.timelimit import for_resubmit
from oellm.render import render_for_path, rendered_for
from oellm.rundir import RunDir, atomic_open, read_jobs
from oellm.runs import states as st
from oellm.runs.report import last_minutes, last_option
from oellm.runs.view import is_dry_run, view
from oellm.sitevalues import TIME_KEYS, format_minutes, gres_for
from oellm.slurm import task_elements


@dataclass
class Resubmit(SlurmOverrides):
    """Which run to resubmit, and what to change for its resubmitted array tasks.

    Args:
        run_dir: The run directory.
        dry_run: Print what would be submitted, submit nothing.
        time_limit: Time limit for every resubmitted task (HH:MM:SS or D-HH:MM:SS), instead of doubling
            the limit of tasks that timed out.
        gpus_per_task: GPUs for every resubmitted task (`--gres=gpu:N`): with --gpu_mode spread one model over
            them (after out-of-memory rows), with workers (the run's default) one worker per GPU.
        batch_size: lm-eval batch size for the resubmitted tasks (default: halve an integer batch size for
            tasks with an out-of-memory row).
        infra_only: Only tasks that failed because of the node or the scheduler (NODE_FAIL, PREEMPTED,
            BOOT_FAIL), which are safe to retry unchanged, e.g. from cron.
    """

    run_dir: Path | None = None
    dry_run: bool = False
    batch_size: str | None = None
    infra_only: bool = False


def resubmit(opts: Resubmit) -> None:
    """Submit the array tasks with rows to redo, none that the scheduler may still run."""
    if opts.run_dir is None:
        raise OellmError("which run? pass it: `oellm resubmit RUN_DIR`")
    run = RunDir(Path(opts.run_dir))
    with run.locked():  # two resubmits (cron and by hand) never see the same tasks as unsubmitted
        _resubmit(run, opts)


def _resubmit(run: RunDir, opts: Resubmit) -> None:
    manifest = run.read_manifest()
    executor = for_run(run, manifest)
    executor.require_control(run, "resubmit")
    if is_dry_run(manifest):  # its models were never pre-cached nor proven, its placeholders never checked
        raise OellmError(f"{run.path} is a dry run: nothing was pre-cached or proven for it; run its schedule-eval "
                         "command again without --dry_run (run.json command_line) to submit it through those checks")
    cluster = with_overrides(executor.cluster, opts)  # validates the overrides like a clusters file
    fixed = for_resubmit(opts, cluster).minutes  # None: each task keeps its limit, twice that after a timeout
    gpus_per_task, infra_only = opts.gpus_per_task, opts.infra_only
    if gpus_per_task is not None and gpus_per_task < 1:
        raise OellmError(f"--gpus_per_task: must be >= 1, got {gpus_per_task}")
    v = view(run.path)
    if v.slurm_note:
        raise OellmError(f"cannot tell which tasks SLURM still runs: {v.slurm_note}; try again later")
    todo, busy = st.resubmittable_tasks(v.states, infra_only)
    if busy:
        print(f"{len(busy)} task(s) with rows to redo still pending/running or not yet in accounting: left alone")
    if not todo:
        print(f"nothing to resubmit in {run.path}: " + ", ".join(f"{k} {n}" for k, n in st.counts(v.states).items()))
        return
    groups = _groups(v.states, todo, manifest, cluster, fixed, gpus_per_task, _override_flags(opts))
    spread = None if gpus_per_task is None and opts.gpu_mode is None else cluster.spreads
    overrides = _overrides(v.states, set(todo), manifest, opts.batch_size, spread)
    capacity = executor.capacity()
    queued = capacity.queued
    plans = []
    # a suite with an image of its own goes in its own chunks (jobs.csv is read only then)
    images = image_keys(read_jobs(run.jobs), cluster) if has_suite_images(cluster) else {}
    for options, tasks in groups.items():
        plan = plan_submission(tasks, cluster, capacity.max_array, queued, images)
        queued += plan.submitted
        plans.append((list(options), plan))
        kinds = ", ".join(f"{k} {n}" for k, n in st.counts(s for s in v.states if s.row.task_index in set(tasks))
                          .items() if n)
        print(f"resubmitting {plan.submitted} of {len(tasks)} array task(s) ({kinds}) in {len(plan.chunks)} sbatch "
              "call(s): " + ", ".join(f"tasks {c.offset}-{c.offset + c.size - 1}" for c in plan.chunks)
              + (f" {' '.join(options)}" if options else ""))
        if plan.held_back:
            print(f"queue limit: {plan.held_back} task(s) not submitted now; run resubmit again later")
    note = _oom_note(v.states, set(todo), manifest, overrides, spread)
    if note:
        print(note)
    if overrides:
        print("worker settings: " + "; ".join(f"task {t}: " + ", ".join(f"{k}={v}" for k, v in o.items())
                                             for t, o in overrides.items()))
    if opts.dry_run:
        _follow_the_dir(run, manifest, executor.cluster, dry_run=True)
        print("dry run: nothing submitted")
        return
    if overrides:  # before submitting: the workers read run.json when they start
        old = manifest.get("task_overrides") or {}
        run.update_manifest(task_overrides={**old, **{t: {**old.get(t, {}), **o} for t, o in overrides.items()}})
    _follow_the_dir(run, manifest, executor.cluster)
    run.update_manifest(cancelled=None)
    for options, plan in plans:
        if plan.chunks:
            executor.submit(run, plan, print, options=options)
    covered = task_elements(run.read_manifest().get("submissions") or [])
    run.update_manifest(held_back_tasks=int(manifest.get("n_tasks") or 0) - len(covered))


def _follow_the_dir(run: RunDir, manifest: dict[str, Any], cluster: ClusterConfig, dry_run: bool = False) -> None:
    """A run dir copied or moved elsewhere resubmits into itself: its script is rendered again for its current
    path (worker, logs, binds), never left pointing at the original."""
    old = manifest.get("run_dir") or rendered_for(run.script.read_text())
    new = str(run.path.resolve())
    if old is None or old == new:
        return
    if dry_run:
        print(f"this run dir was made at {old}: a resubmit renders its script again for {new}")
        return
    with atomic_open(run.script) as fh:
        fh.write(render_for_path(cluster, manifest, old, new, sys.executable))
    run.update_manifest(run_dir=new)
    print(f"this run dir was made at {old}: its script now names {new}, so the workers write here")


def _override_flags(opts: SlurmOverrides) -> list[str]:
    """sbatch flags for --partition, --account, --qos, --mem and --sbatch_option: on sbatch's command line
    they win over the script's #SBATCH lines, and each submission's record keeps them. A time is not among
    them: it is the limit `for_resubmit` decides, and `_groups` gives it."""
    fields = opts.cluster_fields()
    flags = [f"--{k}={fields[k]}" for k in ("partition", "account", "qos", "mem") if k in fields]
    for key, value in (fields.get("sbatch_options") or {}).items():
        if key.replace("_", "-") in TIME_KEYS:
            continue
        flags.append(f"--{key.replace('_', '-')}" + (f"={value}" if value != "" else ""))
    return flags


def double_mem(value: str | None) -> str | None:
    """`64G` -> `128G` (SLURM's units; a bare number is megabytes); None when it cannot be read."""
    m = re.fullmatch(r"(\d+)([KMGT]?)B?", (value or "").strip(), re.IGNORECASE)
    return None if m is None else f"{2 * int(m.group(1))}{m.group(2).upper() or 'M'}"


def _groups(states: list[st.RowState], todo: list[int], manifest: dict[str, Any], cluster: ClusterConfig,
            fixed: int | None, gpus: int | None, extra: Sequence[str] = ()) -> dict[tuple[str, ...], list[int]]:
    """sbatch options -> the tasks that need them, in task order."""
    timed_out = {s.row.task_index for s in states if s.state == "timeout"}
    out_of_host_memory = {s.row.task_index for s in states if st.host_oom(s)}
    last, last_mem, own = last_minutes(manifest), last_option(manifest, "--mem="), last_option(manifest, "--time=")
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    capped, stuck = [], []
    for t in todo:
        options = []
        if fixed is not None:
            options.append(f"--time={format_minutes(fixed)}")
        elif t in timed_out:
            before = last.get(t, cluster.max_minutes)
            if before >= cluster.max_minutes:
                capped.append(t)
            options.append(f"--time={format_minutes(min(cluster.max_minutes, 2 * before))}")
        elif own.get(t):  # not timed out: the limit of its last submission (its own, below the script's)
            options.append(f"--time={own[t]}")
        if gpus is not None:
            options.append(f"--gres={gres_for(cluster.sbatch_options.get('gres') or cluster.gres, gpus)}")
        if t in out_of_host_memory and not any(o.startswith("--mem=") for o in extra):
            mem = double_mem(last_mem.get(t) or cluster.mem)  # SLURM killed it for host memory: ask for twice
            options += [f"--mem={mem}"] if mem else []
            stuck += [] if mem else [t]
        groups[tuple([*options, *extra])].append(t)
    if stuck:
        print(f"note: {len(stuck)} task(s) ran out of host memory and the cluster sets no --mem to double "
              "(mem); pass --mem, e.g. --mem 128G")
    if capped:
        print(f"note: {len(capped)} timed-out task(s) already had the cluster's max_time {cluster.max_time}: they "
              "get it again; schedule their rows with a smaller --evals_per_task to give each row more time")
    return dict(groups)


def cuda_oom(s: st.RowState) -> bool:
    """Out of GPU memory inside a row: a smaller batch helps (host memory: more --mem does)."""
    return s.state == "oom" and not st.host_oom(s)


def _overrides(states: list[st.RowState], todo: set[int], manifest: dict[str, Any], batch_size: str | None,
               spread: bool | None) -> dict[str, dict[str, Any]]:
    """Per-task settings for the workers: an explicit --batch_size, else half the size after an OOM;
    `spread` (None: unchanged): a model spread over the task's GPUs, or one worker per GPU."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    if batch_size is not None:
        value: str | int = int(batch_size) if str(batch_size).isdigit() else batch_size
        for t in sorted(todo):
            out[str(t)]["batch_size"] = value
    else:
        old = manifest.get("task_overrides") or {}
        for t in sorted({s.row.task_index for s in states if cuda_oom(s) and s.row.task_index in todo}):
            size = (old.get(str(t)) or {}).get("batch_size", manifest.get("batch_size"))
            if str(size).isdigit() and int(size) > 1:
                out[str(t)]["batch_size"] = int(size) // 2
    if spread is not None:
        for t in sorted(todo):
            out[str(t)]["parallelize"] = spread
    return dict(out)


def _oom_note(states: list[st.RowState], todo: set[int], manifest: dict[str, Any],
              overrides: dict[str, dict[str, Any]], spread: bool | None) -> str | None:
    """Out-of-memory tasks that would get nothing different (batch "auto" or 1, no --gpus_per_task)."""
    oom = {s.row.task_index for s in states if cuda_oom(s) and s.row.task_index in todo}
    stuck = sorted(t for t in oom if "batch_size" not in overrides.get(str(t), {}))
    if not stuck or spread:
        return None
    old = manifest.get("task_overrides") or {}
    sizes = sorted({str(old.get(str(t), {}).get("batch_size", manifest.get("batch_size"))) for t in stuck})
    return (f"note: {len(stuck)} task(s) ran out of memory with a batch size that cannot be halved "
            f"({', '.join(sizes)}); pass --batch_size N, or --gpus_per_task N --gpu_mode spread to spread the model")
