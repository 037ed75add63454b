"""The offline environment of compute nodes, decided once: the sbatch script exports it, the worker
sets it before any Hugging Face import, and the pre-cache's offline proof runs under it."""

from __future__ import annotations

from collections.abc import Mapping

# Compute nodes have no network: every Hugging Face library must read only its cache.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# What the worker runs under: offline, and no tokenizer thread pool fighting lm-eval's processes.
WORKER_ENV = {**OFFLINE_ENV, "TOKENIZERS_PARALLELISM": "false"}


def offline_requested(env: Mapping[str, str]) -> bool:
    """The user asked for no network (huggingface_hub reads "1", "true", "yes" and "on" as set)."""
    return any(str(env.get(k, "")).strip().lower() in ("1", "true", "yes", "on") for k in OFFLINE_ENV)
