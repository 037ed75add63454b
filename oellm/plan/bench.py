"""`oellm bench`: what a user asks to measure (models x batch sizes x lengths x backends), as rows of the
`bench` suite that go the same way as evaluations: plan -> run dir -> executor -> worker.

PACE's JSON config keys (`model_args`, `generation_args`, `warmup_runs`, `num_runs`) are fields here,
so its files work as `--config`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from oellm.bench.task import Workload
from oellm.errors import OellmError
from oellm.plan import expand as ex
from oellm.plan.request import Request, validate_rows
from oellm.rows import EvalRow, normalize_args, parse_args

GENERATION_KEYS = ("max_new_tokens", "min_new_tokens", "batch_size", "do_sample")


@dataclass
class Bench(Request):
    """Throughput, latency and energy of models; one row per model x batch size x lengths x backend.

    Args:
        batch_size: Batch sizes to measure, e.g. "1,8,32".
        input_tokens: Prompt lengths in tokens (random token ids), e.g. 128 or "128,1024".
        output_tokens: Generated tokens per sequence (fixed: generation never stops early), e.g. 128.
        num_runs: Timed generate calls per row; medians and p90 are reported.
        warmup_runs: Untimed generate calls before them.
        backend: "hf" (transformers), "vllm" (where the image has it), or both: "hf,vllm".
        dtype: Model dtype for every model, e.g. bfloat16 (a model's own dtype= wins).
        data: Where prompts come from: "random" token ids.
        streamer: Time the first token with a streamer (its cost is measured and reported).
        model_args: PACE config: args for every model, e.g. {"dtype": "bfloat16"}.
        generation_args: PACE config: {"max_new_tokens": N} sets --output_tokens.
    """

    HIDDEN = frozenset({"tasks", "n_shot", "eval_csv_path", "limit", "lm_eval_include_path", "log_samples",
                        "task_groups", "task_groups_file", "num_shards", "suite", "lighteval_custom_tasks",
                        "deadline", "follow", "follow_interval", "follow_until", "checkpoint_ready_file"})

    batch_size: str | int | list[int] | None = "1"  # type: ignore[assignment]  # a list here, lm-eval's value there
    input_tokens: str | int | list[int] = 128
    output_tokens: str | int | list[int] = 128
    num_runs: int = 5
    warmup_runs: int = 2
    backend: str | list[str] = "hf"
    dtype: str | None = None
    data: str = "random"
    streamer: bool = True
    model_args: dict[str, Any] | str | None = None
    generation_args: dict[str, Any] | None = None

    def plan(self, includes: Sequence[str]) -> tuple[list[EvalRow], int]:
        if not self.models:
            raise OellmError("nothing to measure: pass --models (comma-separated ids or dirs)")
        rows, dropped = ex.build_rows(ex.parse_models(self.models), [w.task for w in self.workloads()], [0],
                                      None, self.checkpoint_stride, self.last_n_checkpoints)
        extra = self._model_args()
        rows = [replace(r, suite="bench", model_args=_merge(r.model, r.model_args, extra)) for r in rows]
        validate_rows(rows, includes)
        return rows, dropped

    def workloads(self) -> list[Workload]:
        gen = dict(self.generation_args or {})
        unknown = sorted(set(gen) - set(GENERATION_KEYS))
        if unknown:
            raise OellmError(f"generation_args: unknown key(s) {', '.join(unknown)}; known: {', '.join(GENERATION_KEYS)}")
        if gen.get("do_sample"):
            raise OellmError("generation_args.do_sample: bench generates greedily (do_sample false)")
        outputs = _ints("output_tokens", gen.get("max_new_tokens", self.output_tokens))
        sizes = _ints("batch_size", gen.get("batch_size", self.batch_size))
        combos = itertools.product(ex.split_list(self.backend), sizes, _ints("input_tokens", self.input_tokens), outputs)
        return [Workload(backend=b, batch_size=s, input_tokens=i, output_tokens=o, num_runs=self.num_runs,
                         warmup_runs=self.warmup_runs, data=self.data, streamer=self.streamer)
                for b, s, i, o in combos]

    def _model_args(self) -> list[str]:
        args = self.model_args if isinstance(self.model_args, dict) else parse_args(self.model_args or "")
        out = [f"{k}={v}" for k, v in args.items()]
        return out + ([f"dtype={self.dtype}"] if self.dtype and "dtype" not in args else [])


def _ints(name: str, value: Any) -> list[int]:
    items = ex.split_list(value)
    if not items:
        raise OellmError(f"--{name}: give at least one value, e.g. --{name} 128")
    bad = [v for v in items if not v.isdigit()]
    if bad:
        raise OellmError(f"--{name}: {bad[0]!r} is not a positive integer")
    return list(dict.fromkeys(int(v) for v in items))


def _merge(model: str, args: str, extra: list[str]) -> str:
    """The model's own args win over the ones for every model."""
    own = parse_args(args)
    return normalize_args([*(f"{k}={v}" for k, v in own.items()), *(a for a in extra if a.split("=")[0] not in own)],
                          model)
