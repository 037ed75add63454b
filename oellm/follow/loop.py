"""Where a follower's looks run, and its status and cancel.

- Locally (any executor but SLURM): in the foreground, one progress line per look, until --follow_until
  (exit 0), Ctrl-C (state kept, exit 0) or `oellm cancel`.
- On SLURM, login nodes kill long-lived processes: the first look runs here (so a bad flag or a missing
  dataset shows at once, and the pre-cache may use the network); then a small CPU job does each next look
  and resubmits itself with `sbatch --begin=now+INTERVAL` until --follow_until. `oellm cancel` leaves a
  marker that a look reads before it resubmits, and scancels the waiting job.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from oellm import slurm
from oellm.clusters import ClusterConfig, parse_time, require_resolved
from oellm.errors import OellmError
from oellm.follow.look import Outcome, look
from oellm.follow.progress import progress, short
from oellm.follow.retry import retry_failed
from oellm.follow.state import Follower, FollowState, Until, iso, now, parse_duration, request_data
from oellm.plan.request import Request, output_root
from oellm.schedule import cluster_of, schedule

CANCELLED = "cancelled"  # marker file: read before every resubmission
JOB_MINUTES = 60  # one look: planning, pre-cache, preflight and sbatch calls
JOB_MEM = "2G"
MIN_JOB_INTERVAL_S = 60.0  # on SLURM a look is a job (queue wait, planning): not one a second
SHOWN = 20  # scheduled checkpoints `oellm status FOLLOWER` lists, newest last


def follow(req: Request, log: Callable[[str], None] = print) -> Path:
    """`schedule-eval --follow`: make the follower dir, then look here (and, on SLURM, hand over to a job)."""
    if req.eval_csv_path or not req.models:
        raise OellmError("--follow watches the dirs of --models (training runs); it does not take --eval_csv_path")
    for flag in ("dry_run", "download_only"):
        if getattr(req, flag):
            raise OellmError(f"--follow and --{flag} do not go together: a follower schedules what it finds")
    interval = parse_duration(req.follow_interval, "--follow_interval")
    until = Until.parse(req.follow_until, now())
    cluster = cluster_of(req)
    if cluster.executor == "slurm":
        floor = min_job_interval()
        if interval < floor:
            raise OellmError(f"--follow_interval {req.follow_interval}: on SLURM each look is a job of its own; "
                             f"give at least {floor:g}s (e.g. 5m)")
        require_resolved(cluster)  # the follower job itself goes to the cluster's partition and account
    root = output_root(req.output_dir, cluster)
    # the looks (in a job on a compute node, whose hostname no cluster pattern matches) use what was resolved here
    data = {**request_data(req), "output_dir": str(root), "cluster": cluster.name, "follow": False}
    follower = Follower.create(root, FollowState(request=data, cluster=cluster.name, executor=cluster.executor,
                                                 interval_s=interval, until=dataclasses.asdict(until), created=now()))
    log(f"follow: {follower.path} (`oellm status {follower.path}`; `oellm cancel {follower.path}` stops it)")
    try:
        state = step(follower, log, cluster if cluster.executor == "slurm" else None)
    except OellmError:
        if not follower.load().looks:  # the first look refused the request: leave nothing behind
            shutil.rmtree(follower.path, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        _end(follower, "stopped by Ctrl-C", log)
        return follower.path
    if cluster.executor != "slurm":
        foreground(follower, log, state)
    return follower.path


def min_job_interval() -> float:
    """--follow_interval's floor on SLURM; $OELLM_FOLLOW_MIN_INTERVAL_S lowers it (tests on a local cluster)."""
    try:
        return float(os.environ.get("OELLM_FOLLOW_MIN_INTERVAL_S", MIN_JOB_INTERVAL_S))
    except ValueError:
        return MIN_JOB_INTERVAL_S


def foreground(follower: Follower, log: Callable[[str], None], state: FollowState) -> None:
    """Sleep, look, sleep, ... here until the end; Ctrl-C or `oellm cancel` ends it cleanly (state kept)."""
    try:
        while not state.ended:
            while now() < (state.next_look or 0):
                if cancelled(follower):
                    _end(follower, "cancelled", log)
                    return
                time.sleep(min(1.0, max(0.0, (state.next_look or 0) - now())))
            state = step(follower, log)
    except KeyboardInterrupt:
        _end(follower, "stopped by Ctrl-C", log)


