"""One refresh of a run's status, as text for people or JSON for scripts (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oellm.render import script_minutes
from oellm.rows import shot_label
from oellm.rundir import JobRef, RunDir
from oellm.runs.states import PROBLEMS, REQUEUED, RowState, breakdown, counts, requeued
from oellm.sitevalues import format_minutes, parse_time
from oellm.slurm import job_ids


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
    parallel: int = 1  # array tasks that may run at once
    measured_wall_s: float | None = None  # first row started to last row ended (runs with a prediction)


def eta_s(v: View) -> float | None:
    """Rows left x mean seconds per done row / array tasks that may run at once."""
    c = counts(v.states)
    left = sum(c.get(k, 0) for k in ("pending", "running", "unknown", "not submitted"))
    if not left:
        return 0.0
    if v.mean_row_s is None:
        return None
    tasks = len({s.row.task_index for s in v.states if s.state in ("pending", "running", "unknown", "not submitted")})
    return left * v.mean_row_s / max(1, min(v.parallel, tasks))


def last_minutes(manifest: dict[str, Any]) -> dict[int, int]:
    """Array task -> the time limit (minutes) of its latest submission: its own --time= or the script's."""
    base = script_minutes(manifest)
    return {t: base if v is None else parse_time(v, "run.json time limit")
            for t, v in last_option(manifest, "--time=").items()}


def last_option(manifest: dict[str, Any], prefix: str) -> dict[int, str | None]:
    """Array task -> the value of sbatch flag `prefix` in its latest submission (None: the script's own)."""
    out: dict[int, str | None] = {}
    for s in manifest.get("submissions") or []:
        values = [o[len(prefix):] for o in s.get("options") or [] if o.startswith(prefix)]
        for i in range(int(s["offset"]), int(s["offset"]) + int(s["size"])):
            out[i] = values[-1] if values else None
    return out


def time_limits(v: View) -> str | None:
    """The run's time limit per array task as status shows it, and where it comes from (SLURM runs)."""
    m = v.manifest
    if m.get("executor") != "slurm" or not m.get("time_limit"):
        return None
    limits = sorted(set(last_minutes(m).values()))
    more = [format_minutes(x) for x in limits if x != script_minutes(m)]
    return (f"{format_minutes(script_minutes(m))} per array task ({m.get('time_limit_from') or 'estimated'}"
            + (f"; some tasks {', '.join(more)}" if more else "") + ")")


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no row done yet)"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    return f"~{seconds / 60:.0f} min" if seconds < 5400 else f"~{seconds / 3600:.1f} h"


def _row_label(r: JobRef) -> str:
    return f"{r.model} | {r.task} | {shot_label(r.n_shot)}-shot"


def to_json(v: View, by: str | None) -> dict[str, Any]:
    bad = [s for s in v.states if s.state in PROBLEMS]
    return {
        "run_dir": str(v.run.path), "executor": v.manifest.get("executor"), "cluster": v.manifest.get("cluster"),
        "cancelled": v.manifest.get("cancelled"), "slurm": v.slurm_note or "ok", "slurm_calls": v.slurm_calls,
        "slurm_warning": v.slurm_warning or None, "time_limit": time_limits(v),
        "rows": len(v.states), "counts": counts(v.states), "eta_s": eta_s(v),
        "prediction": v.manifest.get("prediction"), "measured_wall_s": v.measured_wall_s,
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
    limit = time_limits(v)
    if limit:
        lines.append(f"time limit: {limit}")
    p = m.get("prediction")
    if p:
        so_far = "" if not any(s.state in ("pending", "running", "unknown") for s in v.states) else " so far"
        measured = "-" if v.measured_wall_s is None else f"{v.measured_wall_s / 60:.1f} min{so_far}"
        lines.append(f"prediction: {p['num_shards']} shard(s), wall {p['wall_s'] / 60:.1f} min, "
                     f"{p['gpu_hours']:.2f} GPU-h; measured wall {measured}")
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
        minutes = last_minutes(m) if limit else {}
        for s in bad[:max_problems]:
            log = f"; log {v.run.path / s.log}" if s.log else ""
            at = f" at its {format_minutes(minutes[s.row.task_index])} limit" if s.state == "timeout" and \
                s.row.task_index in minutes else ""
            lines.append(f"  {s.state:9} {s.row.row_id} {_row_label(s.row)}: {s.reason or '-'}{at}{log}")
        if len(bad) > max_problems:
            lines.append(f"  ... {len(bad) - max_problems} more (--json lists all)")
    return "\n".join(lines)
