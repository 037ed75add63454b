"""One look of a follower: list the followed dirs, find the checkpoints that are new and complete, and send
them through the ordinary `schedule()` path (plan -> pre-cache -> preflight -> arrays).

A look at a run with nothing new lists each run dir once and returns: no completeness check of
checkpoints already scheduled, no planning, no scheduler call. Rows already done or still queued are
skipped by schedule() itself, as in any re-run, so a look never evaluates a row twice.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.follow.state import FollowState, iso
from oellm.plan import checkpoints as ck
from oellm.plan import expand as ex
from oellm.plan.request import Request
from oellm.rows import ModelRef, is_path

GIVE_UP_LOOKS = 12  # a checkpoint incomplete this many looks (and at least GIVE_UP_MIN_S) is reported, not retried
GIVE_UP_MIN_S = 2 * 3600.0
MAX_FAILURES = 3  # looks whose scheduling of a checkpoint failed before it is given up
SETTLE_MAX_S = 5.0  # a checkpoint first seen complete is listed again this long after (less for short intervals)


@dataclass
class Look(Request):
    """The request of one look: the user's, with the models it found new and complete instead of --models
    (their order and selection are the follower's, so stride and last_n are not applied again)."""

    refs: tuple[ModelRef, ...] = ()

    def model_refs(self) -> list[ModelRef]:
        return list(self.refs)


@dataclass
class Outcome:
    """What one look did, for the progress line and for status."""

    new: list[str] = field(default_factory=list)
    run: str | None = None
    gave_up: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)  # scheduling failed: tried again at the next look
    resubmitted: list[str] = field(default_factory=list)  # runs whose failed rows went in again (follow.retry)
    error: str | None = None


def key(ref: ModelRef) -> str:
    return ref.name if not ref.args else f"{ref.name},{ref.args}"


def candidates(req: Request, state: FollowState, final: bool) -> list[ModelRef]:
    """The followed models not scheduled nor given up: each --models item's dir listed once (any layout),
    checkpoints below the first look's --last_n_checkpoints floor and off the --checkpoint_stride grid left
    out. The grid starts at the oldest followed checkpoint and each step is placed on it or off it once
    (`on_grid`), so it stays put as new ones arrive and old ones are deleted (`save_total_limit`); on the
    final look the newest checkpoint of each run is taken whatever the stride."""
    out = []
    first = state.looks == 0
    for spec in ex.parse_models(req.models):
        if not is_path(spec.name):  # a hub model: complete as it is
            out.append(spec)
            continue
        path = Path(spec.name).expanduser().resolve()
        if not path.is_dir():
            raise OellmError(f"--follow: model path {spec.name} does not exist (or is not a directory)")
        runs: dict[Path, list[ck.Found]] = {}
        for f in ck.discover(path, ck.has_model_file):
            if f.step is None:
                out.append(ModelRef(str(f.path), spec.args))
            else:
                runs.setdefault(f.run, []).append(f)
        for run, found in runs.items():
            if first and req.last_n_checkpoints and len(found) > req.last_n_checkpoints:
                state.floor[str(run)] = found[-req.last_n_checkpoints].step  # type: ignore[assignment]
            floor = state.floor.get(str(run))
            found = [f for f in found if floor is None or f.step >= floor]  # type: ignore[operator]
            keep = on_grid(found, state.grid.setdefault(str(run), {}), max(1, req.checkpoint_stride))
            if final and found and found[-1] not in keep:
                keep.append(found[-1])
            out += [ModelRef(str(f.path), spec.args, f.step) for f in keep]
    return [r for r in out if key(r) not in state.scheduled and key(r) not in state.given_up]


def on_grid(found: list[ck.Found], grid: dict[str, Any], stride: int) -> list[ck.Found]:
    """The checkpoints of one run on the stride grid: steps newer than the last decided are placed in order
    (every `stride`-th since the last kept, the first ever kept), older ones keep their decision, so the
    grid hangs on step numbers, not on positions in today's listing."""
    keep = set(grid.setdefault("keep", []))
    for f in found:
        if grid.get("last") is not None and f.step <= grid["last"]:  # type: ignore[operator]
            continue
        since = grid.get("since", 0) + 1
        if grid.get("last") is None or since >= stride:
            keep.add(f.step)
            grid["keep"].append(f.step)
            since = 0
        grid["last"], grid["since"] = f.step, since
    return [f for f in found if f.step in keep]


