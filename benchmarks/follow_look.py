"""Benchmark: one `--follow` look at a training run of 1,000 checkpoints, nothing new.

    python benchmarks/follow_look.py [--checkpoints 1000] [--repeat 5] [--slurm]

The run is synthetic: 1,000 `checkpoint-N` dirs, each with a config.json, a two-shard safetensors index
and its two shards (small files: a look lists dirs and reads sizes, never weights). The follower has
already scheduled all of them (its state says so, as after the looks that found them), so the look finds
nothing new. Prints, best of --repeat:

- one look in-process (`oellm.follow.loop.step`: load follow.state, list the run, save), local flavour;
- the same as a whole process, `python -m oellm.follow DIR`, what the SLURM follower job runs;
- with --slurm (SLURM_CONF of a running cluster, e.g. tests/slurm/local-cluster.sh), the SLURM flavour,
  which also queues the follower's own next look (`sbatch --begin`, cancelled at the end);

and every SLURM command each one ran (`oellm.slurm.run` is the only way oellm runs one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_run(run: Path, n: int) -> None:
    index = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    for i in range(1, n + 1):
        d = run / f"checkpoint-{i * 100}"
        d.mkdir(parents=True)
        (d / "config.json").write_text('{"model_type": "llama"}')
        (d / "model.safetensors.index.json").write_text(index)
        for k in (1, 2):
            (d / f"model-0000{k}-of-00002.safetensors").write_bytes(b"\0" * 256)


def make_follower(root: Path, run: Path, executor: str):
    from oellm.follow.look import candidates, key
    from oellm.follow.state import Follower, FollowState, now, request_data
    from oellm.plan.request import Request

    req = Request(models=str(run), tasks="hellaswag", output_dir=root, cluster=executor)
    state = FollowState(request={**request_data(req), "output_dir": str(root)}, cluster=executor, executor=executor,
                        interval_s=300, until={"at": None, "job": None, "text": ""}, created=now(), looks=1)
    for ref in candidates(req, state, final=False):
        state.scheduled[key(ref)] = {"at": "2026-01-01T00:00:00+00:00", "run": str(root / "r"), "step": ref.step}
    return Follower.create(root, state)


def counted(fn):
    """Run fn with oellm.slurm.run counting the commands it is asked to run; returns (seconds, Counter)."""
    from oellm import slurm

    calls: Counter = Counter()
    real = slurm.run

    def run(argv, **kw):
        calls[str(argv[0])] += 1
        return real(argv, **kw)

    slurm.run = run
    try:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t, calls
    finally:
        slurm.run = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--slurm", action="store_true", help="also the SLURM flavour (needs SLURM_CONF)")
    args = ap.parse_args()

    from oellm.follow.loop import step

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = tmp / "run"
        make_run(run, args.checkpoints)
        follower = make_follower(tmp / "out", run, "local")
        lines: list[str] = []
        best, calls = min((counted(lambda: step(follower, lines.append)) for _ in range(args.repeat)),
                          key=lambda r: r[0])
        state = follower.load()
        assert len(state.scheduled) == args.checkpoints and not state.waiting, "the look found something new"
        print(f"checkpoints: {args.checkpoints}, all scheduled before; last progress line: {lines[-1]}")
        print(f"one look in-process (local flavour): {best * 1000:.1f} ms (best of {args.repeat}); "
              f"SLURM commands: {dict(calls) or 0}")

        walls = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "oellm.follow", str(follower.path)], capture_output=True,
                               text=True, cwd=REPO)
            walls.append(time.perf_counter() - t)
            assert p.returncode == 0, p.stderr
        print(f"one look as a whole process (python -m oellm.follow): {min(walls):.2f} s (best of {args.repeat})")

        if args.slurm:
            slurm_flavour(tmp, run, args.repeat)


def slurm_flavour(tmp: Path, run: Path, repeat: int) -> None:
    """The SLURM flavour on a real cluster: the look, plus the follower's own next job (cancelled after)."""
    from oellm import slurm
    from oellm.clusters import build_cluster
    from oellm.follow.loop import step

    if not os.environ.get("SLURM_CONF"):
        print("--slurm: SLURM_CONF is not set; start tests/slurm/local-cluster.sh and export it")
        return
    cluster = build_cluster("bench", {"partition": "debug", "account": None, "gpus_per_task": 0, "mem": "100M",
                                      "max_time": "00:30:00", "container": None}, "benchmark")
    follower = make_follower(tmp / "out-slurm", run, "slurm")
    results = [counted(lambda: step(follower, lambda _: None, cluster)) for _ in range(repeat)]
    best, calls = min(results, key=lambda r: r[0])
    total: Counter = sum((c for _, c in results), Counter())
    slurm.cancel(follower.load().jobs)
    print(f"one look in-process (SLURM flavour): {best * 1000:.1f} ms (best of {repeat}); SLURM commands per look: "
          f"{dict(calls)} (over {repeat} looks: {dict(total)}); evaluation arrays submitted: 0")


if __name__ == "__main__":
    main()
