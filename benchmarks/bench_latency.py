"""Latency of `measure_hf` against a bare `model.generate` on SmolLM2-135M (CPU): the harness (streamer,
timers, sampler thread) must not change what it measures.

    python examples/prepare_smollm2.py        # once: writes examples/models/smollm2-135m
    python benchmarks/bench_latency.py [--batch-sizes 1 8] [--input-tokens 128] [--output-tokens 128]
                                       [--num-runs 3] [--warmup-runs 1] [--threads N] [--model DIR]

Per batch size it prints measure_hf's `latency_s` (with the streamer) and `latency_s_no_streamer`, the
median of bare generate calls in the same process (half before, half after the measurement, so a drift in
machine load moves both alike), their ratio (target: within 5%), the ratio of the fastest runs (robust
when other processes share the cores), and the streamer overhead. On a shared machine prefer --threads 1:
with more torch threads than free cores one descheduled thread stalls every step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from oellm.bench.measure import BenchSpec, prompt_ids, report, run_hf  # noqa: E402

DEFAULT_MODEL = REPO / "examples" / "models" / "smollm2-135m"
TARGET = 0.05


def bare_latencies(model: Any, tok: Any, spec: BenchSpec, runs: int, warmup: int) -> list[float]:
    """Plain generate calls on the same prompt batch, with the settings written out, not borrowed."""
    import torch

    ids = prompt_ids(model, tok, spec)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           min_new_tokens=spec.output_tokens, max_new_tokens=spec.output_tokens, pad_token_id=pad)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--input-tokens", type=int, default=128)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--num-runs", type=int, default=3)
    ap.add_argument("--warmup-runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if not (args.model / "config.json").is_file():
        print(f"{args.model} is missing: run `python examples/prepare_smollm2.py` first", file=sys.stderr)
        return 1

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args.model)
    print(f"{args.model.name}, CPU, {torch.get_num_threads()} torch threads, {args.input_tokens} -> "
          f"{args.output_tokens} tokens, {args.num_runs} runs + {args.warmup_runs} warm-up, "
          f"load average {os.getloadavg()[0]:.2f}")
    header = (f"{'batch':>5}  {'latency_s':>9}  {'no_streamer':>11}  {'bare':>8}  {'ratio':>6}  "
              f"{'min_ratio':>9}  {'streamer_overhead_s':>19}  {'tokens/s':>8}  within 5%")
    print(header)
    worst = 0.0
    for batch in args.batch_sizes:
        spec = BenchSpec(batch, args.input_tokens, args.output_tokens, num_runs=args.num_runs,
                         warmup_runs=args.warmup_runs)
        bare = bare_latencies(model, tok, spec, (args.num_runs + 1) // 2, args.warmup_runs)
        runs = run_hf(model, tok, spec, "cpu")  # measure_hf is report(run_hf(...)): the same figures
        out = report(runs, spec, "hf")
        bare += bare_latencies(model, tok, spec, args.num_runs // 2 or 1, 0)
        direct = statistics.median(bare)
        ratio = out["latency_s"] / direct
        min_ratio = min(s["latency_s"] for s in runs.streamed) / min(bare)
        worst = max(worst, abs(ratio - 1))
        print(f"{batch:>5}  {out['latency_s']:>9.3f}  {out['latency_s_no_streamer']:>11.3f}  {direct:>8.3f}  "
              f"{ratio:>6.3f}  {min_ratio:>9.3f}  {out['streamer_overhead_s']:>+19.4f}  "
              f"{out['output_tokens_per_s']:>8.1f}  {'yes' if abs(ratio - 1) <= TARGET else 'NO'}")
    print(f"worst |ratio - 1| = {worst:.3f} (target {TARGET}); load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
