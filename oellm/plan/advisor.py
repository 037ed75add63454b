"""How many shards: predicted wall time and GPU-hours of a sweep for K = 1, 2, 4, 8, ... shards, from
what earlier runs under the same output root measured (seconds per evaluation of each task and shot
count, and the fixed cost of an array task: start-up and model load), else the cluster's minutes_per_eval.

Sharding divides an evaluation's compute by K but pays the fixed cost in every shard's array task
(Evalchemy's Leonardo figures: 8 shards cost 5% more GPU-hours than 1, 128 shards 3.2x): a user with a
deadline takes the smallest K that meets it, one with a budget the knee of the curve.
"""

from __future__ import annotations

import heapq
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oellm.clusters import ClusterConfig, parse_time
from oellm.errors import OellmError
from oellm.rows import EvalRow
from oellm.rundir import read_json

START_S = 20.0  # an array task's start before the model loads (Python, imports); no record measures it
HISTORY_FILES = 3000  # newest result files read for history: enough for medians, bounded for a login node
CHOICES = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class History:
    seconds: dict[tuple[str, int], float]  # (task, shots) -> median compute seconds of one whole evaluation
    overhead_s: float  # fixed cost of an array task: start-up and model load
    measured: bool  # False: nothing earlier under the root, cluster defaults only
    # what every shard pays in full however small its part: building all requests (the few-shot contexts
    # of every document) and scoring them; only the rest (the model's work) divides by K
    shard_fixed_s: dict[tuple[str, int], float] = field(default_factory=dict)
    merge_s: float = 0.0  # scoring the merged shards once, by the last shard's task


@dataclass(frozen=True)
class Prediction:
    num_shards: int
    wall_s: float
    gpu_hours: float


