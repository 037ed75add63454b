"""Exclusive claims on rows, so two oellm commands scheduling into one output root (two followers of one
training run, a follower and a manual `schedule-eval`) never evaluate a row twice.

Each command holds one claim file, `<output root>/.claims/<host>-<pid>-<token>`: its holder (host, pid, time,
token) on the first line, the row ids it claims below. Files are read, judged and written only under the
root's lock (`oellm.runlock`, O_EXCL: atomic on Lustre and GPFS, where flock is not), so a claim is decided
once; one file per command keeps a 100k-row submission at one write and one heartbeat, not 100k. A claim is
taken before the command asks which rows are done or still queued, and held until its submission is on
record: on SLURM until the job ids are in the run dir's submissions log (where `rows_in_flight` finds them),
locally until the local run has ended. Rows another live holder claims are skipped with one line; a dead
holder's file (this host: its pid is gone; another host: not touched for `runlock.STALE_S`) is removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from oellm import runlock
from oellm.atomic import atomic_open
from oellm.errors import OellmError

DIR = ".claims"  # a dot dir: run listings and the done-row scan pass it by
LOCK = ".claims.lock"  # beside it, held for the milliseconds of a read-judge-write

R = TypeVar("R")  # a row: anything with a `row_id`


class Claims:
    """The claims one command holds (under one or more output roots), kept fresh by a heartbeat so a long
    local run on another host is not judged dead; `release` (or leaving `held`) gives them back."""

    def __init__(self) -> None:
        self.me = runlock.Holder(socket.gethostname(), os.getpid(), time.time(), secrets.token_hex(8), 0.0)
        self.rows: dict[Path, set[str]] = {}  # claim file -> the row ids in it
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def held(self) -> list[Path]:
        return list(self.rows)

    def take(self, root: Path, rows: Sequence[R], log: Callable[[str], None]) -> list[R]:
        """`rows` less those another live oellm claims under the output root `root` (said in one line per
        holder); the others are now ours."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        mine_file = root / DIR / f"{self.me.host}-{self.me.pid}-{self.me.token}"
        with runlock.locked(root / LOCK, wait_s=600):
            (root / DIR).mkdir(exist_ok=True)
            theirs = _live_claims(root / DIR, skip=mine_file)
            mine = [r for r in rows if r.row_id not in theirs]  # type: ignore[attr-defined]
            ids = self.rows.setdefault(mine_file, set())
            ids.update(r.row_id for r in mine)  # type: ignore[attr-defined]
            with atomic_open(mine_file) as fh:
                fh.write(f"{self.me.host} {self.me.pid} {self.me.since:.3f} {self.me.token}\n")
                fh.write("\n".join(sorted(ids)) + "\n")
        counts: dict[tuple[str, int], int] = {}
        for r in rows:
            h = theirs.get(r.row_id)  # type: ignore[attr-defined]
            if h is not None:
                counts[(h.host, h.pid)] = counts.get((h.host, h.pid), 0) + 1
        for (host, pid), n in sorted(counts.items()):
            log(f"skipping {n} row(s) claimed by another oellm (pid {pid} on host {host}): it schedules them")
        if self._beat is None:
            self._beat = threading.Thread(target=self._heartbeat, name="oellm-claims", daemon=True)
            self._beat.start()
        return mine

    def _heartbeat(self) -> None:
        while not self._stop.wait(runlock.STALE_S / runlock.HEARTBEATS_PER_STALE):
            for path in self.held:
                with contextlib.suppress(OSError):
                    os.utime(path)

    def release(self) -> None:
        """Give back every claim held; the claims dir goes too once nobody holds one."""
        self._stop.set()
        for path in self.held:
            with contextlib.suppress(OSError, OellmError), runlock.locked(path.parent.parent / LOCK, 600):
                if self.me.same(runlock._holder(path)):
                    path.unlink()
                with contextlib.suppress(OSError):  # not empty: another holder's claims are in it
                    path.parent.rmdir()
        self.rows = {}


def _live_claims(where: Path, skip: Path) -> dict[str, runlock.Holder]:
    """Row id -> its live holder, from every claim file but `skip`; a dead holder's file is removed."""
    out: dict[str, runlock.Holder] = {}
    now = time.time()
    for path in where.iterdir():
        if path == skip or path.name.startswith("."):
            continue
        holder = runlock._holder(path)
        if holder is None or runlock._is_stale(holder, now):  # unreadable (written whole, so: damaged) or dead
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with contextlib.suppress(OSError):
            for rid in path.read_text().splitlines()[1:]:
                out[rid] = holder
    return out


@contextlib.contextmanager
def held() -> Iterator[Claims]:
    """The claims of one command, released however it ends (an error, Ctrl-C)."""
    claims = Claims()
    try:
        yield claims
    finally:
        claims.release()
