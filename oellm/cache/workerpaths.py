"""Every path a worker opens, which a container must bind: decided once for the sbatch script, the
preflight and a suite's plan-time probe."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from oellm.cache.paths import cache_env, datasets_cache, hub_cache, nltk_dir
from oellm.cache.precache import local_files, wanted
from oellm.clusters import ClusterConfig
from oellm.errors import OellmError
from oellm.rows import EvalRow
from oellm.suites.lm_eval_tasks import cache_dir


def worker_paths(rows: Sequence[EvalRow], cluster: ClusterConfig, includes: Sequence[str],
                 root: Path | None = None) -> list[str]:
    """Every path a worker opens: the run root, the HF caches, oellm's cache, local models, task dirs and
    local data files (the container must bind each). The caches are created if missing."""
    try:
        env = cache_env(cluster)
        caches = [str(hub_cache(env)), str(datasets_cache(env)), str(nltk_dir(env))]  # NLTK: what tasks download
    except OellmError:  # the cluster's HF_HOME names a $VAR unset here: a dry run elsewhere; the pre-cache says so
        caches = []
    _, _, datasets, _ = wanted(rows, includes)
    files = [f for ds in datasets for f in local_files(ds)]
    arg_paths = {p for r in rows for p in r.ref.arg_paths}  # tokenizer=, peft= dirs: the worker opens them
    refs = {r.ref for r in rows if not r.ref.is_hub}
    # a training run's checkpoints: one bind for the run dir, not one per checkpoint
    models = {str(Path(m.name).parent) if m.kind == "checkpoint" else m.name for m in refs}
    linked = {os.path.dirname(os.path.realpath(e.path)) for m in refs for e in _entries(m.name) if e.is_symlink()}
    for d in [*caches, str(cache_dir())]:  # the worker writes there (Arrow files, locks): bound even when new
        os.makedirs(d, exist_ok=True)
    paths = [*([str(root)] if root else []), *caches, str(cache_dir()), *models, *linked, *sorted(arg_paths),
             *includes, *files]
    return [p for p in paths if os.path.exists(os.path.expanduser(p))]


def _entries(path: str) -> list[os.DirEntry]:
    try:
        return list(os.scandir(path))
    except OSError:
        return []
