"""oellm.slurm: pure parsers on text seen on the local cluster, `run` on real child processes, and
the real thing on the local SLURM cluster (slurm tier). Also the container shim."""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from oellm import slurm
from oellm.errors import OellmError, SlurmError
from oellm.runs.states import ACTIVE_STATES, FINAL_STATES
from tests.fixtures_slurm import SHIM_DIR, SlurmCluster, shim_calls, wait_for_jobs

fast = pytest.mark.fast

# ---- literal output, as printed by slurm-wlm 22.05.8 on tests/slurm/local-cluster.sh ---------------

# `sbatch --parsable --array=0-4%2 ...`, and the same with `-M local`
SBATCH = "26\n"
SBATCH_CLUSTER = "2;local\n"
# `sacct -X --parsable2 --noheader --format=JobID,State -S now-1days -j 9`, 1 s after
# `sbatch --array=0-9%2 --wrap 'sleep 30'`
SACCT_RUNNING = "9_0|RUNNING\n9_1|RUNNING\n9_[2-9%2]|PENDING\n"
# ... the same after `scancel 9`
SACCT_CANCELLED = "9_0|CANCELLED by 0\n9_1|CANCELLED by 0\n9_[2-9%2]|CANCELLED by 0\n"
# `sbatch --hold --array=0-4`, then scancel: an array cancelled before any element started
SACCT_CANCELLED_UNSTARTED = "25_[0-4]|CANCELLED by 0\n"
# array 0-4%2 whose task 1 exits 3: 1.8 s after submit, with 2 tasks done, sacct lagged behind
SACCT_LAGGING_PENDING = "26|PENDING\n"
# array 0-2 whose task 1 exits 3, polled every 0.1 s: squeue had all three final; sacct showed
# this for 3 s (the state of the last element) and only then one row per element
SACCT_LAGGING_DONE = "46|COMPLETED\n"
SACCT_DONE = "46_0|COMPLETED\n46_1|FAILED\n46_2|COMPLETED\n"
# ... when done, without -X (step rows)
SACCT_STEPS = """\
26_0|COMPLETED
26_0.batch|COMPLETED
26_1|FAILED
26_1.batch|FAILED
26_2|COMPLETED
26_2.batch|COMPLETED
26_3|COMPLETED
26_3.batch|COMPLETED
26_4|COMPLETED
26_4.batch|COMPLETED
"""
# `squeue -h -r --me -o %i` and `squeue -h --me -o %i` at the same moment (array 0-4%2, 2 running)
SQUEUE_EXPANDED = "26_3\n26_4\n26_0\n26_2\n"
SQUEUE_FOLDED = "26_[3-4%2]\n26_0\n26_2\n"
# excerpt of `scontrol show config` (196 lines in all)
SCONTROL_CONFIG = """\
Configuration data as of 2026-11-23T13:25:11
AccountingStorageBackupHost = (null)
AccountingStorageEnforce = associations,limits,qos
ClusterName             = local
MaxArraySize            = 11
MaxJobCount             = 10000
MessageTimeout          = 10 sec
MinJobAge               = 300 sec
SLURM_VERSION           = 22.05.8

Slurmctld(primary) at vm is UP
"""


# ---- pure parsers --------------------------------------------------------------------------------


@fast
def test_parse_job_id_accepts_id_and_id_with_cluster() -> None:
    assert slurm.parse_job_id(SBATCH) == "26"
    assert slurm.parse_job_id(SBATCH_CLUSTER) == "2"


@fast
@pytest.mark.parametrize("output", ["Submitted batch job 12\n", "", "\n", "12a", ";local"])
def test_parse_job_id_quotes_output_that_is_not_a_job_id(output: str) -> None:
    with pytest.raises(OellmError, match="not a job id") as e:
        slurm.parse_job_id(output)
    assert repr(output.strip()) in str(e.value)


@fast
def test_parse_sacct_expands_pending_range() -> None:
    states = slurm.parse_sacct(SACCT_RUNNING)
    assert states == {"9_0": "RUNNING", "9_1": "RUNNING", **{f"9_{i}": "PENDING" for i in range(2, 10)}}


@fast
def test_parse_sacct_reduces_cancelled_by_uid() -> None:
    assert slurm.parse_sacct(SACCT_CANCELLED) == {f"9_{i}": "CANCELLED" for i in range(10)}


@fast
def test_parse_sacct_skips_step_rows() -> None:
    states = slurm.parse_sacct(SACCT_STEPS)
    assert states == {"26_0": "COMPLETED", "26_1": "FAILED", "26_2": "COMPLETED", "26_3": "COMPLETED",
                      "26_4": "COMPLETED"}


