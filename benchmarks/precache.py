"""Pre-cache when everything is already cached: 50 checkpoints x 20 tasks.

    python benchmarks/precache.py [--workdir DIR]

Serves a local Hub (tests/hub_server.py): model `org/ckpt` with 50 commits (the checkpoints, pinned
by commit hash in `revision=`) and 20 dataset repos, one per task. Fills the cache once (not timed),
then times `oellm.cache.precache.precache` over the 1000 rows in a fresh process, and counts the requests and
bytes the server saw during it (targets: < 2 s, 0 requests). Also times the same sweep over 50 local
checkpoint dirs, and the offline verification `check_cache` (a subprocess; reported, not a target).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures_hub import tiny_dataset_files, write_hub_task  # noqa: E402
from tests.hub_server import HubServer  # noqa: E402

N_CKPT, N_TASKS = 50, 20

TIMED = """
import json, sys, time
t0 = time.perf_counter()
from oellm.cache.precache import precache
from oellm.clusters import load_clusters
from oellm.rows import EvalRow
models, tasks, include = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
rows = [EvalRow(model=m, task=t, n_shot=0, model_args=a) for m, a in models for t in tasks]
lines = []
t1 = time.perf_counter()
import lm_eval.tasks  # what planning (validate_tasks) has already imported in `oellm schedule-eval`
t2 = time.perf_counter()
precache(rows, load_clusters()["local"], [include], log=lines.append)
t3 = time.perf_counter()
print(json.dumps({"seconds": t3 - t0, "import_s": t2 - t1, "own_s": t3 - t2, "rows": len(rows),
                  "summary": lines[-1].splitlines()[-1]}))
"""


def run_precache(models: list[tuple[str, str]], tasks: list[str], include: Path, env: dict) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", TIMED, json.dumps(models), json.dumps(tasks), str(include)],
                         cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="oellm-bench-precache-"))
    from tests.fixtures_models import build_tiny_model

    model = build_tiny_model(work / "model")
    files = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    server = HubServer().start()
    shas = [server.add_repo("org/ckpt", {**files, "step.txt": str(i).encode()}, refs=(f"step{i}",))
            for i in range(N_CKPT)]
    tasks = []
    for i in range(N_TASKS):
        server.add_repo(f"org/ds{i}", tiny_dataset_files(seed=i), kind="dataset")
        write_hub_task(work / "tasks", f"bench_task_{i}", f"org/ds{i}")
        tasks.append(f"bench_task_{i}")
    ckpts = work / "run"
    for i in range(N_CKPT):
        d = ckpts / f"checkpoint-{i}"
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                                "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(work / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               OELLM_CACHE_DIR=str(work / "oellm_cache"))
    hub_models = [("org/ckpt", f"revision={s}") for s in shas]
    local_models = [(str(ckpts / f"checkpoint-{i}"), "") for i in range(N_CKPT)]

    t0 = time.perf_counter()
    warm = run_precache(hub_models, tasks, work / "tasks", env)
    print(f"warm-up (fills the cache, not timed as a target): {time.perf_counter() - t0:.1f} s, "
          f"{server.count()} requests, {server.bytes_sent} body bytes; {warm['summary']}")
    for label, models in (("hub checkpoints pinned by commit", hub_models), ("local checkpoint dirs", local_models)):
        server.reset_counts()
        t0 = time.perf_counter()
        res = run_precache(models, tasks, work / "tasks", env)
        wall = time.perf_counter() - t0
        print(f"{label}: {N_CKPT} x {N_TASKS} = {res['rows']} rows, precache() {res['seconds']:.2f} s "
              f"(lm-eval import {res['import_s']:.2f} s + pre-cache itself {res['own_s']:.2f} s; "
              f"process wall incl. Python start {wall:.2f} s), {server.count()} requests, "
              f"{server.bytes_sent} bytes transferred; {res['summary']}")
    code = ("import json,sys,time; t0=time.perf_counter(); from oellm.cache import check_cache; "
            "from oellm.clusters import load_clusters; from oellm.rows import EvalRow; "
            f"rows=[EvalRow(model=m, task=t, n_shot=0, model_args=a) for m, a in {hub_models!r} for t in {tasks!r}]; "
            f"miss=check_cache(rows, load_clusters()['local'], [{str(work / 'tasks')!r}]); "
            "print(len(miss), round(time.perf_counter()-t0, 2))")
    server.reset_counts()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    missing, secs = out.stdout.split()[-2:] if out.returncode == 0 else ("?", out.stderr[-500:])
    print(f"check_cache (offline subprocess, 50 configs+tokenizers, 20 datasets): {secs} s, {missing} missing, "
          f"{server.count()} requests")
    server.stop()


if __name__ == "__main__":
    main()
