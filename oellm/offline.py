"""The offline environment of compute nodes, decided once: the sbatch script exports it, the worker
sets it before any Hugging Face import, and the pre-cache's offline proof runs under it."""

from __future__ import annotations

from collections.abc import Mapping

# Compute nodes have no network: every Hugging Face library must read only its cache.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# What the worker runs under: offline, no tokenizer thread pool fighting lm-eval's processes, and no working
# dir on sys.path (Python >= 3.11): `python -m oellm` in a dir holding another `oellm` package, such as a
# checkout of oellm-eval, would import that one (older Pythons: the script and executors change dir first).
WORKER_ENV = {**OFFLINE_ENV, "TOKENIZERS_PARALLELISM": "false", "PYTHONSAFEPATH": "1"}


def offline_requested(env: Mapping[str, str]) -> bool:
    """The user asked for no network (huggingface_hub reads "1", "true", "yes" and "on" as set)."""
    return any(str(env.get(k, "")).strip().lower() in ("1", "true", "yes", "on") for k in OFFLINE_ENV)
