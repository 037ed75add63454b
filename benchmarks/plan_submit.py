"""Benchmark: plan, write and render a 100,000-row sweep with --dry_run, then submit it for real.

    python benchmarks/plan_submit.py [--checkpoints 500] [--tasks 100] [--no-submit]

The sweep is 500 checkpoints x 100 stock lm-eval tasks x 2 shots. The dry run is timed in-process
(target < 2 s on 2 cores, task index cached). The real submission runs against the local SLURM
cluster (tests/slurm/local-cluster.sh, which must be running: SLURM_CONF set) through a counting
`sbatch` wrapper on PATH, and prints the number of sbatch calls next to the number of array chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_run(root: Path, n: int) -> Path:
    run = root / "run7"
    for step in range(1, n + 1):
        d = run / f"checkpoint-{step * 1000}"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    return run


def counting_sbatch(bin_dir: Path, log: Path) -> None:
    """An `sbatch` on PATH that appends one line per call, then runs the real one."""
    real = shutil.which("sbatch")
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    (bin_dir / "sbatch").chmod(0o755)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoints", type=int, default=500)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--no-submit", action="store_true")
    args = ap.parse_args()

    from oellm.plan.request import Request
    from oellm.schedule import schedule
    from oellm.suites.lm_eval_tasks import task_index

    tasks = sorted(n for n, e in task_index([]).items() if e["type"] == "task")[: args.tasks]  # warms the cache
    tmp = Path(tempfile.mkdtemp(prefix="oellm-bench-"))
    run7 = make_run(tmp, args.checkpoints)
    clusters = tmp / "clusters.json"
    clusters.write_text(json.dumps({"bench": {
        "partition": os.environ.get("BENCH_PARTITION", "debug"), "account": None, "gpus_per_task": 0,
        "cpus_per_task": 1, "mem": "100M", "minutes_per_eval": 10, "max_time": "24:00:00",
        "queue_limit": 100000, "max_array_size": 1000, "max_running": 2, "container": None}}))
    req = dict(models=str(run7), tasks=",".join(tasks), n_shot="0,5", cluster="bench", clusters_file=clusters,
               command_line=["benchmark"], precache=False)  # planning and submission only: no hub here
    quiet = lambda msg: None  # noqa: E731

    t0 = time.perf_counter()
    run = schedule(Request(**req, output_dir=tmp / "dry", dry_run=True), log=quiet)
    dry_s = time.perf_counter() - t0
    manifest = json.loads((run / "run.json").read_text())
    print(f"dry run: {manifest['n_rows']} rows ({args.checkpoints} checkpoints x {len(tasks)} tasks x 2 shots) "
          f"-> {manifest['n_tasks']} array tasks, planned + written + rendered in {dry_s:.2f} s "
          f"(jobs.csv {(run / 'jobs.csv').stat().st_size / 1e6:.1f} MB)")

    if not args.no_submit:
        if not os.environ.get("SLURM_CONF"):
            sys.exit("no SLURM_CONF: start tests/slurm/local-cluster.sh and eval its `env` first (or --no-submit)")
        log = tmp / "sbatch-calls.log"
        counting_sbatch(tmp / "bin", log)
        os.environ["PATH"] = f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}"
        t0 = time.perf_counter()
        run = schedule(Request(**req, output_dir=tmp / "real"), log=quiet)
        sub_s = time.perf_counter() - t0
        subs = json.loads((run / "run.json").read_text())["submissions"]
        calls = log.read_text().splitlines()
        print(f"submission: {len(subs)} array chunk(s), {len(calls)} sbatch call(s), "
              f"{sum(s['size'] for s in subs)} array tasks, {sub_s:.2f} s wall incl. planning")
        for line in calls:
            print(f"  sbatch {line}")
        subprocess.run(["scancel", *[s["job_id"] for s in subs]], check=False)  # the checkpoints are fake
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
