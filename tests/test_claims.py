"""Row claims (REVIEW finding 14): two oellm commands scheduling into one output root never evaluate a row
twice; a live holder's rows are skipped with one line, a dead holder's claims are taken over, and claims are
given back on every exit path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from oellm import claims, shipping

pytestmark = pytest.mark.fast
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    row_id: str


HOLD = """
import sys, time
from pathlib import Path
from oellm import claims
from tests.test_claims import Row
with claims.held() as c:
    got = c.take(Path(sys.argv[1]), [Row("a"), Row("b")], print)
    print("took", len(got), flush=True)
    time.sleep(60)
"""


def test_a_live_holders_rows_are_skipped_and_a_dead_holders_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "took 2"
        lines: list[str] = []
        with claims.held() as mine:
            got = mine.take(tmp_path, [Row("a"), Row("b"), Row("c")], lines.append)
            assert got == [Row("c")]
            assert lines == [f"skipping 2 row(s) claimed by another oellm (pid {holder.pid} on host "
                             f"{socket.gethostname()}): it schedules them"]
        (theirs,) = (tmp_path / claims.DIR).iterdir()  # ours given back, the other's left alone
        head, *ids = theirs.read_text().splitlines()
        assert head.split()[:2] == [socket.gethostname(), str(holder.pid)] and ids == ["a", "b"]
    finally:
        holder.kill()
        holder.wait()
    with claims.held() as mine:  # its pid is gone: its claims are taken over
        assert mine.take(tmp_path, [Row("a"), Row("b")], print) == [Row("a"), Row("b")]
        (mine_file,) = (tmp_path / claims.DIR).iterdir()
        assert mine_file.read_text().split()[:2] == [socket.gethostname(), str(os.getpid())]
    assert not (tmp_path / claims.DIR).exists()  # nobody holds a claim: no dir left behind


def test_one_file_per_command_however_many_rows(tmp_path):
    """100k rows are one claim file (one write, one heartbeat), not 100k."""
    rows = [Row(f"{i:016x}") for i in range(100_000)]
    t0 = time.perf_counter()
    with claims.held() as mine:
        assert len(mine.take(tmp_path, rows, print)) == len(rows)
        assert len(list((tmp_path / claims.DIR).iterdir())) == 1
        other = claims.Claims()
        assert other.take(tmp_path, [*rows[:3], Row("new")], print) == [Row("new")]
        other.release()
    assert time.perf_counter() - t0 < 30  # generous: seconds of work would be the per-row design
    assert not (tmp_path / claims.DIR).exists()


def test_claims_are_given_back_on_an_error(tmp_path):
    with pytest.raises(KeyboardInterrupt), claims.held() as mine:
        mine.take(tmp_path, [Row("a")], print)
        raise KeyboardInterrupt
    assert not (tmp_path / claims.DIR).exists()
    other = claims.Claims()  # another command claims it freely now
    assert other.take(tmp_path, [Row("a")], print) == [Row("a")]
    other.release()


def test_schedule_skips_rows_another_oellm_claims(tmp_path, tiny_model, tiny_tasks):
    """A second schedule-eval (or follower) of the same rows, while the first holds them, schedules nothing."""
    from oellm.plan.request import Request
    from oellm.rundir import read_job_refs
    from oellm.schedule import schedule

    root = tmp_path / "runs"
    req = dict(models=str(tiny_model), tasks="tiny_mc_a", n_shot="0", limit=2, cluster="local",
               lm_eval_include_path=str(tiny_tasks), output_dir=str(root))
    dry = schedule(Request(**req, dry_run=True), log=print)  # a dry run claims nothing
    ids = [r.row_id for r in read_job_refs(dry / "jobs.csv")]
    assert ids and not (root / claims.DIR).exists()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (root / claims.DIR).mkdir()  # held by a live oellm on this host
        (root / claims.DIR / "other").write_text(f"{socket.gethostname()} {sleeper.pid} {time.time()} tok\n"
                                                 + "\n".join(ids) + "\n")
        lines: list[str] = []
        assert schedule(Request(**req, precache=False, preflight=False), log=lines.append) is None
        assert f"skipping {len(ids)} row(s) claimed by another oellm (pid {sleeper.pid} on host " in "\n".join(lines)
        assert "nothing to do" in lines[-1]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_staged_code_copy_in_use_is_not_pruned(tmp_path):
    """REVIEW code remark: `_prune` judged staged copies by their creation; each use now refreshes them."""
    dest = shipping.staged(tmp_path)
    old = time.time() - 3 * 86400
    os.utime(dest, (old, old))
    assert shipping.staged(tmp_path) == dest and time.time() - dest.stat().st_mtime < 60  # used: refreshed
    stale = tmp_path / "code" / "oellm-0.0.1-abc"
    stale.mkdir()
    os.utime(stale, (old, old))
    shipping._prune(tmp_path / "code", keep=tmp_path / "code" / "oellm-new")
    assert dest.is_dir() and not stale.exists()
    assert shipping.pythonpath("/c", {"PYTHONPATH": "/x"}) == f"/c{os.pathsep}/x" and shipping.pythonpath("/c", {}) == "/c"
