"""Task groups in oellm-eval's YAML format: named sets of (task, shots, suite), super groups of groups, and
per-language selection, so a sweep is `--task_groups sib200-eu[deu_Latn|fra_Latn],all[pol_Latn]`.

The format is upstream's in full: `valid_langs` with `{lang}` in a task's name or subset, a per-task
`suite` (a group may mix suites), group `dataset`/`subset` defaults, super groups, a generated `all`.
Each task's languages are derived from its name and subset (oellm.languages), never declared.
The shipped file (oellm/task-groups.yaml) is used unless `--task_groups_file` or $OELLM_TASK_GROUPS_FILE
names another; `task_metrics` picks each task's headline metric in collect-results. Every problem in a
file is one error naming its line.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.languages import check_codes, task_languages

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).with_name("task-groups.yaml")  # inside the package: the wheel ships it
# suites as users and upstream spell them -> oellm.suites' names
SUITE_NAMES = {"lm-eval-harness": "lm_eval", "lm_eval": "lm_eval", "lm-eval": "lm_eval", "lighteval": "lighteval",
               "light-eval": "lighteval", "bigcodebench": "bigcodebench", "bench": "bench"}


def parse_suite(value: str | None, what: str = "--suite") -> str:
    """A suite as users spell it (oellm-eval's `lm-eval-harness` too) -> its name in oellm.suites."""
    name = (value or "").strip() or "lm_eval"  # as the registry defaults a task's suite
    if name not in SUITE_NAMES:
        raise OellmError(f"{what} {name!r}: known: {', '.join(SUITE_NAMES)}")
    return SUITE_NAMES[name]


# suites upstream runs that oellm does not: their tasks are refused by name, and left out of `all`
NOT_RUN = {"evalchemy": "evalchemy (a fork on GitHub that no package index carries)"}
ALL = "all"
# lm-eval's names, and single spaces inside (lm-eval's `include_base_44_north macedonian`, in oellm-eval's file)
TASK_NAME = re.compile(r"^[A-Za-z0-9_.:+-]+(?: [A-Za-z0-9_.:+-]+)*$")
LANG_VALUE = re.compile(r"^[A-Za-z0-9_-]+$")
TOKEN = re.compile(r"^(?P<name>[^\[\]]+?)\s*(?:\[(?P<langs>[^\[\]]*)\])?$")


@dataclass(frozen=True)
class GroupTask:
    task: str
    n_shots: tuple[int, ...]
    suite: str
    dataset: str | None = None
    subset: str | None = None
    languages: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskGroups:
    groups: dict[str, list[GroupTask]]
    supers: dict[str, list[str]]
    metrics: dict[str, str]
    source: str
    generated_all: bool = False

    @property
    def languages(self) -> set[str]:
        """The codes a bracket accepts: every language some task of the registry evaluates."""
        return {lang for tasks in self.groups.values() for t in tasks for lang in t.languages}

    def suites_of(self, tasks: Sequence[str]) -> dict[str, list[str]]:
        """`--tasks` without `--suite`, as oellm-eval reads it: each task with the suite of its first group in
        the registry, else lm-eval; suite -> tasks."""
        known: dict[str, str] = {}
        for group in self.groups.values():
            for t in group:
                known.setdefault(t.task, t.suite)
        out: dict[str, list[str]] = {}
        for task in tasks:
            suite = known.get(task, "lm_eval")
            if suite in NOT_RUN:
                raise OellmError(f"--tasks: task {task} needs suite {NOT_RUN[suite]}, which oellm does not run")
            out.setdefault(suite, []).append(task)
        return out

    def expand(self, tokens: Sequence[str]) -> list[GroupTask]:
        """The tasks of `group`, `super`, `group[lang|lang]` tokens, each (task, shots, suite) once, in order."""
        out: dict[tuple, GroupTask] = {}
        for token in tokens:
            for t in self._token(token):
                out.setdefault((t.task, t.n_shots, t.suite), t)
        return list(out.values())

    def _token(self, token: str) -> list[GroupTask]:
        m = TOKEN.match(token.strip())
        if not m:
            raise OellmError(f"--task_groups: {token!r} is not NAME or NAME[lang|lang]")
        name = m.group("name").strip()
        members = self.supers.get(name) or ([name] if name in self.groups else None)
        if members is None:
            known = sorted([*self.groups, *self.supers])
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
            raise OellmError(f"--task_groups: unknown group {name!r} in {self.source}; {hint}")
        tasks = [t for g in members for t in self.groups[g]]
        if m.group("langs") is not None:
            tasks = self._in_languages(token, name, tasks, [s.strip() for s in re.split(r"[,|]", m.group("langs"))
                                                            if s.strip()])
        skipped = [t for t in tasks if t.suite in NOT_RUN]
        if skipped and name == ALL and self.generated_all:
            log.warning("--task_groups all: leaving out %d task(s) of suites oellm does not run: %s", len(skipped),
                        ", ".join(f"{t.task} ({t.suite})" for t in skipped))
        elif skipped:
            t = skipped[0]
            raise OellmError(f"--task_groups {token}: task {t.task} needs suite {NOT_RUN[t.suite]}, which oellm "
                             f"does not run; leave the group out or select its other tasks with --tasks")
        return [t for t in tasks if t.suite not in NOT_RUN]

    def _in_languages(self, token: str, name: str, tasks: list[GroupTask], langs: list[str]) -> list[GroupTask]:
        if not langs:
            raise OellmError(f"--task_groups {token}: empty language bracket; e.g. {name}[deu_Latn|fra_Latn]")
        codes = check_codes(langs, self.languages, f"--task_groups {token}")
        kept = [t for t in tasks if set(t.languages) & set(codes)]
        if not kept:
            raise OellmError(f"--task_groups {token}: no task of {name} is in {', '.join(codes)}")
        found = {lang for t in kept for lang in t.languages}
        if missing := [c for c in codes if c not in found]:
            log.warning("--task_groups %s: no task of %s is in %s; kept those in %s", token, name,
                        ", ".join(missing), ", ".join(c for c in codes if c in found))
        return kept


def split_groups(value: str | Sequence[str] | None) -> list[str]:
    """`--task_groups` split at top-level commas only: `a[deu_Latn,fra_Latn],b` is two tokens."""
    items = [value] if isinstance(value, str) else list(value or [])
    out = []
    for item in items:
        depth, current = 0, ""
        for ch in str(item):
            depth += (ch == "[") - (ch == "]")
            if ch == "," and depth <= 0:
                out.append(current)
                current = ""
            else:
                current += ch
        out.append(current)
    return [s.strip() for s in out if s.strip()]


def groups_file(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("OELLM_TASK_GROUPS_FILE") or SHIPPED).expanduser()


def load_task_groups(path: str | Path | None = None) -> TaskGroups:
    """Read and check a task-groups file; every problem is one error naming its line and field."""
    import yaml

    file = groups_file(path)
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(file.read_text())
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else {}
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise OellmError(f"task groups file {file} not found") from None
    except yaml.YAMLError as e:
        raise OellmError(f"task groups file {file} is not valid YAML: {' '.join(str(e).split())}") from None
    return _Reader(str(file), _lines(node)).registry(data)


def _lines(node: Any, path: tuple = ()) -> dict[tuple, int]:
    """Each key and item of the YAML document -> its line, for errors a user can jump to."""
    import yaml

    out = {path: node.start_mark.line + 1} if node is not None else {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out.update(_lines(v, (*path, k.value)))
            out[(*path, k.value)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_lines(v, (*path, i)))
    return out


@dataclass
class _Reader:
    file: str
    lines: dict[tuple, int]

    def fail(self, path: tuple, message: str) -> OellmError:
        line = next((self.lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in self.lines), 1)
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        return OellmError(f"{self.file}:{line}: {dotted}: {message}")

    def mapping(self, path: tuple, spec: Any, valid: tuple[str, ...] | None = None) -> dict:
        if not isinstance(spec, dict):
            raise self.fail(path, f"expected a mapping, got {spec!r}")
        if valid is not None and (unknown := sorted(set(map(str, spec)) - set(valid))):
            raise self.fail((*path, unknown[0]), f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        return spec

    def text(self, path: tuple, value: Any) -> str | None:
        if value is not None and not isinstance(value, str):
            raise self.fail(path, f"expected a string, got {value!r}")
        return value

    def shots(self, path: tuple, value: Any) -> tuple[int, ...] | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        if not items or any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in items):
            raise self.fail(path, f"expected a list of shot counts >= 0, got {value!r}")
        return tuple(dict.fromkeys(items))

    def suite(self, path: tuple, value: Any, default: str) -> str:
        if value is None:
            return default
        name = str(value)
        if name not in SUITE_NAMES and name not in NOT_RUN:
            raise self.fail(path, f"unknown suite {name!r}; known: {', '.join([*SUITE_NAMES, *NOT_RUN])}")
        return SUITE_NAMES.get(name, name)

    def registry(self, data: Any) -> TaskGroups:
        data = self.mapping((), {} if data is None else data, ("task_metrics", "task_groups", "super_groups"))
        metrics = self.mapping(("task_metrics",), data.get("task_metrics") or {})
        groups = {str(n): self.group(("task_groups", n), s)
                  for n, s in self.mapping(("task_groups",), data.get("task_groups") or {}).items()}
        supers: dict[str, list[str]] = {}
        for name, spec in self.mapping(("super_groups",), data.get("super_groups") or {}).items():
            path = ("super_groups", name)
            self.mapping(path, spec, ("description", "task_groups"))
            if name in groups:
                raise self.fail(path, f"{name!r} is also the name of a group")
            members = spec.get("task_groups")
            if not isinstance(members, list) or not members:
                raise self.fail((*path, "task_groups"), "expected a non-empty list of {task: GROUP}")
            supers[str(name)] = [self.member((*path, "task_groups", i), m, groups) for i, m in enumerate(members)]
        generated = ALL not in groups and ALL not in supers
        if generated:
            supers[ALL] = list(groups)
        return TaskGroups(groups, supers, {str(k): str(v) for k, v in metrics.items()}, self.file, generated)

    def member(self, path: tuple, m: Any, groups: dict[str, list[GroupTask]]) -> str:
        name = self.mapping(path, m, ("task",)).get("task") if isinstance(m, dict) else m
        if name not in groups:
            close = difflib.get_close_matches(str(name), list(groups), n=3)
            raise self.fail(path, f"unknown group {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        return str(name)

    def group(self, path: tuple, spec: Any) -> list[GroupTask]:
        self.mapping(path, spec, ("description", "suite", "n_shots", "dataset", "subset", "valid_langs", "tasks"))
        suite = self.suite((*path, "suite"), spec.get("suite"), "lm_eval")
        default = self.shots((*path, "n_shots"), spec.get("n_shots"))
        langs = spec.get("valid_langs")
        if langs is not None and (not isinstance(langs, list) or not langs
                                  or not all(isinstance(x, str) and LANG_VALUE.match(x) for x in langs)):
            raise self.fail((*path, "valid_langs"), f"expected a list of language codes, got {langs!r}")
        tasks = spec.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise self.fail((*path, "tasks"), "expected a non-empty list of {task: NAME, ...}")
        return [t for i, entry in enumerate(tasks)
                for t in self.task((*path, "tasks", i), entry, spec, suite, default, langs)]

    def task(self, path: tuple, t: Any, group: dict, suite: str, default: tuple[int, ...] | None,
             langs: list[str] | None) -> list[GroupTask]:
        self.mapping(path, t, ("task", "n_shots", "dataset", "subset", "suite"))
        name = self.text((*path, "task"), t.get("task"))
        shots = self.shots((*path, "n_shots"), t.get("n_shots")) or default
        if not name or shots is None:
            raise self.fail(path, "needs a task name and n_shots (its own or the group's)")
        dataset = self.text((*path, "dataset"), t.get("dataset", group.get("dataset")))
        subset = self.text((*path, "subset"), t.get("subset", group.get("subset")))
        suite = self.suite((*path, "suite"), t.get("suite"), suite)
        templated = "{lang}" in name or "{lang}" in (subset or "")
        if templated and not langs:
            raise self.fail(path, "uses {lang} but the group has no valid_langs")
        out = []
        for lang in (langs if templated else [None]):
            task = name.replace("{lang}", lang or "")
            sub = subset.replace("{lang}", lang) if subset and lang else subset
            if not TASK_NAME.match(task):
                raise self.fail((*path, "task"), f"{task!r} is not a task name (letters, digits, _.:+-; "
                                                 "{lang} with valid_langs)")
            out.append(GroupTask(task, shots, suite, dataset, sub, task_languages(task, sub, lang)))
        return out