def _end(follower: Follower, why: str, log: Callable[[str], None]) -> None:
    with follower.changing() as state:
        state.ended, state.next_look, state.job_id = why, None, None
    log(f"follow: {why}; {len(state.scheduled)} checkpoint(s) scheduled in all")


def cancelled(follower: Follower) -> bool:
    return (follower.path / CANCELLED).exists()


def step(follower: Follower, log: Callable[[str], None], cluster: ClusterConfig | None = None) -> FollowState:
    """One look, then what comes next: the end, the next look's time, or (with `cluster`) the next job."""
    with follower.changing() as state:
        if state.ended or cancelled(follower):
            if not state.ended:
                state.ended, state.next_look, state.job_id = "cancelled", None, None
                log(f"follow: cancelled; {len(state.scheduled)} checkpoint(s) scheduled in all")
            return state
        end, final = state.end, False
        req = state.to_request()
        try:
            final = (end.at is not None and now() >= end.at) or (end.job is not None and job_ended(end.job))
            if final and end.job and state.looks == 0:
                log(f"follow: job {end.job} is not in the queue (ended, or no such job): this look is the last")
            out = look(req, state, final, Path(req.output_dir or "."), schedule, log)
            out.resubmitted, gave_up = retry_failed(state, log)  # what failed on the nodes, by resubmit's rules
            out.gave_up += gave_up
        except OellmError as e:
            if state.looks == 0:  # the first look, where the user waits: a bad flag or path is theirs to fix
                raise
            out = Outcome(error=f"{iso(now())}: {e}")  # a run dir gone for a moment: look again next time
            state.last_error = out.error
        # after the training: until its last checkpoint is in, and until what failed to schedule went in or
        # was given up (MAX_FAILURES looks): the last look's refused submission is retried, never dropped
        if final and not ((end.job and state.waiting) or state.failures or out.resubmitted):
            state.ended = f"job {end.job} ended and its checkpoints are scheduled" if end.job else \
                f"reached --follow_until {end.text}"
            state.next_look = state.job_id = None
        else:
            state.next_look = now() + state.interval_s
            if end.at is not None:
                state.next_look = min(state.next_look, end.at)
            if cluster is not None and not cancelled(follower):
                try:
                    state.job_id = submit_job(follower, cluster, state)
                    state.jobs.append(state.job_id)
                except OellmError as e:
                    state.ended, state.job_id, state.next_look = f"could not submit the next look: {e}", None, None
    log(progress(state, out))
    if state.ended and state.waiting:
        log("follow: still not complete at the end: " + "; ".join(f"{short(k)}: {w['why']}"
                                                                  for k, w in state.waiting.items()))
    return state


def job_ended(job: str) -> bool:
    """The followed job (the training) is no longer in the queue: squeue forgets it once it ended."""
    return not slurm.queue_states([job])


def submit_job(follower: Follower, cluster: ClusterConfig, state: FollowState) -> str:
    """Write the follower script (once) and queue the next look for `state.next_look`."""
    if not follower.script.exists():
        follower.script.write_text(render_job(follower, cluster))
    wait = max(1, round((state.next_look or now()) - now()))
    return slurm.submit(follower.script, array="0", name=f"oellm-{follower.path.name}",
                        options=[f"--begin=now+{wait}"])


def render_job(follower: Follower, cluster: ClusterConfig) -> str:
    """The follower job: one CPU, a little memory, the cluster's partition, account and qos; the workers'
    preamble (templates/_preamble.j2: offline, the login node's cache variables, PYTHONSAFEPATH, the oellm
    shipped into the follower's dir first on PYTHONPATH, run from that dir), with this python, which has
    oellm's own dependencies (a --venv_path venv need not), outside any container."""
    from oellm.container import fixed_env, inherited_env
    from oellm.render import _environment, sbatch_flags
    from oellm.shipping import SHIP_DIR
    from oellm.sitevalues import env_order

    minutes = min(JOB_MINUTES, parse_time(cluster.max_time, f"cluster {cluster.name}.max_time"))
    cpu = dataclasses.replace(cluster, gpus_per_task=0, gres=None, cpus_per_task=1, mem=JOB_MEM, max_requeues=0,
                              sbatch_options={}, container=None)
    fixed = fixed_env(cpu, inherited_env(cpu, os.environ))
    code = _ship_with_data(follower.path / SHIP_DIR)
    return _environment().get_template("follow.sbatch.j2").render(
        job_name=f"oellm-{follower.path.name}", sbatch_flags=sbatch_flags(cpu, minutes),
        log_dir=str(follower.logs), modules=list(cluster.modules),
        offline=[(k, v) for k, v in fixed.items() if k not in cluster.env],
        env=env_order(cluster.env, f"cluster {cluster.name}.env"), python=sys.executable,
        code_dir=str(code), follow_dir=str(follower.path))


