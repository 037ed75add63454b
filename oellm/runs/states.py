"""Row states of a run: result files, state records and SLURM's view, joined (pure: no I/O).

A row's result file decides first (done), its state record second, SLURM's state of the array
element that last ran it third, as in submitit's `Job.done`. A record counts for the current
attempt only when it names the array job of the latest submission of its task (records without
that field, from local runs or older workers, are taken as current).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from oellm.rundir import JobRef
from oellm.slurm import task_elements

# Scheduler states, in SLURM's names (sacct/squeue; other executors report theirs in these), defined once. A job in neither set (UNKNOWN, or a name a newer SLURM adds)
# is neither running nor finished: callers must not count it as done.
ACTIVE_STATES = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUED",
    "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SIGNALING", "SPECIAL_EXIT", "STAGE_OUT", "STOPPED",
})
FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
    "DEADLINE", "PREEMPTED", "REVOKED",
})


STATES = ("pending", "running", "done", "failed", "timeout", "oom", "cancelled", "not submitted", "unknown")
PROBLEMS = frozenset({"failed", "timeout", "oom", "cancelled"})
UNFINISHED = frozenset({"pending", "running", "unknown"})  # SLURM may still change these: never resubmit
REQUEUED = "requeued by SLURM"
INFRA = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})  # the machine failed, not the row: retry as is
_QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"})
_FINAL_ROW_STATE = {"TIMEOUT": "timeout", "DEADLINE": "timeout", "OUT_OF_MEMORY": "oom",
                    "CANCELLED": "cancelled", "REVOKED": "cancelled",
                    "NODE_FAIL": "failed", "PREEMPTED": "failed", "BOOT_FAIL": "failed"}


class RowState(NamedTuple):
    """One row's state, why, and the array element (`<job>_<index>`, its log name) that last ran it.

    A NamedTuple, not a dataclass: a 100k-row status builds 100k of them (3x faster)."""

    row: JobRef
    state: str
    reason: str = ""
    element: str | None = None
    infra: bool = False  # failed because of the node or the scheduler: worth retrying unchanged

    @property
    def log(self) -> str | None:
        return None if self.element is None else f"slurm_logs/{self.element}.err"


def host_oom(s: RowState) -> bool:
    """SLURM killed the task for its host memory (`--mem`), not a CUDA out-of-memory inside the row."""
    return s.state == "oom" and s.reason.startswith("SLURM OUT_OF_MEMORY")


def from_record(rec: dict[str, Any] | None, default: str) -> tuple[str, str]:
    """(state, reason) from a worker's state record alone."""
    if rec is None:
        return default, ""
    state = rec.get("state")
    if state == "running":
        return "running", ""
    if state == "failed":
        kind = rec.get("error_kind") or "exception"
        return ("oom" if kind == "oom" else "failed"), f"{kind}: {rec.get('error') or ''}".rstrip(": ")
    if state == "interrupted":
        return "failed", "interrupted (SIGTERM/SIGINT)"
    if state == "done":
        return "failed", "state record says done but the result file is missing"
    return "unknown", f"unreadable state record ({state!r})"


def row_state(row: JobRef, done: bool, rec: dict[str, Any] | None, element: str | None,
              slurm_state: str | None, slurm_known: bool) -> RowState:
    """Join one row; `slurm_known` is False for local runs or when sacct could not be asked."""
    if done:
        return RowState(row, "done", element=element)
    if not slurm_known:
        state, reason = from_record(rec, "pending" if element is None else "unknown")
        return RowState(row, state, reason, element)
    if element is None:
        return RowState(row, "not submitted", "held back by the queue limit")
    job = element.split("_")[0]
    current = rec is not None and rec.get("slurm_array_job_id") in (None, job)
    mine = rec if current else None
    if slurm_state is None or slurm_state not in ACTIVE_STATES | FINAL_STATES:
        state, reason = from_record(mine, "unknown")
        return RowState(row, state, reason or f"no SLURM state yet for {element}", element)
    failed_now = mine is not None and mine.get("state") == "failed"
    if slurm_state in ACTIVE_STATES:
        if failed_now:  # this row failed; its array task goes on with the other rows
            return RowState(row, *from_record(mine, "failed"), element)
        return RowState(row, "pending" if slurm_state in _QUEUED else "running", _requeued(mine, slurm_state),
                        element)
    if failed_now:
        return RowState(row, *from_record(mine, "failed"), element)
    if slurm_state in _FINAL_ROW_STATE:
        infra = slurm_state in INFRA
        reason = f"SLURM {slurm_state}" + (" (node/scheduler failure: resubmit retries it)" if infra else "")
        return RowState(row, _FINAL_ROW_STATE[slurm_state], reason, element, infra)
    what = "while the row was running" if mine and mine.get("state") in ("running", "interrupted") else \
        "without reaching this row"
    return RowState(row, "failed", f"lost: array task ended {slurm_state} {what}", element)


