"""Pre-cache when everything is already cached: 50 checkpoints x 20 tasks.

    python benchmarks/precache.py [--workdir DIR]

Serves a local Hub (tests/hub_server.py): model `org/ckpt` with 50 commits (the checkpoints, pinned
by commit hash in `revision=`) and 20 dataset repos, one per task. Fills the cache once (not timed),
then times, in a fresh process each, what `schedule-eval` runs before it submits over the 1000 rows: the
pre-cache (`precache`) and the preflight (`oellm.cache.preflight.prove`, the offline proof that every model
and dataset loads), and counts the requests and bytes the server saw (targets on repeat: < 2 s for both
together, 0 requests). The first proof (nothing remembered yet) is reported, then the repeat. Done for the
hub checkpoints with the worker on this host, for 50 local checkpoint dirs, and through the test container
(tests/shim/singularity, bubblewrap) when `bwrap` is installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
from oellm.cache.preflight import prove
from oellm.clusters import build_cluster, load_clusters
from oellm.rows import EvalRow
models, tasks, include, spec = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
cluster = build_cluster("bench", spec, "benchmark") if spec else load_clusters()["local"]
rows = [EvalRow(model=m, task=t, n_shot=0, model_args=a) for m, a in models for t in tasks]
lines = []
t1 = time.perf_counter()
import lm_eval.tasks  # what planning (validate_tasks) has already imported in `oellm schedule-eval`
t2 = time.perf_counter()
revisions = precache(rows, cluster, [include], log=lines.append)
t3 = time.perf_counter()
proof = prove(rows, cluster, [include], revisions)
t4 = time.perf_counter()
assert not proof.missing, proof.missing
print(json.dumps({"seconds": t4 - t0, "import_s": t2 - t1, "precache_s": t3 - t2, "preflight_s": t4 - t3,
                  "checked": proof.checked, "remembered": proof.remembered, "rows": len(rows),
                  "summary": lines[-1].splitlines()[-1]}))
"""


def run_timed(models: list[tuple[str, str]], tasks: list[str], include: Path, env: dict, spec: dict) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", TIMED, json.dumps(models), json.dumps(tasks), str(include),
                          json.dumps(spec)], cwd=REPO, env=env, capture_output=True, text=True)
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

    cases = [("hub checkpoints pinned by commit, worker on this host", hub_models, {}),
             ("local checkpoint dirs, worker on this host", local_models, {})]
    if shutil.which("bwrap"):
        from tests.fixtures_slurm import SHIM_DIR, write_image

        image = write_image(work / "eval.sif")
        env["PATH"] = f"{SHIM_DIR}{os.pathsep}{env['PATH']}"
        container = {"executor": "local", "container": {"runtime": "singularity", "image": str(image),
                                                         "gpu_flag": None, "binds": [], "python": "python3"}}
        cases += [("hub checkpoints pinned by commit, through the container", hub_models, container),
                  ("local checkpoint dirs, through the container", local_models, container)]
    else:
        print("bwrap not installed: the container cases are skipped (apt-get install bubblewrap)")
    t0 = time.perf_counter()
    warm = run_timed(hub_models, tasks, work / "tasks", env, {})
    print(f"warm-up (fills the cache and proves it once, not a target): {time.perf_counter() - t0:.1f} s, "
          f"{server.count()} requests, {server.bytes_sent} body bytes; {warm['summary']}")
    shutil.rmtree(work / "hf_home" / "hub" / ".oellm" / "proofs")  # each case's first proof is a real one
    for label, models, spec in cases:
        for attempt in ("first", "repeat"):
            server.reset_counts()
            t0 = time.perf_counter()
            res = run_timed(models, tasks, work / "tasks", env, spec)
            wall = time.perf_counter() - t0
            print(f"{label} ({attempt}): {res['rows']} rows; pre-cache {res['precache_s']:.2f} s + preflight "
                  f"{res['preflight_s']:.2f} s ({res['checked']} loaded, {res['remembered']} remembered) = "
                  f"{res['precache_s'] + res['preflight_s']:.2f} s (lm-eval import {res['import_s']:.2f} s; "
                  f"process wall {wall:.2f} s); {server.count()} requests, {server.bytes_sent} bytes")
    server.stop()


if __name__ == "__main__":
    main()
