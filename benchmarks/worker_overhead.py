"""Worker overhead: 20 rows (1 tiny model x 10 tasks x 2 shot counts) through one `oellm worker`
process, versus the same rows as 20 separate `lm_eval` CLI runs (what users did before oellm).

    python benchmarks/worker_overhead.py [--cli_runs N] [--workdir DIR] [--with_options]

Prints the wall time of each, their ratio (target >= 10x), the model loads the worker's results
record (target 1), and the worker's seconds per row beyond lm-eval's own evaluation time (target
< 0.5 s). The batch size is fixed (32) so that both sides spend the same, small model time; with
--batch_size auto lm-eval re-detects it on every simple_evaluate call (~2 s per row on 2 CPU cores),
which both sides pay and which shrinks the ratio. --cli_runs N < 20 times only the first N CLI runs and scales their mean up to 20 rows.
With --with_options every row (and every CLI run) uses lm-eval's options: a chat template (added to the
tiny tokenizer), a system instruction and a seed, so the options' cost per row shows.
Everything is built locally and runs offline (no network, no hub).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from oellm.rows import EvalRow  # noqa: E402
from tests.fixtures_models import build_tiny_model, build_tiny_tasks, make_run_dir  # noqa: E402

N_TASKS, SHOTS = 10, (0, 2)


CHAT = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant {% endif %}")
OPTION_FLAGS = ["--apply_chat_template", "--system_instruction", "Answer.", "--seed", "7"]


def build(work: Path, options: str = "") -> tuple[Path, Path, list[EvalRow]]:
    """The tiny model, its tasks plus ten copies of tiny_mc_a (bench_0..9), and the 20 rows."""
    model = build_tiny_model(work / "model")
    if options:
        cfg = model / "tokenizer_config.json"
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "chat_template": CHAT}))
    tasks = build_tiny_tasks(work / "tasks")
    for i in range(N_TASKS):
        (tasks / f"bench_{i}.yaml").write_text(f"include: tiny_mc_a.yaml\ntask: bench_{i}\n")
    rows = [EvalRow(str(model), f"bench_{i}", n, options=options) for i in range(N_TASKS) for n in SHOTS]
    return model, tasks, rows


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli_runs", type=int, default=2 * N_TASKS, help="lm_eval CLI runs to time (<= 20)")
    ap.add_argument("--batch_size", default="32", help="for both sides; with 'auto' (oellm's default) lm-eval "
                    "re-detects the batch size on every call, ~2 s of model time per row here, on both sides")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temp dir)")
    ap.add_argument("--with_options", action="store_true", help="chat template, system instruction, seed on both sides")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="oellm-bench-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HOME": str(work / "hf")}
    os.environ.update(env)
    from oellm.options import row_options

    options = row_options(apply_chat_template=True, system_instruction="Answer.", seed="7") if args.with_options else ""
    model, tasks, rows = build(work, options)
    run = make_run_dir(work, rows, include_paths=[tasks], batch_size=args.batch_size)

    worker_s = timed([sys.executable, "-m", "oellm", "worker", "--run_dir", str(run.path), "--index", "0"], env)
    results = [json.loads(run.result_path(r.row_id).read_text()) for r in rows]
    prov = [r["oellm"] for r in results]
    loads = len({json.dumps(p["model_load"], sort_keys=True) for p in prov})
    lm_eval_s = sum(p["lm_eval_s"] for p in prov)
    bookkeeping = statistics.median(p["wall_s"] - p["lm_eval_s"] for p in prov)  # row 1 also loads the model
    outside_rows = worker_s - sum(p["wall_s"] for p in prov)

    lm_eval_bin = str(Path(sys.executable).with_name("lm_eval"))
    n_cli = max(1, min(args.cli_runs, len(rows)))
    cli_times, agree = [], 0
    for i, row in enumerate(rows[:n_cli]):
        out = work / "cli" / str(i)
        cli_times.append(timed([lm_eval_bin, "--model", "hf", "--model_args", f"pretrained={model}",
                                "--tasks", row.task, "--num_fewshot", str(row.n_shot), "--include_path",
                                str(tasks), "--device", "cpu", "--batch_size", args.batch_size, "--output_path", str(out),
                                *(OPTION_FLAGS if args.with_options else [])], env))
        cli = json.loads(Path(glob.glob(f"{out}/**/results_*.json", recursive=True)[0]).read_text())
        agree += cli["results"][row.task] == results[i]["results"][row.task]
    cli_s = statistics.mean(cli_times) * len(rows)
    scaled = "" if n_cli == len(rows) else f" (mean of {n_cli} runs x {len(rows)})"

    print(f"rows: {len(rows)} (1 tiny model x {N_TASKS} tasks x shots {list(SHOTS)}, 24 docs each, cpu, "
          f"batch size {args.batch_size}{', options: ' + options if options else ''})")
    print(f"oellm worker, one process:   {worker_s:7.1f} s wall")
    print(f"lm_eval CLI, one per row:    {cli_s:7.1f} s wall{scaled}; per run {statistics.mean(cli_times):.1f} s")
    print(f"speed-up:                    {cli_s / worker_s:7.1f}x  (target >= 10x)")
    print(f"model loads in the worker:   {loads:7d}    (target 1; from the results' model_load provenance)")
    print(f"lm-eval evaluation time:     {lm_eval_s:7.1f} s in all ({lm_eval_s / len(rows):.2f} s per row, "
          "simple_evaluate calls)")
    print(f"overhead per row:            {(worker_s - lm_eval_s) / len(rows):7.2f} s  (target < 0.5 s; worker "
          "wall minus lm-eval time, incl. process start and model load)")
    print(f"  made of: process start + imports outside rows {outside_rows:.1f} s, model load "
          f"{prov[0]['model_load']['seconds']:.1f} s (once), per-row bookkeeping {bookkeeping:.3f} s (median)")
    print(f"metrics equal to the CLI's:  {agree}/{n_cli} rows")
    print(f"files: {work}")


if __name__ == "__main__":
    main()
