"""A lock on a run dir for the commands that change run.json (submission, resubmit, cancel), so a cron
`resubmit --infra_only` racing a manual one cannot submit the same tasks twice or lose a job id.

Written by hand because the locks of libraries (fcntl/flock, which filelock uses) are silently ignored on
some Lustre and GPFS mounts: creating a file with O_EXCL is atomic there. The file names its holder (host,
pid, time) and a token of this acquisition. While held, a heartbeat thread touches the file every
`STALE_S / HEARTBEATS_PER_STALE` seconds, so a holder that died is recognised and a live one never is: on
this host its pid is gone; elsewhere its file has not been touched for STALE_S (a holder on another host
cannot be asked). Taking over a dead holder's lock and releasing one's own both happen under a second O_EXCL
file (`<lock>.break`), and each checks the token first: a holder that was taken over (frozen past STALE_S,
then resumed) finds another token and leaves its successor's lock alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from oellm.errors import OellmError

STALE_S = 900.0  # a lock of another host not touched for this long belongs to a process that died with its node
HEARTBEATS_PER_STALE = 5  # a live holder touches its lock this often per STALE_S: a slow beat is not a death
BREAK_STALE_S = 30.0  # a takeover holds `<lock>.break` for microseconds: older, its taker died in between
_HELD: set[str] = set()  # locks this process holds: taking one again (nested) is a no-op
log = logging.getLogger("oellm.runlock")


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    since: float  # when it took the lock (for messages)
    token: str  # this acquisition's: the same host and pid may take the lock again later
    beat: float  # the file's mtime: its last heartbeat

    def same(self, other: Holder | None) -> bool:
        return other is not None and (self.host, self.pid, self.token) == (other.host, other.pid, other.token)


def _holder(path: Path) -> Holder | None:
    try:
        fields = path.read_text().split()
        beat = path.stat().st_mtime
        host, pid, since = fields[:3]
        return Holder(host, int(pid), float(since), fields[3] if len(fields) > 3 else "", beat)
    except (OSError, ValueError):
        return None  # gone, or being written this instant


def _is_stale(holder: Holder, now: float) -> bool:
    if holder.host != socket.gethostname():
        return now - holder.beat > STALE_S
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@contextlib.contextmanager
def _breaker(path: Path, wait: bool) -> Iterator[bool]:
    """Hold `<lock>.break` while the block runs (yields True); another process at it: yields False at
    once, or, with `wait`, waits for it (it holds the file for microseconds; one that died is cleared)."""
    breaker = path.with_name(path.name + ".break")
    while True:
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - breaker.stat().st_mtime > BREAK_STALE_S:
                    os.unlink(breaker)
            if not wait:
                yield False
                return
            time.sleep(0.01)
    try:
        yield True
    finally:
        os.close(fd)
        os.unlink(breaker)


def _take_over(path: Path, stale: Holder) -> None:
    """Remove the lock of dead holder `stale`, unless it has changed hands or beaten since it was judged.

    Unlinking right away would race: takers A and B both judge it stale, A unlinks it and creates its own,
    then B unlinks A's fresh lock and creates one too, and both run. So the check and the unlink happen
    under `<lock>.break`: whoever comes second finds the winner's lock there (or none) and leaves it. Every
    taker then competes for the lock itself with O_EXCL, which only one wins."""
    with _breaker(path, wait=False) as held:
        now = _holder(path)
        if held and now is not None and stale.same(now) and _is_stale(now, time.time()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _release(path: Path, me: Holder) -> None:
    """Remove the lock only if it is still this acquisition's (under `.break`, so no takeover interleaves)."""
    with _breaker(path, wait=True):
        if me.same(_holder(path)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            log.warning("%s was taken over while this process (pid %d) held it: left to its new holder",
                        path, me.pid)


def _heartbeat(path: Path, me: Holder, stop: threading.Event) -> None:
    """Touch the lock while it is ours, so a long holder is never judged dead; stop once it is not."""
    while not stop.wait(STALE_S / HEARTBEATS_PER_STALE):
        if not me.same(_holder(path)):
            return
        with contextlib.suppress(OSError):
            os.utime(path)


@contextlib.contextmanager
def locked(path: Path, wait_s: float = 120.0, poll_s: float = 0.2) -> Iterator[None]:
    """Hold the lock file `path` (created with O_EXCL) while the block runs; wait up to `wait_s` for another
    holder, take over a dead one, and say who holds it when the wait runs out."""
    key = str(Path(path).resolve())
    if key in _HELD:
        yield
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileNotFoundError:
            raise OellmError(f"{path.parent} does not exist: is this an oellm run directory?") from None
        except PermissionError:
            raise OellmError(f"cannot lock {path.parent}: no write permission (a run dir copied from someone "
                             "else is read-only: status and collect-results read it, resubmit and cancel do not)") from None
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and _is_stale(holder, time.time()):
                _take_over(path, holder)
                continue
            if time.monotonic() >= deadline:
                who = f"{holder.host} pid {holder.pid} since {time.ctime(holder.since)}" if holder else "another process"
                raise OellmError(f"{path.parent} is locked by {who} (a submission, resubmit or cancel in progress); "
                                 f"try again when it is done, or delete {path} if no such process exists") from None
            time.sleep(poll_s)
    me = Holder(socket.gethostname(), os.getpid(), time.time(), secrets.token_hex(8), 0.0)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{me.host} {me.pid} {me.since:.3f} {me.token}\n")
    _HELD.add(key)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, me, stop), name=f"oellm-lock-{path.name}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        _HELD.discard(key)
        _release(path, me)
