"""Task groups in the reference oellm's YAML format: named sets of (task, shots, suite), and super groups
of groups, so a sweep is `--task_groups open-llm-leaderboard-v1` instead of a list of tasks and shots.

The shipped file (oellm/task-groups.yaml) is used unless `--task_groups_file` or
$OELLM_TASK_GROUPS_FILE names another; `task_metrics` picks each task's headline metric in collect-results.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oellm.errors import OellmError

SHIPPED = Path(__file__).with_name("task-groups.yaml")  # inside the package: the wheel ships it
# the reference spells suites as their projects do
SUITE_NAMES = {"lm-eval-harness": "lm_eval", "lm_eval": "lm_eval", "lm-eval": "lm_eval", "lighteval": "lighteval",
               "bigcodebench": "bigcodebench", "bench": "bench"}


@dataclass(frozen=True)
class GroupTask:
    task: str
    n_shots: tuple[int, ...]
    suite: str
    dataset: str | None = None
    subset: str | None = None


@dataclass(frozen=True)
class TaskGroups:
    groups: dict[str, list[GroupTask]]
    supers: dict[str, list[str]]
    metrics: dict[str, str]
    source: str

    def expand(self, names: Sequence[str]) -> list[GroupTask]:
        """The tasks of the named groups and super groups, each (task, shots, suite) once, in order."""
        out: dict[tuple, GroupTask] = {}
        for name in names:
            if name in self.supers:
                members = self.supers[name]
            elif name in self.groups:
                members = [name]
            else:
                known = sorted([*self.groups, *self.supers])
                close = difflib.get_close_matches(name, known, n=3)
                hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
                raise OellmError(f"--task_groups: unknown group {name!r} in {self.source}; {hint}")
            for group in members:
                for t in self.groups[group]:
                    out.setdefault((t.task, t.n_shots, t.suite), t)
        return list(out.values())


def groups_file(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("OELLM_TASK_GROUPS_FILE") or SHIPPED).expanduser()


def load_task_groups(path: str | Path | None = None) -> TaskGroups:
    """Read and check a task-groups file; every problem is one line naming the group and field."""
    import yaml

    file = groups_file(path)
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except FileNotFoundError:
        raise OellmError(f"task groups file {file} not found") from None
    except yaml.YAMLError as e:
        raise OellmError(f"task groups file {file} is not valid YAML: {' '.join(str(e).split())}") from None
    where = str(file)
    _keys(where, data, ("task_metrics", "task_groups", "super_groups"))
    groups = {name: _group(f"{where}: task_groups.{name}", spec) for name, spec in (data.get("task_groups") or {}).items()}
    supers: dict[str, list[str]] = {}
    for name, spec in (data.get("super_groups") or {}).items():
        w = f"{where}: super_groups.{name}"
        _keys(w, spec, ("description", "task_groups"))
        members = [m.get("task") if isinstance(m, dict) else m for m in spec.get("task_groups") or []]
        unknown = [m for m in members if m not in groups]
        if not members or unknown:
            raise OellmError(f"{w}: {'no task_groups' if not members else f'unknown group(s) {unknown}'}")
        supers[name] = members
    metrics = {str(k): str(v) for k, v in (data.get("task_metrics") or {}).items()}
    return TaskGroups(groups, supers, metrics, where)


def _keys(where: str, spec: Any, valid: tuple[str, ...]) -> None:
    if not isinstance(spec, dict):
        raise OellmError(f"{where}: expected a mapping, got {spec!r}")
    unknown = sorted(set(spec) - set(valid))
    if unknown:
        raise OellmError(f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(valid)}")


def _shots(where: str, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items or any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in items):
        raise OellmError(f"{where}.n_shots: expected a list of shot counts >= 0, got {value!r}")
    return tuple(dict.fromkeys(items))


def _group(where: str, spec: Any) -> list[GroupTask]:
    _keys(where, spec, ("description", "suite", "n_shots", "dataset", "subset", "tasks"))
    suite = SUITE_NAMES.get(str(spec.get("suite", "lm-eval-harness")))
    if suite is None:
        raise OellmError(f"{where}.suite: {spec.get('suite')!r}; known: {', '.join(SUITE_NAMES)}")
    default = _shots(where, spec.get("n_shots"))
    out = []
    for i, t in enumerate(spec.get("tasks") or []):
        w = f"{where}.tasks[{i}]"
        _keys(w, t, ("task", "n_shots", "dataset", "subset"))
        shots = _shots(w, t.get("n_shots")) or default
        if not t.get("task") or shots is None:
            raise OellmError(f"{w}: needs a task name and n_shots (its own or the group's)")
        out.append(GroupTask(str(t["task"]), shots, suite, t.get("dataset", spec.get("dataset")),
                             t.get("subset", spec.get("subset"))))
    if not out:
        raise OellmError(f"{where}: no tasks")
    return out
