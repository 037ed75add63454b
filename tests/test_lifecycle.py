"""status / resubmit / cancel: the pure join on literal sacct text, and the real CLI on the local cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oellm import slurm
from oellm.rows import EvalRow
from oellm.rundir import JobRef, RunDir, read_jobs
from oellm.runs import states as st
from oellm.runs.view import list_runs, show
from tests.fixtures_models import A_RESULT, build_tiny_tasks, make_run_dir
from tests.fixtures_slurm import queue_states, wait_for_jobs
from tests.test_schedule_slurm import clusters_file

# literal sacct/squeue output, slurm-wlm 22.05.8 on tests/slurm/local-cluster.sh (see tests/test_slurm.py)
SACCT_RUNNING = "9_0|RUNNING\n9_1|RUNNING\n9_[2-9%2]|PENDING\n"
SACCT_DONE = "46_0|COMPLETED\n46_1|FAILED\n46_2|COMPLETED\n"
SACCT_LAGGING_DONE = "46|COMPLETED\n"
SACCT_CANCELLED = "9_0|CANCELLED by 0\n9_1|CANCELLED by 0\n9_[2-9%2]|CANCELLED by 0\n"
# `squeue --noheader --array --format=%i|%T -j 478` 2 s after `sbatch --array=0-4%2` (sleep 30); without --array
SQUEUE_STATES = "478_2|PENDING\n478_3|PENDING\n478_4|PENDING\n478_1|RUNNING\n478_0|RUNNING\n"
SQUEUE_FOLDED = "478_[2-4%2]|PENDING\n478_1|RUNNING\n478_0|RUNNING\n"


def ref(i: int, task_index: int | None = None, model: str = "m", task: str = "t") -> JobRef:
    return JobRef(f"row{i}", i if task_index is None else task_index, model, task, 0)


def failed(kind: str = "exception", job: str | None = None, error: str = "ValueError: boom") -> dict:
    return {"state": "failed", "error_kind": kind, "error": error, **({"slurm_array_job_id": job} if job else {})}


def by_row(states: list[st.RowState]) -> dict[str, tuple[str, str]]:
    return {s.row.row_id: (s.state, s.reason) for s in states}


@pytest.mark.fast
def test_join_result_first_then_record_then_sacct() -> None:
    rows = [ref(0), ref(1), ref(2), ref(3)]
    subs = [{"job_id": "46", "offset": 0, "size": 3}]
    got = st.join(rows, {"row0"}, {"row1": failed(job="46")}, subs, slurm.parse_sacct(SACCT_DONE))
    assert by_row(got) == {
        "row0": ("done", ""),
        "row1": ("failed", "exception: ValueError: boom"),
        "row2": ("failed", "lost: array task ended COMPLETED without reaching this row"),
        "row3": ("not submitted", "held back by the queue limit"),
    }
    assert [s.log for s in got] == ["slurm_logs/46_0.err", "slurm_logs/46_1.err", "slurm_logs/46_2.err", None]


@pytest.mark.fast
def test_join_running_array_and_a_row_that_already_failed_in_it() -> None:
    rows = [ref(0), ref(10, task_index=0), ref(1), ref(5)]
    subs = [{"job_id": "9", "offset": 0, "size": 10}]
    records = {"row0": failed("oom", job="9", error="OutOfMemoryError: CUDA"), "row5": failed(job="8")}
    got = by_row(st.join(rows, set(), records, subs, slurm.parse_sacct(SACCT_RUNNING)))
    assert got == {"row0": ("oom", "oom: OutOfMemoryError: CUDA"), "row10": ("running", ""),
                   "row1": ("running", ""), "row5": ("pending", "")}  # row5's record is from job 8: old


@pytest.mark.fast
@pytest.mark.parametrize(("sacct_state", "record", "want", "infra"), [
    ("TIMEOUT", {"state": "interrupted", "slurm_array_job_id": "9"}, "timeout", False),
    ("OUT_OF_MEMORY", {"state": "running", "slurm_array_job_id": "9"}, "oom", False),
    ("CANCELLED by 0", None, "cancelled", False),
    ("NODE_FAIL", {"state": "running", "slurm_array_job_id": "9"}, "failed", True),
    ("PREEMPTED", None, "failed", True),
    ("FAILED", {"state": "running", "slurm_array_job_id": "9"}, "failed", False),
    ("UNKNOWN", None, "unknown", False),
])
def test_join_final_slurm_states(sacct_state: str, record: dict | None, want: str, infra: bool) -> None:
    states = slurm.parse_sacct(f"9_0|{sacct_state}\n")
    (got,) = st.join([ref(0)], set(), {"row0": record} if record else {}, [{"job_id": "9", "offset": 0, "size": 1}],
                     states)
    assert (got.state, got.infra) == (want, infra), got
    if sacct_state == "FAILED":
        assert got.reason == "lost: array task ended FAILED while the row was running"


@pytest.mark.fast
def test_join_latest_submission_of_a_task_wins_and_offsets_map_to_log_names() -> None:
    rows = [ref(0), ref(12), ref(13)]
    subs = [{"job_id": "9", "offset": 0, "size": 10}, {"job_id": "20", "offset": 10, "size": 4},
            {"job_id": "30", "offset": 13, "size": 1}]
    states = {**slurm.parse_sacct(SACCT_CANCELLED), "20_2": "COMPLETED", "20_3": "FAILED", "30_0": "PENDING"}
    got = st.join(rows, {"row12"}, {}, subs, states)
    assert [(s.state, s.element) for s in got] == [("cancelled", "9_0"), ("done", "20_2"), ("pending", "30_0")]


@pytest.mark.fast
def test_lagging_accounting_is_unknown_and_asks_squeue() -> None:
    rows = [ref(0), ref(1), ref(2)]
    subs = [{"job_id": "46", "offset": 0, "size": 3}]
    sacct = slurm.parse_sacct(SACCT_LAGGING_DONE)
    assert st.needed_elements(rows, {"row0"}, subs) - sacct.keys() == {"46_1", "46_2"}
    got = st.join(rows, {"row0"}, {"row1": failed(job="46")}, subs, sacct)
    assert [s.state for s in got] == ["done", "failed", "unknown"]
    assert st.resubmittable_tasks(got) == ([1], [])  # never the unknown one


@pytest.mark.fast
def test_parse_squeue_states() -> None:
    want = {"478_0": "RUNNING", "478_1": "RUNNING", "478_2": "PENDING", "478_3": "PENDING", "478_4": "PENDING"}
    assert slurm.parse_squeue_states(SQUEUE_STATES) == want
    assert slurm.parse_squeue_states(SQUEUE_FOLDED) == want


@pytest.mark.fast
def test_without_slurm_states_come_from_records_only() -> None:
    rows = [ref(0), ref(1), ref(2), ref(3)]
    subs = [{"job_id": "9", "offset": 0, "size": 3}]
    records = {"row0": {"state": "running"}, "row1": {"state": "interrupted"}}
    assert [s.state for s in st.join(rows, set(), records, subs, None)] == ["running", "failed", "unknown", "pending"]


@pytest.mark.fast
def test_resubmittable_tasks_never_include_a_task_still_running() -> None:
    rows = [ref(0, 0), ref(1, 0), ref(2, 1), ref(3, 2), ref(4, 3)]
    subs = [{"job_id": "9", "offset": 0, "size": 3}]
    got = st.join(rows, {"row3"}, {"row0": failed(job="9")}, subs, {"9_0": "RUNNING", "9_1": "TIMEOUT",
                                                                     "9_2": "COMPLETED"})
    assert [s.state for s in got] == ["failed", "running", "timeout", "done", "not submitted"]
    assert st.resubmittable_tasks(got) == ([1, 3], [0])
    infra = st.join([ref(0), ref(1), ref(2)], set(), {}, [{"job_id": "9", "offset": 0, "size": 3}],
                    slurm.parse_sacct("9_0|NODE_FAIL\n9_1|PREEMPTED\n9_2|TIMEOUT\n"))
    assert st.resubmittable_tasks(infra, infra_only=True) == ([0, 1], [])


@pytest.mark.fast
def test_status_of_a_local_run_text_json_and_by_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [EvalRow("m1", "a", 0, task_index=0), EvalRow("m1", "b", 0, task_index=0),
            EvalRow("m2", "a", 0, task_index=1)]
    run = make_run_dir(tmp_path, rows)
    (run.result_path(rows[0].row_id)).write_text(A_RESULT)
    run.write_state(rows[0].row_id, {"state": "done", "wall_s": 30.0})
    run.write_state(rows[1].row_id, failed(error="ValueError: tiny_raises: deliberate failure"))
    lines: list[str] = []
    show(run.path, "model", False, False, out=lines.append)
    text = lines[0]
    assert "rows 3: pending 1, running 0, done 1, failed 1, timeout 0, oom 0, cancelled 0, not submitted 0" in text
    assert "m1: done 1, failed 1" in text and "m2: pending 1" in text
    assert "ValueError: tiny_raises: deliberate failure" in text and "time left: ~30 s" in text
    lines.clear()
    show(run.path, "task", True, False, out=lines.append)
    doc = json.loads(lines[0])
    assert doc["counts"]["failed"] == 1 and doc["breakdown"] == {"a": {"pending": 1, "done": 1}, "b": {"failed": 1}}
    assert doc["slurm_calls"] == 0 and doc["problems"][0]["row_id"] == rows[1].row_id
    list_runs(run.path.parent, out=lines.append)
    assert lines[-1].startswith(f"  {run.path.name}  local/local  rows 3: done 1, failed 1, no record 1")


@pytest.mark.fast
def test_watch_refreshes_until_no_row_is_pending_or_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import oellm.runs.view

    rows = [EvalRow("m1", "a", 0, task_index=0), EvalRow("m1", "b", 0, task_index=0)]
    run = make_run_dir(tmp_path, rows)
    run.write_state(rows[0].row_id, {"state": "running"})
    monkeypatch.setattr(oellm.runs.view, "WATCH_INTERVAL_S", 0.01)
    seen: list[str] = []

    def out(text: str) -> None:  # the rows move on while the user watches
        seen.append(text)
        if len(seen) == 1:
            run.result_path(rows[0].row_id).write_text(A_RESULT)
            run.write_state(rows[1].row_id, {"state": "running"})
        elif len(seen) == 3:
            run.write_state(rows[1].row_id, failed())

    v = show(run.path, None, False, True, out=out)
    assert [s.state for s in v.states] == ["done", "failed"]
    assert len(seen) == 5 and seen[1].startswith("--- ") and "running 1" in seen[0] and "done 1" in seen[2]
    run.states.joinpath(f"{rows[1].row_id}.json").unlink()
    once: list[str] = []
    show(run.path, None, False, True, out=once.append)  # local: no record and nothing running: the run is over
    assert len(once) == 1 and "pending 1" in once[0]


@pytest.mark.fast
def test_oom_rows_get_half_the_batch_size_and_an_explicit_one_wins() -> None:
    from oellm.runs.resubmit import _overrides

    states = [st.RowState(ref(0, 0), "oom"), st.RowState(ref(1, 1), "failed"), st.RowState(ref(2, 2), "oom")]
    manifest = {"batch_size": 8, "task_overrides": {"2": {"batch_size": 2}}}
    assert _overrides(states, {0, 1, 2}, manifest, None, None) == {"0": {"batch_size": 4}, "2": {"batch_size": 1}}
    assert _overrides(states, {0, 1}, {"batch_size": "auto"}, None, None) == {}  # lm-eval's auto probes memory
    assert _overrides(states, {1}, manifest, "3", None) == {"1": {"batch_size": 3}}
    assert _overrides(states, {0, 1}, manifest, None, True) == {"0": {"batch_size": 4, "parallelize": True},
                                                                 "1": {"parallelize": True}}
    assert _overrides(states, {1}, manifest, None, False) == {"1": {"parallelize": False}}  # --gpu_mode workers


@pytest.mark.fast
def test_oom_tasks_that_would_get_nothing_different_are_pointed_out() -> None:
    from oellm.runs.resubmit import _oom_note, _overrides

    states = [st.RowState(ref(0, 0), "oom"), st.RowState(ref(1, 1), "oom")]
    manifest = {"batch_size": "auto", "task_overrides": {"1": {"batch_size": 1}}}
    assert _oom_note(states, {0, 1}, manifest, _overrides(states, {0, 1}, manifest, None, None), None) == \
        "note: 2 task(s) ran out of memory with a batch size that cannot be halved (1, auto); " \
        "pass --batch_size N, or --gpus_per_task N --gpu_mode spread to spread the model"
    assert _oom_note(states, {0, 1}, manifest, {}, True) is None
    assert _oom_note(states, {0, 1}, {"batch_size": 8}, _overrides(states, {0, 1}, {"batch_size": 8}, None, None),
                     None) is None  # halved to 4


@pytest.mark.fast
def test_status_refuses_a_bad_by(tmp_path: Path) -> None:
    from oellm.errors import OellmError

    run = make_run_dir(tmp_path, [EvalRow("m", "a", 0)])
    with pytest.raises(OellmError, match="--by: 'shot' is not valid; use model or task"):
        show(run.path, "shot", False, False)


@pytest.mark.fast
def test_status_on_a_host_without_sacct_falls_back_to_the_records(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [EvalRow("m", "a", 0), EvalRow("m", "b", 0)]
    run = make_run_dir(tmp_path, rows, executor="slurm", cluster="testslurm", created="2026-01-01T00:00:00",
                       submissions=[{"job_id": "1", "offset": 0, "size": 1}])
    run.write_state(EvalRow("m", "a", 0, task_index=0).row_id, failed())
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    lines: list[str] = []
    show(run.path, None, False, False, out=lines.append)
    assert "SLURM accounting unavailable (sacct not found on PATH" in lines[0]
    assert "failed 1" in lines[0] and "unknown 1" in lines[0]


# ---------------------------------------------------------------- the real CLI on the local cluster


def oellm(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oellm", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def the_run(root: Path) -> RunDir:
    (run,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    return RunDir(run)


def status_json(run: RunDir) -> dict:
    r = oellm("status", "--run_dir", str(run.path), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(1)
    return got


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.usefixtures("no_job_left_behind")
def test_failures_show_their_reason_and_resubmit_redoes_exactly_the_missing_rows(slurm_cluster, tiny_model,
                                                                                    tmp_path):
    """Three array tasks under a real 1-minute time limit: the tiny model (its slow row times out), a model
    whose config transformers cannot read, and a copy of the tiny model whose task is `scancel`led."""
    tasks = build_tiny_tasks(tmp_path / "tasks")  # our own copy: the test "fixes" tiny_raises later
    bad, copy = tmp_path / "bad_model", tmp_path / "copy_model"
    for d in (bad, copy):
        d.mkdir()
        for f in tiny_model.iterdir():
            if f.name != "config.json" or d == copy:
                (d / f.name).symlink_to(f)
    (bad / "config.json").write_text("{}")
    cfile = clusters_file(tmp_path, slurm_cluster.partition, container=None, max_running=4,
                          sbatch_options={"time": "00:01:00"})
    r = oellm("schedule-eval", "--cluster", "testslurm", "--clusters_file", str(cfile), "--models",
              f"{tiny_model},{bad},{copy}", "--tasks", "tiny_mc_a,tiny_raises,tiny_slow", "--limit", "4",
              "--evals_per_task", "3", "--lm_eval_include_path", str(tasks), "--output_dir", str(tmp_path / "runs"),
              env={"OELLM_TINY_SLOW_S": "600"}, timeout=180)
    # the preflight sees the unreadable config before anything queues ...
    assert r.returncode == 2 and f"model {bad}: config or tokenizer does not load" in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    # ... and without it, the worker meets it on the node, as it would a config broken after planning
    r = oellm("schedule-eval", "--cluster", "testslurm", "--clusters_file", str(cfile), "--models",
              f"{tiny_model},{bad},{copy}", "--tasks", "tiny_mc_a,tiny_raises,tiny_slow", "--limit", "4",
              "--evals_per_task", "3", "--lm_eval_include_path", str(tasks), "--output_dir", str(tmp_path / "runs"),
              "--no_preflight", env={"OELLM_TINY_SLOW_S": "600"}, timeout=180)
    assert r.returncode == 0, r.stderr
    run = the_run(tmp_path / "runs")
    rows = {(row.model, row.task): row.row_id for row in read_jobs(run.jobs)}
    (job,) = [s["job_id"] for s in run.read_manifest()["submissions"]]

    def running(row_id: str) -> bool:
        return run.state_path(row_id).exists() and json.loads(run.state_path(row_id).read_text())["state"] == "running"

    wait_until(lambda: running(rows[(str(copy), "tiny_slow")]), 150, "the copy's tiny_slow row starts")
    slurm.cancel([f"{job}_2"])
    wait_for_jobs([job], timeout=200)  # task 0 dies of its time limit 69-89 s after it started

    doc = wait_until(lambda: (d := status_json(run))["counts"].get("unknown", 0) == 0 and d, 30, "sacct settles")
    assert doc["slurm"] == "ok" and doc["slurm_calls"] == 1
    assert {k: v for k, v in doc["counts"].items() if v} == {"done": 2, "failed": 5, "timeout": 1, "cancelled": 1}
    problems = {(p["model"], p["task"]): p for p in doc["problems"]}
    assert problems[(str(tiny_model), "tiny_raises")]["reason"] == \
        "exception: ValueError: tiny_raises: deliberate failure"
    assert problems[(str(tiny_model), "tiny_slow")]["reason"] == "SLURM TIMEOUT"
    assert problems[(str(copy), "tiny_slow")]["reason"] == "SLURM CANCELLED"
    assert all(problems[(str(bad), t)]["reason"].startswith("exception: ") for t in ("tiny_mc_a", "tiny_slow"))
    assert problems[(str(bad), "tiny_mc_a")]["log"] == str(run.path / f"slurm_logs/{job}_1.err")
    text = oellm("status", "--run_dir", str(run.path), "--by", "model").stdout
    assert f"{bad}: failed 3" in text and "tiny_raises: deliberate failure" in text

    done_before = {p.name: p.stat().st_mtime_ns for p in run.results.glob("*.json")}
    (tasks / "utils.py").write_text((tasks / "utils.py").read_text().replace(
        'raise ValueError("tiny_raises: deliberate failure")', "return dataset"))
    (bad / "config.json").unlink()
    (bad / "config.json").symlink_to(tiny_model / "config.json")
    dry = oellm("resubmit", "--run_dir", str(run.path), "--dry_run")
    assert dry.returncode == 0, dry.stderr
    assert "resubmitting 1 of 1 array task(s) (done 1, failed 1, timeout 1) in 1 sbatch call(s): tasks 0-0 " \
        "--time=00:02:00" in dry.stdout, dry.stdout  # the timed-out task gets twice its limit
    assert "resubmitting 2 of 2 array task(s) (done 1, failed 4, cancelled 1) in 1 sbatch call(s): tasks 1-2\n" \
        in dry.stdout and len(run.read_manifest()["submissions"]) == 1, dry.stdout
    r = oellm("resubmit", "--run_dir", str(run.path), env={"OELLM_TINY_SLOW_S": "0"})  # sbatch passes it on
    assert r.returncode == 0, r.stderr
    subs = run.read_manifest()["submissions"]
    assert [(s["offset"], s["size"], s.get("options")) for s in subs] == \
        [(0, 3, None), (0, 1, ["--time=00:02:00"]), (1, 2, None)] and subs[0]["job_id"] == job
    again = oellm("resubmit", "--run_dir", str(run.path))  # still queued or running: never twice
    assert again.returncode == 0 and "nothing to resubmit" in again.stdout and \
        len(run.read_manifest()["submissions"]) == 3, again.stdout
    wait_for_jobs([s["job_id"] for s in subs[1:]], timeout=150)
    doc = wait_until(lambda: (d := status_json(run))["counts"]["done"] == 9 and d, 30, "all rows done")
    assert doc["problems"] == [] and sorted(p.stem for p in run.results.glob("*.json")) == sorted(rows.values())
    assert {n: m for n, m in ((p.name, p.stat().st_mtime_ns) for p in run.results.glob("*.json"))
            if n in done_before} == done_before  # the rows done before were not redone


@pytest.mark.slurm
def test_cancel_empties_the_queue_of_every_chunk_and_status_says_so(slurm_cluster, tiny_model, tiny_tasks, tmp_path):
    limit = slurm.queued_jobs() + 4  # 5 tasks: 4 submitted in 2 chunks (max_array_size 2), 1 held back
    cfile = clusters_file(tmp_path, "debug", container=None, queue_limit=limit, max_array_size=2,
                          sbatch_options={"begin": "now+1hour"})  # stays pending: costs no CPU
    r = oellm("schedule-eval", "--cluster", "testslurm", "--clusters_file", str(cfile), "--models", str(tiny_model),
              "--tasks", "tiny_mc_a", "--n_shot", "0,1,2,3,4", "--evals_per_task", "1", "--lm_eval_include_path",
              str(tiny_tasks), "--output_dir", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    run = the_run(tmp_path / "runs")
    subs = run.read_manifest()["submissions"]
    ids = [s["job_id"] for s in subs]
    sent = sum(s["size"] for s in subs)  # 4, unless jobs of another session left the queue meanwhile
    try:
        assert len(ids) >= 2 and all(s["size"] <= 2 for s in subs)
        doc = status_json(run)
        assert (doc["counts"]["pending"], doc["counts"]["not submitted"]) == (sent, 5 - sent), doc
        c = oellm("cancel", "--run_dir", str(run.path))
        assert c.returncode == 0 and f"cancelled {len(ids)} array job(s) of {run.path}" in c.stdout, c.stdout + c.stderr
        assert all(s not in st.ACTIVE_STATES for s in queue_states(ids).values())
        assert run.read_manifest()["cancelled"]
        doc = wait_until(lambda: (d := status_json(run))["counts"]["cancelled"] == sent and d, 30,
                         "sacct: cancelled")
        assert doc["counts"]["not submitted"] == 5 - sent and doc["cancelled"]
        dry = oellm("resubmit", "--run_dir", str(run.path), "--dry_run", "true", "--time_limit", "00:20:00")
        assert " of 5 array task(s) (cancelled " in dry.stdout and "--time=00:20:00" in dry.stdout, dry.stdout
        assert "dry run: nothing submitted" in dry.stdout and len(run.read_manifest()["submissions"]) == len(ids)
        assert oellm("cancel", "--run_dir", str(run.path)).returncode == 0  # again: already gone is fine
    finally:
        slurm.cancel(ids)


@pytest.mark.slurm
def test_status_without_accounting_says_so_in_one_line(slurm_cluster, slurm_down, tmp_path):
    run = make_run_dir(tmp_path, [EvalRow("m", "a", 0)], executor="slurm", cluster="testslurm",
                       created="2026-01-01T00:00:00", submissions=[{"job_id": "1", "offset": 0, "size": 1}])
    run.write_state(EvalRow("m", "a", 0, task_index=0).row_id, failed())
    r = oellm("status", "--run_dir", str(run.path))
    assert r.returncode == 0, r.stderr
    note = [line for line in r.stdout.splitlines() if "unavailable" in line]
    assert len(note) == 1 and note[0].startswith("SLURM accounting unavailable (`sacct "), r.stdout
    assert "failed 1" in r.stdout
    r = oellm("resubmit", "--run_dir", str(run.path))
    assert r.returncode == 2 and "cannot tell which tasks SLURM still runs" in r.stderr and \
        r.stderr.count("\n") == 1, r.stderr


@pytest.mark.fast
def test_resubmit_doubles_the_time_limit_of_timed_out_tasks_only() -> None:
    from oellm.clusters import build_cluster
    from oellm.runs.resubmit import _groups, last_minutes

    cluster = build_cluster("c", {"max_time": "02:00:00"}, "test")
    manifest = {"time_limit": "00:40:00", "submissions": [
        {"job_id": "5", "offset": 0, "size": 4},
        {"job_id": "6", "offset": 2, "size": 2, "options": ["--time=01:30:00"]}]}
    assert last_minutes(manifest) == {0: 40, 1: 40, 2: 90, 3: 90}
    states = [st.RowState(ref(0), "timeout"), st.RowState(ref(1), "failed"), st.RowState(ref(2), "timeout"),
              st.RowState(ref(3), "cancelled")]
    assert _groups(states, [0, 1, 2, 3], manifest, cluster, None, None) == {
        ("--time=01:20:00",): [0], (): [1], ("--time=02:00:00",): [2],  # 2 x 90 min, capped at max_time
        ("--time=01:30:00",): [3]}  # not timed out: it keeps the limit of its last submission
    assert _groups(states, [0, 1], manifest, cluster, 30, 2) == {("--time=00:30:00", "--gres=gpu:2"): [0, 1]}


@pytest.mark.fast
def test_host_memory_gets_more_mem_and_gpu_memory_a_smaller_batch() -> None:
    """SLURM's OUT_OF_MEMORY (the node's RAM) and a CUDA out-of-memory in a row need different cures."""
    from oellm.clusters import build_cluster
    from oellm.runs.resubmit import _groups, _overrides

    cluster = build_cluster("c", {"mem": "64G"}, "test")
    manifest = {"time_limit": "00:40:00", "batch_size": 8, "submissions": [
        {"job_id": "5", "offset": 0, "size": 3}, {"job_id": "6", "offset": 2, "size": 1, "options": ["--mem=128G"]}]}
    states = [st.RowState(ref(0), "oom", "SLURM OUT_OF_MEMORY", "5_0"), st.RowState(ref(1), "oom", "oom: CUDA out"),
              st.RowState(ref(2), "oom", "SLURM OUT_OF_MEMORY", "6_0")]
    assert _groups(states, [0, 1, 2], manifest, cluster, None, None) == {
        ("--mem=128G",): [0], (): [1], ("--mem=256G",): [2]}
    assert _overrides(states, {0, 1, 2}, manifest, None, None) == {"1": {"batch_size": 4}}
    assert _groups(states, [0], manifest, cluster, None, None, ["--mem=500G"]) == {("--mem=500G",): [0]}


@pytest.mark.fast
def test_resubmit_overrides_become_sbatch_flags_of_every_group() -> None:
    from oellm.clusters import build_cluster
    from oellm.runs.resubmit import Resubmit, _groups, _override_flags

    opts = Resubmit(run_dir=Path("r"), partition="big", account="B2", mem="80G",
                    sbatch_option=["constraint=h100", "exclusive="])
    flags = _override_flags(opts)
    assert flags == ["--partition=big", "--account=B2", "--mem=80G", "--constraint=h100", "--exclusive"]
    cluster = build_cluster("c", {"max_time": "02:00:00"}, "test")
    states = [st.RowState(ref(0), "timeout"), st.RowState(ref(1), "failed")]
    manifest = {"time_limit": "00:40:00", "submissions": [{"job_id": "5", "offset": 0, "size": 2}]}
    assert _groups(states, [0, 1], manifest, cluster, None, None, flags) == {
        ("--time=01:20:00", *flags): [0], tuple(flags): [1]}


@pytest.mark.fast
def test_a_requeued_row_says_so_while_it_waits_to_run_again() -> None:
    subs = [{"job_id": "9", "offset": 0, "size": 2}]
    records = {"row0": {"state": "interrupted", "slurm_array_job_id": "9", "slurm_restart_count": 0},
               "row1": {"state": "running", "slurm_array_job_id": "9", "slurm_restart_count": 2}}
    got = st.join([ref(0), ref(1)], set(), records, subs, {"9_0": "PENDING", "9_1": "RUNNING"})
    assert [(s.state, s.reason) for s in got] == [
        ("pending", "requeued by SLURM 1 time(s) (node failure or preemption)"),
        ("running", "requeued by SLURM 2 time(s) (node failure or preemption)")]
    assert st.requeued(got) == got


@pytest.mark.fast
def test_status_without_a_run_on_an_unknown_host_says_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from oellm import clusters
    from oellm.cli.commands import status
    from oellm.errors import OellmError

    monkeypatch.delenv("OELLM_CLUSTER", raising=False)
    monkeypatch.delenv("EVAL_OUTPUT_DIR", raising=False)
    monkeypatch.setattr(clusters.socket, "gethostname", lambda: "login.nowhere.example")
    monkeypatch.setattr(clusters.shutil, "which", lambda name: f"/usr/bin/{name}")  # a SLURM site we do not know
    with pytest.raises(OellmError, match=r"^which runs\? pass a run dir \(`oellm status RUN_DIR`\) or --output_dir "
                                         r"DIR; host 'login.nowhere.example' matches no known cluster"):
        status()


@pytest.mark.fast
def test_status_read_through_head_ends_quietly(tmp_path: Path) -> None:
    """U9: `oellm status RUN | head` must not end in a BrokenPipeError traceback."""
    rows = [EvalRow("m", f"t{i}", 0) for i in range(1500)]
    run = make_run_dir(tmp_path, rows)
    for r in read_jobs(run.jobs):
        run.write_state(r.row_id, failed(error="ValueError: " + "x" * 200))
    cmd = f"{sys.executable} -m oellm status {run.path} --json | head -c 100 >/dev/null"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.fast
def test_a_dry_run_dir_says_so_and_is_not_resubmitted_without_the_checks(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """C6: a dry run was never pre-cached, proven or checked for site placeholders."""
    from oellm.errors import OellmError
    from oellm.runs.resubmit import Resubmit, resubmit

    leo = {"partition": "p", "account": "<your-account>", "gpus_per_task": 1}
    run = make_run_dir(tmp_path, [EvalRow("m", "t", 0)], executor="slurm", cluster="leonardo",
                       cluster_config=leo, dry_run=True, submissions=[])
    with pytest.raises(OellmError, match=f"{run.path} is a dry run: nothing was pre-cached or proven"):
        resubmit(Resubmit(run_dir=run.path))
    show(run.path, None, False, False)
    assert capsys.readouterr().out.startswith("dry run: nothing was pre-cached, proven or submitted here")
    from oellm.runs.view import view

    assert [(s.state, s.reason) for s in view(run.path).states] == [("not submitted", "dry run: never submitted")]
    list_runs(run.path.parent)
    assert f"{run.path.name}  slurm/leonardo dry run  rows 1" in capsys.readouterr().out
    legacy = make_run_dir(tmp_path, [EvalRow("m", "t", 0)], executor="slurm", cluster="leonardo",
                          cluster_config=leo, submissions=[], held_back_tasks=0)  # made before run.json said so
    with pytest.raises(OellmError, match="is a dry run"):
        resubmit(Resubmit(run_dir=legacy.path))


@pytest.mark.fast
def test_a_moved_run_dir_gets_its_script_rendered_for_where_it_is_now(tmp_path: Path) -> None:
    """C7: the worker line, the logs and the output-root bind name the dir's current path, not the original's."""
    import dataclasses

    from oellm.clusters import load_clusters
    from oellm.container import plan_binds
    from oellm.render import render_for_path, render_sbatch, rendered_for

    leo = dataclasses.replace(load_clusters()["leonardo"], account="A")
    old_root, new_root = tmp_path / "scratch" / "runs", tmp_path / "project" / "copies"
    for d in (old_root / "2026-01-02-03-04-05", new_root / "2026-01-02-03-04-05", tmp_path / "model"):
        d.mkdir(parents=True)
    old, new = str(old_root / "2026-01-02-03-04-05"), str(new_root / "2026-01-02-03-04-05")
    paths = [str(old_root), str(tmp_path / "model")]
    manifest = {"time_limit": "00:20:00", "script": {"python": "python3", "inherited": {"HF_HOME": "/h"},
                                                     "bind_paths": paths}}
    first = render_sbatch(leo, run_dir=old, job_name="oellm-2026-01-02-03-04-05", time_minutes=20, python="python3",
                          binds=plan_binds(leo, paths, {}), inherited={"HF_HOME": "/h"})
    assert rendered_for(first) == old
    again = render_for_path(leo, manifest, old, new, "python3")
    assert again == render_sbatch(leo, run_dir=new, job_name="oellm-2026-01-02-03-04-05", time_minutes=20,
                                  python="python3", binds=plan_binds(leo, [str(new_root), str(tmp_path / "model")], {}),
                                  inherited={"HF_HOME": "/h"})
    assert old not in again and str(old_root) not in again and rendered_for(again) == new
