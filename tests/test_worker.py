"""The worker, end to end: a tiny model through `python -m oellm worker`, real lm-eval, offline.

What a user notices: the scores equal lm-eval's own, each model loads once per array task, a failing
row is recorded with its reason while the others finish, a killed task leaves no half-written result,
and a resubmitted task does not redo finished rows."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oellm.errors import OellmError
from oellm.rows import EvalRow
from oellm.rundir import RunDir
from oellm.worker import task as worker
from tests.fixtures_models import A_RESULT, make_run_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def process_state_restored():
    """`worker.run` in this process sets the offline flags and configures root logging, as it must in an
    array task; the tests that follow must not inherit either."""
    env = dict(os.environ)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    os.environ.clear()
    os.environ.update(env)
    root.handlers[:] = handlers
    root.setLevel(level)


def start_worker(run: RunDir, index: int = 0, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "oellm", "worker", "--run_dir", str(run.path),
                             "--index", str(index)], cwd=REPO, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_worker(run: RunDir, index: int = 0) -> tuple[int, str]:
    proc = start_worker(run, index)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def state(run: RunDir, row: EvalRow) -> dict:
    return json.loads(run.state_path(row.row_id).read_text())


def result(run: RunDir, row: EvalRow) -> dict:
    return json.loads(run.result_path(row.row_id).read_text())


def leftovers(run: RunDir) -> list[str]:
    return [p.name for d in (run.results, run.states) for p in d.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.e2e
def test_worker_scores_equal_lm_eval_and_load_the_model_once(
        tmp_path: Path, tiny_model: Path, tiny_tasks: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    rows = [EvalRow(str(tiny_model), "tiny_mc_a", 0, limit=6), EvalRow(str(tiny_model), "tiny_mc_a", 2, limit=6),
            EvalRow(str(tiny_model), "tiny_group", 1, limit=5), EvalRow(str(tiny_model), "tiny_mc_b", 3, limit=0.25)]
    run = make_run_dir(tmp_path, rows, include_paths=[tiny_tasks], log_samples=True)
    code, out = run_worker(run)
    assert code == 0, out

    tm = TaskManager(include_path=str(tiny_tasks), include_defaults=False)
    for row in rows:
        got = result(run, row)
        direct = simple_evaluate(model="hf", model_args=f"pretrained={tiny_model}", tasks=[row.task],
                                 num_fewshot=row.n_shot, limit=row.limit, task_manager=tm, batch_size=1,
                                 device="cpu", log_samples=False)
        want = json.loads(json.dumps(direct["results"], default=handle_non_serializable))
        assert got["results"] == want, (row.task, row.n_shot)  # same computation: equal to the last bit
        prov = got["oellm"]
        assert prov["row"]["row_id"] == row.row_id and prov["row"]["task"] == row.task
        assert prov["n_shot_used"] == row.n_shot == direct["n-shot"][row.task]
        assert prov["device"] == "cpu" and prov["lm_eval_version"] and prov["wall_s"] >= prov["lm_eval_s"] > 0
        assert state(run, row)["state"] == "done" and state(run, row)["attempt"] == 1
        n_docs = sum(got["n-samples"][t]["effective"] for t in got["n-samples"])
        samples = run.results.joinpath(f"{row.row_id}.samples.jsonl").read_text().splitlines()
        assert len(samples) == n_docs and "doc_id" in json.loads(samples[0])

    loads = {json.dumps(result(run, r)["oellm"]["model_load"], sort_keys=True) for r in rows}
    assert len(loads) == 1 and json.loads(loads.pop())["loads_in_process"] == 1
    assert out.count("loading pretrained=") == 1

    before = {p.name: p.stat().st_mtime_ns for p in run.results.iterdir()}
    code, out = run_worker(run)  # a resubmitted task: nothing left to do
    assert code == 0 and "4 row(s), 4 already done" in out and "loading" not in out
    assert {p.name: p.stat().st_mtime_ns for p in run.results.iterdir()} == before


@pytest.mark.e2e
def test_failing_rows_are_recorded_and_the_others_still_run(
        tmp_path: Path, tiny_model: Path, tiny_tasks: Path) -> None:
    ok = EvalRow(str(tiny_model), "tiny_mc_a", 0, limit=4)
    raises = EvalRow(str(tiny_model), "tiny_raises", 0, limit=4)
    empty = EvalRow(str(tiny_model), "tiny_no_metrics", 0, limit=4)
    after = EvalRow(str(tiny_model), "tiny_mc_b", 1, limit=4)
    gone = EvalRow(str(tmp_path / "no-such-model"), "tiny_mc_a", 0, limit=4)
    uncached = EvalRow("oellm-test/not-cached", "tiny_mc_a", 0, limit=4)
    rows = [gone, ok, raises, empty, after, uncached]
    run = make_run_dir(tmp_path, rows, include_paths=[tiny_tasks])
    t0 = time.perf_counter()
    code, out = run_worker(run)
    assert code == 1, out
    assert time.perf_counter() - t0 < 120

    for row in (ok, after):
        assert state(run, row)["state"] == "done" and "acc,none" in result(run, row)["results"][row.task]
    expect = {gone: ("missing_model", str(gone.model)), uncached: ("missing_model", "not in the local Hugging Face cache"),
              raises: ("exception", "tiny_raises: deliberate failure"), empty: ("no_metrics", "no metrics")}
    for row, (kind, words) in expect.items():
        st = state(run, row)
        assert (st["state"], st["error_kind"]) == ("failed", kind), st
        assert words in st["error"] and st["ended"] and st["wall_s"] is not None
        assert any(words in line for line in st["log_tail"]), st["log_tail"]
        assert not run.result_path(row.row_id).exists()
    assert "--download_only" in state(run, gone)["error"] and "--download_only" in state(run, uncached)["error"]
    assert "explode" in state(run, raises)["traceback"]
    assert leftovers(run) == []


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_worker_leaves_no_partial_result(
        tmp_path: Path, tiny_model: Path, tiny_tasks: Path, sig: signal.Signals) -> None:
    first = EvalRow(str(tiny_model), "tiny_mc_a", 0, limit=3)
    slow = EvalRow(str(tiny_model), "tiny_slow", 0, limit=3)
    never = EvalRow(str(tiny_model), "tiny_mc_b", 0, limit=3)
    run = make_run_dir(tmp_path, [first, slow, never], include_paths=[tiny_tasks])
    proc = start_worker(run, OELLM_TINY_SLOW_S="300")
    try:
        deadline = time.monotonic() + 120
        while not (run.state_path(slow.row_id).exists() and state(run, slow)["state"] == "running"):
            assert proc.poll() is None and time.monotonic() < deadline, "the slow row never started"
            time.sleep(0.2)
        time.sleep(1.0)  # inside lm-eval, building the task
        proc.send_signal(sig)
        t_kill = time.monotonic()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, out
    assert time.monotonic() - t_kill < 15, "the worker did not exit promptly"
    assert state(run, first)["state"] == "done"
    st = state(run, slow)
    assert (st["state"], st["error_kind"]) == ("interrupted", "interrupted") and sig.name in st["error"]
    assert not run.result_path(slow.row_id).exists() and not run.state_path(never.row_id).exists()
    assert leftovers(run) == []


@pytest.mark.e2e
def test_index_comes_from_slurm_and_the_offset(
        tmp_path: Path, tiny_tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [EvalRow(str(tmp_path / f"missing-{i}"), "tiny_mc_a", 0, task_index=i) for i in range(3)]
    run = make_run_dir(tmp_path, rows, include_paths=[tiny_tasks])
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    with pytest.raises(OellmError, match="SLURM_ARRAY_TASK_ID"):
        worker.run(run.path)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert worker.run(run.path, index_offset=1) == 1  # global index 2: one row, and its model is missing
    assert [p.stem for p in run.states.iterdir()] == [rows[2].row_id]
    st = state(run, rows[2])
    assert (st["array_task_id"], st["slurm_job_id"], st["error_kind"]) == (2, "4242", "missing_model")
    assert worker.run(run.path, index=0) == 1 and state(run, rows[0])["attempt"] == 1
    assert worker.run(run.path, index=0) == 1 and state(run, rows[0])["attempt"] == 2


@pytest.mark.fast
def test_a_task_requeued_more_than_max_requeues_marks_its_rows_failed(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [EvalRow("/nowhere/m", "t", 0), EvalRow("/nowhere/m", "t", 1)]
    run = make_run_dir(tmp_path, rows, cluster_config={"max_requeues": 2})
    done = rows[1].row_id
    run.result_path(done).write_text(A_RESULT)
    for key, value in {"SLURM_ARRAY_JOB_ID": "7", "SLURM_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "0",
                       "SLURM_RESTART_COUNT": "3"}.items():
        monkeypatch.setenv(key, value)
    assert worker.run(run.path) == 1  # no model is loaded: /nowhere/m would fail otherwise
    rec = state(run, rows[0])
    assert (rec["state"], rec["error_kind"], rec["slurm_restart_count"]) == ("failed", "requeue_limit", 3)
    assert "requeued 3 time(s) after node failure or preemption (max_requeues 2)" in rec["error"]
    assert not run.state_path(done).exists()  # a row already done is left alone
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")  # within the limit: the row runs (and fails on the model)
    assert worker.run(run.path) == 1 and state(run, rows[0])["error_kind"] == "missing_model"


@pytest.mark.fast
def test_auto_batch_size_is_probed_once_per_task_shape_not_per_row():
    """lm-eval forgets its `auto` batch size after each row and probes GPU memory again; the worker's model
    remembers it for sequences no longer than one already probed. (The probe is faked: no GPU here.)"""
    from oellm.suites.lm_eval import remember_batch_sizes

    class FakeLM:
        max_length = 100

        def __init__(self):
            self.probes = []

        def _detect_batch_size(self, requests=None, pos=0):
            self.probes.append(len(requests[pos][1]) if requests else None)
            return 64 // len(self.probes)

    lm = FakeLM()
    remember_batch_sizes(lm)
    long_row, short_row, longer_row = [("", [1] * 30, [2] * 5)], [("", [1] * 10, [2] * 2)], [("", [1] * 50, [2])]
    assert lm._detect_batch_size(long_row) == 64
    assert lm._detect_batch_size(long_row) == 64 and lm._detect_batch_size(short_row) == 64  # no new probe
    assert lm._detect_batch_size(longer_row) == 32 and lm.probes == [30, 50]


@pytest.mark.e2e
def test_a_worker_started_online_goes_offline_by_itself(hub, tmp_path: Path) -> None:
    """The audit's blind spot: every test subprocess inherits the session's HF_HUB_OFFLINE, so nothing showed
    that the worker sets the offline flags itself. Here it starts with them unset and the Hub up: 0 requests."""
    from oellm.cache.precache import precache
    from oellm.clusters import load_clusters
    from tests.fixtures_hub import OFFLINE_FLAGS, write_hub_task

    tasks = write_hub_task(tmp_path / "tasks", "hub_mc", "org/tinyds")
    rows = [EvalRow("org/tiny", "hub_mc", 0, limit=2)]
    revisions = precache(rows, load_clusters()["local"], [str(tasks)], log=lambda s: None)
    run = make_run_dir(tmp_path, rows, include_paths=[str(tasks)], model_revisions=revisions)
    assert not any(os.environ.get(f) for f in OFFLINE_FLAGS) and os.environ["HF_ENDPOINT"] == hub.url
    hub.server.reset_counts()
    w = subprocess.run([sys.executable, "-m", "oellm", "worker", "--run_dir", str(run.path), "--index", "0"],
                       capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=600)
    assert w.returncode == 0, w.stderr[-3000:]
    assert hub.count() == 0, f"the worker asked the Hub {hub.count()} time(s)"


@pytest.mark.e2e
def test_a_resubmitted_task_splits_the_rows_left_over_every_booked_gpu(
        tmp_path: Path, tiny_model: Path, tiny_tasks: Path) -> None:
    """REVIEW finding 15 (R15): one task of 4 rows whose rows 0 and 2 are done, on 2 GPUs (faked on CPU): each
    worker evaluates one of the 2 rows left, not one worker both while the other GPU idles."""
    rows = [EvalRow(str(tiny_model), t, s, limit=4) for t in ("tiny_mc_a", "tiny_mc_b") for s in (0, 1)]
    run = make_run_dir(tmp_path, rows, include_paths=[tiny_tasks])
    run.results.mkdir(parents=True, exist_ok=True)
    for done in (rows[0], rows[2]):
        run.result_path(done.row_id).write_text(A_RESULT)
    proc = start_worker(run, CUDA_VISIBLE_DEVICES="0,1")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "4 row(s), 2 already done" in out and "2 workers, one per GPU" in out
    assert out.count("1 row(s), 0 already done") == 2, out
    pids = {result(run, r)["oellm"]["model_load"]["pid"] for r in (rows[1], rows[3])}
    assert len(pids) == 2, "both rows left ran in one worker"
    assert result(run, rows[0]) == json.loads(A_RESULT)  # done rows are not redone
