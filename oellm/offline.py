"""The offline environment of compute nodes, decided once: the sbatch script exports it, the worker
sets it before any Hugging Face import, and the pre-cache's offline proof runs under it."""

from __future__ import annotations

# Compute nodes have no network: every Hugging Face library must read only its cache.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# What the worker runs under: offline, and no tokenizer thread pool fighting lm-eval's processes.
WORKER_ENV = {**OFFLINE_ENV, "TOKENIZERS_PARALLELISM": "false"}
