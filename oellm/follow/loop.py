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
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from oellm import slurm
from oellm.clusters import ClusterConfig, parse_time, require_resolved
from oellm.errors import OellmError
from oellm.follow.look import Outcome, look
from oellm.follow.state import Follower, FollowState, Until, iso, now, parse_duration, request_data
from oellm.plan.request import Request, output_root
from oellm.schedule import cluster_of, schedule

CANCELLED = "cancelled"  # marker file: read before every resubmission
JOB_MINUTES = 60  # one look: planning, pre-cache, preflight and sbatch calls
JOB_MEM = "2G"
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
        except OellmError as e:
            if state.looks == 0:  # the first look, where the user waits: a bad flag or path is theirs to fix
                raise
            out = Outcome(error=f"{iso(now())}: {e}")  # a run dir gone for a moment: look again next time
            state.last_error = out.error
        if final and not (end.job and state.waiting):  # after the training: until its last checkpoint is in
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
        log("follow: still not complete at the end: " + "; ".join(f"{_short(k)}: {w['why']}"
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
    """The follower job: one CPU, a little memory, the cluster's partition, account and qos; offline like
    the workers (what a look would have to fetch, it names instead)."""
    from oellm.offline import OFFLINE_ENV
    from oellm.render import _environment, sbatch_flags

    minutes = min(JOB_MINUTES, parse_time(cluster.max_time, f"cluster {cluster.name}.max_time"))
    cpu = dataclasses.replace(cluster, gpus_per_task=0, gres=None, cpus_per_task=1, mem=JOB_MEM, max_requeues=0,
                              sbatch_options={})
    return _environment().get_template("follow.sbatch.j2").render(
        job_name=f"oellm-{follower.path.name}", sbatch_flags=sbatch_flags(cpu, minutes),
        log_dir=str(follower.logs), offline=sorted(OFFLINE_ENV.items()), python=sys.executable,
        follow_dir=str(follower.path))


def _short(k: str) -> str:
    path = k.split(",", 1)[0]
    return "/".join(Path(path).parts[-2:]) if Path(path).parent.name == "hf" else Path(path).name


def progress(state: FollowState, out: Outcome) -> str:
    """One line per look: what it scheduled, what waits and why, and what comes next."""
    parts = [f"follow: look {state.looks} at {time.strftime('%H:%M:%S', time.localtime(state.last_look))}"]
    if out.new:
        parts.append(f"scheduled {len(out.new)} new ({', '.join(map(_short, out.new[:4]))}"
                     f"{', ...' if len(out.new) > 4 else ''})" + (f" in {out.run}" if out.run else ""))
    else:
        parts.append("nothing new")
    if state.waiting:
        k, w = next(iter(state.waiting.items()))
        parts.append(f"{len(state.waiting)} not complete yet ({_short(k)}: {w['why']})")
    if out.error:
        parts.append(f"error: {out.error}")
    parts.append(f"{len(state.scheduled)} scheduled in all")
    if state.given_up:
        parts.append(f"{len(state.given_up)} given up")
    if state.ended:
        parts.append(f"ended: {state.ended}")
    elif state.next_look:
        nxt = time.strftime("%H:%M:%S", time.localtime(state.next_look))
        parts.append(f"next look {nxt}" + (f" (job {state.job_id})" if state.job_id else ""))
    return "; ".join(parts)


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
    lines += [f"    scheduled {_short(k)} (step {v.get('step')}) at {v['at']} -> {v.get('run')}" for k, v in done[-SHOWN:]]
    lines += [f"    waiting   {_short(k)} since {iso(v['since'])}: {v['why']}" for k, v in s.waiting.items()]
    lines += [f"    given up  {_short(k)}: {why}" for k, why in s.given_up.items()]
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
