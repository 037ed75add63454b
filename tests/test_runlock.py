"""The run dir lock: two processes changing one run.json take turns, a dead holder's lock is taken over,
and a live holder is named when the wait runs out."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oellm.errors import OellmError
from oellm.rows import EvalRow
from oellm.runlock import locked
from tests.fixtures_models import make_run_dir

pytestmark = pytest.mark.fast
REPO = Path(__file__).resolve().parents[1]

# read run.json, wait, write it back one higher: without the lock, two of these lose each other's updates
BUMP = """
import sys, time
from oellm.rundir import RunDir
run = RunDir(sys.argv[1])
for _ in range(5):
    with run.locked(wait_s=60):
        n = run.read_manifest().get("counter", 0)
        time.sleep(0.05)
        run.update_manifest(counter=n + 1)
"""


def test_two_processes_changing_run_json_take_turns(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, [EvalRow("m", "t", 0)])
    procs = [subprocess.Popen([sys.executable, "-c", BUMP, str(run.path)], cwd=REPO) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert run.read_manifest()["counter"] == 10
    assert not (run.path / "run.lock").exists()


def test_a_dead_holders_lock_is_taken_over_and_a_live_one_named(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(f"{socket.gethostname()} {int(dead.stdout)} {time.time()}\n")
    with locked(lock, wait_s=1):
        assert lock.read_text().split()[:2] == [socket.gethostname(), str(os.getpid())]
        with locked(lock, wait_s=0):  # nested in the same process: no deadlock
            pass
    assert not lock.exists()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{socket.gethostname()} {alive.pid} {time.time()}\n")
        with pytest.raises(OellmError, match=f"locked by {socket.gethostname()} pid {alive.pid} since"), \
                locked(lock, wait_s=0.3):
            pass
        assert lock.exists()  # someone else's lock is left alone
        # another host's, untouched for an hour (its heartbeat is the file's mtime): its node died
        old = time.time() - 3600
        lock.write_text(f"other-node 1 {old} 0123abcd\n")
        os.utime(lock, (old, old))
        with locked(lock, wait_s=0.3):
            pass
    finally:
        alive.kill()
        alive.wait()


def test_cancel_of_a_local_run_is_refused_and_leaves_no_lock(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, [EvalRow("m", "t", 0)])
    r = subprocess.run([sys.executable, "-m", "oellm", "cancel", str(run.path)], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 2 and "is a local run" in r.stderr and r.stderr.count("\n") == 1
    assert not (run.path / "run.lock").exists()
    assert json.loads((run.path / "run.json").read_text()).get("cancelled") is None


# a taker that judges the lock stale, then is slow (as a loaded login node is): the window of the race
TAKER = """
import os, sys, time
from pathlib import Path
from oellm import runlock
judge = runlock._is_stale
def slow(holder, now):
    stale = judge(holder, now)
    time.sleep(0.3)
    return stale
runlock._is_stale = slow
lock, inside, go = sys.argv[1:4]
while not os.path.exists(go):
    time.sleep(0.005)
with runlock.locked(Path(lock), wait_s=60, poll_s=0.05):
    try:
        fd = os.open(inside, os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        sys.exit(3)  # the other taker holds the lock too
    time.sleep(0.6)
    os.close(fd)
    os.unlink(inside)
"""


def test_two_takers_of_a_dead_holders_lock_never_both_win(tmp_path: Path) -> None:
    """Both judge the lock stale at once; the second must not remove the first one's fresh lock."""
    lock, inside, go = tmp_path / "run.lock", tmp_path / "inside", tmp_path / "go"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(f"{socket.gethostname()} {int(dead.stdout)} {time.time()}\n")
    procs = [subprocess.Popen([sys.executable, "-c", TAKER, str(lock), str(inside), str(go)], cwd=REPO)
             for _ in range(2)]
    time.sleep(1.0)  # both imported and waiting
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0], "both takers held the lock at once"
    assert not lock.exists() and not (tmp_path / "run.lock.break").exists()


# a holder on its own (fake) host, with STALE_S shortened: only its lock's heartbeat tells it is alive
HOLDER = """
import socket, sys, time
from pathlib import Path
from oellm import runlock
lock, name, hold, events = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
socket.gethostname = lambda: "node-" + name
runlock.STALE_S = 1.0
def note(what):
    with open(events, "a") as fh:
        fh.write(f"{name} {what} {time.time():.3f}\\n")
with runlock.locked(Path(lock), wait_s=60, poll_s=0.05):
    note("in")
    time.sleep(hold)
    note("out")
"""


def _holder(lock: Path, name: str, hold: float, events: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), name, str(hold), str(events)], cwd=REPO,
                            stderr=subprocess.PIPE, text=True)


def _events(events: Path) -> dict[str, float]:
    text = events.read_text() if events.exists() else ""
    return {f"{who} {what}": float(t) for who, what, t in (line.split() for line in text.splitlines())}


def _wait_for(events: Path, event: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while event not in _events(events):
        assert time.monotonic() < deadline, f"no {event!r}: {_events(events)}"
        time.sleep(0.02)


def test_a_holder_taken_over_leaves_its_successors_lock_alone(tmp_path: Path) -> None:
    """REVIEW finding 19 (R19): A holds the lock and freezes (no heartbeat) past STALE_S; B, on another host,
    takes it over. When A resumes and leaves, B's lock must stay, so C waits until B is out."""
    import signal

    lock, events = tmp_path / "run.lock", tmp_path / "events"
    a = _holder(lock, "A", 1.0, events)
    _wait_for(events, "A in")
    os.kill(a.pid, signal.SIGSTOP)  # a holder that looks dead: no heartbeat
    try:
        b = _holder(lock, "B", 4.0, events)
        _wait_for(events, "B in")
        assert lock.read_text().startswith("node-B ")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    _, a_err = a.communicate(timeout=60)
    assert a.returncode == 0, a_err
    assert "B out" not in _events(events), "B left too early for the test to tell"
    assert lock.read_text().startswith("node-B "), "A removed the lock B holds"
    assert "taken over" in a_err
    c = _holder(lock, "C", 0.1, events)
    assert b.wait(timeout=60) == 0 and c.wait(timeout=60) == 0
    ev = _events(events)
    assert ev["C in"] >= ev["B out"], f"C entered while B held the lock: {ev}"
    assert not lock.exists() and not (tmp_path / "run.lock.break").exists()


def test_a_long_holder_on_another_host_is_not_taken_over(tmp_path: Path) -> None:
    """REVIEW finding 19: a live holder refreshes its claim, so one holding three times STALE_S is waited
    for, not taken over by a process on another host."""
    lock, events = tmp_path / "run.lock", tmp_path / "events"
    a = _holder(lock, "A", 3.0, events)
    _wait_for(events, "A in")
    b = _holder(lock, "B", 0.1, events)
    assert a.wait(timeout=60) == 0 and b.wait(timeout=60) == 0
    ev = _events(events)
    assert ev["B in"] >= ev["A out"], f"B took over a live holder: {ev}"
    assert not lock.exists()
