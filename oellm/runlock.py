"""A lock on a run dir for the commands that change run.json (submission, resubmit, cancel), so a cron
`resubmit --infra_only` racing a manual one cannot submit the same tasks twice or lose a job id.

Written by hand because the locks of libraries (fcntl/flock, which filelock uses) are silently ignored on
some Lustre and GPFS mounts: creating a file with O_EXCL is atomic there. The file names its holder (host,
pid, time), so a holder that died is recognised: on this host its pid is gone; elsewhere its lock is old.
Taking over a dead holder's lock is itself serialised (`_take_over`), so two takers never both win.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from oellm.errors import OellmError

STALE_S = 900.0  # a lock of another host older than this belongs to a process that died with its node
BREAK_STALE_S = 30.0  # a takeover holds `<lock>.break` for microseconds: older, its taker died in between
_HELD: set[str] = set()  # locks this process holds: taking one again (nested) is a no-op


def _holder(path: Path) -> tuple[str, int, float] | None:
    try:
        host, pid, since = path.read_text().split()
        return host, int(pid), float(since)
    except (OSError, ValueError):
        return None  # gone, or being written this instant


def _is_stale(holder: tuple[str, int, float], now: float) -> bool:
    host, pid, since = holder
    if host != socket.gethostname():
        return now - since > STALE_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _take_over(path: Path, stale: tuple[str, int, float]) -> None:
    """Remove the lock of dead holder `stale`, unless it has changed hands since it was judged stale.

    Unlinking right away would race: takers A and B both judge it stale, A unlinks it and creates its own,
    then B unlinks A's fresh lock and creates one too, and both run. So the check and the unlink happen
    under a second O_EXCL file, `<lock>.break`: whoever comes second finds the winner's lock there (or none)
    and leaves it. Every taker then competes for the lock itself with O_EXCL, which only one wins."""
    breaker = path.with_name(path.name + ".break")
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # another taker is at it: wait for the outcome (or clear a taker that died)
        with contextlib.suppress(FileNotFoundError):
            if time.time() - breaker.stat().st_mtime > BREAK_STALE_S:
                os.unlink(breaker)
        return
    try:
        if _holder(path) == stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)
        os.unlink(breaker)


@contextlib.contextmanager
def locked(path: Path, wait_s: float = 120.0, poll_s: float = 0.2) -> Iterator[None]:
    """Hold the lock file `path` (created with O_EXCL) while the block runs; wait up to `wait_s` for another
    holder, take over a stale one, and say who holds it when the wait runs out."""
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
                who = f"{holder[0]} pid {holder[1]} since {time.ctime(holder[2])}" if holder else "another process"
                raise OellmError(f"{path.parent} is locked by {who} (a submission, resubmit or cancel in progress); "
                                 f"try again when it is done, or delete {path} if no such process exists") from None
            time.sleep(poll_s)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{socket.gethostname()} {os.getpid()} {time.time():.3f}\n")
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
