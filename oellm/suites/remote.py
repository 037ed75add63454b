"""A suite whose framework lives only in its own image (lighteval needs transformers<5; the login node
needs no torch at all): its plan-time answers, which task names exist and which datasets they load, come
from the image, through the same runtime, flags and environment as its workers.

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

_ANSWERS: dict[tuple, dict[str, Any]] = {}  # one container start per suite and task list, however often asked


class RemoteSuite:
    """Plan-time questions only; the worker runs inside the image, where the suite itself is installed."""

    def __init__(self, name: str, cluster: ClusterConfig):
        self.name, self.cluster = name, cluster.for_suite(name)

    def validate(self, names: Sequence[str], sources: Sequence[str]) -> None:
        answer = self._ask(names, sources)
        if answer.get("error"):
            raise OellmError(answer["error"])

    def datasets(self, names: Sequence[str], sources: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        self.validate(names, sources)
        return self._ask(names, sources)["datasets"]

    def _ask(self, names: Sequence[str], sources: Sequence[str]) -> dict[str, Any]:
        key = (self.name, self.cluster.name, tuple(sorted(names)), tuple(sources))
        if key not in _ANSWERS:
            _ANSWERS[key] = self._run({"suite": self.name, "tasks": sorted(names), "sources": list(sources)})
        return _ANSWERS[key]

    def _run(self, question: dict[str, Any]) -> dict[str, Any]:
        """Offline like the workers (the worker env), seeing only the task sources besides the image."""
        c = self.cluster.container
        assert c is not None
        argv = preflight_argv(self.cluster, plan_binds(self.cluster, question["sources"]), os.environ,
                              ["-m", "oellm.suites.probe"])
        try:
            proc = subprocess.run(argv, input=json.dumps(question), capture_output=True, text=True)
        except FileNotFoundError:
            raise OellmError(f"container runtime {c.runtime!r} (cluster {self.cluster.name}) is not on PATH here; "
                             f"it answers which {self.name} tasks exist (the login node has no {self.name})") from None
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
        if proc.returncode == 0 and lines:
            return json.loads(lines[-1][len(RESULT):])
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no output"
        raise OellmError(f"asking {self.name}'s image {c.image} about tasks failed (exit {proc.returncode}): {tail}")
