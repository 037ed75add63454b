"""The follower's progress line: one per look, what it scheduled, what waits and why, what comes next; it
never says "nothing new" after a look that tried and failed."""

from __future__ import annotations

import time
from pathlib import Path

from oellm.follow.look import Outcome
from oellm.follow.state import FollowState


def short(k: str) -> str:
    path = k.split(",", 1)[0]
    return "/".join(Path(path).parts[-2:]) if Path(path).parent.name == "hf" else Path(path).name


def progress(state: FollowState, out: Outcome) -> str:
    """One line per look: what it scheduled, what waits and why, and what comes next."""
    parts = [f"follow: look {state.looks} at {time.strftime('%H:%M:%S', time.localtime(state.last_look))}"]
    if out.new:
        parts.append(f"scheduled {len(out.new)} new ({', '.join(map(short, out.new[:4]))}"
                     f"{', ...' if len(out.new) > 4 else ''})" + (f" in {out.run}" if out.run else ""))
    elif out.retry:
        parts.append(f"scheduling {len(out.retry)} failed, tried again next look ({', '.join(map(short, out.retry[:4]))}"
                     f"{', ...' if len(out.retry) > 4 else ''})")
    elif out.gave_up:
        parts.append(f"gave up on {len(out.gave_up)} ({', '.join(map(short, out.gave_up[:4]))}; why: oellm status "
                     "FOLLOWER_DIR)")
    elif out.error:
        parts.append("look failed")
    elif out.resubmitted:
        parts.append(f"resubmitted the failed rows of {len(out.resubmitted)} run(s)")
    else:
        parts.append("nothing new")
    if state.waiting:
        k, w = next(iter(state.waiting.items()))
        parts.append(f"{len(state.waiting)} not complete yet ({short(k)}: {w['why']})")
    if out.error:
        parts.append(f"error: {out.error}")
    parts.append(f"{len(state.scheduled)} scheduled in all")
    if state.given_up:
        parts.append(f"{len(state.given_up)} given up")
    if state.ended:
        parts.append(f"ended: {state.ended}")
    elif state.next_look:
        nxt = time.strftime("%H:%M:%S", time.localtime(state.next_look))
        parts.append(f"next look {nxt}" + (f" (job {state.job_id})" if state.job_id else ""))
    return "; ".join(parts)
