"""The cache the worker reads, as the login node sees it: the cluster's HF_HOME, our markers of what a
pre-cache completed (so a repeated sweep needs no network and no huggingface_hub import), and how a
model or dataset is named in messages."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from oellm.clusters import ClusterConfig
from oellm.rows import COMMIT
from oellm.rundir import atomic_open
from oellm.sitevalues import expand_env


def cache_env(cluster: ClusterConfig) -> dict[str, str]:
    """This process's environment with the cluster's `env` (HF_HOME, ...) on top: what the worker sees."""
    env = dict(os.environ)
    env.update(expand_env(cluster.env, os.environ, f"cluster {cluster.name}.env"))  # in the script's order
    return env


def nltk_dir(env: dict[str, str]) -> Path:
    """Where metric assets of NLTK (ifeval's punkt_tab, ...) are kept for offline nodes: the first dir of
    $NLTK_DATA, else oellm's cache (bound into the container, pinned in the script like the HF caches)."""
    first = (env.get("NLTK_DATA") or "").split(os.pathsep)[0]
    if first:
        return Path(first).expanduser()
    from oellm.suites.lm_eval_tasks import cache_dir

    return Path(env.get("OELLM_CACHE_DIR") or cache_dir()) / "nltk_data"


def hub_cache(env: dict[str, str]) -> Path:
    home = Path(env.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    return Path(env.get("HF_HUB_CACHE") or home / "hub").expanduser()


def datasets_cache(env: dict[str, str]) -> Path:
    home = Path(env.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    return Path(env.get("HF_DATASETS_CACHE") or home / "datasets").expanduser()


def model_marker(env: dict[str, str], repo: str, commit: str) -> Path:
    return hub_cache(env) / ".oellm" / f"{repo.replace('/', '--')}@{commit}.json"


def dataset_marker(env: dict[str, str], key: str) -> Path:
    return datasets_cache(env) / ".oellm" / f"{key}.json"


def cached_model(env: dict[str, str], repo: str, commit: str) -> dict | None:
    """The marker of a pinned model whose listed files are all in its snapshot, else None."""
    try:
        mark = json.loads(model_marker(env, repo, commit).read_text())
    except (OSError, ValueError):
        return None
    snap = hub_cache(env) / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    return mark if all((snap / f).is_file() for f in mark["files"]) else None


def cached_dataset(env: dict[str, str], key: str) -> dict | None:
    try:
        mark = json.loads(dataset_marker(env, key).read_text())
    except (OSError, ValueError):
        return None
    return mark if mark["cache_files"] and all(Path(f).is_file() for f in mark["cache_files"]) else None


def write_marker(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:  # temp + rename: a concurrent pre-cache reads old or new, never half
        json.dump(data, fh)


def local_commit(env: dict[str, str], repo: str, revision: str | None) -> str | None:
    """The commit a revision names in the local hub cache (refs/<branch or tag>, or the commit itself),
    when its snapshot is there; None otherwise. What an offline login node can resolve."""
    folder = hub_cache(env) / f"models--{repo.replace('/', '--')}"
    commit: str | None = revision
    if revision is None or not COMMIT.match(revision):
        try:
            commit = (folder / "refs" / (revision or "main")).read_text().strip()
        except OSError:
            return None
    return commit if commit and (folder / "snapshots" / commit).is_dir() else None


def dataset_label(ds: dict[str, Any], with_tasks: bool = False) -> str:
    """`dataset PATH (NAME)`, after `task T1, T2: ` when `with_tasks`."""
    label = f"dataset {ds['path']}" + (f" ({ds['name']})" if ds.get("name") else "")
    return f"task {', '.join(ds['tasks'])}: {label}" if with_tasks else label
