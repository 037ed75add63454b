"""Evaluation suites behind one interface (`oellm.suites.base.Suite`); one module per framework.

Each row names its suite (`EvalRow.suite`, jobs.csv's `suite` column; lm-eval by default). Adding a
suite: a module here with a class that implements `Suite`, and its name in `SUITES`.
"""

from __future__ import annotations

import importlib
import shutil
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
INDEXED = {"lighteval": "oellm.suites.lighteval:planning_only"}  # suites oellm ships an index of tasks for
_IMAGES: list[tuple[ClusterConfig, str | None, bool]] = []  # the cluster, --venv_path python, index_ok


def ask_images_of(cluster: ClusterConfig, python: str | None = None, index_ok: bool = False) -> None:
    """On a login node, for a suite whose package is not installed here: plan-time questions (task names,
    datasets) go to the image its rows run in (`ClusterConfig.for_suite`: its own, else the site's one
    image, which oellm-eval's images are), or on a site without containers to the workers' `python` (a
    --venv_path venv's) when it is not this one. `index_ok`: nothing proves the workers' install before they
    run (--dry_run, --skip_checks), so where that image cannot be asked from here (no container runtime) or
    there is none, a suite with a shipped index of its tasks (INDEXED) answers from it."""
    _IMAGES[:] = [(cluster, None if python in (None, sys.executable) or cluster.container else python, index_ok)]


def get_suite(name: str = DEFAULT_SUITE) -> Suite:
    """A new instance of the suite called `name`; the worker keeps one per run (it holds the run's task index).
    Which source answers a suite missing here: its image or venv (`oellm.suites.remote`) > its shipped index."""
    if name not in SUITES:
        raise OellmError(f"unknown evaluation suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    if _IMAGES and name in FRAMEWORKS and find_spec(FRAMEWORKS[name]) is None:
        cluster, python, index_ok = _IMAGES[0]
        image = cluster.for_suite(name).container
        if python or (image and (shutil.which(image.runtime) or not index_ok)):
            from oellm.suites.remote import RemoteSuite

            return RemoteSuite(name, cluster, python, name in INDEXED)
        if index_ok and name in INDEXED:
            return _new(INDEXED[name])
    return _new(SUITES[name])


def _new(where: str) -> Suite:
    module, _, attr = where.partition(":")
    return getattr(importlib.import_module(module), attr)()


def by_suite(rows: Iterable[EvalRow]) -> dict[str, list[EvalRow]]:
    """Rows grouped by the suite that evaluates them, in first-seen order."""
    out: dict[str, list[EvalRow]] = {}
    for r in rows:
        out.setdefault(r.suite, []).append(r)
    return out
