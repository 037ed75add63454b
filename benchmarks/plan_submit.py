"""Benchmark: plan, write and render a 100,000-row sweep with --dry_run, then submit it for real.

    python benchmarks/plan_submit.py [--checkpoints 500] [--tasks 100] [--repeat 3] [--no-submit]

The sweep is 500 checkpoints x 100 stock lm-eval tasks x 2 shots. The dry run is timed as a whole
`oellm schedule-eval --dry_run` process, as a user waits for it (target < 2 s on 2 cores, task index
cached), beside a 1-row dry run and `oellm --help` (target < 0.2 s); medians of --repeat runs.
The real submission runs against the local SLURM
cluster (tests/slurm/local-cluster.sh, which must be running: SLURM_CONF set) through a counting
`sbatch` wrapper on PATH, and prints the number of sbatch calls next to the number of array chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OELLM = [sys.executable, "-m", "oellm"]


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
    ap.add_argument("--repeat", type=int, default=3)
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

    def process(*argv: str) -> float:
        """Seconds of one whole `oellm` process (start-up, imports, planning, writing)."""
        t0 = time.perf_counter()
        proc = subprocess.run([*OELLM, *argv], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"oellm {' '.join(argv[:2])} ... failed: {proc.stderr[-2000:]}")
        return wall

    common = ["--n_shot", "0,5", "--cluster", "bench", "--clusters_file", str(clusters), "--dry_run", "--no_precache"]
    sweep, one, helps = [], [], []
    for i in range(args.repeat):
        sweep.append(process("schedule-eval", "--models", str(run7), "--tasks", ",".join(tasks), *common,
                             "--output_dir", str(tmp / f"dry{i}")))
        one.append(process("schedule-eval", "--models", str(run7 / "checkpoint-1000"), "--tasks", tasks[0], *common,
                           "--output_dir", str(tmp / f"one{i}")))
        helps.append(process("--help"))
    (run,) = (tmp / "dry0").iterdir()
    manifest = json.loads((run / "run.json").read_text())
    print(f"dry run: {manifest['n_rows']} rows ({args.checkpoints} checkpoints x {len(tasks)} tasks x 2 shots) "
          f"-> {manifest['n_tasks']} array tasks, whole process {statistics.median(sweep):.2f} s median of "
          f"{args.repeat} ({', '.join(f'{x:.2f}' for x in sweep)}; target < 2 s; jobs.csv "
          f"{(run / 'jobs.csv').stat().st_size / 1e6:.1f} MB)")
    print(f"1-row dry run (2 rows, 0 and 5 shots): {statistics.median(one):.2f} s; "
          f"`oellm --help`: {statistics.median(helps):.2f} s (target < 0.2 s)")

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