def complete(refs: list[ModelRef], req: Request, state: FollowState, at: float, settle_s: float,
             log: Callable[[str], None]) -> list[ModelRef]:
    """The refs whose checkpoint is complete: statically (`ck.incomplete`) and with the sizes of its files
    the same as at the previous look, or, first seen complete, as a listing `settle_s` later. Others wait
    in `state.waiting`, until GIVE_UP_LOOKS looks have not completed them."""
    ready, settle = [], []
    for ref in refs:
        if ref.is_hub:
            ready.append(ref)
            continue
        k, path = key(ref), Path(ref.name)
        files = ck.sizes(path)
        why = ck.incomplete(path, req.checkpoint_ready_file, need_weights=True, files=files)
        prev = state.waiting.get(k)
        if why is None and prev and prev["sizes"] == files:
            ready.append(ref)
        elif why is None:  # first seen complete: list it again shortly
            settle.append((ref, files))
        else:
            _wait(state, k, files, why, at, log)
    if settle:
        time.sleep(settle_s)
        for ref, files in settle:
            again = ck.sizes(Path(ref.name))
            if again == files:
                ready.append(ref)
            else:
                _wait(state, key(ref), again, "file sizes still changing", at, log)
    for ref in ready:
        state.waiting.pop(key(ref), None)
    return ready


def _wait(state: FollowState, k: str, files: dict[str, int], why: str, at: float, log: Callable[[str], None]) -> None:
    prev = state.waiting.get(k) or {"since": at, "looks": 0}
    entry = {"since": prev["since"], "looks": prev.get("looks", 0) + 1, "sizes": files, "why": why}
    bound = max(GIVE_UP_LOOKS * state.interval_s, GIVE_UP_MIN_S)
    if entry["looks"] >= GIVE_UP_LOOKS and at - entry["since"] >= bound:
        state.waiting.pop(k, None)
        state.given_up[k] = f"not complete {entry['looks']} looks after {iso(entry['since'])}: {why}"
        log(f"follow: giving up on {k}: {state.given_up[k]}")
    else:
        state.waiting[k] = entry


def look(req: Request, state: FollowState, final: bool, root: Path, schedule: Callable[..., Path | None],
         log: Callable[[str], None], at: float | None = None) -> Outcome:
    """One look; changes `state` (the caller saves it). `root`: the output root (a run that went in shows
    there); `schedule` is `oellm.schedule.schedule`."""
    at = time.time() if at is None else at
    settle_s = min(SETTLE_MAX_S, state.interval_s / 2)
    ready = complete(candidates(req, state, final), req, state, at, settle_s, log)
    state.looks += 1
    state.last_look = at
    out = Outcome()
    if not ready:
        return out
    before = _runs(root)
    data = {f.name: getattr(req, f.name) for f in fields(Request) if f.init}
    one = Look(**{**data, "follow": False, "checkpoint_stride": 1, "last_n_checkpoints": None}, refs=tuple(ready))
    interrupted = _InterruptFlag()
    try:
        with interrupted:
            run = schedule(one, log=log)
    except OellmError as e:
        if interrupted.seen:
            raise KeyboardInterrupt from None
        after = _runs(root)
        made = sorted(after - before)
        out.error = state.last_error = f"{iso(at)}: {e}"
        if not made:  # nothing started: try these again at the next look, a few times
            for ref in ready:
                n = state.failures[key(ref)] = state.failures.get(key(ref), 0) + 1
                if n >= MAX_FAILURES:  # state.failures: only those still to be tried again
                    state.failures.pop(key(ref))
                    state.given_up[key(ref)] = f"scheduling failed {n} times: {e}"
                    out.gave_up.append(key(ref))
                else:
                    out.retry.append(key(ref))
            return out
        run = Path(made[-1])  # a run went in (some rows failed, say): its rows are scheduled; resubmit fixes them
    if interrupted.seen:
        raise KeyboardInterrupt
    for ref in ready:
        state.scheduled[key(ref)] = {"at": iso(at), "run": str(run) if run else None, "step": ref.step}
        state.failures.pop(key(ref), None)
    if run:
        state.runs.append(str(run))
    out.new, out.run = [key(r) for r in ready], str(run) if run else None
    return out


def _runs(root: Path) -> set[str]:
    try:
        return {e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()


class _InterruptFlag:
    """Notes a Ctrl-C that the local executor turns into its own error, so the follower stops too."""

    seen = False

    def __enter__(self) -> _InterruptFlag:
        self._old = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):  # type: ignore[no-untyped-def]
            self.seen = True
            signal.default_int_handler(signum, frame)

        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: nothing to note
            self._old = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
