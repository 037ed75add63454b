"""Loading a row's model for the worker: on disk or fail fast (compute nodes are offline), once per task."""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

from oellm.rundir import utc_now

log = logging.getLogger("oellm.worker")

_LOADS = 0  # models loaded by this process: provenance shows each array task loads a model once
CPU_BATCH_SIZE = 16


class RowFailure(Exception):
    """A failure we can name; `kind` goes into the state record's error_kind."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def load_model(model: str, model_args: str, manifest: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Check the model is on disk (never wait for a network compute nodes lack), then load it once."""
    import torch
    from lm_eval.api.registry import get_model
    from lm_eval.utils import simple_parse_args_string

    global _LOADS
    revision = (manifest.get("model_revisions") or {}).get(model)
    if "revision" in simple_parse_args_string(model_args):
        revision = None  # the row pins its own revision
    resolved = _local_model(model, revision)
    # `oellm resubmit --gpus_per_task N` after an OOM: spread the model over the task's GPUs
    spread = manifest.get("parallelize") and "parallelize" not in simple_parse_args_string(model_args)
    args = ",".join(a for a in (f"pretrained={model}", model_args, revision and f"revision={revision}",
                                spread and "parallelize=True") if a)
    cuda = torch.cuda.is_available()
    info = {"args": args, "metadata": simple_parse_args_string(args), "revision": resolved,
            "device": "cuda" if cuda else "cpu", "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "batch_size": _batch_size(manifest.get("batch_size", "auto"), cuda), "pid": os.getpid(), "started": utc_now()}
    t0 = time.perf_counter()
    log.info("loading %s on %s", args, info["device"])
    _cache_env_info()
    lm = get_model("hf").create_from_arg_string(args, {"batch_size": info["batch_size"], "device": info["device"]})
    _LOADS += 1
    info.update(seconds=round(time.perf_counter() - t0, 3), loads_in_process=_LOADS)
    return lm, info


def _local_model(model: str, revision: str | None) -> str | None:
    """Fail fast when the model is not on disk; return the cached commit of a hub model."""
    if _is_path(model):
        if not Path(model).expanduser().is_dir():
            raise RowFailure("missing_model", f"model directory {model} not found; fetch or convert it first "
                             "with `oellm schedule-eval ... --download_only` on a login node")
        return revision
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(model, revision=revision, local_files_only=True)
    except (OSError, ValueError) as e:  # LocalEntryNotFoundError is an OSError
        raise RowFailure("missing_model", f"model {model}{'@' + revision if revision else ''} is not in the "
                         "local Hugging Face cache and compute nodes are offline; run `oellm schedule-eval "
                         f"... --download_only` on a login node first ({type(e).__name__})") from None
    return Path(snapshot).name  # snapshots/<commit>: the revision actually evaluated


def _is_path(model: str) -> bool:
    """A hub id is `name` or `org/name`; anything else, or an existing folder, is a local path."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or Path(model).exists()



def _batch_size(requested: str | int, cuda: bool) -> str | int:
    """lm-eval's "auto" probes GPU memory with batches of 64 full-length sequences before every row;
    on a CPU that only costs time (2 s per row for a tiny model, 90 s for SmolLM2), so use a fixed size."""
    return CPU_BATCH_SIZE if str(requested) == "auto" and not cuda else requested


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


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
