"""GPU-hours booked vs used by one array task that books 4 GPUs (issue 24, W4), CPU stand-in.

    python benchmarks/gpu_use.py [--rows 8] [--src /tmp/old]   # --src: another tree's oellm (before/after)

One task of `--rows` tiny-model rows (tests/fixtures_models: a tiny GPT-2 and tiny tasks) is run by
`python -m oellm worker` with CUDA_VISIBLE_DEVICES=0,1,2,3, as SLURM sets it for `--gres=gpu:4`; here the
"GPUs" are ids only and every process computes on the CPU. Booked = 4 x the task's wall time; used = the
time processes spend loading a model or evaluating rows (each holds its one GPU meanwhile: the result files'
`wall_s`, whose first row includes the load). With fewer cores than workers the processes slow each other
down, which a GPU node would not; on a GPU node the same command measures the real thing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GPUS = "0,1,2,3"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--src", type=Path, default=REPO)
    args = ap.parse_args()
    from oellm.rows import EvalRow
    from tests.fixtures_models import build_tiny_model, build_tiny_tasks, make_run_dir

    tmp = Path(tempfile.mkdtemp(prefix="gpu_use_"))
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp / "hf"))
    model, tasks = build_tiny_model(tmp / "model"), build_tiny_tasks(tmp / "tasks")
    names = ["tiny_mc_a", "tiny_mc_b"]
    rows = [EvalRow(str(model), names[i % 2], i // 2, limit=24) for i in range(args.rows)]
    run = make_run_dir(tmp, rows, include_paths=[tasks], cluster_config={"gpus_per_task": 4})
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": GPUS, "PYTHONPATH": str(args.src), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "oellm", "worker", "--run_dir", str(run.path), "--index", "0"],
                       env=env, capture_output=True, text=True, cwd=tmp)
    wall = time.perf_counter() - t0
    if p.returncode:
        sys.exit(p.stderr[-3000:])
    docs = [json.loads(run.result_path(r.row_id).read_text())["oellm"] for r in rows]
    procs = {d["model_load"]["pid"] for d in docs}
    used = sum(d["wall_s"] for d in docs)  # a row's wall_s includes its process's model load when first
    booked = 4 * wall
    print(f"source {args.src}: {len(rows)} rows, {len(procs)} process(es) evaluating, task wall {wall:.1f} s; "
          f"booked {booked:.1f} GPU-s, used {used:.1f} GPU-s ({used / booked:.0%})")


if __name__ == "__main__":
    main()
