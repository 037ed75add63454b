"""lm-evaluation-harness as a suite: task names and datasets from its YAMLs (`lm_eval_tasks`), models
loaded once through its HF wrapper, each row one `simple_evaluate` call on the loaded model.

Every lm-eval call of the worker is here; the worker only groups rows, records states and writes
results.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from oellm import options
from oellm.rows import EvalRow, ModelRef, is_path
from oellm.rundir import utc_now
from oellm.suites import lm_eval_manager as manager
from oellm.suites import lm_eval_needs
from oellm.suites import lm_eval_shard as shard
from oellm.suites import lm_eval_tasks as tasks
from oellm.suites.base import RowFailure, on_disk

log = logging.getLogger("oellm.worker")

CPU_BATCH_SIZE = 16


class LmEvalSuite:
    name = "lm_eval"

    def __init__(self) -> None:
        self._task_manager: Any = None
        self._loads = 0  # models loaded by this process: provenance shows each array task loads a model once

    def validate(self, names: Sequence[str], include_paths: Sequence[str]) -> None:
        tasks.validate_tasks(list(names), yaml_dirs(include_paths))

    def datasets(self, names: Sequence[str], include_paths: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return lm_eval_needs.task_datasets(list(names), yaml_dirs(include_paths))

    def fewshot_pools(self, rows: Sequence[EvalRow], include_paths: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Each leaf task's few-shot split and the most shots its rows ask (the pre-cache counts them)."""
        shots: dict[str, set[int | None]] = {}
        for r in rows:
            shots.setdefault(r.task, set()).add(r.n_shot)
        return lm_eval_needs.fewshot_pools(shots, yaml_dirs(include_paths))

    def nltk_resources(self, names: Sequence[str], include_paths: Sequence[str]) -> dict[str, list[str]]:
        """NLTK data its tasks' code downloads at import (the nodes are offline: the pre-cache fetches it)."""
        return lm_eval_needs.nltk_resources(list(names), yaml_dirs(include_paths))

    def load(self, ref: ModelRef, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Check the model is on disk (never wait for a network compute nodes lack), then load it once."""
        import torch
        from lm_eval.api.registry import get_model
        from lm_eval.utils import simple_parse_args_string

        revision = ref.commit(settings.get("model_revisions") or {}) or ref.revision
        _, resolved = on_disk(ref, revision)
        # `oellm resubmit --gpus_per_task N` after an OOM: spread the model over the task's GPUs
        args = ref.lm_eval_args(revision, _hub_tokenizer_path(ref),
                                parallelize=True if settings.get("parallelize") else None)
        cuda = torch.cuda.is_available()
        info = {"args": args, "metadata": simple_parse_args_string(args), "revision": resolved,
                "device": "cuda" if cuda else "cpu", "gpu": torch.cuda.get_device_name(0) if cuda else None,
                "batch_size": _batch_size(settings.get("batch_size", "auto"), cuda), "pid": os.getpid(),
                "started": utc_now()}
        t0 = time.perf_counter()
        log.info("loading %s on %s", args, info["device"])
        _cache_env_info()
        lm = get_model("hf").create_from_arg_string(args, {"batch_size": info["batch_size"], "device": info["device"],
                                                           "max_batch_size": settings.get("max_batch_size") or 64})
        if info["batch_size"] == "auto":
            remember_batch_sizes(lm)
        self._loads += 1
        info.update(seconds=round(time.perf_counter() - t0, 3), loads_in_process=self._loads)
        return lm, info

    def evaluate(self, model: Any, info: dict[str, Any], row: EvalRow, rows: Sequence[EvalRow],
                 settings: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """One row; a shard row runs its documents only and returns their recorded responses (see
        `lm_eval_shard`): its metrics exist only once `merge` has every shard."""
        if row.num_shards:
            with shard.recording(model, row.shard or 0, row.num_shards) as responses:
                out = self._simple_evaluate(model, info["args"], row, rows, settings, info, log_samples=False)
            return {"results": {}, "n-shot": out.get("n-shot") or {},
                    "shard": {"shard": row.shard, "num_shards": row.num_shards, "responses": dict(responses)}}, None
        with shard.timing(model) as model_s:
            out = self._simple_evaluate(model, info["args"], row, rows, settings, info)
        out["timing"] = {"model_s": round(model_s[0], 3)}  # what shards would divide (oellm.plan.advisor)
        return self._scored(out, row)

    def merge(self, row: EvalRow, shards: Sequence[dict[str, Any]], settings: dict[str, Any],
              model_args: str) -> tuple[dict[str, Any], Any]:
        """The whole evaluation from its shards: lm-eval replays their responses and scores them once."""
        from lm_eval.utils import simple_parse_args_string

        replay = shard.replay_lm(shard.merge_responses(list(shards)))
        info = {"metadata": simple_parse_args_string(model_args), "batch_size": 1, "device": "cpu"}
        return self._scored(self._simple_evaluate(replay, model_args, row, [row], settings, info), row)

    def _simple_evaluate(self, model: Any, model_args: str, row: EvalRow, rows: Sequence[EvalRow],
                         settings: dict[str, Any], info: dict[str, Any], log_samples: bool | None = None) -> Any:
        import lm_eval
        from lm_eval.loggers import EvaluationTracker

        if self._task_manager is None:  # one index for all rows of the process (milliseconds, not 15 s)
            self._task_manager = manager.task_manager_for(sorted({r.task for r in rows}),
                                                        yaml_dirs(settings.get("include_paths") or []))
        kwargs = options.simple_evaluate_kwargs(row.options, settings)
        # task metadata as lm-eval's CLI builds it: the model args, then --metadata over them
        metadata = {**info["metadata"], **(options.parse_row_options(row.options).get("metadata") or {})}
        tracker = EvaluationTracker()  # no output path: it only records the run's settings, as the CLI's does
        out = lm_eval.simple_evaluate(
            model=model, model_args=model_args, tasks=[row.task], num_fewshot=row.n_shot,
            limit=_limit(row.limit), task_manager=manager.with_metadata(self._task_manager, metadata),
            log_samples=bool(settings.get("log_samples", False)) if log_samples is None else log_samples,
            batch_size=info["batch_size"], device=info["device"], use_cache=None, cache_requests=False,
            evaluation_tracker=tracker, **kwargs)
        if out is not None:
            cli_fields(out, tracker)
        return out

    @staticmethod
    def _scored(out: Any, row: EvalRow) -> tuple[dict[str, Any], Any]:
        samples = out.pop("samples", None) if out else None
        if options.parse_row_options(row.options).get("predict_only"):  # lm-eval's --predict_only: no metrics
            return out, samples
        if not has_metrics(out):
            raise RowFailure("no_metrics", f"lm-eval finished task {row.task} but reported no metrics")
        return out, samples

    def unload(self) -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def cli_fields(out: dict[str, Any], tracker: Any) -> None:
    """The top-level fields the `lm_eval` CLI writes into its results file besides what `simple_evaluate`
    returns (model_name, chat_template, chat_template_sha, system_instruction, fewshot_as_multiturn,
    start/end time, task_hashes), so a tool that reads lm-eval's output reads ours. Set as its
    `EvaluationTracker.save_results_aggregated` sets them; task hashes exist only with logged samples."""
    from dataclasses import asdict

    from lm_eval.utils import hash_string

    tracker.general_config_tracker.log_end_time()
    hashes = {}
    for name, task_samples in (out.get("samples") or {}).items():
        hashes[name] = hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in task_samples))
    out["task_hashes"] = hashes
    out.update(asdict(tracker.general_config_tracker))


def _hub_tokenizer_path(ref: ModelRef) -> dict[str, str]:
    """`tokenizer=org/tok` -> its snapshot dir in the offline cache (the pre-cache fetched it). lm-eval
    loads a hub tokenizer at the model's revision, a commit of another repo; a path takes none."""
    tok = ref.arg_dict.get("tokenizer")
    if not tok or is_path(tok):
        return {}
    from huggingface_hub import snapshot_download

    return {"tokenizer": snapshot_download(tok, local_files_only=True)}


def yaml_dirs(sources: Sequence[str]) -> list[str]:
    """lm-eval's share of a run's task sources: the YAML dirs (lighteval's custom task file is not one)."""
    return [s for s in sources if not s.endswith(".py")]


def has_metrics(out: dict[str, Any] | None) -> bool:
    """True when some task reports a number for a metric (lm-eval's "metric,filter" keys): lm-eval can
    exit cleanly with empty results."""
    from numbers import Number

    return any("," in k and "_stderr," not in k and isinstance(v, Number) and not isinstance(v, bool)
               for res in ((out or {}).get("results") or {}).values() if isinstance(res, dict) for k, v in res.items())


def _batch_size(requested: str | int, cuda: bool) -> str | int:
    """lm-eval's "auto" probes GPU memory with batches of 64 full-length sequences before every row;
    on a CPU that only costs time (2 s per row for a tiny model, 90 s for SmolLM2), so use a fixed size."""
    return CPU_BATCH_SIZE if str(requested) == "auto" and not cuda else requested


def remember_batch_sizes(lm: Any) -> None:
    """lm-eval (0.4.13) forgets its `auto` batch size after every call and probes GPU memory again (five
    forward passes per halving) before each row. A size that fit sequences at least as long (context,
    continuation, total) fits again, so a worker probes once per model and task shape, not per row."""
    probe = lm._detect_batch_size
    seen: dict[tuple[int, int, int], int] = {}

    def detect(requests: Any = None, pos: int = 0) -> int:
        if requests:  # the lengths lm-eval's probe uses: the longest request, truncated to max_length
            _, ctx, cont = requests[pos]
            cap = lm.max_length + 1
            shape = (len((ctx + cont)[-cap:][:-1]), len(ctx[-cap:]), len(cont[-cap:]))
        else:
            shape = (lm.max_length,) * 3
        for known, size in seen.items():
            if all(k >= s for k, s in zip(known, shape, strict=True)):
                return size
        seen[shape] = size = probe(requests, pos)
        return size

    lm._detect_batch_size = detect


def _limit(limit: float | None) -> int | float | None:
    """jobs.csv stores limits as floats; lm-eval reads a float < 1 as a fraction, anything else as a count."""
    return int(limit) if limit is not None and limit >= 1 and float(limit).is_integer() else limit


def _cache_env_info() -> None:
    """lm-eval collects `pretty_env_info` (pip list, nvidia-smi, ...: ~0.9 s) on every simple_evaluate
    call; it cannot change within a process, so collect it once and reuse it for every row."""
    import lm_eval.evaluator as ev

    original = ev.add_env_info
    if getattr(original, "oellm_cached", False):
        return
    memo: dict[str, Any] = {}

    def add_env_info(storage: dict[str, Any]) -> None:
        if not memo:
            original(memo)
        storage.update(memo)

    add_env_info.oellm_cached = True  # type: ignore[attr-defined]
    ev.add_env_info = add_env_info
