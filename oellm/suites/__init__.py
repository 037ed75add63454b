"""Evaluation suites behind one interface (`oellm.suites.base.Suite`); one module per framework.

Each row names its suite (`EvalRow.suite`, jobs.csv's `suite` column; lm-eval by default). Adding a
suite: a module here with a class that implements `Suite`, and its name in `SUITES`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from importlib.util import find_spec

from oellm.clusters import ClusterConfig
from oellm.errors import OellmError
from oellm.rows import DEFAULT_SUITE, EvalRow
from oellm.suites.base import Suite

SUITES = {"lm_eval": "oellm.suites.lm_eval:LmEvalSuite", "lighteval": "oellm.suites.lighteval:LightevalSuite",
          "bigcodebench": "oellm.suites.bigcodebench:BigCodeBenchSuite", "bench": "oellm.suites.bench:BenchSuite"}


WHOLE_LIMITS = frozenset({"lighteval"})  # suites whose --limit is a number of samples (lighteval's max_samples)
FRAMEWORKS = {"lighteval": "lighteval"}  # suite -> the package it needs, where not the worker stack's own
_IMAGES: list[tuple[ClusterConfig, str | None]] = []  # the cluster (and --venv_path python) that answers


def ask_images_of(cluster: ClusterConfig, python: str | None = None) -> None:
    """On a login node: a suite whose package is not installed here, but which has an image of its own in
    `cluster`, answers plan-time questions (task names, datasets) through that image; on a site without
    containers, through the workers' `python` (a --venv_path venv's) when it is not this one."""
    _IMAGES[:] = [(cluster, None if python in (None, sys.executable) or cluster.container else python)]


def get_suite(name: str = DEFAULT_SUITE) -> Suite:
    """A new instance of the suite called `name`; the worker keeps one per run (it holds the run's task index)."""
    if name not in SUITES:
        raise OellmError(f"unknown evaluation suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    if _IMAGES and name in FRAMEWORKS and find_spec(FRAMEWORKS[name]) is None:
        cluster, python = _IMAGES[0]
        if python or cluster.image_key(name):
            from oellm.suites.remote import RemoteSuite

            return RemoteSuite(name, cluster, python)
    module, _, cls = SUITES[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def by_suite(rows: Iterable[EvalRow]) -> dict[str, list[EvalRow]]:
    """Rows grouped by the suite that evaluates them, in first-seen order."""
    out: dict[str, list[EvalRow]] = {}
    for r in rows:
        out.setdefault(r.suite, []).append(r)
    return out
