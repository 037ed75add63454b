"""lighteval rows of one model through oellm's worker (one process, one model load) against one
`lighteval accelerate` process per row: wall time ratio (target >= 3x) and whether the metrics are equal.

    python benchmarks/lighteval_rows.py [--rows 10] [--docs 100] [--model DIR | --tiny] [--venv .venvs/lighteval/bin]

`--venv`: a venv with `oellm[worker,lighteval]` (the tests build `.venvs/lighteval`). Tasks: `--rows`
multiple-choice custom tasks (0-shot) of `--docs` documents each. Model: the README example's SmolLM2-135M
when it is there, else the tiny test model. Offline; caches in a temp dir.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from oellm import formats  # noqa: E402
from tests.fixtures_models import _docs, build_tiny_model  # noqa: E402
from tests.fixtures_suites import TASK_FILE  # noqa: E402
from tests.test_lighteval import LIGHTEVAL_CLI  # noqa: E402


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10)
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--tiny", action="store_true", help="the tiny test model (loads and scores in milliseconds)")
    ap.add_argument("--venv", type=Path, default=REPO / ".venvs" / "lighteval" / "bin")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="oellm-lighteval-bench-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(work / "hf"), "TOKENIZERS_PARALLELISM": "false"}
    example = REPO / "examples" / "models" / "smollm2-135m"
    model = args.model or (example if (example / "config.json").exists() and not args.tiny
                           else build_tiny_model(work / "tiny"))
    import random

    data = work / "data"
    data.mkdir()
    rng = random.Random(1)
    for split, n in (("train", 8), ("test", args.docs)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _docs(rng, n)))
    tasks_file = work / "tasks.py"
    tasks_file.write_text(TASK_FILE.format(data=str(data), n=args.rows))
    names = [f"tiny_lv_{i}" for i in range(args.rows)]
    print(f"model {model}, {args.rows} rows x {args.docs} docs (4 choices), venv {args.venv}")

    common = ["--cluster", "local", "--models", str(model), "--suite", "lighteval", "--tasks", ",".join(names),
              "--n_shot", "0", "--lighteval_custom_tasks", str(tasks_file)]
    oellm = str(args.venv / "oellm")
    whole = timed([oellm, "schedule-eval", *common, "--output_dir", str(work / "oellm")], env)
    timed([oellm, "schedule-eval", *common, "--output_dir", str(work / "dry"), "--dry_run"], env)
    [dry] = (work / "dry").iterdir()
    worker = timed([str(args.venv / "python"), "-m", "oellm", "worker", "--run_dir", str(dry), "--index", "0"], env)

    copy = work / "model"  # lighteval's CLI caches predictions inside an absolute model path: a copy
    shutil.copytree(model, copy)
    separate = 0.0
    for name in names:
        separate += timed([str(args.venv / "python"), "-c", LIGHTEVAL_CLI, "accelerate",
                           f"model_name={copy},batch_size=16,device=cpu", f"{name}|0", "--custom-tasks",
                           str(tasks_file), "--output-dir", str(work / "ref" / name)], env)

    [run] = (work / "oellm").iterdir()
    ours = {json.loads(p.read_text())["oellm"]["row"]["task"]: json.loads(p.read_text())
            for p in (run / "results").glob("*.json")}
    equal, loads = 0, set()
    for name in names:
        [ref_file] = (work / "ref" / name).rglob("results_*.json")
        ref = formats.from_lighteval(json.loads(ref_file.read_text()))
        equal += ours[name]["results"] == ref["results"]
        loads.add((ours[name]["oellm"]["model_load"]["pid"], ours[name]["oellm"]["model_load"]["started"]))
    print(f"oellm schedule-eval (plan, preflight, one worker): {whole:7.1f} s")
    print(f"  its worker process alone (same rows, --dry_run run dir): {worker:7.1f} s")
    print(f"{args.rows} lighteval accelerate processes:               {separate:7.1f} s")
    print(f"ratio separate / schedule-eval: {separate / whole:.2f}x; separate / worker: {separate / worker:.2f}x")
    print(f"model loads in oellm's rows: {len(loads)}; metrics equal to lighteval's own: {equal} of {args.rows}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
