"""The only module that runs SLURM commands (sbatch, squeue, sacct, scancel, scontrol).

Every call goes through `run`: an argv list (never a shell), a timeout, and a `SlurmError` that
carries the command, exit code and SLURM's own message. Each command has a pure parser next to it,
tested on output seen on a real cluster (tests/test_slurm.py).
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from oellm.errors import OellmError, SlurmError

log = logging.getLogger(__name__)

# Failures of the controller or the network, not of the request: worth retrying after a pause.
# Strings from SLURM's src/common/slurm_errno.c, plus sbatch's own EAGAIN message.
TRANSIENT = re.compile(
    "|".join(re.escape(s) for s in (
        "Unable to contact slurm controller",  # (connect|send|receive|shutdown failure)
        "Socket timed out on send/recv operation",
        "Resource temporarily unavailable",
        "temporarily unable to accept job",
        "Slurm backup controller in standby mode",
        "Communication connection failure",
        "Zero Bytes were transmitted or received",
        "Connection timed out",
        "Connection refused",
        "Connection reset by peer",
        "Rate limit exceeded",
    )),
    re.IGNORECASE,
)
# scancel messages for a job that is already over: cancelling it again is not an error.
_GONE = re.compile(r"already completing or completed|Invalid job id specified|Job has already finished",
                   re.IGNORECASE)
_ARRAY_RANGE = re.compile(r"^(\d+)_\[([^\]]+)\]$")
_MAX_BACKOFF_S = 60.0
RETRY_BACKOFF_S = 2.0  # first pause before a retry; doubles each time


def run(argv: list[str], *, timeout: float = 60, retries: int = 0, backoff: float | None = None,
        stdin: str | None = None) -> str:
    """Run one SLURM command and return its stdout.

    A non-zero exit or a timeout raises `SlurmError`. With `retries`, failures whose message names a
    transient controller problem (`TRANSIENT`) are retried after `backoff` (default `RETRY_BACKOFF_S`),
    2*backoff, ... seconds; any other failure is raised at once. Our own timeout is not retried: the
    command already waited that long.
    """
    argv = [str(a) for a in argv]
    backoff = RETRY_BACKOFF_S if backoff is None else backoff
    attempt = 0
    while True:
        log.debug("running: %s", shlex.join(argv))
        try:
            proc = subprocess.run(argv, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace", timeout=timeout)
        except FileNotFoundError:
            raise OellmError(f"{argv[0]} not found on PATH: this host has no SLURM client; "
                             "use --cluster local to run on this machine") from None
        except OSError as e:  # e.g. not executable
            raise OellmError(f"cannot run {argv[0]}: {e.strerror}") from None
        except subprocess.TimeoutExpired as e:
            raise SlurmError(argv, None, _text(e.stdout), _text(e.stderr), note=f" after {timeout:g} s") from None
        if proc.returncode == 0:
            if proc.stderr.strip():
                log.warning("%s: %s", argv[0], proc.stderr.strip())
            return proc.stdout
        message = proc.stderr + proc.stdout
        if attempt < retries and TRANSIENT.search(message):
            delay = min(backoff * 2**attempt, _MAX_BACKOFF_S)
            log.warning("%s failed (%s); retry %d of %d in %g s", argv[0], message.strip(), attempt + 1,
                        retries, delay)
            time.sleep(delay)
            attempt += 1
            continue
        note = f" (after {attempt + 1} attempts)" if attempt else ""
        raise SlurmError(argv, proc.returncode, proc.stdout, proc.stderr, note=note)


def _text(data: str | bytes | None) -> str:
    """TimeoutExpired keeps partial output as bytes even with text=True."""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def submit(script: Path, *, array: str, args: Sequence[str] = (), options: Sequence[str] = (),
           retries: int = 3, name: str | None = None, backoff: float | None = None) -> str:
    """Submit `script` as a job array (`array` as sbatch spells it, e.g. "0-99%10"); return the job id.

    `options` are sbatch flags (`--job-name=x`), `args` go to the script untouched. Transient controller
    errors are retried. A "Socket timed out" (or our own timeout) may hide a submission the controller
    accepted: with a unique job `name`, the queue is asked for it before each retry, and an array already
    there is adopted instead of submitted twice.
    """
    if not array:
        raise OellmError("submit: an empty --array specification; expected e.g. '0-9' or '0-99%10'")
    argv = ["sbatch", "--parsable", f"--array={array}", *([f"--job-name={name}"] if name else []), *options,
            str(script), *args]
    backoff = RETRY_BACKOFF_S if backoff is None else backoff
    for attempt in range(retries + 1):
        try:
            return parse_job_id(run(argv))
        except SlurmError as e:
            if not (e.returncode is None or TRANSIENT.search(e.stderr + e.stdout)):
                raise
            if attempt == retries:
                raise SlurmError(argv, e.returncode, e.stdout, e.stderr, note=f" (after {attempt + 1} attempts)") \
                    from None
            log.warning("sbatch failed (%s); retry %d of %d", str(e), attempt + 1, retries)
        time.sleep(min(backoff * 2**attempt, _MAX_BACKOFF_S))
        if name:
            try:
                found = jobs_named(name)
            except SlurmError:
                found = []
            if found:
                log.warning("sbatch reported a failure, but job %s named %s is queued: adopting it", found[0], name)
                return found[0]
    raise AssertionError("unreachable")


def jobs_named(name: str) -> list[str]:
    """Array job ids of the caller's jobs with this exact name (squeue --name)."""
    out = run(["squeue", "--noheader", "--me", "--array", f"--name={name}", "--format=%F"], timeout=30)
    return list(dict.fromkeys(line.strip() for line in out.splitlines() if line.strip().isdigit()))


