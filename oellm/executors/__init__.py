"""Executors run a materialised run dir's array tasks; everything that differs between "submit to
SLURM" and "run on this machine" is here, behind one interface (in the style of dask-jobqueue's
`Job` classes and submitit's executors), so no other module asks which one it has.

A new executor (a plain multi-node `srun` allocation, a cloud batch system) is one module in this
folder whose `EXECUTOR` class implements `Executor`; a cluster selects it with `"executor": "<module>"`
in clusters.json, and a run records it in run.json. Scheduler states are reported in SLURM's
vocabulary (`oellm.runs.states` reads them), the common tongue of HPC schedulers.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from oellm.clusters import ClusterConfig, build_cluster
from oellm.errors import OellmError
from oellm.plan.packing import SubmitPlan
from oellm.rows import EvalRow
from oellm.rundir import RunDir


class NothingStarted(OellmError):
    """The submission failed before any array task was accepted: the run dir holds nothing to keep."""


@dataclass(frozen=True)
class Capacity:
    """What the scheduler allows now: the largest array (None: no limit known) and jobs already queued."""

    max_array: int | None = None
    queued: int = 0


@dataclass(frozen=True)
class SchedulerView:
    """The scheduler's answer for a run: {"<job>_<index>": state} (None: the scheduler was not asked or
    could not answer, states then come from the run dir's records alone), why it could not answer,
    a warning about a partial answer, and how many scheduler commands it took."""

    states: dict[str, str] | None = None
    note: str = ""
    warning: str = ""
    calls: int = 0


class Executor(Protocol):
    name: str  # recorded in run.json as "executor"
    label: str  # how the plan summary names it
    tracks_queue: bool  # the scheduler knows tasks that wait: status can wait on "pending" rows

    def capacity(self) -> Capacity:
        """Ask the scheduler for its limits (never during a dry run)."""

    def check_ready(self) -> None:
        """Raise OellmError when a real submission cannot go ahead (a site placeholder in the cluster)."""

    def in_flight(self, output_root: Path, rows: Sequence[EvalRow], dry_run: bool,
                  log: Callable[[str], None]) -> list[EvalRow]:
        """`rows` without those an earlier run under `output_root` still has queued or running."""

    def describe(self, plan: Any) -> list[str]:
        """Lines of the plan summary about the submission (arrays, time limits)."""

    def submit(self, run: RunDir, plan: SubmitPlan, log: Callable[[str], None],
               options: Sequence[str] = ()) -> None:
        """Start the planned array tasks of `run` (SLURM: queue them; local: run them to the end).
        `options` are extra scheduler flags of a resubmission, kept in its records."""

    def states(self, manifest: dict[str, Any], needed: set[str]) -> SchedulerView:
        """The scheduler's view of a run's array tasks; `needed` are the elements status must know."""

    def max_parallel(self, manifest: dict[str, Any]) -> int:
        """Array tasks of the run that may run at once (for the time-left estimate)."""

    def require_control(self, run: RunDir, what: str) -> None:
        """Raise OellmError when `what` (resubmit, cancel) does not apply to this executor's runs."""

    def cancel(self, run: RunDir, manifest: dict[str, Any]) -> list[str]:
        """Stop every array task of a run; returns the scheduler's job ids."""


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def get_executor(name: str, cluster: ClusterConfig, workers: int | None = None) -> Executor:
    """The executor called `name` (a module of this package) for `cluster`."""
    if name not in available():
        raise OellmError(f"cluster {cluster.name}: unknown executor {name!r}; available: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}").EXECUTOR(cluster, workers=workers)


def for_cluster(cluster: ClusterConfig, workers: int | None = None) -> Executor:
    return get_executor(cluster.executor, cluster, workers)


def for_run(run: RunDir, manifest: dict[str, Any]) -> Executor:
    """The executor a run was made with, for its cluster settings as recorded in run.json."""
    data = {k: v for k, v in (manifest.get("cluster_config") or {}).items() if k != "name"}
    cluster = build_cluster(manifest.get("cluster") or "run", data, str(run.manifest))
    return get_executor(manifest.get("executor") or cluster.executor, cluster)
