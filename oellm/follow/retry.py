"""A follower retries what failed on the nodes, by `oellm resubmit`'s rules, and gives it up with the reason.

A checkpoint scheduled by a look can still fail where it runs (a timeout, an OOM, a node that died): the
follower would otherwise count it as scheduled and never look back. Each look asks the status of the
follower's SLURM runs that are not finished: rows to redo that SLURM no longer runs are submitted again by
`resubmit` itself (a timeout gets twice the limit, a host OOM twice the memory, a GPU OOM half the batch),
at most MAX_RESUBMITS times per run; after that their checkpoints are given up, with the rows' reason, and
`oellm status FOLLOWER` shows them. A local run is evaluated in the foreground of its look: running the same
command again redoes its failed rows.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

from oellm.errors import OellmError
from oellm.follow.state import FollowState

MAX_RESUBMITS = 2  # resubmits of one run before its failed checkpoints are given up


def retry_failed(state: FollowState, log: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """Resubmit the failed rows of the follower's runs; returns (runs resubmitted, checkpoint keys given up)."""
    from oellm.runs import states as st
    from oellm.runs.resubmit import Resubmit, resubmit
    from oellm.runs.view import view

    resubmitted: list[str] = []
    gave_up: list[str] = []
    for run in [r for r in dict.fromkeys(state.runs) if r not in state.finished]:
        try:
            v = view(Path(run))
        except OellmError:
            continue  # a run dir gone, or unreadable for a moment: the next look asks again
        if v.manifest.get("executor") != "slurm" or v.slurm_note:
            continue
        todo, busy = st.resubmittable_tasks(v.states)
        if not todo:
            if not busy:
                state.finished.append(run)  # every row done (or nothing SLURM can redo): not asked again
            continue
        tries = state.resubmits.get(run, 0)
        failed = [s for s in v.states if s.row.task_index in set(todo) and s.state != "done"]
        if tries >= MAX_RESUBMITS:
            models = {s.row.model: s for s in failed}
            for k in [k for k, v_ in state.scheduled.items() if v_.get("run") == run]:
                hit = models.get(k.split(",", 1)[0])
                if hit is not None:
                    state.given_up[k] = (f"evaluation failed after {tries} resubmit(s): {hit.state}"
                                         + (f" ({hit.reason})" if hit.reason else "") + f"; see {run}")
                    gave_up.append(k)
            state.finished.append(run)
            continue
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):
                resubmit(Resubmit(run_dir=Path(run)))
        except OellmError as e:
            log(f"follow: resubmitting the failed rows of {run} failed: {e}")
            continue
        state.resubmits[run] = tries + 1
        resubmitted.append(run)
        log(f"follow: {len(failed)} failed row(s) of {run} resubmitted ({tries + 1} of {MAX_RESUBMITS}): "
            + " | ".join(line for line in said.getvalue().splitlines() if line.strip())[:300])
    return resubmitted, gave_up
