"""A suite whose framework lives only in the image its rows run in (lighteval needs transformers<5; the
login node needs no torch at all): its plan-time answers, which task names exist and which datasets they
load, come from that image (its own, or the site's one image: `ClusterConfig.for_suite`), through the same
runtime, flags and environment as its workers; on a site without containers, from the workers' own python
(a --venv_path venv, oellm-eval's UFAL shape). Where neither can be asked, `oellm.suites.get_suite` may
answer from a shipped index instead (lighteval: `oellm.suites.lighteval_index`).

`python -m oellm.suites.probe` is the answering side, run inside the image: a question as JSON on stdin,
the answer as the last stdout line `RESULT <json>`, so no file needs a bind.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from typing import Any

from oellm.clusters import ClusterConfig
from oellm.container import RESULT, plan_binds, preflight_argv
from oellm.errors import OellmError
from oellm.offline import OFFLINE_ENV
from oellm.shipping import pythonpath, staged
from oellm.sitevalues import expand_env
from oellm.suites.lm_eval_tasks import cache_dir

_ANSWERS: dict[tuple, dict[str, Any]] = {}  # one container start per suite and task list, however often asked


class RemoteSuite:
    """Plan-time questions only; the worker runs inside the image, where the suite itself is installed."""

    def __init__(self, name: str, cluster: ClusterConfig, python: str | None = None, indexed: bool = False):
        self.name, self.cluster, self.python = name, cluster.for_suite(name), python
        self.indexed = indexed  # oellm ships an index of its tasks (`oellm.suites.INDEXED`)

    def validate(self, names: Sequence[str], sources: Sequence[str]) -> None:
        answer = self._ask(names, sources)
        if answer.get("error"):
            raise OellmError(answer["error"])

    def datasets(self, names: Sequence[str], sources: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        self.validate(names, sources)
        return self._ask(names, sources)["datasets"]

    def nltk_resources(self, names: Sequence[str], sources: Sequence[str]) -> dict[str, list[str]]:
        self.validate(names, sources)
        return self._ask(names, sources).get("nltk") or {}

    def _ask(self, names: Sequence[str], sources: Sequence[str]) -> dict[str, Any]:
        key = (self.name, self.cluster.name, self.python, tuple(sorted(names)), tuple(sources))
        if key not in _ANSWERS:
            _ANSWERS[key] = self._run({"suite": self.name, "tasks": sorted(names), "sources": list(sources)})
        return _ANSWERS[key]

    def _run(self, question: dict[str, Any]) -> dict[str, Any]:
        """Offline like the workers (the worker env), seeing only the task sources besides the image; or with
        the venv's python, the shipped oellm first on its path as its workers run it."""
        code = str(staged(cache_dir()))  # this oellm answers, whether or not the image or venv has one
        if self.python:
            env = {**os.environ, **expand_env(self.cluster.env, os.environ, f"cluster {self.cluster.name}.env"),
                   **OFFLINE_ENV, "PYTHONPATH": pythonpath(code)}
            proc = subprocess.run([self.python, "-m", "oellm.suites.probe"], input=json.dumps(question),
                                  capture_output=True, text=True, env=env, cwd=code)
            return self._answer(proc, f"the venv's python {self.python}")
        c = self.cluster.container
        assert c is not None
        argv = preflight_argv(self.cluster, plan_binds(self.cluster, [*question["sources"], code]), os.environ,
                              ["-m", "oellm.suites.probe"], code)
        try:
            proc = subprocess.run(argv, input=json.dumps(question), capture_output=True, text=True, cwd=code)
        except FileNotFoundError:
            raise OellmError(f"container runtime {c.runtime!r} (cluster {self.cluster.name}) is not on PATH here; "
                             f"it answers which {self.name} tasks exist (the login node has no {self.name})"
                             + ("; --dry_run or --skip_checks plan from oellm's index of its tasks"
                                if self.indexed else "")) from None
        return self._answer(proc, f"image {c.image}")

    def _answer(self, proc: subprocess.CompletedProcess, where: str) -> dict[str, Any]:
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
        if proc.returncode == 0 and lines:
            return json.loads(lines[-1][len(RESULT):])
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no output"
        raise OellmError(f"asking {self.name}'s {where} about tasks failed (exit {proc.returncode}): {tail}")
