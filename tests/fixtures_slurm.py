"""The real local SLURM cluster and the container shim, for the slurm tier (pytest plugin).

- `slurm_cluster` (session): starts the project's own cluster (tests/slurm/local-cluster.sh: 2 nodes
  x 4 CPUs, partition `debug`, accounting on, MaxArraySize=11), exports SLURM_CONF and
  SLURM_LOCAL_DIR into os.environ (so subprocesses, sbatch jobs and `oellm` find it) and yields a
  `SlurmCluster`. It stops the cluster at the end, unless the cluster was already up before.
- `wait_for_jobs(job_ids, timeout)`: poll until every array element of these jobs is final.
- `stop_controller(cluster)` / `start_controller(cluster)`: restart slurmctld alone, jobs running on.
- `no_job_left_behind`: cancels the jobs of the runs under `tmp_path/runs` after the test.
- `slurm_down`: SLURM_CONF pointing at a controller and slurmdbd that nothing serves.
- `container_shim`: tests/shim (singularity/apptainer stand-ins, isolating with bubblewrap) first on PATH;
  calls logged. `test_image`: a stand-in .sif holding this interpreter and its packages.
- A failing `slurm` test gets sinfo, squeue and sacct output added to its report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from oellm import slurm
from oellm.errors import OellmError, SlurmError
from oellm.runs.states import FINAL_STATES
from tests.conftest import missing_part

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO / "tests" / "slurm" / "local-cluster.sh"
SHIM_DIR = REPO / "tests" / "shim"
PARTITION = "debug"
MAX_ARRAY_SIZE = 11  # small, so tests can make arrays that must be split
NODES, CPUS = 2, 4
START_TIMEOUT_S = 900  # a first start installs packages with apt
KNOBS = {
    "SLURM_LOCAL_ACCOUNTING": "1",
    "SLURM_LOCAL_NODES": str(NODES),
    "SLURM_LOCAL_CPUS": str(CPUS),
    "SLURM_LOCAL_PARTITIONS": PARTITION,
    "SLURM_LOCAL_MAX_ARRAY_SIZE": str(MAX_ARRAY_SIZE),
}
KEEP_KNOBS = ("SLURM_LOCAL_PORT", "SLURM_LOCAL_TIMEOUT")  # a developer may need another port


@dataclass(frozen=True)
class SlurmCluster:
    """What tests need to know about the running local cluster."""

    state_dir: Path
    slurm_conf: Path
    partition: str = PARTITION
    max_array_size: int = MAX_ARRAY_SIZE  # array indices must be below this
    nodes: int = NODES
    cpus_per_node: int = CPUS
    script: Path = CLUSTER_SCRIPT

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"


def cluster_state_dir() -> Path:
    """`<repo>/.slurm-local`, or a short /tmp path: unix socket paths cap it at 64 chars, no spaces."""
    preferred = REPO / ".slurm-local"
    if len(str(preferred)) <= 64 and not any(c.isspace() for c in str(preferred)):
        return preferred
    return Path("/tmp") / f"oellm-slurm-{hashlib.sha1(str(REPO).encode()).hexdigest()[:8]}"


def _script_env(state: Path) -> dict[str, str]:
    """Our knobs only: a SLURM_LOCAL_GPUS left in the shell must not change the test cluster."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_LOCAL_") or k in KEEP_KNOBS}
    env.pop("SLURM_CONF", None)
    return {**env, **KNOBS, "SLURM_LOCAL_DIR": str(state)}


