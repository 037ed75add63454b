"""The TaskManager a worker builds to run its rows: indexing only the folders its tasks live in (lm-eval's full
index costs seconds per process), with the model's args as task metadata, as lm-eval's CLI gives them."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from oellm.suites.lm_eval_tasks import internal, resolve, stock_tasks_dir

log = logging.getLogger(__name__)


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
    index, seen, user = resolve(names, include_paths)
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
        tm.metadata, tm._factory = metadata, internal("_factory").TaskFactory(meta=metadata)
    return tm


def _same_entry(entry: Any, want: dict[str, Any]) -> bool:
    """Does the restricted index hold what the full one does (same YAML; a tag with all its members)?"""
    if entry is None:
        return False
    if want["type"] == "tag":
        return sorted(entry.tags) == want["children"]
    return str(entry.yaml_path) == want["yaml_path"]

