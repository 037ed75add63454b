"""lm-eval task names: what exists, what is misspelled, and a TaskManager that indexes only what a run needs.

lm-eval's stock `TaskManager()` parses every task YAML it ships (~14.7k entries, 12-15 s) each time it
is built. We parse them once per lm-eval version and keep the index as JSON (paths relative to
lm-eval's own tasks folder, so another install of the same version can reuse it). A worker then
builds a `TaskManager` over only the folders holding its tasks' YAMLs, which takes milliseconds.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.rundir import atomic_open

log = logging.getLogger(__name__)

_KINDS = {"TASK": "task", "PY_TASK": "task", "GROUP": "group", "TAG": "tag"}


def cache_dir() -> Path:
    """Where oellm keeps its caches: $OELLM_CACHE_DIR, else ~/.cache/oellm."""
    return Path(os.environ.get("OELLM_CACHE_DIR") or Path.home() / ".cache" / "oellm")


MIN_LM_EVAL = "0.4.12"  # its task index, factory and YAML loader modules, used below, start there


def _internal(name: str) -> Any:
    """One of lm-eval's task modules we build on; an older lm-eval is one clear error, not a traceback."""
    import importlib

    try:
        return importlib.import_module(f"lm_eval.tasks.{name}")
    except ImportError:
        raise OellmError(f"lm-eval {lm_eval_version()} is installed here; oellm needs lm-eval >= {MIN_LM_EVAL} "
                         f"(pip install 'lm-eval>={MIN_LM_EVAL}')") from None


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def stock_tasks_dir() -> Path:
    """lm-eval's own tasks folder, found without importing lm_eval (its import costs ~1.5 s)."""
    from importlib.util import find_spec

    spec = find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise OellmError("lm-eval is not installed in this Python environment (pip install lm-eval)")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


def _children(kind: str, cfg: dict[str, Any] | None, tags: Iterable[str]) -> list[str]:
    """Names a group or tag stands for: a group's `task:` list, a tag's member tasks."""
    if kind == "tag":
        return sorted(tags)
    if kind != "group" or not cfg:
        return []
    members = cfg.get("task")
    out = []
    for m in [members] if isinstance(members, str) else members or []:
        name = m.get("group") or m.get("task") if isinstance(m, dict) else m
        if isinstance(name, str):
            out.append(name)
    return out