@fast
def test_parse_sacct_array_cancelled_before_it_started() -> None:
    assert slurm.parse_sacct(SACCT_CANCELLED_UNSTARTED) == {f"25_{i}": "CANCELLED" for i in range(5)}


@fast
def test_parse_sacct_lagging_accounting_leaves_elements_unknown() -> None:
    # a bare row stands for the array, not for its elements: 46_1 had failed when this was printed
    assert slurm.parse_sacct(SACCT_LAGGING_DONE) == {"46": "COMPLETED"}
    assert slurm.parse_sacct(SACCT_LAGGING_PENDING) == {"26": "PENDING"}
    assert slurm.parse_sacct(SACCT_DONE) == {"46_0": "COMPLETED", "46_1": "FAILED", "46_2": "COMPLETED"}


@fast
def test_parse_sacct_prefers_an_element_row_over_a_range_covering_it() -> None:
    assert slurm.parse_sacct("1_2|RUNNING\n1_[2-3]|PENDING\n") == {"1_2": "RUNNING", "1_3": "PENDING"}


@fast
def test_expand_job_id_lists_and_ranges() -> None:
    assert slurm.expand_job_id("7_[1,3-4%2]") == ["7_1", "7_3", "7_4"]
    assert slurm.expand_job_id("7_5") == ["7_5"]
    assert slurm.expand_job_id("7") == ["7"]
    with pytest.raises(OellmError, match=r"7_\[a-b\]"):
        slurm.expand_job_id("7_[a-b]")


@fast
def test_parse_sacct_refuses_rows_in_another_format() -> None:
    with pytest.raises(OellmError, match=re.escape("unexpected sacct row '4|1_0|COMPLETED'; expected `JobID|State`")):
        slurm.parse_sacct("4|1_0|COMPLETED\n")  # JobIDRaw,JobID,State


@fast
def test_state_sets_are_disjoint_and_cover_what_we_saw() -> None:
    assert not ACTIVE_STATES & FINAL_STATES
    seen = {s for text in (SACCT_RUNNING, SACCT_CANCELLED, SACCT_STEPS) for s in slurm.parse_sacct(text).values()}
    assert seen <= ACTIVE_STATES | FINAL_STATES
    assert "UNKNOWN" not in ACTIVE_STATES | FINAL_STATES


@fast
def test_parse_config_value() -> None:
    assert slurm.parse_config_value(SCONTROL_CONFIG, "MaxArraySize") == "11"
    assert slurm.parse_config_value(SCONTROL_CONFIG, "MinJobAge") == "300 sec"
    assert slurm.parse_config_value(SCONTROL_CONFIG, "MaxJobCount") == "10000"
    assert slurm.parse_config_value(SCONTROL_CONFIG, "AccountingStorageBackupHost") is None
    assert slurm.parse_config_value(SCONTROL_CONFIG, "MaxArray") is None


@fast
def test_parse_squeue_count_counts_every_array_element() -> None:
    assert slurm.parse_squeue_count(SQUEUE_EXPANDED) == 4
    assert slurm.parse_squeue_count(SQUEUE_FOLDED) == 4
    assert slurm.parse_squeue_count("") == 0


# ---- run: real child processes -------------------------------------------------------------------

FLAKY = """\
import pathlib, sys
counter, message, failures = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
if n < failures:
    sys.exit(message)
print("42")
"""
TRANSIENT_MSG = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
PERMANENT_MSG = "sbatch: error: Batch job submission failed: Invalid job array specification"


@fast
def test_run_failure_carries_command_exit_code_and_output() -> None:
    argv = [sys.executable, "-c", "import sys; print('out'); sys.exit('boom')"]
    with pytest.raises(SlurmError) as e:
        slurm.run(argv)
    err = e.value
    assert (err.argv, err.returncode, err.stdout) == (argv, 1, "out\n")
    assert "boom" in err.stderr
    assert str(err) == f"`{shlex.join(argv)}` exited with code 1: boom"


@fast
def test_run_returns_stdout_and_logs_the_command(caplog: pytest.LogCaptureFixture) -> None:
    argv = [sys.executable, "-c", "print('a b')", "x y"]
    with caplog.at_level(logging.DEBUG, logger="oellm.slurm"):
        assert slurm.run(argv) == "a b\n"
    assert shlex.join(argv) in caplog.text


@fast
def test_run_timeout_raises_slurm_error() -> None:
    started = time.monotonic()
    with pytest.raises(SlurmError, match=r"timed out after 0\.5 s") as e:
        slurm.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5, retries=3)
    assert e.value.returncode is None
    assert time.monotonic() - started < 5


