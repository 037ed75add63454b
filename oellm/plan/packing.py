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
from oellm.plan.timelimit import ESTIMATE, ESTIMATED, MIN_TIME_MINUTES, TimeLimit, task_rows
from oellm.plan.timelimit import time_limit as time_limit  # the estimate, decided there
from oellm.rows import EvalRow


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
    time_from: str = ESTIMATE  # where `minutes` comes from (oellm.plan.timelimit)
    notes: tuple[str, ...] = ()  # tasks whose rows do not fit a given limit

    @classmethod
    def build(cls, rows: Sequence[EvalRow], cluster: ClusterConfig, evals_per_task: int | None,
              slurm_max_array: int | None, queued_now: int, skipped: int = 0, dropped: int = 0,
              limit: TimeLimit = ESTIMATED) -> RunPlan:
        """`limit`: the run's time limit (`timelimit.for_request`); rows are packed to fit it."""
        per_task = limit.evals_per_task(cluster, evals_per_task)
        packed = pack(rows, per_task)
        n_tasks = count_tasks(packed)
        limits = limit.per_task(packed, cluster)
        most = max(limits.values(), default=limit.minutes or MIN_TIME_MINUTES)
        return cls(tuple(packed), per_task, n_tasks, most,
                   plan_submission(range(n_tasks), cluster, slurm_max_array, queued_now, image_keys(packed, cluster),
                                   {t: m for t, m in limits.items() if m < most}),
                   skipped, dropped, limit.source, tuple(limit.notes(packed, cluster, evals_per_task)))


def default_evals_per_task(cluster: ClusterConfig) -> int:
    """Without a given time limit: fill at most half of max_time (`TimeLimit.evals_per_task`)."""
    return ESTIMATED.evals_per_task(cluster, None)


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


def gpu_hours(rows: Sequence[EvalRow], cluster: ClusterConfig) -> float:
    """GPU-hours booked at `minutes_per_eval`: every task holds its GPUs while its busiest worker runs (all N
    GPUs are booked, in `spread` mode for every row, in `workers` mode for ceil(rows/N) rows)."""
    counts = task_rows(rows)
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
