"""collect-results at scale: 100,000 result files (copies of one real worker result with varied row
ids, models, tasks and steps) read into the tidy table and written as parquet.

    python benchmarks/collect_results.py [--files 100000] [--workdir DIR] [--source RESULT.json]

Without --source a real result is made first: the tiny model through `oellm worker` (offline, ~15 s,
not timed). Prints the wall time to collect + write parquet (target < 5 s for the whole process), the CPU
seconds of all processes (independent of other load) and the load average.
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

from oellm.rows import EvalRow  # noqa: E402


def real_result(work: Path) -> Path:
    """One genuine result file: tiny_group (a group + 2 tasks) 2-shot through the real worker."""
    from tests.fixtures_models import build_tiny_model, build_tiny_tasks, make_run_dir

    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "HF_HOME": str(work / "hf")})
    model, tasks = build_tiny_model(work / "model"), build_tiny_tasks(work / "tasks")
    row = EvalRow(str(model), "tiny_group", 2, limit=4)
    run = make_run_dir(work, [row], include_paths=[tasks])
    subprocess.run([sys.executable, "-m", "oellm", "worker", "--run_dir", str(run.path), "--index", "0"],
                   cwd=REPO, check=True, capture_output=True)
    return run.result_path(row.row_id)


def fan_out(source: Path, dest: Path, n: int) -> None:
    """n copies under dest/results/, each a distinct evaluation (model x step x task name x shots)."""
    base = json.loads(source.read_text())
    (dest / "results").mkdir(parents=True)
    (dest / "run.json").write_text(json.dumps({"cluster": "bench"}))
    for i in range(n):
        model, step, shot = f"/ckpt/model{i % 50}/checkpoint-{(i // 50) % 40 * 100}", (i // 50) % 40 * 100, i // 2000
        rename = {t: f"{t}_{i % 7}" for t in base["results"]}
        d = {**base, "results": {rename[t]: v for t, v in base["results"].items()},
             "n-shot": {rename[t]: shot for t in base["n-shot"]},
             "groups": {rename[t]: v for t, v in base.get("groups", {}).items()},
             "oellm": {**base["oellm"], "row": {**base["oellm"]["row"], "model": model, "step": step, "n_shot": shot,
                                                "task": rename["tiny_group"]}}}
        d["oellm"]["row"]["row_id"] = EvalRow(model, rename["tiny_group"], shot, limit=4).row_id
        (dest / "results" / f"{d['oellm']['row']['row_id']}.json").write_text(json.dumps(d, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--source", type=Path, default=None)
    a = ap.parse_args()
    work = a.workdir or Path(tempfile.mkdtemp(prefix="oellm-bench-collect-"))
    source = a.source or real_result(work / "real")
    files = work / "many"
    if not files.exists():
        t = time.perf_counter()
        fan_out(source, files, a.files)
        print(f"generated {a.files} result files ({source.stat().st_size} bytes each) in {time.perf_counter() - t:.1f} s")

    from oellm.results.gather import collect, cpus
    from oellm.results.tables import write_table

    t, cpu0 = time.perf_counter(), os.times()
    got = collect([files])
    t_read = time.perf_counter() - t
    write_table(got.table, work / "all.parquet")
    total = time.perf_counter() - t
    cpu1 = os.times()  # pool workers have exited, so their CPU time is in the children fields
    cpu = sum(cpu1[i] - cpu0[i] for i in range(4))
    print(f"collect-results: {got.n_files} files -> {len(got.table)} rows, {len(got.problems)} problems, "
          f"{len(got.superseded)} superseded; read+tidy {t_read:.2f} s, with parquet {total:.2f} s "
          f"(target < 5 s) on {cpus()} cores; CPU {cpu:.1f} s in all processes, "
          f"load average {os.getloadavg()[0]:.1f} (other work on the machine slows the wall time)")


if __name__ == "__main__":
    main()