def _scan(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Index `paths` with lm-eval's own TaskIndex (the same rules TaskManager applies)."""
    TaskIndex = _internal("_index").TaskIndex

    out = {}
    for name, e in TaskIndex.build(paths).items():
        kind = _KINDS.get(e.kind.name, "task")
        out[name] = {"type": kind, "yaml_path": str(e.yaml_path) if e.yaml_path else None,
                     "children": _children(kind, e.cfg, e.tags)}
    return out


def _stock_index() -> dict[str, dict[str, Any]]:
    """The stock index, from the on-disk cache when it matches this lm-eval version; else built and saved."""
    root = stock_tasks_dir()
    path = cache_dir() / f"lm_eval-{lm_eval_version()}-tasks.json"
    try:
        with open(path) as fh:
            cached = json.load(fh)
    except (OSError, ValueError):
        cached = None
    if cached is None:
        t0 = time.perf_counter()
        index = _scan([root])
        log.info("indexed %d stock lm-eval tasks in %.1f s; cached in %s", len(index),
                 time.perf_counter() - t0, path)
        cached = {k: {**v, "yaml_path": v["yaml_path"] and os.path.relpath(v["yaml_path"], root)}
                  for k, v in index.items()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path) as fh:
                json.dump(cached, fh, separators=(",", ":"))
        except OSError as e:  # a read-only home must not stop planning
            log.warning("could not cache the lm-eval task index in %s: %s", path, e)
    base = str(root)
    return {k: {**v, "yaml_path": v["yaml_path"] and os.path.join(base, v["yaml_path"])}
            for k, v in cached.items()}


def _include_index(include_paths: list[str]) -> dict[str, dict[str, Any]]:
    if not include_paths:
        return {}
    missing = [p for p in include_paths if not Path(p).is_dir()]
    if missing:
        raise OellmError(f"task include path(s) not found: {', '.join(missing)}")
    return _scan([Path(p) for p in include_paths])


def task_index(include_paths: list[str]) -> dict[str, dict[str, Any]]:
    """Every known name -> {"type": "task"|"group"|"tag", "yaml_path": str|None, "children": [names]}.

    Include-path entries override stock ones of the same name, as they do in lm-eval."""
    return {**_stock_index(), **_include_index(include_paths)}


def _closure(names: Iterable[str], index: dict[str, dict[str, Any]]) -> tuple[set[str], set[str]]:
    """(names in `index` reachable from `names` through groups and tags, names reached but not in it).

    A group member that no index holds is an inline task defined in the group's own YAML."""
    seen: set[str] = set()
    absent: set[str] = set()
    stack = list(names)
    while stack:
        n = stack.pop()
        if n in seen or n in absent:
            continue
        if n not in index:
            absent.add(n)
            continue
        seen.add(n)
        stack.extend(index[n]["children"])
    return seen, absent


def _resolve(names: list[str], include_paths: list[str]) -> tuple[dict[str, dict[str, Any]], set[str], set[str]]:
    """(index, names reachable from `names`, names of the include paths). The stock index is read only
    when the include paths alone leave something unresolved, so a run of custom tasks never pays for it."""
    index = _include_index(include_paths)
    user = set(index)
    seen, absent = _closure(names, index)
    if absent:
        index = {**_stock_index(), **index}
        seen, _ = _closure(names, index)
    return index, seen, user


def validate_tasks(names: list[str], include_paths: list[str]) -> None:
    """Raise one OellmError naming every unknown task, each with its close matches."""
    wanted = list(dict.fromkeys(names))
    index = _include_index(include_paths)
    unknown = [n for n in wanted if n not in index]
    if unknown:
        index = {**_stock_index(), **index}
        unknown = [n for n in unknown if n not in index and not _is_yaml_file(n)]
    if not unknown:
        return
    known = list(index)
    parts = []
    for n in unknown:
        close = difflib.get_close_matches(n, known, n=3, cutoff=0.75)
        parts.append(f"{n} (did you mean {' or '.join(close)}?)" if close else n)
    raise OellmError(f"unknown task(s): {', '.join(parts)}; see 'lm-eval ls tasks' or pass --lm_eval_include_path")


def _is_yaml_file(name: str) -> bool:
    """lm-eval also accepts a path to a task YAML in place of a name."""
    return name.endswith((".yaml", ".yml")) and Path(name).is_file()


def _minimal_dirs(dirs: set[Path]) -> list[Path]:
    """Drop folders inside other listed folders: indexing one twice makes lm-eval warn of overrides."""
    ordered = sorted(dirs, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for d in ordered:
        if not any(d.is_relative_to(k) for k in kept):
            kept.append(d)
    return sorted(kept)


def task_manager_for(names: list[str], include_paths: list[str], metadata: dict[str, Any] | None = None) -> Any:
    """A TaskManager that indexes only the folders holding `names` (and what their groups and tags
    pull in) plus the include paths; lm-eval's full one when a name is unknown here (lm-eval then
    reports it, or takes it as a YAML path) or the restricted index would resolve a name differently."""
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    index, seen, user = _resolve(names, include_paths)
    dirs = {Path(index[n]["yaml_path"]).parent for n in seen if n not in user and index[n]["yaml_path"]}
    tm = None
    if all(n in index for n in names) and stock_tasks_dir() not in dirs:
        paths = [str(d) for d in _minimal_dirs(dirs)] + list(include_paths)
        tm = TaskManager(include_defaults=False, include_path=paths or None, metadata=metadata)
        bad = sorted(n for n in seen if not _same_entry(tm.task_index.get(n), index[n]))
        if bad:
            log.warning("restricted task index differs for %s; using lm-eval's full index", bad[:5])
            tm = None
    if tm is None:
        tm = TaskManager(include_path=list(include_paths) or None, metadata=metadata)
        log.info("built lm-eval's full TaskManager in %.1f s", time.perf_counter() - t0)
    else:
        log.info("built a TaskManager over %d folder(s) in %.2f s", len(tm.include_path or []),
                 time.perf_counter() - t0)
    return tm


def with_metadata(tm: Any, metadata: dict[str, Any]) -> Any:
    """Give `tm` the model's args as task metadata, as lm-eval's CLI does (some tasks read `pretrained`
    from it). lm-eval applies metadata only when it builds a task (in its TaskFactory), so a new
    factory equals a new TaskManager without re-indexing."""
    if getattr(tm, "metadata", None) != metadata and hasattr(tm, "_factory"):
        tm.metadata, tm._factory = metadata, _internal("_factory").TaskFactory(meta=metadata)
    return tm


def _same_entry(entry: Any, want: dict[str, Any]) -> bool:
    """Does the restricted index hold what the full one does (same YAML; a tag with all its members)?"""
    if entry is None:
        return False
    if want["type"] == "tag":
        return sorted(entry.tags) == want["children"]
    return str(entry.yaml_path) == want["yaml_path"]


def task_datasets(names: list[str], include_paths: list[str]) -> dict[str, dict[str, Any] | None]:
    """Every leaf task reachable from `names` (through groups and tags) -> the dataset lm-eval will load:
    {"dataset_path", "dataset_name", "dataset_kwargs"}, or None for a Python task whose YAML names none.

    Read from the task YAMLs (with their `include:`s) without building the tasks, which would load
    every dataset; the pre-cache needs the names first, to fetch each dataset once."""
    load_yaml = _internal("_yaml_loader").load_yaml

    index, seen, _ = _resolve(names, include_paths)
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
        out[name] = _dataset_of(cfg)
    for name in names:  # a task given as a YAML file
        if name not in index and _is_yaml_file(name):
            out[name] = _dataset_of(load_yaml(name, resolve_func=False))
    return out


def _dataset_of(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """A task config's dataset; None when it has none or builds its own (`custom_dataset`)."""
    if not cfg.get("dataset_path") or cfg.get("custom_dataset"):
        return None
    return {"dataset_path": cfg["dataset_path"], "dataset_name": cfg.get("dataset_name"),
            "dataset_kwargs": cfg.get("dataset_kwargs") or {}}


__all__ = ["cache_dir", "task_datasets", "task_index", "task_manager_for", "validate_tasks", "with_metadata"]
