"""lm-eval task names: what exists, what is misspelled, and a TaskManager that indexes only what a run needs.

lm-eval's stock `TaskManager()` parses every task YAML it ships (~14.7k entries, 12-15 s) each time it
is built. We parse them once per lm-eval version and keep the index as JSON (paths relative to
lm-eval's own tasks folder, so another install of the same version can reuse it). A worker then
builds a `TaskManager` over only the folders holding its tasks' YAMLs, which takes milliseconds.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
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


def internal(name: str) -> Any:
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
    TaskIndex = internal("_index").TaskIndex

    out = {}
    for name, e in TaskIndex.build(paths).items():
        kind = _KINDS.get(e.kind.name, "task")
        out[name] = {"type": kind, "yaml_path": str(e.yaml_path) if e.yaml_path else None,
                     "children": _children(kind, e.cfg, e.tags), **_plan_facts(kind, e.cfg)}
    return out


def _plan_facts(kind: str, cfg: dict[str, Any] | None) -> dict[str, Any]:
    """What planning checks of a task, read once with the index (its config, includes resolved): whether it
    runs model-written code, where its few-shot examples come from, and its dataset (for the pre-cache and
    the binds: reading the YAMLs again would import lm-eval's task manager, and `datasets`, ~1.5 s)."""
    if kind != "task" or not isinstance(cfg, dict):
        return {}
    split = cfg.get("fewshot_split") or cfg.get("training_split") or cfg.get("validation_split")
    fixed = isinstance(cfg.get("fewshot_config"), dict) and cfg["fewshot_config"].get("samples")
    try:
        own = int(cfg.get("num_fewshot") or 0)
    except (TypeError, ValueError):
        own = 0
    return {"unsafe": bool(cfg.get("unsafe_code")), "generates": cfg.get("output_type") == "generate_until",
            "fewshot": [str(split), own] if split and not fixed else None, "dataset": dataset_of(cfg)}


def dataset_of(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """A task config's dataset as lm-eval loads it; None when it has none or builds its own (`custom_dataset`).
    JSON values (a YAML date becomes its text), since the index is cached as JSON."""
    if not cfg.get("dataset_path") or cfg.get("custom_dataset"):
        return None
    return json.loads(json.dumps({"dataset_path": cfg["dataset_path"], "dataset_name": cfg.get("dataset_name"),
                                  "dataset_kwargs": cfg.get("dataset_kwargs") or {}}, default=str))


INDEX_FORMAT = 4  # bumped when an entry gains fields: an older cached index is rebuilt, not half-read


def _stock_index() -> dict[str, dict[str, Any]]:
    """The stock index, from the on-disk cache when it matches this lm-eval version; else built and saved."""
    path = cache_dir() / f"lm_eval-{lm_eval_version()}-tasks-{INDEX_FORMAT}.json"
    return _stock_index_at(path, path.stat().st_mtime_ns if path.exists() else None)


@functools.lru_cache(maxsize=2)  # read once per process (a 2 MB JSON), again only when the file changes
def _stock_index_at(path: Path, stamp: int | None) -> dict[str, dict[str, Any]]:
    root = stock_tasks_dir()
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
    return _include_index_of(tuple(include_paths))


@functools.lru_cache(maxsize=8)  # planning asks several times (names, unsafe tasks, datasets) per process
def _include_index_of(include_paths: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The include dirs' index, kept on disk under a fingerprint of their task files (names, sizes,
    mtimes): building it imports lm-eval's task modules and with them `datasets` (~1-3 s), which a
    repeated plan over unchanged dirs should not pay."""
    if not include_paths:
        return {}
    missing = [p for p in include_paths if not Path(p).is_dir()]
    if missing:
        raise OellmError(f"task include path(s) not found: {', '.join(missing)}")
    path = cache_dir() / "include-index" / f"{_fingerprint(include_paths)}-{INDEX_FORMAT}.json"
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        pass
    index = _scan([Path(p) for p in include_paths])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as fh:
            json.dump(index, fh, separators=(",", ":"))
    except OSError as e:  # a read-only home must not stop planning
        log.warning("could not cache the task index of %s in %s: %s", ", ".join(include_paths), path, e)
    return index


def _fingerprint(dirs: tuple[str, ...]) -> str:
    """What lm-eval's index of these dirs depends on: every YAML and Python file's path, size and mtime."""
    h = hashlib.sha1(lm_eval_version().encode())
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            subdirs.sort()
            for name in sorted(files):
                if name.endswith((".yaml", ".yml", ".py")) or "." not in name:
                    st = os.stat(os.path.join(root, name))
                    h.update(f"{root}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


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


def resolve(names: list[str], include_paths: list[str]) -> tuple[dict[str, dict[str, Any]], set[str], set[str]]:
    """(index, names reachable from `names`, names of the include paths). The stock index is read only
    when the include paths alone leave something unresolved, so a run of custom tasks never pays for it."""
    index = _include_index(include_paths)
    user = set(index)
    seen, absent = _closure(names, index)
    if absent:
        index = {**_stock_index(), **index}
        seen, _ = _closure(names, index)
    return index, seen, user


def generating(names: list[str], include_paths: list[str]) -> set[str]:
    """The names among `names` for which lm-eval generates text (a task of output_type generate_until, or a
    group or tag holding one): only there do gen_kwargs apply. A name the index cannot see through (an inline
    group member, a YAML file) counts as generating, so its gen_kwargs are kept."""
    index, _, _ = resolve(names, include_paths)
    out = set()
    for name in dict.fromkeys(names):
        seen, absent = _closure([name], index)
        if absent or any(index[n].get("type") == "task" and index[n].get("generates", True) for n in seen):
            out.add(name)
    return out


def validate_tasks(names: list[str], include_paths: list[str]) -> None:
    """Raise one OellmError naming every unknown task, each with its close matches."""
    wanted = list(dict.fromkeys(names))
    index = _include_index(include_paths)
    unknown = [n for n in wanted if n not in index]
    if unknown:
        index = {**_stock_index(), **index}
        unknown = [n for n in unknown if n not in index and not is_yaml_file(n)]
    if not unknown:
        return
    known = list(index)
    parts = []
    for n in unknown:
        close = difflib.get_close_matches(n, known, n=3, cutoff=0.75)
        parts.append(f"{n} (did you mean {' or '.join(close)}?)" if close else n)
    raise OellmError(f"unknown task(s): {', '.join(parts)}; see 'lm-eval ls tasks' or pass --lm_eval_include_path")


def is_yaml_file(name: str) -> bool:
    """lm-eval also accepts a path to a task YAML in place of a name."""
    return name.endswith((".yaml", ".yml")) and Path(name).is_file()
