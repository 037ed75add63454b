"""Pre-caching on the login node (compute nodes are offline).

For now: Hugging Face models are fetched into the cluster's HF_HOME and local model dirs were
already checked by planning. Datasets, pinned revisions and the offline verification are the
pre-cache issue's work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from oellm.clusters import ClusterConfig, expand
from oellm.errors import OellmError
from oellm.plan import is_local
from oellm.rundir import EvalRow

# Only what a model needs to load: weights in the preferred formats, config, tokenizer.
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]


def precache(rows: Sequence[EvalRow], cluster: ClusterConfig, log: Callable[[str], None] = print) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    for key, value in cluster.env.items():
        os.environ[key] = expand(value, f"cluster {cluster.name}.env.{key}")
    models = sorted({(r.model, _revision(r.model_args)) for r in rows})
    for model, revision in models:
        if is_local(model):
            log(f"local    {model}")
            continue
        try:
            path = snapshot_download(model, revision=revision, allow_patterns=MODEL_FILES)
        except HfHubHTTPError as e:
            raise OellmError(f"cannot fetch model {model} (revision {revision or 'main'}): {e}") from None
        log(f"cached   {model}@{revision or 'main'} -> {path}")
    log("note: task datasets are not pre-cached yet; run one evaluation on the login node to fill the datasets cache")


def _revision(model_args: str) -> str | None:
    args = dict(a.split("=", 1) for a in model_args.split(",") if "=" in a)
    return args.get("revision")