def _ship_with_data(dest: Path) -> Path:
    """The oellm shipped for the follower job with the data files a look reads (clusters.json, templates/):
    a wheel's package holds them in `oellm/_data/`, a source checkout beside the package, where the copy
    would not find them."""
    from oellm.resources import data_path
    from oellm.shipping import ship

    ship(dest)
    for name in ("clusters.json", "templates"):
        src, out = data_path(name), dest / "oellm" / "_data" / name
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copyfile)(src, out)
    return dest


# ---------------------------------------------------------------- status and cancel


def describe(follower: Follower, detail: bool = False) -> str:
    """A follower for `oellm status`: its job, next look, what it scheduled, what waits or was given up."""
    s = follower.load()
    models = s.request.get("models")
    if s.ended:
        where = f"ended ({s.ended})"
    elif cancelled(follower):
        where = "cancelled"
    else:
        where = (f"job {s.job_id}{_gone(s)}, " if s.job_id else "") + f"next look {iso(s.next_look) or '-'}"
    head = (f"  {follower.path.name}  follower/{s.cluster}  {where}; follows {models}; every {s.interval_s:g} s"
            + (f" until {s.until.get('text')}" if s.until.get("text") else "")
            + f"; looks {s.looks}, scheduled {len(s.scheduled)}, waiting {len(s.waiting)}, given up {len(s.given_up)}")
    if not detail:
        return head
    lines = [head]
    done = list(s.scheduled.items())
    if len(done) > SHOWN:
        lines.append(f"    ... {len(done) - SHOWN} checkpoint(s) scheduled earlier (all in {follower.state_file})")
    lines += [f"    scheduled {short(k)} (step {v.get('step')}) at {v['at']} -> {v.get('run')}" for k, v in done[-SHOWN:]]
    lines += [f"    waiting   {short(k)} since {iso(v['since'])}: {v['why']}" for k, v in s.waiting.items()]
    lines += [f"    given up  {short(k)}: {why}" for k, why in s.given_up.items()]
    if s.last_error:
        lines.append(f"    last error: {s.last_error}")
    return "\n".join(lines)


def _gone(s: FollowState) -> str:
    """A follower job that left the queue without queueing the next look (killed, or it failed) says so."""
    try:
        if s.next_look and now() > s.next_look + 60 and not slurm.queue_states([s.job_id or ""]):
            return " NOT IN THE QUEUE: it ended without a next look; see its log in logs/"
    except OellmError:
        pass
    return ""


def followers(root: Path) -> list[Follower]:
    try:
        return sorted((Follower(p) for p in root.iterdir() if Follower.is_follower(p)),
                      key=lambda f: f.path.name, reverse=True)
    except FileNotFoundError:
        return []


def cancel(path: Path, out: Callable[[str], None] = print) -> None:
    """Stop a follower: the marker first (a look now running will not resubmit), then scancel its job."""
    follower = Follower(path)
    state = follower.load()
    (follower.path / CANCELLED).touch()
    ids = [j for j in dict.fromkeys([*state.jobs, *([state.job_id] if state.job_id else [])]) if j]
    if ids and state.executor == "slurm":
        slurm.cancel(ids)
    out(f"cancelled follower {follower.path}" + (f" (job {state.job_id})" if state.job_id else "")
        + f"; the {len(state.runs)} run(s) it scheduled go on (`oellm cancel RUN` stops one)")


def main(argv: list[str] | None = None) -> None:
    """The follower job's entry: `python -m oellm.follow FOLLOWER_DIR` (one look, then the next job)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m oellm.follow FOLLOWER_DIR", file=sys.stderr)
        sys.exit(2)
    follower = Follower(Path(args[0]))
    try:
        state = follower.load()
        cluster = None
        if state.executor == "slurm":  # the job's look queues the next one
            cluster = cluster_of(state.to_request())
        step(follower, print, cluster)
    except OellmError as e:
        print(f"oellm: error: {e}", file=sys.stderr)
        sys.exit(2)
