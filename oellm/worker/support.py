"""The worker's plumbing: who it is (from SLURM's environment, in one place), signals turned into an
exception, values built once per process, and the log lines a failed row's record keeps."""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobEnv:
    """Who we are, read from the environment in one place (SLURM_* under SLURM, else None)."""

    host: str
    job_id: str | None
    array_job_id: str | None
    array_task_id: int | None
    restart_count: int = 0  # times SLURM requeued this task (node failure, preemption)

    @classmethod
    def from_environ(cls, env: Any = os.environ) -> JobEnv:
        task = env.get("SLURM_ARRAY_TASK_ID")
        return cls(host=socket.gethostname(), job_id=env.get("SLURM_JOB_ID"),
                   array_job_id=env.get("SLURM_ARRAY_JOB_ID"), array_task_id=int(task) if task else None,
                   restart_count=int(env.get("SLURM_RESTART_COUNT") or 0))


class Interrupted(BaseException):
    """SIGTERM (scancel, time limit) or SIGINT mid-row; a BaseException so that no `except Exception`
    inside lm-eval or datasets swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn the first SIGTERM/SIGINT into `Interrupted`; ignore repeats, so recording the state finishes."""
    fired: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Once:
    """A value built at first use; a failure is kept and raised again for every later row."""

    def __init__(self, build: Callable[[], Any]):
        self._build: Callable[[], Any] | None = build
        self._value: Any = None
        self._error: Exception | None = None

    def get(self) -> Any:
        if self._build is not None:
            try:
                self._value = self._build()
            except Exception as e:  # noqa: BLE001 - kept and re-raised for each row that needs it
                self._error = e
            self._build = None
        if self._error is not None:
            raise self._error
        return self._value


class LogTail(logging.Handler):
    """The last lines logged during a row, for its state record (a bounded deque: no file, no copying)."""

    def __init__(self, n: int = 20):
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=n)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)

    @contextmanager
    def attached(self) -> Iterator[None]:
        """On the root logger, and on lm-eval's too if lm-eval has stopped it propagating."""
        loggers = [logging.getLogger()] + [lg for lg in [logging.getLogger("lm_eval")] if not lg.propagate]
        for lg in loggers:
            lg.addHandler(self)
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeHandler(self)
