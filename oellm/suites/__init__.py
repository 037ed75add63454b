"""Evaluation suites behind one interface (`oellm.suites.base.Suite`); one module per framework.

Each row names its suite (`EvalRow.suite`, jobs.csv's `suite` column; lm-eval by default). Adding a
suite: a module here with a class that implements `Suite`, and its name in `SUITES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from oellm.errors import OellmError
from oellm.rows import DEFAULT_SUITE, EvalRow
from oellm.suites.base import Suite

SUITES = {"lm_eval": "oellm.suites.lm_eval:LmEvalSuite", "bench": "oellm.suites.bench:BenchSuite"}


def get_suite(name: str = DEFAULT_SUITE) -> Suite:
    """A new instance of the suite called `name`; the worker keeps one per run (it holds the run's task index)."""
    if name not in SUITES:
        raise OellmError(f"unknown evaluation suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    module, _, cls = SUITES[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def by_suite(rows: Iterable[EvalRow]) -> dict[str, list[EvalRow]]:
    """Rows grouped by the suite that evaluates them, in first-seen order."""
    out: dict[str, list[EvalRow]] = {}
    for r in rows:
        out.setdefault(r.suite, []).append(r)
    return out
