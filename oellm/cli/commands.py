"""The subcommands: one typed function each, whose docstring is its help. A function that takes one
dataclass (a `Request`, `Resubmit`, `Collect`) gets that dataclass's fields as its flags, so an option
is declared once, where the library reads it. Bodies only call into the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oellm.cli.upstream_flags import UpstreamRequest
    from oellm.plan.bench import Bench
    from oellm.plan.request import Selection
    from oellm.results.collect import Collect
    from oellm.results.oellm_eval_csv import UpstreamCollect
    from oellm.rundir import RunDir
    from oellm.runs.resubmit import Resubmit

# Where each command's options dataclass lives: imported only for the command that runs, so `oellm --help`
# does not import the planning and results stacks.
OPTIONS = {"Request": "oellm.plan.request", "Selection": "oellm.plan.request", "Bench": "oellm.plan.bench",
           "Collect": "oellm.results.collect", "Resubmit": "oellm.runs.resubmit",
           "UpstreamCollect": "oellm.results.oellm_eval_csv", "UpstreamRequest": "oellm.cli.upstream_flags"}


def schedule_eval(flags: UpstreamRequest) -> None:
    """Plan model x task x shot evaluations, write a run dir, and submit SLURM arrays (or run locally)."""
    request = flags.to_request()  # oellm-eval's spellings end here, at the command line's edge
    if request.follow:  # keep looking for new checkpoints (oellm.follow)
        from oellm.follow.loop import follow

        follow(request)
        return
    from oellm.schedule import schedule

    schedule(request)


def bench(request: Bench) -> None:
    """Measure throughput, latency and energy of models: SLURM arrays (or this machine), like evaluations.

    One row per model x batch size x lengths x backend; results land beside scores in collect-results.
    """
    from oellm.schedule import schedule

    schedule(request)


def check_cache(selection: Selection) -> None:
    """Check, offline, that every model and dataset of a planned run is in the cluster's cache.

    Loads each model's config and tokenizer and each task's dataset offline, as a worker would: through
    the cluster's container (image, binds, env) when it has one; prints what is missing and exits 2.
    """
    from oellm.cache.preflight import prove
    from oellm.clusters import detect_cluster, load_clusters
    from oellm.errors import OellmError
    from oellm.plan.request import include_paths, plan_rows
    from oellm.suites import ask_images_of

    conf = detect_cluster(load_clusters(selection.clusters_file), selection.cluster)
    includes = include_paths(selection, conf)
    ask_images_of(conf)
    rows, _ = plan_rows(selection, includes)
    proof = prove(rows, conf, includes, remember=False)
    missing = proof.missing
    if missing:
        raise OellmError(f"{len(missing)} problem(s) the workers would hit offline (a model or dataset missing "
                         "from the cache: `oellm schedule-eval ... --download_only` on a login node fetches it): "
                         + "; ".join(missing))
    where = f" through {conf.container.runtime} exec {conf.container.image}" if conf.container else ""
    print(f"cache complete: {len({r.model for r in rows})} model(s), {len({r.task for r in rows})} task(s) "
          f"load offline{where} on cluster {conf.name}")
    for line in proof.code:
        print(line)


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
    from oellm.follow import loop as follow
    from oellm.follow.state import Follower
    from oellm.runs.view import list_runs, runs_root, show

    if run_dir is not None and Follower.is_follower(run_dir):  # a follower dir (schedule-eval --follow)
        print(follow.describe(Follower(run_dir), detail=True))
    elif run_dir is not None:
        show(run_dir, by, json, watch)
    else:
        root = runs_root(output_dir, cluster)
        list_runs(root)
        for f in follow.followers(root):
            print(follow.describe(f))


def resubmit(options: Resubmit) -> None:
    """Submit again the array tasks of a run that have rows failed, timed out, cancelled or never submitted.

    Tasks SLURM may still run are never submitted twice; rows already done are skipped by the worker.
    Without options, a task that timed out gets twice its last time limit (up to the cluster's
    max_time), one that SLURM killed for host memory twice its --mem, and one whose row ran out of GPU
    memory half its integer batch size.
    """
    from oellm.runs.resubmit import resubmit as resubmit_run

    resubmit_run(options)


def cancel(run_dir: Path) -> None:
    """Cancel every array job of a run with one scancel; rows already done keep their results.
    Given a follower dir (schedule-eval --follow), stop the follower.

    Args:
        run_dir: The run directory, or a follower dir.
    """
    from oellm.follow.state import Follower

    if Follower.is_follower(run_dir):
        from oellm.follow.loop import cancel as cancel_follower

        cancel_follower(run_dir)
        return
    from oellm.runs.view import cancel as cancel_run

    cancel_run(run_dir)


def collect_results(options: Collect) -> None:
    """Collect every metric of one or more runs into a tidy table, a leaderboard, plots, a missing list."""
    from oellm.results.collect import collect_results as collect
    from oellm.results.collect import run_dirs_of
    from oellm.worker.merge import merge_pending
    from oellm.worker.task import write_result

    for run in run_dirs_of(options):  # sharded evaluations no worker merged (a crash, a failed merge)
        for row_id in merge_pending(run, write_result):
            print(f"merged the shards of {row_id} in {run.path}", file=sys.stderr)
    collect(options, row_states=_row_states if options.html else None)


def _row_states(run: RunDir) -> dict[str, tuple[str, str]]:
    """Each planned row's state and why, as `oellm status` decides them (the --html report marks cells)."""
    from oellm.errors import OellmError
    from oellm.runs.view import view

    try:
        return {s.row.row_id: (s.state, s.reason) for s in view(run.path).states}
    except OellmError as e:  # no run.json, an unreadable jobs.csv: the report still lists the rows as missing
        print(f"oellm: {run.path}: no row states ({e})", file=sys.stderr)
        return {}


def collect(options: UpstreamCollect) -> None:
    """oellm-eval's collect: one CSV row per model, task and shots (model_name,task,n_shot,performance,
    metric_name) from a tree of run dirs; --check writes what is missing as a CSV for --eval_csv_path."""
    from oellm.results.oellm_eval_csv import collect as collect_csv

    collect_csv(options)


def worker(run_dir: Path, index: int | None = None, index_offset: int = 0) -> None:
    """Evaluate the rows of one array task of a run (what each SLURM array task runs).

    Args:
        run_dir: The run directory (holds jobs.csv and run.json).
        index: Array task index; defaults to $SLURM_ARRAY_TASK_ID.
        index_offset: Added to the index; a run split into several SLURM arrays passes each chunk's start.
    """
    # `python -m oellm worker` (what array tasks run) goes to run_task directly, without jsonargparse
    from oellm.worker.__main__ import run_task

    run_task(run_dir, index, index_offset)


# `schedule` and `collect` are oellm-eval's names (its users' scripts run unchanged under either entry point)
COMMANDS = {"schedule-eval": schedule_eval, "schedule": schedule_eval, "bench": bench, "check-cache": check_cache,
            "status": status, "resubmit": resubmit, "cancel": cancel, "collect-results": collect_results,
            "collect": collect, "worker": worker}
ALIASES = {"schedule": "schedule-eval"}
