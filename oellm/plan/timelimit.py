"""The time limit of an array task, decided here once: packing fits rows to it, and the script's `#SBATCH
--time`, each sbatch call's `--time=`, the summary, run.json, `status` and `resubmit` all take it from here.

A limit someone gave wins, first found in this order: --time_limit, --sbatch_option time=..., oellm-eval's
`--slurm_template_var '{"TIME": ...}'`, the cluster's own `sbatch_options.time`. It is every task's limit,
and packing puts only as many rows in a task as fit it. Without one, each task's limit is estimated from
its own rows. Either way it is at most the cluster's max_time: SLURM would refuse more only after queueing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oellm.clusters import ClusterConfig
from oellm.errors import OellmError
from oellm.rows import EvalRow
from oellm.sitevalues import format_minutes, parse_time, sbatch_time

if TYPE_CHECKING:
    from oellm.plan.overrides import SlurmOverrides
    from oellm.plan.request import Request

MIN_TIME_MINUTES = 10
ESTIMATE = "estimated from each task's rows"


@dataclass(frozen=True)
class TimeLimit:
    """A run's time limit per array task: `minutes` someone gave (and where: `source`), or None to estimate
    each task's from its rows."""

    minutes: int | None = None
    source: str = ESTIMATE

    def per_task(self, rows: Sequence[EvalRow], cluster: ClusterConfig) -> dict[int, int]:
        """Array task -> its limit: the given one, else its own rows' estimate (a one-row task asks one row's)."""
        counts = task_rows(rows)
        return {t: self.minutes if self.minutes is not None else time_limit(cluster, n) for t, n in counts.items()}

    def evals_per_task(self, cluster: ClusterConfig, given: int | None) -> int:
        """Rows of one model per task: --evals_per_task, else as many as fill half the limit (max_time when
        none is given), leaving room for a slow node or a bad estimate."""
        if given is not None:
            return given
        return max(1, math.floor((self.minutes or cluster.max_minutes) / 2 / cluster.minutes_per_eval))

    def notes(self, rows: Sequence[EvalRow], cluster: ClusterConfig, given: int | None) -> list[str]:
        """Why some task's rows do not fit the given limit: --evals_per_task packs more, or one row alone is
        estimated longer. They are still submitted (an estimate is not a measurement)."""
        if self.minutes is None:
            return []
        counts = task_rows(rows)
        over = {t: n for t, n in counts.items() if needed(cluster, n) > self.minutes}
        if not over:
            return []
        most = max(over.values())
        limit = f"the {format_minutes(self.minutes)} limit from {self.source}"
        if most > 1 and given is not None:
            fit = max((n for n in range(1, most) if needed(cluster, n) <= self.minutes), default=0)
            return [f"note: --evals_per_task {given} puts {most} rows in an array task, estimated at "
                    f"{format_minutes(needed(cluster, most))}, above {limit}; "
                    + (f"{fit} row(s) fit it (leave --evals_per_task out to pack that many)" if fit else
                       "not even one row fits it") + f"; {len(over)} task(s) may time out"]
        one = next(r for r in rows if r.task_index in over)
        return [f"note: one row alone is estimated at {format_minutes(needed(cluster, 1))} ({cluster.minutes_per_eval:g} "
                f"min per evaluation x 1.5, plus a model load), above {limit}: {len(over)} array task(s), e.g. "
                f"{one.model} {one.task}, are submitted with it and may time out; give a longer limit if they do"]


ESTIMATED = TimeLimit()


def task_rows(rows: Sequence[EvalRow]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for r in rows:
        counts[r.task_index] = counts.get(r.task_index, 0) + 1
    return counts


def needed(cluster: ClusterConfig, evals_in_task: int) -> int:
    """Estimated minutes for a task: 1.5x minutes_per_eval for each row its busiest worker takes (one worker
    per GPU in `workers` mode) plus a model load."""
    per_worker = math.ceil(evals_in_task / cluster.row_workers)
    return math.ceil(per_worker * cluster.minutes_per_eval * 1.5) + 5


def time_limit(cluster: ClusterConfig, evals_in_task: int) -> int:
    """The estimated limit of one array task: `needed`, within [10 min, max_time]."""
    return min(cluster.max_minutes, max(MIN_TIME_MINUTES, needed(cluster, evals_in_task)))


def check_time_limit(value: str, cluster: ClusterConfig, source: str = "--time_limit") -> int:
    """A given limit in minutes; more than the cluster's max_time would be refused by SLURM after queueing."""
    minutes = parse_time(value, source)
    if minutes == 0:  # SLURM's "no limit": a job then waits for a partition whose MaxTime allows that
        raise OellmError(f"{source} {value}: SLURM reads 0 as no limit, which cluster {cluster.name}'s "
                         f"max_time {cluster.max_time} does not allow; give a limit up to it, or leave it "
                         "out to have each array task's limit estimated from its rows")
    if minutes > cluster.max_minutes:
        raise OellmError(f"{source} {value} exceeds cluster {cluster.name}'s max_time {cluster.max_time}; give "
                         "at most that, or a cluster whose max_time allows it")
    return minutes


def first_given(cluster: ClusterConfig, candidates: Sequence[tuple[str, str | None]]) -> TimeLimit:
    for source, value in candidates:
        if value:
            return TimeLimit(check_time_limit(value, cluster, source), source)
    return TimeLimit()


def for_request(req: Request, cluster: ClusterConfig) -> TimeLimit:
    """schedule-eval's limit. oellm-eval's TIME arrives as `req.time_limit` when --time_limit is not given
    (translated at the command line's edge, which notes the spelling in `req.spelled`); `cluster` holds the
    site's sbatch_options under the command line's."""
    other = req.spelled.get("time_limit")  # another spelling than --time_limit: it ranks after --sbatch_option
    return first_given(cluster, [("--time_limit", None if other else req.time_limit),
                                 ("--sbatch_option time", _command_line(req)),
                                 (other or "--time_limit", req.time_limit if other else None),
                                 (f"cluster {cluster.name} sbatch_options.time", sbatch_time(cluster.sbatch_options))])


def for_resubmit(opts: SlurmOverrides, cluster: ClusterConfig) -> TimeLimit:
    """resubmit's limit for every task it submits: only the command line's (the run's own is in its script);
    none: each task keeps its last limit, twice that after a timeout."""
    return first_given(cluster, [("--time_limit", opts.time_limit), ("--sbatch_option time", _command_line(opts))])


def _command_line(opts: SlurmOverrides) -> str | None:
    options: Mapping[str, str] = opts.cluster_fields().get("sbatch_options") or {}
    return sbatch_time(options)
