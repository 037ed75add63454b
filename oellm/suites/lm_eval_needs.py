"""What a run needs of its lm-eval tasks, known before any task is built: each leaf task's dataset (read
from its YAML with its `include:`s; building the tasks would load every dataset), where its few-shot
examples come from, and whether it runs model-written code (both from the task index)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from oellm.suites.lm_eval_tasks import internal, is_yaml_file, resolve


def task_datasets(names: list[str], include_paths: list[str]) -> dict[str, dict[str, Any] | None]:
    """Every leaf task reachable from `names` (through groups and tags) -> the dataset lm-eval will load:
    {"dataset_path", "dataset_name", "dataset_kwargs"}, or None for a Python task whose YAML names none."""
    return {name: cfg and _dataset_of(cfg) for name, cfg in task_configs(names, include_paths).items()}


def task_configs(names: list[str], include_paths: list[str]) -> dict[str, dict[str, Any] | None]:
    """Every leaf task reachable from `names` -> its YAML config (with `include:`s), None for a Python
    task. Read without building the tasks, which would load every dataset."""
    load_yaml = internal("_yaml_loader").load_yaml

    index, seen, _ = resolve(names, include_paths)
    out: dict[str, dict[str, Any] | None] = {}
    for name in sorted(n for n in seen if index[n]["type"] == "task"):
        path = index[name]["yaml_path"]
        if not path:
            out[name] = None
            continue
        cfg = load_yaml(path, resolve_func=False)
        for entry in cfg.get("task_list") or []:  # one YAML defining several tasks
            if isinstance(entry, dict) and entry.get("task") == name:
                cfg = {**cfg, **entry}
        out[name] = cfg
    for name in names:  # a task given as a YAML file
        if name not in index and is_yaml_file(name):
            out[name] = load_yaml(name, resolve_func=False)
    return out


def _dataset_of(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """A task config's dataset; None when it has none or builds its own (`custom_dataset`)."""
    if not cfg.get("dataset_path") or cfg.get("custom_dataset"):
        return None
    return {"dataset_path": cfg["dataset_path"], "dataset_name": cfg.get("dataset_name"),
            "dataset_kwargs": cfg.get("dataset_kwargs") or {}}


def fewshot_pools(shots: dict[str, set[int | None]], include_paths: list[str]) -> dict[str, tuple[str, int]]:
    """{task or group: its shot counts} -> {leaf task: (the split lm-eval samples its examples from, the
    most shots asked)}; `None` is the task's own count. Tasks with fixed examples (`fewshot_config.samples`)
    or no few-shot split are left out: nothing to count."""
    out: dict[str, tuple[str, int]] = {}
    for name, counts in shots.items():
        index, seen, _ = resolve([name], include_paths)
        for leaf in seen:
            fewshot = index[leaf].get("fewshot")
            if index[leaf]["type"] != "task" or not fewshot:
                continue
            split, own = fewshot
            want = max(own if n is None else n for n in counts)
            if want and want > out.get(leaf, ("", 0))[1]:
                out[leaf] = (split, want)
    return out


def unsafe_tasks(names: list[str], include_paths: list[str]) -> list[str]:
    """The leaf tasks that run model-written code (`unsafe_code: true`: humaneval, mbpp, ...), which
    lm-eval runs only with --confirm_run_unsafe_code; from the index, no YAML read."""
    index, seen, _ = resolve(names, include_paths)
    return sorted(n for n in seen if index[n].get("unsafe"))


# what a task's own code asks NLTK to download at import (ifeval: `nltk.download("punkt_tab")`)
NLTK_DOWNLOAD = re.compile(r"""nltk\.download\(\s*["']([A-Za-z0-9_.-]+)["']""")


def nltk_resources(names: list[str], include_paths: list[str]) -> dict[str, list[str]]:
    """NLTK resource -> the leaf tasks whose own Python files download it: the nodes are offline, so the
    pre-cache fetches it and the preflight proves it is there."""
    index, seen, _ = resolve(names, include_paths)
    by_dir: dict[str, list[str]] = {}
    for name in seen:
        if index[name]["type"] == "task" and index[name]["yaml_path"]:
            by_dir.setdefault(os.path.dirname(index[name]["yaml_path"]), []).append(name)
    out: dict[str, list[str]] = {}
    for folder, tasks in by_dir.items():
        for py in Path(folder).glob("*.py"):
            for resource in NLTK_DOWNLOAD.findall(py.read_text(errors="replace")):
                out.setdefault(resource, []).extend(t for t in tasks if t not in out.get(resource, []))
    return {r: sorted(t) for r, t in out.items()}
