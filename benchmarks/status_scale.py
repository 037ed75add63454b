"""Benchmark: `oellm status` on a 100,000-row run in 100 array chunks, and the SLURM calls it makes.

    python benchmarks/status_scale.py [--rows 100000] [--chunks 100] [--repeat 3]

The run dir is synthetic (written with oellm.rundir): 100 chunks of 10 array tasks (the test
cluster's MaxArraySize is 11), 100 rows per task, recorded in run.json. The chunks' job ids are real:
one 10-element array per chunk is submitted to the local SLURM cluster (tests/slurm/local-cluster.sh,
SLURM_CONF set) with --begin=now+1hour, so sacct and squeue know every element and nothing runs;
they are cancelled at the end. 30% of the rows have a result, 2% a failed state
record, 1% a running one. `sacct`, `squeue`, `sbatch` and `scancel` on PATH are counting wrappers.
Prints status wall time (in-process, best of --repeat, and as a CLI subprocess) and the SLURM
commands each status ran.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = ("sacct", "squeue", "sbatch", "scancel", "scontrol")
# a small but complete result: status counts a result file as done only when it is not empty
RESULT = '{\n "results": {"t": {"acc,none": 0.5}}\n}\n'
TASKS_PER_CHUNK = 10  # the test cluster's MaxArraySize is 11


def counting_wrappers(bin_dir: Path, log: Path) -> None:
    """One line per call in `log`, then the real command."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        real = shutil.which(name)
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexec {real} "$@"\n')
        (bin_dir / name).chmod(0o755)


def make_run(root: Path, n_rows: int, n_chunks: int, job_ids: list[str]) -> Path:
    from oellm.rundir import EvalRow, RunDir, creating, write_jobs, write_json

    size = TASKS_PER_CHUNK
    n_tasks = n_chunks * size
    per_task = -(-n_rows // n_tasks)
    rows = [EvalRow(f"/models/run/checkpoint-{i // 200}", f"task{i % 100}", (i // 100) % 2, task_index=i // per_task)
            for i in range(n_rows)]
    subs = [{"job_id": job_ids[c], "offset": c * size, "size": size, "array": f"0-{size - 1}%100"}
            for c in range(n_chunks)]
    with creating(root, "2026-01-01-00-00-00") as (tmp, final):
        write_jobs(tmp.jobs, rows)
        write_json(tmp.manifest, {"created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 3600)),
                                  "cluster": "bench", "executor": "slurm", "n_rows": n_rows, "n_tasks": n_tasks,
                                  "cluster_config": {"max_running": 100}, "submissions": subs,
                                  "held_back_tasks": 0, "time_limit": "01:00:00"})
    run = RunDir(final)
    for i, r in enumerate(rows):
        k = i % 100
        if k < 30:
            (run.result_path(r.row_id)).write_text(RESULT)
            run.write_state(r.row_id, {"state": "done", "wall_s": 12.5, "slurm_array_job_id": subs[0]["job_id"]})
        elif k < 32:
            run.write_state(r.row_id, {"state": "failed", "error_kind": "exception", "error": "ValueError: x"})
        elif k < 33:
            run.write_state(r.row_id, {"state": "running"})
    return final


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not os.environ.get("SLURM_CONF"):
        sys.exit("no SLURM_CONF: start tests/slurm/local-cluster.sh and eval its `env` first")
    from oellm import slurm

    tmp = Path(tempfile.mkdtemp(prefix="oellm-status-bench-"))
    log = tmp / "calls.log"
    counting_wrappers(tmp / "bin", log)
    os.environ["PATH"] = f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}"
    script = tmp / "hold.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    ids = [slurm.submit(script, array=f"0-{TASKS_PER_CHUNK - 1}", options=["--begin=now+1hour", "-o", "/dev/null", "-e", "/dev/null",
                                                      "--mem=10M"]) for _ in range(args.chunks)]
    try:
        t0 = time.perf_counter()
        run = make_run(tmp / "runs", args.rows, args.chunks, ids)
        print(f"synthetic run: {args.rows} rows, {args.chunks * TASKS_PER_CHUNK} array tasks in {args.chunks} chunks "
              f"(real job ids {ids[0]}..{ids[-1]}), written in {time.perf_counter() - t0:.1f} s")
        from oellm.cli.commands import status

        times = []
        for _ in range(args.repeat):
            log.write_text("")
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()) as out:
                status(run_dir=run)
            times.append(time.perf_counter() - t0)
            calls = log.read_text().splitlines()
        print(f"status in-process: best {min(times):.3f} s, all {', '.join(f'{t:.3f}' for t in times)}; "
              f"SLURM commands per status: {len(calls)} ({', '.join(c.split()[0] for c in calls)})")
        print("  " + "\n  ".join(out.getvalue().splitlines()[:4]))
        log.write_text("")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", "from oellm.cli.commands import status; "
                               f"status(run_dir={str(run)!r}, json=True)"], capture_output=True, text=True)
        cli_s = time.perf_counter() - t0
        if proc.returncode:
            print(proc.stderr[-2000:])
        print(f"status --json as a fresh process: {cli_s:.3f} s wall (exit {proc.returncode}, "
              f"{len(proc.stdout) / 1e6:.1f} MB of JSON); SLURM commands: {len(log.read_text().splitlines())}")
        log.write_text("")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            status(output_dir=tmp / "runs")
        print(f"status without --run_dir (list runs): {time.perf_counter() - t0:.3f} s; "
              f"SLURM commands: {len(log.read_text().splitlines())}")
    finally:
        slurm.cancel(ids)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
