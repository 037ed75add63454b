"""Row states of a run: result files, state records and SLURM's view, joined (pure: no I/O).

A row's result file decides first (done), its state record second, SLURM's state of the array
element that last ran it third, as in submitit's `Job.done`. A record counts for the current
attempt only when it names the array job of the latest submission of its task (records without
that field, from local runs or older workers, are taken as current).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from oellm.rundir import JobRef, RunDir
from oellm.slurm import ACTIVE_STATES, FINAL_STATES

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


def elements(submissions: Iterable[dict[str, Any]]) -> dict[int, str]:
    """Global array task index -> `<job>_<local index>` of the latest submission that covers it."""
    out: dict[int, str] = {}
    for s in submissions:
        offset, job = int(s["offset"]), s["job_id"]
        for i in range(int(s["size"])):
            out[offset + i] = f"{job}_{i}"
    return out


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
    where = elements(submissions)
    known = slurm_states is not None
    states = slurm_states or {}
    out = []
    for r in rows:
        el = where.get(r.task_index)
        rec = records.get(r.row_id)
        slurm_state = states.get(el) if el else None
        if r.row_id in done:  # the common cases of a large run skip the call
            out.append(RowState(r, "done", "", el))
        elif rec is None and slurm_state in ACTIVE_STATES:
            out.append(RowState(r, "pending" if slurm_state in _QUEUED else "running", "", el))
        else:
            out.append(row_state(r, False, rec, el, slurm_state, known))
    return out


def needed_elements(rows: Sequence[JobRef], done: set[str], submissions: Sequence[dict[str, Any]]) -> set[str]:
    """Elements whose state matters: those running a row that is not done yet."""
    where = elements(submissions)
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


# ---------------------------------------------------------------- one refresh, as text or JSON


@dataclass
class View:
    """One refresh of a run: its rows' states and where SLURM's answer came from."""

    run: RunDir
    manifest: dict[str, Any]
    states: list[RowState]
    slurm_note: str  # "" when SLURM answered (or a local run); else why it did not
    slurm_calls: int
    mean_row_s: float | None
    slurm_warning: str = ""  # SLURM answered in part (sacct did, squeue did not)


def job_ids(manifest: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(str(s["job_id"]) for s in manifest.get("submissions") or []))


def eta_s(v: View) -> float | None:
    """Rows left x mean seconds per done row / array tasks that may run at once."""
    c = counts(v.states)
    left = sum(c.get(k, 0) for k in ("pending", "running", "unknown", "not submitted"))
    if not left:
        return 0.0
    if v.mean_row_s is None:
        return None
    parallel = 1 if v.manifest.get("executor") == "local" else \
        int((v.manifest.get("cluster_config") or {}).get("max_running") or 1)
    tasks = len({s.row.task_index for s in v.states if s.state in ("pending", "running", "unknown", "not submitted")})
    return left * v.mean_row_s / max(1, min(parallel, tasks))


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no row done yet)"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    return f"~{seconds / 60:.0f} min" if seconds < 5400 else f"~{seconds / 3600:.1f} h"


def _row_label(r: JobRef) -> str:
    return f"{r.model} | {r.task} | {r.n_shot}-shot"


def to_json(v: View, by: str | None) -> dict[str, Any]:
    bad = [s for s in v.states if s.state in PROBLEMS]
    return {
        "run_dir": str(v.run.path), "executor": v.manifest.get("executor"), "cluster": v.manifest.get("cluster"),
        "cancelled": v.manifest.get("cancelled"), "slurm": v.slurm_note or "ok", "slurm_calls": v.slurm_calls,
        "slurm_warning": v.slurm_warning or None,
        "rows": len(v.states), "counts": counts(v.states), "eta_s": eta_s(v),
        "requeued": [{"row_id": s.row.row_id, "state": s.state, "reason": s.reason} for s in requeued(v.states)],
        **({"by": by, "breakdown": breakdown(v.states, by)} if by else {}),
        "problems": [{"row_id": s.row.row_id, "model": s.row.model, "task": s.row.task, "n_shot": s.row.n_shot,
                      "task_index": s.row.task_index, "state": s.state, "reason": s.reason, "infra": s.infra,
                      "log": None if s.log is None else str(v.run.path / s.log)} for s in bad],
    }


def to_text(v: View, by: str | None, max_problems: int = 50) -> str:
    m = v.manifest
    c = counts(v.states)
    lines = [f"run {v.run.path} ({m.get('executor')}, cluster {m.get('cluster')}, created {m.get('created')}, "
             f"{len(job_ids(m))} array job(s))" + (f"; cancelled at {m['cancelled']}" if m.get("cancelled") else "")]
    if v.slurm_note:
        lines.append(f"{v.slurm_note}; states from the run dir's records only")
    if v.slurm_warning:
        lines.append(f"warning: {v.slurm_warning}")
    lines.append(f"rows {len(v.states)}: " + ", ".join(f"{k} {n}" for k, n in c.items()))
    lines.append(f"time left: {_fmt_s(eta_s(v))}")
    again = requeued(v.states)
    if again:
        lines.append(f"{len(again)} row(s) {REQUEUED} after a node failure or preemption: they run again by "
                     f"themselves (at most max_requeues {(m.get('cluster_config') or {}).get('max_requeues')} times)")
    if by:
        for key, group in breakdown(v.states, by).items():
            lines.append(f"  {key}: " + ", ".join(f"{k} {n}" for k, n in group.items()))
    bad = [s for s in v.states if s.state in PROBLEMS]
    if bad:
        lines.append(f"rows that need attention ({len(bad)}; `oellm resubmit --run_dir {v.run.path}` retries them):")
        for s in bad[:max_problems]:
            log = f"; log {v.run.path / s.log}" if s.log else ""
            lines.append(f"  {s.state:9} {s.row.row_id} {_row_label(s.row)}: {s.reason or '-'}{log}")
        if len(bad) > max_problems:
            lines.append(f"  ... {len(bad) - max_problems} more (--json lists all)")
    return "\n".join(lines)