def _script(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([str(CLUSTER_SCRIPT), command], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        return subprocess.CompletedProcess(e.cmd, 124, out, f"timed out after {timeout:g} s")


def _cannot_run() -> str | None:
    if not CLUSTER_SCRIPT.is_file():
        return f"{CLUSTER_SCRIPT} is missing"
    if os.geteuid() != 0:
        return "the local SLURM cluster runs its daemons as root; run the slurm tier as root"
    if not any(os.access(Path(d) / "slurmctld", os.X_OK) for d in ("/usr/sbin", "/usr/bin", "/sbin")) and \
            not any(os.access(Path(d) / "apt-get", os.X_OK) for d in ("/usr/bin", "/bin")):
        return "slurm-wlm is not installed and there is no apt-get to install it"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start (or reuse) the local cluster for the session; stop it afterwards if this session started it."""
    problem = _cannot_run()
    if problem:
        missing_part(f"local SLURM cluster: {problem}")
    state = cluster_state_dir()
    env = _script_env(state)
    was_up = _script("status", env, timeout=30).returncode == 0
    started = time.monotonic()
    proc = _script("start", env, timeout=START_TIMEOUT_S)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        missing_part(f"local SLURM cluster did not start ({CLUSTER_SCRIPT} start, exit {proc.returncode}, "
                     f"state dir {state}):\n{tail}")
    print(f"\nlocal SLURM cluster up in {time.monotonic() - started:.1f} s ({state})", file=sys.stderr)
    exported = _script("env", env, timeout=30).stdout
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "SLURM_LOCAL_DIR")}
    for line in exported.splitlines():  # export NAME=VALUE, VALUE shell-quoted
        name, _, value = line.removeprefix("export ").partition("=")
        os.environ[name] = shlex.split(value)[0]
    try:
        try:
            if not was_up:  # jobs revived from a session that crashed would skew counts and hog CPUs
                _cancel_all()
            slurm.run(["sacct", "-X", "-n", "-S", "now-1hours", "--format=JobID"], timeout=30)
        except OellmError as e:
            missing_part(f"local SLURM cluster started but does not answer: {e}")
        yield SlurmCluster(state_dir=state, slurm_conf=Path(os.environ["SLURM_CONF"]))
    finally:
        if not was_up:
            done = _script("stop", env, timeout=120)
            if done.returncode != 0:
                print(f"*** local SLURM cluster did not stop: {done.stderr.strip()}", file=sys.stderr)
        _restore(saved)


def _restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _cancel_all() -> None:
    ids = sorted(set(slurm.run(["squeue", "-h", "-o", "%F"], timeout=30).split()))
    if ids:
        slurm.cancel(ids)


def queue_states(job_ids: Sequence[str]) -> dict[str, str]:
    """squeue's view of every element of these jobs, finished ones included (until MinJobAge)."""
    argv = ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(job_ids)]
    try:
        text = slurm.run(argv, timeout=30)
    except SlurmError as e:
        if "Invalid job id specified" in e.stderr:  # all purged from the controller already
            return {}
        raise
    out: dict[str, str] = {}
    for line in text.split():
        job_id, _, state = line.partition("|")
        out.update(dict.fromkeys(slurm.expand_job_id(job_id), state))
    return out


def _all_final(job_ids: Sequence[str], queued: dict[str, str], states: dict[str, str]) -> bool:
    """squeue (-t all) knows every element; sacct must show each of them final under its own key.

    sacct lags: for seconds after an array ends it may show only a bare `<job>` row.
    """
    if any(not any(k == j or k.startswith(f"{j}_") for k in states) for j in job_ids):
        return False
    if any(s not in FINAL_STATES for s in states.values()):
        return False
    return all(s in FINAL_STATES and states.get(e) in FINAL_STATES for e, s in queued.items())


def wait_for_jobs(job_ids: Sequence[str], timeout: float = 60, *, start: str = "now-1days",
                  poll: float = 0.5) -> dict[str, str]:
    """Poll squeue and sacct until every array element of these jobs is final; return sacct's states.

    Raises TimeoutError with the cluster's state (sinfo, squeue, sacct) after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        queued = queue_states(job_ids)
        states = slurm.query_states(job_ids, start)
        if _all_final(job_ids, queued, states):
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs {', '.join(job_ids)} not final after {timeout:g} s; squeue: {queued}; "
                               f"sacct: {states}\n{cluster_report()}")
        time.sleep(poll)


def stop_controller(cluster: SlurmCluster, timeout: float = 30) -> None:
    """SIGTERM slurmctld alone, as an admin restart does: slurmd, slurmdbd and running jobs stay up."""
    pid = int((cluster.state_dir / "run" / "slurmctld.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"slurmctld (pid {pid}) still up {timeout:g} s after SIGTERM")
        time.sleep(0.2)


def start_controller(cluster: SlurmCluster) -> None:
    """Start what is not running (slurmctld after `stop_controller`), with the session's knobs."""
    proc = _script("start", _script_env(cluster.state_dir), timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{CLUSTER_SCRIPT} start failed: {proc.stderr.strip()[-2000:]}")


def cluster_report() -> str:
    """sinfo, squeue, sacct and the end of slurmctld.log: what one needs to see why a test failed."""
    if not os.environ.get("SLURM_CONF"):
        return "(no SLURM_CONF: the local cluster was not started)"
    commands = [
        ["sinfo"],
        ["squeue", "-a", "-r", "-o", "%.12i %.9P %.12j %.8u %.10T %.8M %R"],
        ["sacct", "-a", "-X", "-S", "now-1hours", "--format=JobID%16,JobName%16,State%12,ExitCode,Start,End,NodeList"],
    ]
    parts = []
    for argv in commands:
        try:
            out = slurm.run(argv, timeout=15)
        except OellmError as e:
            out = str(e)
        parts.append(f"$ {shlex.join(argv)}\n{out.rstrip()}")
    log = Path(os.environ.get("SLURM_LOCAL_DIR", "")) / "log" / "slurmctld.log"
    if log.is_file():
        parts.append(f"$ tail -n 20 {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
    return "\n\n".join(parts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When a `slurm` test fails, show the cluster's state next to the failure."""
    report = yield
    if report.failed and report.when in ("setup", "call") and item.get_closest_marker("slurm"):
        report.sections.append(("SLURM state at failure (sinfo, squeue, sacct)", cluster_report()))
    return report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slurm_down(slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SLURM_CONF -> a copy of the cluster's config whose controller and slurmdbd ports nobody serves.

    MessageTimeout=2 makes each refused call fail in ~1 s (the default 10 s takes ~9 s).
    """
    port = _free_port()
    lines = []
    for line in slurm_cluster.slurm_conf.read_text().splitlines():
        key = line.split("=", 1)[0]
        if key in ("SlurmctldPort", "AccountingStoragePort"):
            line = f"{key}={port}"
        lines.append(line)
    conf = tmp_path / "slurm-down.conf"
    conf.write_text("\n".join([*lines, "MessageTimeout=2", ""]))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    return conf


@pytest.fixture
def no_job_left_behind(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[None]:
    """Cancel the jobs of every run under `tmp_path/runs` afterwards: a failing test must not leave its
    long rows running into the next tests."""
    yield
    ids = [s["job_id"] for manifest in (tmp_path / "runs").glob("*/run.json")
           for s in json.loads(manifest.read_text()).get("submissions") or []]
    slurm.cancel(ids)


def ensure_bwrap() -> None:
    """The shim isolates with bubblewrap; install it like slurm-wlm (root + apt) when it is missing."""
    if shutil.which("bwrap"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "bubblewrap"]):
        try:
            subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=True)
        except (OSError, subprocess.SubprocessError):
            break
    if not shutil.which("bwrap"):
        missing_part("bubblewrap (bwrap) for the container shim; apt-get install bubblewrap")


@pytest.fixture
def container_shim(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Put the singularity/apptainer shim first on PATH (sbatch jobs inherit it); return its call log."""
    shim = SHIM_DIR / "singularity"
    if not os.access(shim, os.X_OK):
        pytest.fail(f"{shim} is missing or not executable", pytrace=False)
    ensure_bwrap()
    log = tmp_path / "shim-calls.jsonl"
    monkeypatch.setenv("PATH", f"{SHIM_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("OELLM_SHIM_LOG", str(log))
    return log


def image_dirs() -> list[str]:
    """What the test image holds: this interpreter, its packages and oellm (a checkout, when editable)."""
    import oellm

    return sorted({sys.prefix, sys.base_prefix, str(Path(oellm.__file__).resolve().parent)})


def write_image(path: Path, dirs: Sequence[str] | None = None, env: dict | None = None) -> Path:
    """A stand-in .sif for the shim (see tests/shim/singularity): read-only dirs + the image's env."""
    path.write_text(json.dumps({"oellm_test_image": 1, "dirs": list(image_dirs() if dirs is None else dirs),
                                "env": {"PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin", **(env or {})}}))
    return path


@pytest.fixture
def test_image(tmp_path: Path) -> Path:
    """An image with this interpreter and its packages (oellm, lm-eval, torch): `python3` is the venv's."""
    return write_image(tmp_path / "eval.sif")


def shim_calls(log: Path) -> list[list[str]]:
    """The argv of each call the shim recorded, in order (none when the log does not exist)."""
    if not log.exists():
        return []
    return [json.loads(line)["argv"] for line in log.read_text().splitlines() if line.strip()]
