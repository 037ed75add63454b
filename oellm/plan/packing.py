"""Packing rows into array tasks and array tasks into SLURM submissions (pure).

One array task evaluates several rows of the same model, so the model is loaded once per task;
arrays longer than MaxArraySize are split into chunks, each submitted as `--array=0-(n-1)%K` with
its offset passed to the worker; the queue limit caps how many tasks are submitted now.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from oellm.clusters import ClusterConfig
from oellm.errors import OellmError
from oellm.rows import EvalRow
from oellm.sitevalues import parse_time

MIN_TIME_MINUTES = 10


@dataclass(frozen=True)
class Chunk:
    """One `sbatch` call: array tasks offset .. offset+size-1, at most `throttle` running at once; `image`:
    the suite whose own image they run in (the script's second argument), "" for the cluster's image."""

    offset: int
    size: int
    throttle: int
    image: str = ""
    minutes: int | None = None  # a time limit below the script's (its fullest task's), given to sbatch

    @property
    def array(self) -> str:
        return f"0-{self.size - 1}%{self.throttle}"


@dataclass(frozen=True)
class SubmitPlan:
    chunks: tuple[Chunk, ...]
    n_tasks: int  # all array tasks of the run
    held_back: int  # tasks not submitted now because of the queue limit

    @property
    def submitted(self) -> int:
        return self.n_tasks - self.held_back


@dataclass(frozen=True)
class RunPlan:
    """Everything decided about a run before it exists: its packed rows, how they become array tasks
    and submissions, and what was left out; the manifest and the summary are written from it."""

    rows: tuple[EvalRow, ...]
    evals_per_task: int
    n_tasks: int
    minutes: int  # time limit of the fullest array task: the script's; smaller tasks' chunks ask less
    submission: SubmitPlan
    skipped: int = 0  # rows done or in flight elsewhere under the output root
    dropped: int = 0  # duplicate rows

    @classmethod
    def build(cls, rows: Sequence[EvalRow], cluster: ClusterConfig, evals_per_task: int | None,
              slurm_max_array: int | None, queued_now: int, skipped: int = 0, dropped: int = 0,
              minutes: int | None = None) -> RunPlan:
        """`minutes`: a time limit the user set (--time_limit), else one estimated from the packing."""
        per_task = evals_per_task or default_evals_per_task(cluster)
        packed = pack(rows, per_task)
        n_tasks = count_tasks(packed)
        limits = task_minutes(packed, cluster) if minutes is None else {}
        most = minutes or max(limits.values(), default=MIN_TIME_MINUTES)
        return cls(tuple(packed), per_task, n_tasks, most,
                   plan_submission(range(n_tasks), cluster, slurm_max_array, queued_now, image_keys(packed, cluster),
                                   {t: m for t, m in limits.items() if m < most}),
                   skipped, dropped)


def default_evals_per_task(cluster: ClusterConfig) -> int:
    """Fill at most half the wall-time limit, leaving room for a slow node or a bad estimate."""
    return max(1, math.floor(cluster.max_minutes / 2 / cluster.minutes_per_eval))


def pack(rows: Sequence[EvalRow], evals_per_task: int) -> list[EvalRow]:
    """Assign `task_index`: rows grouped by suite and model (in first-seen order), `evals_per_task` rows per
    task. Shard k of every evaluation of a model goes with the other k-th shards: shards run in parallel.
    A task holds one suite: a suite may run in an image of its own. Within a suite, full tasks come first and
    the smaller remainders after them, so tasks of one size (one time limit, one image) are contiguous and go
    in one sbatch call, not one per model."""
    by_model: dict[tuple[str, str, str, int | None], list[EvalRow]] = {}
    for r in rows:
        by_model.setdefault((r.suite, r.model, r.model_args, r.shard), []).append(r)
    suites = {s: i for i, s in enumerate(dict.fromkeys(r.suite for r in rows))}
    tasks = [g[start:start + evals_per_task] for g in by_model.values() for start in range(0, len(g), evals_per_task)]
    tasks.sort(key=lambda t: (suites[t[0].suite], -len(t)))  # stable: models keep their order
    return [r.at(index) for index, task in enumerate(tasks) for r in task]


def has_suite_images(cluster: ClusterConfig) -> bool:
    return bool(cluster.container and cluster.container.images)


def image_keys(rows: Sequence[EvalRow], cluster: ClusterConfig) -> dict[int, str]:
    """Array task -> the suite whose own image it runs in ("" for the cluster's image)."""
    if not has_suite_images(cluster):
        return {}
    return {r.task_index: cluster.image_key(r.suite) for r in rows}


def count_tasks(rows: Sequence[EvalRow]) -> int:
    return 1 + max((r.task_index for r in rows), default=-1)


def check_time_limit(value: str, cluster: ClusterConfig) -> int:
    """A --time_limit in minutes; more than the cluster's max_time would be refused by SLURM after queueing."""
    minutes = parse_time(value, "--time_limit")
    if minutes == 0:  # SLURM's "no limit": a job then waits for a partition whose MaxTime allows that
        raise OellmError(f"--time_limit {value}: SLURM reads 0 as no limit, which cluster {cluster.name}'s "
                         f"max_time {cluster.max_time} does not allow; give a limit up to it, or leave the flag "
                         "out to have each array task's limit estimated from its rows")
    if minutes > cluster.max_minutes:
        raise OellmError(f"--time_limit {value} exceeds cluster {cluster.name}'s max_time {cluster.max_time}")
    return minutes


def time_limit(cluster: ClusterConfig, evals_in_task: int) -> int:
    """Minutes for one array task: 1.5x the estimate of the rows its busiest worker takes (one worker per GPU
    in `workers` mode) plus a model load, within [10 min, max_time]."""
    per_worker = math.ceil(evals_in_task / cluster.row_workers)
    est = math.ceil(per_worker * cluster.minutes_per_eval * 1.5) + 5
    return min(cluster.max_minutes, max(MIN_TIME_MINUTES, est))


def task_minutes(rows: Sequence[EvalRow], cluster: ClusterConfig) -> dict[int, int]:
    """Array task -> its time limit, from its own rows (not the run's: a one-row task asks for one row's time)."""
    counts: dict[int, int] = {}
    for r in rows:
        counts[r.task_index] = counts.get(r.task_index, 0) + 1
    return {t: time_limit(cluster, n) for t, n in counts.items()}


def gpu_hours(rows: Sequence[EvalRow], cluster: ClusterConfig) -> float:
    """GPU-hours booked at `minutes_per_eval`: every task holds its GPUs while its busiest worker runs (all N
    GPUs are booked, in `spread` mode for every row, in `workers` mode for ceil(rows/N) rows)."""
    counts: dict[int, int] = {}
    for r in rows:
        counts[r.task_index] = counts.get(r.task_index, 0) + 1
    gpus = max(1, cluster.gpus_per_task)
    return sum(math.ceil(n / cluster.row_workers) for n in counts.values()) * cluster.minutes_per_eval / 60 * gpus


def plan_submission(task_ids: Sequence[int], cluster: ClusterConfig, slurm_max_array: int | None,
                    queued_now: int, images: Mapping[int, str] | None = None,
                    minutes: Mapping[int, int] | None = None) -> SubmitPlan:
    """Chunks for the given array task ids (contiguous runs of one image and one time limit: `minutes`, for
    tasks below the script's), within MaxArraySize and the queue limit.

    Array indices must stay below SLURM's MaxArraySize, so a chunk holds at most that many tasks
    (and at most the cluster file's `max_array_size`); each pending element counts against the
    queue limit, as QOS MaxSubmitJobs counts it.
    """
    size_cap = min(cluster.max_array_size, slurm_max_array or cluster.max_array_size)
    room = max(0, cluster.queue_limit - queued_now)
    throttle_cap = max(1, min(cluster.max_running, room or 1))
    chunks: list[Chunk] = []
    left = room
    images, minutes = images or {}, minutes or {}
    keys = {i: (images.get(i, ""), minutes.get(i)) for i in task_ids} if minutes else images
    for start, length in _runs(sorted(task_ids), keys):
        pos = start
        while pos < start + length and left > 0:
            size = min(size_cap, start + length - pos, left)
            chunks.append(Chunk(offset=pos, size=size, throttle=min(size, throttle_cap), image=images.get(pos, ""),
                                minutes=minutes.get(pos)))
            pos += size
            left -= size
    submitted = sum(c.size for c in chunks)
    return SubmitPlan(chunks=tuple(chunks), n_tasks=len(task_ids), held_back=len(task_ids) - submitted)


def _runs(ids: Sequence[int], keys: Mapping[int, object]) -> list[tuple[int, int]]:
    """[0,1,2,5,6] -> [(0, 3), (5, 2)]: contiguous ranges of one key (image, time limit), so a resubmit of
    scattered tasks stays compact."""
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and runs[-1][0] + runs[-1][1] == i and keys.get(i, "") == keys.get(runs[-1][0], ""):
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs
