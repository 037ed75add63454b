"""What a run needs of its lm-eval tasks, known before any task is built (building them would load every
dataset): each leaf task's dataset, where its few-shot examples come from and whether it runs model-written
code, all read from each task's YAML (with its `include:`s) once, when the task index is built."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from oellm.suites.lm_eval_tasks import dataset_of, internal, is_yaml_file, resolve


def task_datasets(names: list[str], include_paths: list[str]) -> dict[str, dict[str, Any] | None]:
    """Every leaf task reachable from `names` (through groups and tags) -> the dataset lm-eval will load:
    {"dataset_path", "dataset_name", "dataset_kwargs"}, or None for a task whose YAML names none (a Python
    task). From the task index, which read each YAML once; a task given as a YAML file is read here."""
    index, seen, _ = resolve(names, include_paths)
    out = {name: index[name].get("dataset") for name in sorted(seen) if index[name]["type"] == "task"}
    for name in names:
        if name not in index and is_yaml_file(name):
            out[name] = dataset_of(internal("_yaml_loader").load_yaml(name, resolve_func=False))
    return out


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