def history(root: Path, cluster: ClusterConfig) -> History:
    """Medians over the newest result files under `root` (oellm provenance): seconds inside the suite per
    evaluation; an array task's fixed cost = its process time at its last row minus its rows' suite time;
    a shard's fixed part from unsharded evaluations (suite time minus model time) and earlier shards."""
    try:
        files = sorted(root.glob("*/results/*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        files = []
    whole: dict[tuple[str, int], list[float]] = {}
    shards: list[tuple[tuple[str, int], float, int]] = []
    tasks: dict[tuple, list[float]] = {}  # (run, array task, restart) -> [max process_s, sum of suite s]
    loads: list[float] = []
    merges: list[float] = []
    fixed_parts: dict[tuple[str, int], list[float]] = {}
    for path in files[:HISTORY_FILES]:
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue
        prov = data.get("oellm") or {}
        row, secs = prov.get("row") or {}, prov.get("lm_eval_s")
        if isinstance(prov.get("merge_s"), (int, float)):
            merges.append(prov["merge_s"])
        if not isinstance(secs, (int, float)) or row.get("task") is None or "merged_from" in prov:
            continue
        key = (row["task"], int(row.get("n_shot") or 0))
        if prov.get("num_shards"):
            shards.append((key, secs, int(prov["num_shards"])))
        else:
            whole.setdefault(key, []).append(secs)
            model_s = (data.get("timing") or {}).get("model_s")
            if isinstance(model_s, (int, float)):  # the rest of the suite's time every shard would pay
                fixed_parts.setdefault(key, []).append(max(0.0, secs - model_s))
        if isinstance(prov.get("process_s"), (int, float)):
            t = tasks.setdefault((path.parent.parent, prov.get("array_task_id"), prov.get("slurm_restart_count")),
                                 [0.0, 0.0])
            t[0], t[1] = max(t[0], prov["process_s"]), t[1] + secs
        load = (prov.get("model_load") or {}).get("seconds")
        if isinstance(load, (int, float)):
            loads.append(load)
    seconds = {key: statistics.median(v) for key, v in whole.items()}
    extra: dict[tuple[str, int], list[float]] = {k: list(v) for k, v in fixed_parts.items()}
    for key, secs, k in shards:  # a shard's time s = c + (W - c) / k, so c = (k s - W) / (k - 1)
        if key in seconds and k > 1:
            extra.setdefault(key, []).append(min(seconds[key], max(0.0, (k * secs - seconds[key]) / (k - 1))))
    fixed = [p - s for p, s in tasks.values() if p > s]
    overhead = statistics.median(fixed) if fixed else START_S + (statistics.median(loads) if loads else 0.0)
    return History(seconds, overhead, bool(seconds), {k: statistics.median(v) for k, v in extra.items()},
                   statistics.median(merges) if merges else 0.0)


def predict(rows: Sequence[EvalRow], cluster: ClusterConfig, hist: History, evals_per_task: int, parallel: int,
            choices: Sequence[int] = CHOICES) -> list[Prediction]:
    """For each K of whole `rows`: shards packed as the run packs them; array task time = overhead + its busiest
    worker's rows (all rows with one worker); wall = longest slot when `parallel` tasks run at once (longest
    task first); GPU-hours = all task time x the GPUs each task books."""
    default = cluster.minutes_per_eval * 60
    by_task: dict[str, list[float]] = {}
    for (task, _), secs in hist.seconds.items():  # another shot count of the task beats no measurement
        by_task.setdefault(task, []).append(secs)
    fallback = {task: statistics.median(v) for task, v in by_task.items()}
    by_model: dict[tuple[str, str], list[EvalRow]] = {}
    for r in rows:  # packing's grouping (pack): one model's rows, evals_per_task to an array task
        by_model.setdefault((r.model, r.model_args), []).append(r)
    # An array task's shape: the evaluations each of its workers takes (`gpu_mode workers`: round-robin, one
    # worker per GPU). Models with the same tasks give the same shapes, so a 100k-row sweep is a few shapes,
    # each timed once per K; the k-th shards of a model pack alike, so K shards are its shapes K times.
    n = cluster.row_workers
    shapes: Counter[tuple[tuple[tuple[str, int | None], ...], ...]] = Counter()
    for group in by_model.values():
        for start in range(0, len(group), evals_per_task):
            chunk = group[start:start + evals_per_task]
            shapes[tuple(tuple((r.task, r.n_shot) for r in chunk[i::n]) for i in range(n))] += 1
    evals = Counter((r.task, r.n_shot) for r in rows)
    out = []
    for k in choices:
        work = {key: _work(key, k, hist, fallback, default) for key in evals}
        tasks = [(hist.overhead_s + max(sum(work[key] for key in w) for w in shape), count * k)
                 for shape, count in shapes.items()]
        # merging replays and scores each evaluation once, after its last shard: without a measured merge,
        # that costs what a shard pays in full (building and scoring every request)
        merge = sum(c * (hist.merge_s or hist.shard_fixed_s.get(key, 0.0)) for key, c in evals.items()) if k > 1 else 0.0
        merges = len(rows) if k > 1 else 0
        out.append(Prediction(k, _longest_slot(tasks, parallel) + merge / max(1, min(parallel, merges)),
                              (sum(t * c for t, c in tasks) + merge) * max(1, cluster.gpus_per_task) / 3600))
    return out


def _longest_slot(tasks: Sequence[tuple[float, int]], parallel: int) -> float:
    """The longest of `parallel` slots filled longest task first, each task to the least loaded slot, for
    (seconds, count) runs of equal tasks. Once the slots are within one task of each other, the next
    len(slots) equal tasks go one to each slot: whole rounds are added at once (128 shards x 1,400 tasks
    would be 180k heap steps)."""
    slots = [0.0] * max(1, min(parallel, sum(c for _, c in tasks)))
    top = 0.0
    for secs, count in sorted(tasks, reverse=True):
        while count and top - slots[0] > secs:
            top = max(top, heapq.heapreplace(slots, slots[0] + secs) + secs)
            count -= 1
        rounds, count = divmod(count, len(slots))
        if rounds:
            slots = [s + rounds * secs for s in slots]  # a heap still: every slot moves alike
        for _ in range(count):
            heapq.heapreplace(slots, slots[0] + secs)
        top = max(slots)
    return top


def _work(key: tuple[str, int], k: int, hist: History, fallback: dict[str, float], default: float) -> float:
    """Seconds of one shard of a (task, shots) evaluation (of the whole of it when k is 1)."""
    work = hist.seconds.get(key, fallback.get(key[0], default))
    if k == 1:
        return work
    fixed = hist.shard_fixed_s.get(key, 0.0)
    return fixed + (work - fixed) / k


def choose(predictions: Sequence[Prediction], deadline: str | None) -> Prediction:
    """The smallest K meeting the deadline; without one, the knee: K doubles while the share of wall time
    it saves is larger than the share of GPU-hours it adds."""
    if deadline:
        limit = parse_time(deadline, "--deadline") * 60
        meeting = [p for p in predictions if p.wall_s <= limit]
        if not meeting:
            best = min(predictions, key=lambda p: p.wall_s)
            raise OellmError(f"--deadline {deadline}: no shard count meets it; the fastest is {best.num_shards} "
                             f"shard(s) at {format_s(best.wall_s)} (raise max_running or --workers, or the deadline)")
        return meeting[0]
    best = predictions[0]
    for p in predictions[1:]:
        saved = 1 - p.wall_s / best.wall_s if best.wall_s else 0.0
        added = p.gpu_hours / best.gpu_hours - 1 if best.gpu_hours else 0.0
        if saved <= added:
            break
        best = p
    return best


def format_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def table(predictions: Sequence[Prediction], hist: History, chosen: int | None, unit: str = "GPU") -> list[str]:
    source = "measured under the output root" if hist.measured else "cluster minutes_per_eval (no history yet)"
    known = "" if hist.shard_fixed_s else "; what every shard pays in full is not measured yet (0)"
    lines = [f"shards:    predicted from {source}; per array task {hist.overhead_s:.0f} s fixed{known}"]
    lines += [f"           K={p.num_shards:<4} wall {format_s(p.wall_s):>9}  {p.gpu_hours:8.2f} {unit}-h"
              + ("  <- chosen" if p.num_shards == chosen else "") for p in predictions]
    return lines