@fast
def test_missing_binary_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OellmError) as e:
        slurm.submit(tmp_path / "x.sbatch", array="0-1")
    assert not isinstance(e.value, SlurmError)
    assert str(e.value) == ("sbatch not found on PATH: this host has no SLURM client; "
                            "use --cluster local to run on this machine")


@fast
def test_an_unknown_host_with_sbatch_on_path_is_not_run_locally(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from oellm.clusters import detect_cluster, load_clusters

    monkeypatch.delenv("OELLM_CLUSTER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_cluster(load_clusters(), hostname="mybox").name == "local"
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\n")
    sbatch.chmod(0o755)
    with pytest.raises(OellmError, match="matches no known cluster"):
        detect_cluster(load_clusters(), hostname="mybox")


@fast
def test_run_retries_transient_errors_with_backoff(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    started = time.monotonic()
    out = slurm.run([sys.executable, "-c", FLAKY, counter, TRANSIENT_MSG, "2"], retries=3, backoff=0.2)
    assert out == "42\n"
    assert counter.read_text() == "3"
    assert time.monotonic() - started >= 0.2 + 0.4


@fast
def test_run_gives_up_after_the_last_retry(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    with pytest.raises(SlurmError, match=r"\(after 3 attempts\): .*Socket timed out"):
        slurm.run([sys.executable, "-c", FLAKY, counter, TRANSIENT_MSG, "9"], retries=2, backoff=0.01)
    assert counter.read_text() == "3"


@fast
def test_run_raises_other_errors_at_once(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    with pytest.raises(SlurmError, match="Invalid job array specification") as e:
        slurm.run([sys.executable, "-c", FLAKY, counter, PERMANENT_MSG, "9"], retries=3, backoff=0.01)
    assert counter.read_text() == "1"
    assert "attempts" not in str(e.value)


# ---- the container shim --------------------------------------------------------------------------

PRINT_ARGS = ("import json, os, sys; print(json.dumps([sys.argv[1:], os.getcwd(), os.environ.get('SHIM_T'), "
              "os.environ.get('LEAKY'), os.environ.get('NODE_T')]))")
TRICKY_ARGS = ["a b", "'single'", '"double"', "x;y", "$HOME", "*", "", "--nv", "a\nb"]


@fast
@pytest.mark.parametrize("runtime", ["singularity", "apptainer"])
def test_shim_logs_the_call_and_runs_the_command_untouched(runtime: str, container_shim: Path, test_image: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("LEAKY", "from the login shell")
    monkeypatch.setenv(f"{runtime.upper()}ENV_NODE_T", "0,1")
    argv = [runtime, "exec", "--nv", "--cleanenv", "--bind", f"{work}:/b", f"--bind={tmp_path}", "-B", "/etc:/e:ro",
            "--env", "SHIM_T=x y", "--pwd", str(work), str(test_image), "python3", "-c", PRINT_ARGS, *TRICKY_ARGS]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [TRICKY_ARGS, str(work), "x y", None, "0,1"]
    assert shim_calls(container_shim) == [argv]


@fast
def test_shim_isolates_like_a_container(container_shim: Path, test_image: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the image, the binds and a private /tmp are visible; without --cleanenv the host env leaks."""
    seen, unseen = tmp_path / "seen", tmp_path / "unseen"
    for d in (seen, unseen):
        d.mkdir()
        (d / "f").write_text(d.name)
    monkeypatch.setenv("LEAKY", "yes")
    code = ("import os, sys; print(os.path.exists(sys.argv[1]), os.path.exists(sys.argv[2]), "
            "os.environ.get('LEAKY'), os.path.exists(os.environ['OUTSIDE']))")
    monkeypatch.setenv("OUTSIDE", str(Path(__file__).resolve()))  # the repo's tests/: not in the image
    run = ["singularity", "exec", "--bind", str(seen), str(test_image), "python3", "-c", code,
           str(seen / "f"), str(unseen / "f")]
    out = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "yes", "False"]
    missing = subprocess.run(["singularity", "exec", "--bind", str(tmp_path / "nope"), str(test_image), "true"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 255 and "doesn't exist" in missing.stderr
    no_image = subprocess.run(["singularity", "exec", str(tmp_path / "none.sif"), "true"], capture_output=True,
                              text=True, timeout=60)
    assert no_image.returncode == 255 and "could not open image" in no_image.stderr


@fast
@pytest.mark.parametrize(("argv", "message"), [
    (["run", "img.sif"], "unsupported subcommand 'run'"),
    (["exec", "--no-such-flag", "img.sif", "true"], "unknown exec option '--no-such-flag'"),
    (["exec", "img.sif"], "usage: exec"),
])
def test_shim_fails_clearly_on_what_it_does_not_know(argv: list[str], message: str,
                                                     container_shim: Path) -> None:
    proc = subprocess.run(["singularity", *argv], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert shim_calls(container_shim) == [["singularity", *argv]]


@fast
def test_container_shim_fixture_puts_the_shim_first_on_path(container_shim: Path) -> None:
    assert os.environ["PATH"].split(os.pathsep)[0] == str(SHIM_DIR)
    assert os.environ["OELLM_SHIM_LOG"] == str(container_shim)


# ---- the real local cluster ------------------------------------------------------------------------


@pytest.fixture
def submitted(slurm_cluster: SlurmCluster) -> Iterator[list[str]]:
    """Job ids a test submits; whatever is left of them is cancelled afterwards."""
    ids: list[str] = []
    yield ids
    slurm.cancel(ids)


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/bash\n{body}\n")
    return path


def _wait_until(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting until {what}")
        time.sleep(0.2)


def _queue(job_id: str, *states: str) -> list[str]:
    """Elements of `job_id` that squeue lists (default: those not finished)."""
    argv = ["squeue", "-h", "-r", "-o", "%i", "-j", job_id, *(["-t", ",".join(states)] if states else [])]
    return slurm.run(argv).split()


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_submit_array_with_throttle(slurm_cluster: SlurmCluster, submitted: list[str],
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script(tmp_path / "task.sh", "printf '[%s]' \"$@\"\nsleep 1")
    args = ["a b", "c;d", "'q'", "$HOME"]
    job = slurm.submit(script, array="0-4%2", args=args,
                       options=["--job-name=oellm-test-throttle", f"--output={tmp_path}/%A_%a.out"])
    submitted.append(job)
    assert job.isdigit()
    states = wait_for_jobs([job], timeout=60)
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(5)}
    for i in range(5):
        assert (tmp_path / f"{job}_{i}.out").read_text() == "[a b][c;d]['q'][$HOME]"
    monkeypatch.setenv("SLURM_TIME_FORMAT", "standard")
    rows = slurm.run(["sacct", "-X", "-P", "-n", "--format=JobID,Start,End", "-S", "now-1days", "-j", job])
    events = []
    for row in rows.split():
        _, start, end = row.split("|")
        events += [(datetime.fromisoformat(start), 1), (datetime.fromisoformat(end), -1)]
    running = peak = 0
    for _, step in sorted(events):  # at equal times an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    assert peak == 2, rows  # 8 free CPUs: without the throttle all 5 would run at once


@pytest.mark.slurm
def test_max_array_size_is_the_configured_value(slurm_cluster: SlurmCluster) -> None:
    assert slurm.max_array_size() == slurm_cluster.max_array_size == 11


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_array_index_at_max_array_size_is_refused(slurm_cluster: SlurmCluster, submitted: list[str],
                                                  tmp_path: Path) -> None:
    script = _script(tmp_path / "task.sh", "true")
    top = slurm_cluster.max_array_size - 1
    submitted.append(slurm.submit(script, array=str(top), options=["--hold", "--output=/dev/null"]))
    started = time.monotonic()
    with pytest.raises(SlurmError, match="Invalid job array specification") as e:
        slurm.submit(script, array=f"0-{top + 1}", options=["--output=/dev/null"])
    assert e.value.returncode == 1
    assert e.value.argv[:3] == ["sbatch", "--parsable", f"--array=0-{top + 1}"]
    assert time.monotonic() - started < 5  # not retried: it is not a transient error


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_queued_jobs_counts_pending_array_elements(slurm_cluster: SlurmCluster, submitted: list[str],
                                                   tmp_path: Path) -> None:
    before = slurm.queued_jobs()
    job = slurm.submit(_script(tmp_path / "task.sh", "true"), array="0-5%2",
                       options=["--hold", "--output=/dev/null"])
    submitted.append(job)
    assert slurm.queued_jobs() == before + 6
    assert slurm.queued_jobs(getpass.getuser()) == before + 6
    assert slurm.queued_jobs("nobody") == 0
    slurm.cancel([job])
    _wait_until("the cancelled array left the queue", lambda: slurm.queued_jobs() == before)


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_query_states_sees_final_states_when_squeue_shows_none(slurm_cluster: SlurmCluster,
                                                               submitted: list[str], tmp_path: Path) -> None:
    start = datetime.now() - timedelta(seconds=5)
    script = _script(tmp_path / "task.sh", '[ "$SLURM_ARRAY_TASK_ID" = 1 ] && exit 3; exit 0')
    job = slurm.submit(script, array="0-2", options=["--output=/dev/null"])
    other = slurm.submit(script, array="0", options=["--output=/dev/null"])
    submitted += [job, other]
    wait_for_jobs([job, other], timeout=60)
    assert _queue(job) == []  # squeue's default view has nothing left of them
    assert slurm.query_states([job, other], start) == {
        f"{job}_0": "COMPLETED", f"{job}_1": "FAILED", f"{job}_2": "COMPLETED", f"{other}_0": "COMPLETED"}
    assert slurm.query_states([], start) == {}


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_cancel_running_array_and_cancel_again(slurm_cluster: SlurmCluster, submitted: list[str],
                                               tmp_path: Path) -> None:
    job = slurm.submit(_script(tmp_path / "task.sh", "sleep 60"), array="0-9%3", options=["--output=/dev/null"])
    submitted.append(job)
    _wait_until("3 elements run", lambda: len(_queue(job, "RUNNING")) == 3)
    slurm.cancel([job])
    _wait_until("nothing of the array is queued", lambda: _queue(job) == [], timeout=15)
    assert wait_for_jobs([job], timeout=30) == {f"{job}_{i}": "CANCELLED" for i in range(10)}
    slurm.cancel([job])
    slurm.cancel([f"{job}_3", job])
    slurm.cancel([])


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_slurm_down_is_a_clear_error_in_bounded_time(slurm_down: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm, "RETRY_BACKOFF_S", 0.05)
    script = _script(tmp_path / "task.sh", "true")
    started = time.monotonic()
    with pytest.raises(SlurmError, match=r"\(after 4 attempts\): .*Unable to contact slurm controller") as e:
        slurm.submit(script, array="0-1")
    assert str(e.value).startswith("`sbatch --parsable --array=0-1 ")
    with pytest.raises(SlurmError, match=r"\(after 3 attempts\): .*Connection refused"):
        slurm.query_states(["1"], "now-1days")
    with pytest.raises(SlurmError, match="Unable to contact slurm controller"):
        slurm.queued_jobs()
    with pytest.raises(SlurmError, match="Unable to contact slurm controller"):
        slurm.max_array_size()
    assert time.monotonic() - started < 30


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_sbatch_jobs_see_the_container_shim(slurm_cluster: SlurmCluster, container_shim: Path, test_image: Path,
                                            submitted: list[str], tmp_path: Path) -> None:
    script = _script(tmp_path / "task.sh", f'singularity exec --nv --bind /tmp:/tmp {test_image} "$@"')
    job = slurm.submit(script, array="0", args=["printf", "%s|", "a b", "c;d"],
                       options=[f"--output={tmp_path}/%A_%a.out"])
    submitted.append(job)
    assert wait_for_jobs([job], timeout=60) == {f"{job}_0": "COMPLETED"}
    assert (tmp_path / f"{job}_0.out").read_text() == "a b|c;d|"
    assert shim_calls(container_shim) == [
        ["singularity", "exec", "--nv", "--bind", "/tmp:/tmp", str(test_image), "printf", "%s|", "a b", "c;d"]]


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_a_submission_hidden_by_a_socket_timeout_is_adopted_not_repeated(
        slurm_cluster: SlurmCluster, submitted: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sbatch's reply is lost after the controller accepted the array: retrying would queue it twice."""
    real = subprocess.run(["which", "sbatch"], capture_output=True, text=True, check=True).stdout.strip()
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    _script(bin_dir / "sbatch", f'echo x >> {shlex.quote(str(calls))}\n{real} "$@" >/dev/null\n'
            'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2\nexit 1')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    script = _script(tmp_path / "task.sh", "#SBATCH --begin=now+1hour\ntrue")
    name = f"oellm-adopt-{os.getpid()}"
    job = slurm.submit(script, array="0-2", options=[f"--output={tmp_path}/%A_%a.out"], name=name, backoff=0.5)
    submitted.append(job)
    assert calls.read_text() == "x\n"  # one sbatch call, no second submission
    assert slurm.jobs_named(name) == [job]


@fast
def test_submissions_in_the_append_only_log_are_never_lost(tmp_path: Path) -> None:
    """A crash between sbatch and the run.json write: the log still names the array."""
    from oellm.rundir import RunDir

    run = RunDir(tmp_path)
    run.manifest.write_text(json.dumps({"submissions": [{"job_id": "7", "offset": 0, "size": 2}]}))
    run.log_submission({"job_id": "7", "offset": 0, "size": 2})
    run.log_submission({"job_id": "8", "offset": 2, "size": 1})
    assert [s["job_id"] for s in run.read_manifest()["submissions"]] == ["7", "8"]