def _requeued(rec: dict[str, Any] | None, slurm_state: str) -> str:
    """Why an active row runs again: SLURM requeued its task (node failure, preemption), says its record."""
    if rec is None:
        return ""
    n = int(rec.get("slurm_restart_count") or 0)
    if rec.get("state") == "interrupted" and slurm_state in _QUEUED:
        n += 1  # the killed attempt wrote the record; the requeued one has not started yet
    return f"{REQUEUED} {n} time(s) (node failure or preemption)" if n else ""


def join(rows: Sequence[JobRef], done: set[str], records: dict[str, dict[str, Any]],
         submissions: Sequence[dict[str, Any]], slurm_states: dict[str, str] | None) -> list[RowState]:
    """Every row's state; `slurm_states` is {element: state}, or None when SLURM is not consulted."""
    where = task_elements(submissions).get
    known = slurm_states is not None
    state_of = (slurm_states or {}).get
    record_of = records.get
    out = []
    add = out.append
    for r in rows:  # 100k rows: the common cases are inlined, the rest goes to row_state
        el = where(r.task_index)
        if r.row_id in done:
            add(RowState(r, "done", "", el))
            continue
        rec = record_of(r.row_id)
        slurm_state = state_of(el) if el else None
        if rec is None and slurm_state in ACTIVE_STATES:
            add(RowState(r, "pending" if slurm_state in _QUEUED else "running", "", el))
        elif rec is None and not known:
            add(RowState(r, "pending" if el is None else "unknown", "", el))
        else:
            add(row_state(r, False, rec, el, slurm_state, known))
    return out


def needed_elements(rows: Sequence[JobRef], done: set[str], submissions: Sequence[dict[str, Any]]) -> set[str]:
    """Elements whose state matters: those running a row that is not done yet."""
    where = task_elements(submissions)
    return {where[r.task_index] for r in rows if r.row_id not in done and r.task_index in where}


def requeued(states: Iterable[RowState]) -> list[RowState]:
    return [s for s in states if s.state in UNFINISHED and s.reason.startswith(REQUEUED)]


def counts(states: Iterable[RowState]) -> dict[str, int]:
    c = Counter(s.state for s in states)
    return {k: c.get(k, 0) for k in STATES if c.get(k, 0) or k != "unknown"}


def breakdown(states: Iterable[RowState], by: str) -> dict[str, dict[str, int]]:
    """Counts per model or per task (rows in first-seen order)."""
    groups: dict[str, list[RowState]] = {}
    for s in states:
        groups.setdefault(getattr(s.row, by), []).append(s)
    return {k: {st: n for st, n in counts(v).items() if n} for k, v in groups.items()}


def resubmittable_tasks(states: Iterable[RowState], infra_only: bool = False) -> tuple[list[int], list[int]]:
    """(tasks to submit again, tasks left alone because SLURM may still run them).

    With `infra_only`, only tasks whose unfinished rows all failed because of the node or the
    scheduler (NODE_FAIL, PREEMPTED, BOOT_FAIL): safe to retry unattended, e.g. from cron."""
    busy: set[int] = set()
    todo: set[int] = set()
    other: set[int] = set()
    for s in states:
        if s.state in UNFINISHED:
            busy.add(s.row.task_index)
        elif s.state != "done":
            todo.add(s.row.task_index)
            if not s.infra:
                other.add(s.row.task_index)
    if infra_only:
        todo -= other
    return sorted(todo - busy), sorted(busy & todo)


