"""A follower's state: one JSON file in its own dir under the output root, read and written under a lock.

The dir is `<output_root>/follow-<stamp>/` (no run.json, so run listings and the done-row scan pass it
by); it holds `follow.state` (JSON), the follower job's script and its logs. Everything a look needs to carry
to the next one is here: what was scheduled (and in which run), what is still being written (with the
sizes of its files, to compare at the next look), what was given up on, the follower job's id.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oellm import runlock
from oellm.errors import OellmError
from oellm.plan.request import Request
from oellm.rundir import read_json, write_json

STATE = "follow.state"  # JSON, but not *.json: collect-results reads every .json it finds
LOCK = "follow.lock"
PREFIX = "follow-"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int | float, what: str) -> float:
    """`300`, `30s`, `5m`, `2h`, `1d` -> seconds (sbatch times such as 01:00:00 are not accepted here:
    `30:00` would be ambiguous between minutes and hours)."""
    m = _DURATION.match(str(value))
    if not m or float(m.group(1)) <= 0:
        raise OellmError(f"{what}: {value!r} is not a duration; use seconds or a number with s, m, h or d "
                         "(e.g. 30s, 5m, 2h)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


@dataclass(frozen=True)
class Until:
    """When a follower ends: at a time (epoch seconds), after a SLURM job, or never (Ctrl-C, cancel)."""

    at: float | None = None
    job: str | None = None
    text: str = ""

    @classmethod
    def parse(cls, value: str | None, now: float) -> Until:
        if not value:
            return cls()
        text = str(value).strip()
        if text.startswith("job:"):
            job = text[4:].strip()
            if not job.isdigit():
                raise OellmError(f"--follow_until: {text!r}: a job is given as job:JOBID with a numeric id")
            return cls(job=job, text=text)
        if _DURATION.match(text):
            return cls(at=now + parse_duration(text, "--follow_until"), text=text)
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise OellmError(f"--follow_until: {text!r} is not a duration (2h, 3d), a date-time "
                             "(2026-12-24T00:00) or job:JOBID") from None
        at = (when if when.tzinfo else when.astimezone()).timestamp()  # naive: this machine's local time
        if at <= now:
            raise OellmError(f"--follow_until: {text} is already past")
        return cls(at=at, text=text)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


@dataclass
class FollowState:
    """Everything follow.state holds (keys of the dicts: a model as `path` or `path,args`)."""

    request: dict[str, Any]
    cluster: str
    executor: str
    interval_s: float
    until: dict[str, Any]
    created: float
    looks: int = 0
    last_look: float | None = None
    next_look: float | None = None
    job_id: str | None = None  # the follower job now waiting (SLURM)
    jobs: list[str] = field(default_factory=list)
    scheduled: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {at, run, step}
    waiting: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {since, sizes, why}
    given_up: dict[str, str] = field(default_factory=dict)  # key -> why
    failures: dict[str, int] = field(default_factory=dict)  # key -> looks whose scheduling failed
    floor: dict[str, int] = field(default_factory=dict)  # run -> lowest step followed (--last_n_checkpoints)
    # run -> the --checkpoint_stride grid as decided so far: {"last": newest step decided, "since": checkpoints
    # since the last one kept, "keep": steps kept}; decided once per step, so deleted checkpoints never shift it
    grid: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)  # runs whose rows are all done, or given up
    resubmits: dict[str, int] = field(default_factory=dict)  # run -> times its failed rows were resubmitted
    last_error: str | None = None
    ended: str | None = None  # why it ended
    cancelled: float | None = None

    def to_request(self) -> Request:
        known = {f.name for f in fields(Request) if f.init}
        return Request(**{k: v for k, v in self.request.items() if k in known})

    @property
    def end(self) -> Until:
        return Until(**self.until)


class Follower:
    """A follower dir: its paths, its state, and a lock around each read-change-write."""

    def __init__(self, path: Path):
        self.path = Path(path)

    state_file = property(lambda self: self.path / STATE)
    script = property(lambda self: self.path / "follow.sbatch")
    logs = property(lambda self: self.path / "logs")

    @staticmethod
    def is_follower(path: Path) -> bool:
        return (Path(path) / STATE).is_file()

    @classmethod
    def create(cls, root: Path, state: FollowState) -> Follower:
        root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        for n in range(1, 1000):
            path = root / f"{PREFIX}{stamp}{'' if n == 1 else f'-{n}'}"
            try:
                path.mkdir()
            except FileExistsError:
                continue
            (path / "logs").mkdir()
            f = cls(path)
            f.save(state)
            return f
        raise OellmError(f"cannot create a follower dir under {root}")

    def load(self) -> FollowState:
        try:
            data = read_json(self.state_file)
        except FileNotFoundError:
            raise OellmError(f"{self.state_file} not found: {self.path} is not a follower dir") from None
        known = {f.name for f in fields(FollowState)}
        return FollowState(**{k: v for k, v in data.items() if k in known})

    def save(self, state: FollowState) -> None:
        write_json(self.state_file, asdict(state))

    @contextlib.contextmanager
    def changing(self) -> Iterator[FollowState]:
        """Load, let the caller change, save: under the follower's lock (a look and a cancel never mix)."""
        with runlock.locked(self.path / LOCK):
            state = self.load()
            yield state
            self.save(state)


def request_data(req: Request) -> dict[str, Any]:
    """The request as follow.state keeps it (the looks rebuild it from there, in a job too)."""
    data = {f.name: getattr(req, f.name) for f in fields(Request) if f.init}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


def now() -> float:
    return time.time()
