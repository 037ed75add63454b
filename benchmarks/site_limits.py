"""Time limits and GPU-hours a plan asks for, on the review's cases (issue 24, U1 and W4): what sbatch gets per
array task (the script's --time and the --time of chunks whose tasks hold fewer rows) and the booked estimate.

    python benchmarks/site_limits.py                 # this tree
    python benchmarks/site_limits.py --src /tmp/old  # another tree, e.g. `git archive HEAD | tar -x -C /tmp/old`

Plans only (RunPlan.build on synthetic rows of the shipped clusters): nothing is submitted or evaluated.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

CASES = [  # (cluster, models, tasks, gpus_per_task, gpu_mode)
    ("leonardo", 1, 1, 1, "workers"), ("leonardo", 4, 1, 1, "workers"), ("leonardo", 2, 30, 1, "workers"),
    ("leonardo", 72, 1, 1, "workers"), ("leonardo", 1, 8, 4, "workers"), ("leonardo", 1, 8, 4, "spread"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1])
    args = ap.parse_args()
    sys.path.insert(0, str(args.src))
    from oellm.clusters import load_clusters
    try:
        from oellm.sitevalues import format_minutes
    except ImportError:  # a tree from before oellm.sitevalues
        from oellm.clusters import format_minutes
    from oellm.plan.packing import RunPlan
    from oellm.rows import EvalRow

    print(f"source: {args.src}")
    for name, n_models, n_tasks, gpus, mode in CASES:
        cluster = dataclasses.replace(load_clusters()[name], gpus_per_task=gpus)
        if hasattr(cluster, "gpu_mode"):
            cluster = dataclasses.replace(cluster, gpu_mode=mode)
        rows = [EvalRow(f"org/m{i}", f"t{j}", 0) for i in range(n_models) for j in range(n_tasks)]
        plan = RunPlan.build(rows, cluster, None, None, 0)
        asked = sorted({getattr(c, "minutes", None) or plan.minutes for c in plan.submission.chunks})
        booked = booked_hours(plan, cluster)
        print(f"{name:9} {n_models:3} model(s) x {n_tasks:2} task(s), {gpus} GPU/task {mode:8}: {plan.n_tasks:3} array "
              f"task(s); --time asked {', '.join(map(format_minutes, asked))}; booked {booked:.2f} GPU-h "
              f"(script --time x tasks x GPUs: {plan_hours(plan, cluster):.1f} GPU-h at most)")


def booked_hours(plan, cluster) -> float:
    """The summary's estimate: this tree's `gpu_hours`, or the old rule (rows x minutes x GPUs)."""
    try:
        from oellm.plan.packing import gpu_hours
    except ImportError:
        return len(plan.rows) * cluster.minutes_per_eval / 60 * max(1, cluster.gpus_per_task)
    return gpu_hours(plan.rows, cluster)


def plan_hours(plan, cluster) -> float:
    """What the time limits reserve, the ceiling of a task's GPU-hours: sum over chunks of limit x size x GPUs."""
    return sum((getattr(c, "minutes", None) or plan.minutes) * c.size for c in plan.submission.chunks) / 60 \
        * max(1, cluster.gpus_per_task)


if __name__ == "__main__":
    main()
