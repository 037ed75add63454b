"""lighteval (0.13) as a suite: task names and datasets from its registry (multilingual tasks too:
`oellm.suites.lighteval_tasks`), a model loaded once through its transformers backend, each row one
`Pipeline` on that loaded model (spec `task|shots`).

lighteval needs huggingface_hub < 1 and so transformers < 5, unlike the lm-eval stack: it runs where
`oellm[lighteval]` is installed (a venv of its own, or the cluster's `container.images.lighteval`).
Four things lighteval 0.13 does that an offline, shared worker must not, each undone in one place here:
it downloads a pickle into its own package at import (`offline_import`), calls `nltk.download` at import
(`offline_import`), deletes the model after every pipeline (`load`: kept for the model's other rows), and
caches predictions under `cache_dir/<model_name>`, i.e. inside an absolute model path (`_private_cache`).
"""

from __future__ import annotations

import atexit
import difflib
import gc
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from oellm.errors import OellmError
from oellm.formats import from_lighteval
from oellm.rows import EvalRow, ModelRef
from oellm.rundir import utc_now
from oellm.suites import lighteval_index
from oellm.suites import lighteval_tasks as registry
from oellm.suites.base import RowFailure, on_disk

log = logging.getLogger("oellm.worker")

CPU_BATCH_SIZE = 16
# TransformersModelConfig fields a row's model args may set (the rest is oellm's: path, revision, device)
MODEL_FIELDS = ("dtype", "trust_remote_code", "max_length", "model_parallel", "add_special_tokens",
                "multichoice_continuations_start_space", "pairwise_tokenization", "compile", "subfolder", "tokenizer")


class LightevalSuite:
    name = "lighteval"

    def __init__(self, indexed: bool = False) -> None:
        self._loads = 0
        self._cache: str | None = None
        self._indexed = indexed  # plan from the shipped index (a login node without lighteval)

    def validate(self, names: Sequence[str], sources: Sequence[str]) -> None:
        tasks = self._tasks(sources, names)
        unknown = [n for n in names if not tasks.expand(n)]
        if unknown:
            hints = [f"{n} (did you mean {', '.join(c)}?)" if (c := difflib.get_close_matches(n, tasks.names, 3))
                     else n for n in unknown]
            raise OellmError(f"unknown lighteval task(s): {'; '.join(hints)}; spell them as lighteval does (e.g. "
                             "arc:challenge), or pass your task file with --lighteval_custom_tasks" + tasks.hint())

    def datasets(self, names: Sequence[str], sources: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """What lighteval's `download_dataset_worker` loads: load_dataset(hf_repo, hf_subset, revision)."""
        tasks = self._tasks(sources, names)
        return {leaf: tasks.facts(leaf).dataset() for leaf in tasks.leaves(names)}

    def nltk_resources(self, names: Sequence[str], sources: Sequence[str]) -> dict[str, list[str]]:
        """NLTK data the tasks' metrics download (oellm.cache.nltk_data pre-caches it for offline nodes)."""
        return registry.nltk_resources(self._tasks(sources, names), names)

    def _tasks(self, sources: Sequence[str], names: Sequence[str]) -> registry.Table:
        """lighteval's registry, or where it is not installed (planning only) oellm's shipped index of it."""
        if self._indexed:
            return lighteval_index.table(sources)
        return registry.table(sources, names)

    def load(self, ref: ModelRef, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        import torch

        revision = ref.commit(settings.get("model_revisions") or {}) or ref.revision
        path, resolved = on_disk(ref, revision)
        registry.offline_import()
        from lighteval.models.model_loader import load_model
        from lighteval.models.transformers import transformers_model as tm

        cuda = torch.cuda.is_available()
        requested = settings.get("batch_size", "auto")
        batch = (None if cuda else CPU_BATCH_SIZE) if str(requested) == "auto" else int(requested)
        args = dict(kv.split("=", 1) for kv in ref.args.split(",") if "=" in kv)
        extra = {k: v for k, v in args.items() if k in MODEL_FIELDS}
        if settings.get("parallelize"):  # `oellm resubmit --gpus_per_task N` after an OOM: spread the model
            extra["model_parallel"] = True
        if self._cache is None:  # this process's predictions only; gone when it exits
            self._cache = tempfile.mkdtemp(prefix="oellm-lighteval-")
            atexit.register(shutil.rmtree, self._cache, True)
        _private_cache(tm, self._cache)
        info = {"args": ref.args, "revision": resolved, "device": "cuda" if cuda else "cpu",
                "gpu": torch.cuda.get_device_name(0) if cuda else None, "batch_size": batch or "auto",
                "pid": os.getpid(), "started": utc_now()}
        t0 = time.perf_counter()
        log.info("loading %s with lighteval on %s", path, info["device"])
        config = tm.TransformersModelConfig(model_name=path, batch_size=batch, device=info["device"],
                                            cache_dir=self._cache, **extra)
        model = load_model(config=config)
        model.cleanup = lambda: None  # lighteval deletes the weights after each pipeline: kept for the other rows
        self._loads += 1
        info.update(seconds=round(time.perf_counter() - t0, 3), loads_in_process=self._loads)
        return model, info

    def evaluate(self, model: Any, info: dict[str, Any], row: EvalRow, rows: Sequence[EvalRow],
                 settings: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        from importlib.metadata import version

        from lighteval.logging.evaluation_tracker import EvaluationTracker
        from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters

        tasks = registry.pipeline_tasks(row.task, settings.get("include_paths") or [])
        params = PipelineParameters(launcher_type=ParallelismManager.NONE, max_samples=_samples(row.limit),
                                    custom_tasks_directory=tasks)
        with tempfile.TemporaryDirectory(prefix="oellm-lighteval-out-") as out:
            pipeline = Pipeline(tasks=f"{row.task}|{row.n_shot or 0}", pipeline_parameters=params, model=model,
                                evaluation_tracker=EvaluationTracker(output_dir=out, save_details=False))
            pipeline.evaluate()
            final = pipeline.get_results()
        result = from_lighteval(final)
        if not any(result["results"].values()):
            raise RowFailure("no_metrics", f"lighteval finished task {row.task} but reported no metrics")
        general = final.get("config_general") or {}
        result["lighteval"] = {"version": version("lighteval"), "versions": final.get("versions"),
                               "seconds": general.get("total_evaluation_time_secondes")}
        return result, None

    def unload(self) -> None:
        """The worker drops the model after its rows (or frees memory after an OOM, keeping it)."""
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def planning_only() -> LightevalSuite:
    """The suite as a login node without lighteval plans it: task names, datasets and NLTK data from oellm's
    shipped index of the pinned lighteval (`oellm.suites.lighteval_index`); it cannot load or evaluate."""
    return LightevalSuite(indexed=True)


def _samples(limit: float | None) -> int | None:
    """A count (planning refused fractions for lighteval rows: oellm.suites.WHOLE_LIMITS)."""
    return None if limit is None else int(limit)


def _private_cache(module: Any, root: str) -> None:
    """lighteval caches predictions in `cache_dir / model_name / <config hash>`; an absolute model path
    replaces cache_dir there, so it writes into the model's own dir (read-only, or shared with other runs
    whose weights changed but not their config hash). Keep it in this process's temp dir."""
    base = getattr(module.SampleCache, "oellm_base", module.SampleCache)

    class Cache(base):  # type: ignore[misc,valid-type]
        oellm_base = base

        def __init__(self, config: Any) -> None:
            super().__init__(config.model_copy(update={"model_name": str(config.model_name).lstrip("/"),
                                                       "cache_dir": root}))

    module.SampleCache = Cache
