"""Sharding one big evaluation: wall and CPU seconds at K = 1, 2, 4, 8 shards on the local executor, the
per-shard fixed cost, and the advisor's predicted wall time against the measured one (target: within 25%).

    python benchmarks/shards.py [--docs 2000] [--workers 2] [--workdir DIR]

A synthetic multiple-choice task of `--docs` documents (2 shots) on the tiny test model. All K run under one
output root (with --force, so each K evaluates in full): before each K the advisor predicts its wall time
from the history of the runs before it, as `--num_shards auto` would (K=1 has no history: not predicted).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from oellm.clusters import load_clusters  # noqa: E402
from oellm.plan import advisor  # noqa: E402
from oellm.rows import EvalRow  # noqa: E402
from tests.fixtures_models import _docs, build_tiny_model, mc_task_yaml  # noqa: E402


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(model: Path, tasks: Path, root: Path, k: int, workers: int, env: dict) -> tuple[float, float]:
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models", str(model),
                          "--tasks", "big_mc", "--n_shot", "2", "--lm_eval_include_path", str(tasks),
                          "--output_dir", str(root), "--num_shards", str(k), "--workers", str(workers), "--force"],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(out.stderr[-2000:])
    return time.perf_counter() - t0, children_cpu_s() - cpu0


def array_wall(run: Path) -> float:
    """First worker process start to the last result (a merge included): the array tasks' wall time,
    which is what the advisor predicts (not schedule-eval's own planning before it)."""
    from datetime import datetime

    starts, ends = [], []
    for p in run.glob("results/*.json"):
        prov = json.loads(p.read_text()).get("oellm") or {}
        end = datetime.fromisoformat(prov["ended"]).timestamp()
        ends.append(end)
        if "process_s" in prov:
            starts.append(end - prov["process_s"])
    return max(ends) - min(starts)


def suite_seconds(run: Path) -> list[float]:
    """lm_eval_s of every shard (or whole) result of a run: the time inside lm-eval, model loaded."""
    out = []
    for p in run.glob("results/*.json"):
        prov = json.loads(p.read_text()).get("oellm") or {}
        if "merged_from" not in prov:
            out.append(prov["lm_eval_s"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="oellm-bench-shards-"))
    env = {**os.environ, "HF_HOME": str(work / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OELLM_CACHE_DIR": str(work / "oellm_cache")}
    model = build_tiny_model(work / "model")
    tasks = work / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    for split, n in (("train", 16), ("test", args.docs)):
        (tasks / f"big_{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _docs(rng, n)))
    (tasks / "big_mc.yaml").write_text(mc_task_yaml("big_mc", f"dataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                                              f"    train: {tasks / 'big_train.jsonl'}\n"
                                                              f"    test: {tasks / 'big_test.jsonl'}\n"))
    cluster = load_clusters()["local"]
    row = EvalRow(model=str(model), task="big_mc", n_shot=2)
    base = None
    print(f"{args.docs}-doc task, 2-shot, tiny model, local executor with {args.workers} worker(s), "
          f"{os.cpu_count()} CPUs")
    print(f"{'K':>3} {'wall s':>8} {'arrays s':>9} {'CPU s':>8} {'predicted s':>12} {'pred/arrays':>11} "
          f"{'suite s/shard':>14} {'fixed s/shard':>14}")
    root = work / "runs"
    for k in (1, 2, 4, 8):
        predicted = None
        if base is not None:
            hist = advisor.history(root, cluster)
            predicted = advisor.predict([row], cluster, hist, 10**6, args.workers, choices=[k])[0].wall_s
        before = set(root.iterdir()) if root.exists() else set()
        wall, cpu = run(model, tasks, root, k, args.workers, env)
        [new_run] = set(root.iterdir()) - before
        secs, arrays = suite_seconds(new_run), array_wall(new_run)
        whole = base if base is not None else secs[0]
        fixed = sum(secs) / k - whole / k  # what a shard spends beyond its 1/K of the work
        base = whole
        ratio = f"{predicted / arrays:11.2f}" if predicted else f"{'-':>11}"
        pred = f"{predicted:12.1f}" if predicted else f"{'-':>12}"
        print(f"{k:>3} {wall:8.1f} {arrays:9.1f} {cpu:8.1f} {pred} {ratio} {sum(secs) / k:14.2f} {fixed:14.2f}")
    print(f"advisor's fixed cost per array task from this history: {advisor.history(root, cluster).overhead_s:.1f} s")

if __name__ == "__main__":
    main()
