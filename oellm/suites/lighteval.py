"""lighteval (0.13) as a suite: task names and datasets from its registry, a model loaded once through
its transformers backend, each row one `Pipeline` on that loaded model (spec `task|shots`).

lighteval needs huggingface_hub < 1 and so transformers < 5, unlike the lm-eval stack: it runs where
`oellm[lighteval]` is installed (a venv of its own, or the cluster's `container.images.lighteval`).
Four things lighteval 0.13 does that an offline, shared worker must not, each undone in one place here:
it downloads a pickle into its own package at import (`_offline_import`), calls `nltk.download` at import
(`_offline_import`), deletes the model after every pipeline (`load`: kept for the model's other rows), and
caches predictions under `cache_dir/<model_name>`, i.e. inside an absolute model path (`_private_cache`).
"""

from __future__ import annotations

import atexit
import difflib
import gc
import logging
import os
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Sequence
from typing import Any

from oellm.errors import OellmError
from oellm.formats import from_lighteval
from oellm.offline import offline_requested
from oellm.rows import EvalRow, ModelRef
from oellm.rundir import utc_now
from oellm.suites.base import RowFailure, on_disk

log = logging.getLogger("oellm.worker")

CPU_BATCH_SIZE = 16
INSTALL = "pip install 'oellm[lighteval]' (its own venv: it needs transformers<5), or name a lighteval image " \
          "in the cluster's container.images"
# TransformersModelConfig fields a row's model args may set (the rest is oellm's: path, revision, device)
MODEL_FIELDS = ("dtype", "trust_remote_code", "max_length", "model_parallel", "add_special_tokens",
                "multichoice_continuations_start_space", "pairwise_tokenization", "compile", "subfolder", "tokenizer")


def custom_tasks(sources: Sequence[str]) -> str | None:
    """The lighteval custom-task file among a run's task sources (`--lighteval_custom_tasks`), if any."""
    files = [s for s in sources if s.endswith(".py")]
    if len(files) > 1:
        raise OellmError(f"--lighteval_custom_tasks: one file, got {len(files)}: {', '.join(files)}")
    return files[0] if files else None


def _offline_import() -> Any:
    """lighteval's registry, imported so that no import reaches for the network: the tinyBenchmarks
    module downloads its pickle into the installed package at import (an error offline or in a read-only
    image: its tasks are left out unless the image has the file), and nltk.download is a no-op offline
    (its data must be in NLTK_DATA)."""
    from importlib.util import find_spec

    name = "lighteval.tasks.tasks.tiny_benchmarks"
    try:
        spec = find_spec("lighteval")
    except ImportError:
        spec = None
    if spec is None or spec.origin is None:
        raise OellmError(f"lighteval rows need lighteval, which is not installed for {sys.executable}: {INSTALL}")
    pkl = os.path.join(os.path.dirname(spec.origin), "tasks", "tasks", "tinyBenchmarks.pkl")
    if name not in sys.modules and not os.path.exists(pkl):
        sys.modules[name] = types.ModuleType(name, "left out: tinyBenchmarks.pkl is not in the installed lighteval")
    if offline_requested(os.environ):
        import nltk

        nltk.download = lambda *a, **k: False
    from lighteval.tasks import registry

    return registry.Registry


_CONFIGS: dict[str | None, dict[str, Any]] = {}


def task_configs(sources: Sequence[str]) -> dict[str, Any]:
    """Every task lighteval knows (with the custom file's), name -> LightevalTaskConfig; ~5 s once."""
    custom = custom_tasks(sources)
    if custom not in _CONFIGS:
        _CONFIGS[custom] = _offline_import().load_all_task_configs(custom_tasks=custom)
    return _CONFIGS[custom]


def _expand(name: str, configs: dict[str, Any]) -> list[str]:
    """A task, or a superset such as `mmlu` (all `mmlu:*`), as lighteval expands it."""
    return [name] if name in configs else sorted(k for k in configs if k.split(":")[0] == name and ":" in k)


class LightevalSuite:
    name = "lighteval"

    def __init__(self) -> None:
        self._loads = 0
        self._cache: str | None = None

    def validate(self, names: Sequence[str], sources: Sequence[str]) -> None:
        configs = task_configs(sources)
        unknown = [n for n in names if not _expand(n, configs)]
        if unknown:
            hints = [f"{n} (did you mean {', '.join(c)}?)" if (c := difflib.get_close_matches(n, configs, 3)) else n
                     for n in unknown]
            raise OellmError(f"unknown lighteval task(s): {'; '.join(hints)}; spell them as lighteval does "
                             "(e.g. arc:challenge), or pass your task file with --lighteval_custom_tasks")

    def datasets(self, names: Sequence[str], sources: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """What lighteval's `download_dataset_worker` loads: load_dataset(hf_repo, hf_subset, revision)."""
        configs = task_configs(sources)
        return {leaf: {"dataset_path": configs[leaf].hf_repo, "dataset_name": configs[leaf].hf_subset,
                       "dataset_kwargs": {"revision": configs[leaf].hf_revision} if configs[leaf].hf_revision else {}}
                for n in names for leaf in _expand(n, configs)}

    def load(self, ref: ModelRef, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        import torch

        revision = ref.commit(settings.get("model_revisions") or {}) or ref.revision
        path, resolved = on_disk(ref, revision)
        _offline_import()
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

        params = PipelineParameters(launcher_type=ParallelismManager.NONE, max_samples=_samples(row.limit),
                                    custom_tasks_directory=custom_tasks(settings.get("include_paths") or []))
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
