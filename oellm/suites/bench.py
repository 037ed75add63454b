"""`oellm bench` as a suite: each row is a workload (`oellm.bench.task.Workload`) measured on a model
loaded once per array task; the measuring itself is `oellm.bench.measure`'s.

The result keeps lm-eval's layout ({"results": {task: {"metric,none": value}}}) so the worker, status
and collect-results treat it like a score; `bench` holds every field, the missing ones (no energy meter
here) as null, never 0.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from numbers import Number
from typing import Any

from oellm.bench.task import Workload
from oellm.rows import EvalRow, ModelRef
from oellm.rundir import utc_now
from oellm.suites.base import RowFailure, on_disk

HEADLINE = "output_tokens_per_s"  # first in the result: what a finished local run prints


class BenchSuite:
    name = "bench"

    def __init__(self) -> None:
        self._hf: tuple[Any, Any] | None = None  # (model, tokenizer), loaded at the first hf row of a model
        self._meter: Any = None  # the energy meter, opened once per process

    def validate(self, names: Sequence[str], include_paths: Sequence[str]) -> None:
        for name in names:
            Workload.parse(name)

    def datasets(self, names: Sequence[str], include_paths: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return {}  # random token ids: nothing to pre-cache but the model

    def load(self, ref: ModelRef, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Find the model on disk (fail fast); the weights load at its first hf row, so vLLM rows do not
        share the GPU with an idle transformers copy."""
        import torch

        revision = ref.commit(settings.get("model_revisions") or {}) or ref.revision
        path, resolved = on_disk(ref, revision)
        cuda = torch.cuda.is_available()
        args = {k: v for k, v in ref.arg_dict.items() if k != "revision"}
        return None, {"path": path, "revision": resolved, "device": "cuda" if cuda else "cpu",
                      "dtype": args.pop("dtype", None), "args": args,
                      "gpu": torch.cuda.get_device_name(0) if cuda else None, "started": utc_now()}

    def _load_hf(self, info: dict[str, Any]) -> tuple[Any, Any]:
        if self._hf is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            t0 = time.perf_counter()
            dtype = getattr(torch, info["dtype"]) if info["dtype"] else "auto"
            model = AutoModelForCausalLM.from_pretrained(info["path"], dtype=dtype, **info["args"])
            self._hf = model.to(info["device"]).eval(), AutoTokenizer.from_pretrained(info["path"])
            info["load_s"] = round(time.perf_counter() - t0, 3)
        return self._hf

    def evaluate(self, model: Any, info: dict[str, Any], row: EvalRow, rows: Sequence[EvalRow],
                 settings: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        from oellm.bench import measure

        work = Workload.parse(row.task)
        if self._meter is None and info["device"] != "cpu":
            from oellm.bench.energy import open_meter

            self._meter = open_meter()
        spec = measure.BenchSpec(batch_size=work.batch_size, input_tokens=work.input_tokens,
                                 output_tokens=work.output_tokens, num_runs=work.num_runs,
                                 warmup_runs=work.warmup_runs, streamer=work.streamer, data=work.data)
        if work.backend == "vllm":
            fields = measure.measure_vllm(info["path"], spec, dtype=info["dtype"], meter=self._meter)
        else:
            fields = measure.measure_hf(*self._load_hf(info), spec, info["device"], meter=self._meter)
        numbers = {k: v for k, v in fields.items() if isinstance(v, Number) and not isinstance(v, bool)}
        if HEADLINE not in numbers:
            raise RowFailure("no_metrics", f"bench {row.task} measured no throughput")
        metrics = {f"{HEADLINE},none": numbers.pop(HEADLINE), **{f"{k},none": v for k, v in numbers.items()}}
        result = {"results": {row.task: metrics}, "n-shot": {row.task: 0},
                  "bench": {**fields, "backend": work.backend, "device": info["device"], "gpu": info["gpu"],
                            "dtype": info["dtype"]},
                  "config": {"model": "bench", "model_args": f"pretrained={row.model}" +
                             (f",{row.model_args}" if row.model_args else "")}}
        return result, None

    def unload(self) -> None:
        import torch

        self._hf = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