def parse_job_id(output: str) -> str:
    """`sbatch --parsable` prints `<id>` or `<id>;<cluster>`; anything else is an error quoting it."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    job_id = lines[-1].split(";")[0].strip() if lines else ""
    if not job_id.isdigit():
        raise OellmError(f"sbatch --parsable printed {output.strip()!r}, not a job id (`<digits>[;<cluster>]`)")
    return job_id


def max_array_size() -> int | None:
    """MaxArraySize from `scontrol show config`: every array index must be below it; None if not shown."""
    value = parse_config_value(run(["scontrol", "show", "config"], timeout=30), "MaxArraySize")
    return int(value) if value is not None and value.isdigit() else None


def parse_config_value(text: str, key: str) -> str | None:
    """The value of `Key = value` in `scontrol show config` output; None when absent or `(null)`."""
    match = re.search(rf"^{re.escape(key)}\s*=\s*(.*?)\s*$", text, re.MULTILINE)
    if match is None or match.group(1) == "(null)":
        return None
    return match.group(1)


def queued_jobs(user: str | None = None) -> int:
    """Jobs of `user` (default: the caller) in the queue, each array element counted, as MaxSubmitJobs does."""
    who = ["--me"] if user is None else ["--user", user]
    return parse_squeue_count(run(["squeue", "--noheader", "--array", "--format=%i", *who], timeout=60))


def parse_squeue_count(text: str) -> int:
    """Count the job ids of `squeue --noheader --format=%i` output, expanding any `123_[4-9%2]` range."""
    return sum(len(expand_job_id(line.strip())) for line in text.splitlines() if line.strip())


def expand_job_id(job_id: str) -> list[str]:
    """`123_[1,4-6%2]` -> 123_1 123_4 123_5 123_6; any other id is returned as is."""
    match = _ARRAY_RANGE.match(job_id)
    if match is None:
        return [job_id]
    base, spec = match.group(1), match.group(2).split("%")[0]
    ids: list[str] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or not (last or first).isdigit():
            raise OellmError(f"cannot read the job array range {job_id!r} (expected e.g. 123_[4-9%2])")
        ids.extend(f"{base}_{i}" for i in range(int(first), int(last or first) + 1))
    return ids


def query_states(job_ids: Sequence[str], start: str | datetime, retries: int = 2) -> dict[str, str]:
    """States of these jobs' array elements, from one sacct call: {"<job>_<index>": state}.

    sacct, not squeue: squeue forgets finished jobs after MinJobAge. `start` bounds the search (a
    run's start time, or sacct syntax such as "now-7days"). Accounting lags the controller by
    seconds: an element may be missing, or only a bare `<job>` row may stand for the whole array
    (seen for ~3 s after an array ended, with the state of its last element, even when another
    element failed). Treat an element without its own key as unknown and ask again later.
    """
    if not job_ids:
        return {}
    if isinstance(start, datetime):  # sacct reads local wall-clock time
        start = (start.astimezone() if start.tzinfo else start).strftime("%Y-%m-%dT%H:%M:%S")
    argv = ["sacct", "-X", "--parsable2", "--noheader", "--format=JobID,State",
            "--starttime", start, "-j", ",".join(job_ids)]
    return parse_sacct(run(argv, timeout=60, retries=retries))


def parse_sacct(text: str) -> dict[str, str]:
    """Read `sacct --parsable2 --noheader --format=JobID,State` rows into {job id: state}.

    Pending ranges (`123_[4-9%2]`) become one entry per element, step rows (`123.batch`,
    `123_4.extern`) are skipped, and `CANCELLED by 0` becomes `CANCELLED`. A row naming one element
    wins over a range that also covers it. A bare `123` row is kept as is (see `query_states`).
    """
    states: dict[str, str] = {}
    ranged: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        job_id, sep, state = line.strip().partition("|")
        if not sep or "|" in state:
            raise OellmError(f"unexpected sacct row {line!r}; expected `JobID|State`")
        if "." in job_id:
            continue
        state = state.split(" ")[0] or "UNKNOWN"
        if "[" in job_id:
            ranged.update(dict.fromkeys(expand_job_id(job_id), state))
        else:
            states[job_id] = state
    return {**ranged, **states}


def cancel(job_ids: Sequence[str]) -> None:
    """Cancel these jobs (whole arrays or `<job>_<index>`) with one scancel; gone jobs are not an error."""
    if not job_ids:
        return
    try:
        run(["scancel", *job_ids], timeout=60, retries=2)
    except SlurmError as e:
        errors = [line for line in e.stderr.splitlines() if "error" in line.lower()]
        if not errors or not all(_GONE.search(line) for line in errors):
            raise
        log.debug("scancel: already finished: %s", "; ".join(errors))


def queue_states(job_ids: Sequence[str], retries: int = 2) -> dict[str, str]:
    """Active elements of these jobs from one squeue call: {"<job>_<index>": state}.

    squeue sees the controller directly, so it fills the seconds in which sacct lags; finished
    elements are absent. Jobs the controller has already forgotten are not an error.
    """
    if not job_ids:
        return {}
    argv = ["squeue", "--noheader", "--array", "--format=%i|%T", "-j", ",".join(job_ids)]
    try:
        text = run(argv, timeout=60, retries=retries)
    except SlurmError as e:
        if "Invalid job id specified" in e.stderr:
            return {}
        raise
    return parse_squeue_states(text)


def parse_squeue_states(text: str) -> dict[str, str]:
    """Read `squeue --noheader --format=%i|%T` rows into {job id: state}, expanding `123_[4-9%2]`."""
    out: dict[str, str] = {}
    for line in text.split():
        job_id, sep, state = line.partition("|")
        if not sep:
            raise OellmError(f"unexpected squeue row {line!r}; expected `JobID|State`")
        out.update(dict.fromkeys(expand_job_id(job_id), state))
    return out


# ---------------------------------------------------------------- a run's arrays, as run.json records them


def job_ids(manifest: dict[str, Any]) -> list[str]:
    """The SLURM job ids of every submission of a run, each once."""
    return list(dict.fromkeys(str(s["job_id"]) for s in manifest.get("submissions") or []))


def task_elements(submissions: Iterable[dict[str, Any]]) -> dict[int, str]:
    """Global array task index -> `<job>_<local index>` of the latest submission that covers it."""
    out: dict[int, str] = {}
    for s in submissions:
        offset, job = int(s["offset"]), s["job_id"]
        for i in range(int(s["size"])):
            out[offset + i] = f"{job}_{i}"
    return out
