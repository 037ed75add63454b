"""Runs that survive failures, on the real local cluster: a node that fails mid-row (SLURM requeues the
task, the worker finishes only what is missing), a controller restarted mid-run, and the same
schedule-eval command run twice while the first run is still in the queue."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from oellm import slurm
from oellm.rundir import RunDir, read_jobs
from tests.fixtures_slurm import start_controller, stop_controller, wait_for_jobs
from tests.test_lifecycle import oellm, status_json, the_run, wait_until
from tests.test_schedule_slurm import clusters_file

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("no_job_left_behind")]


def schedule(tmp_path: Path, cfile: Path, model: Path, tasks: Path, task_names: str, **env: str):
    return oellm("schedule-eval", "--cluster", "testslurm", "--clusters_file", str(cfile), "--models", str(model),
                 "--tasks", task_names, "--limit", "4", "--evals_per_task", "2", "--lm_eval_include_path",
                 str(tasks), "--output_dir", str(tmp_path / "runs"), env=env, timeout=180)


def record(run: RunDir, row_id: str) -> dict:
    try:
        return json.loads(run.state_path(row_id).read_text())
    except FileNotFoundError:
        return {}


def node_of(element: str) -> str:
    return slurm.run(["squeue", "-h", "-j", element, "-o", "%N"]).strip()


@pytest.mark.e2e
@pytest.mark.parametrize("max_requeues", [2, 0])
def test_a_node_failure_mid_row_is_retried_and_nothing_is_done_twice(slurm_cluster, tiny_model, tiny_tasks,
                                                                      tmp_path, max_requeues):
    stop = tmp_path / "slow-row-may-finish"
    cfile = clusters_file(tmp_path, slurm_cluster.partition, container=None, max_requeues=max_requeues)
    r = schedule(tmp_path, cfile, tiny_model, tiny_tasks, "tiny_mc_a,tiny_slow", OELLM_TINY_SLOW_S="600",
                 OELLM_TINY_SLOW_STOP=str(stop))
    assert r.returncode == 0, r.stderr
    run = the_run(tmp_path / "runs")
    fast_row, slow_row = (row.row_id for row in read_jobs(run.jobs))
    (job,) = [s["job_id"] for s in run.read_manifest()["submissions"]]
    wait_until(lambda: record(run, slow_row).get("state") == "running", 150, "the slow row starts")
    node = node_of(f"{job}_0")
    try:
        slurm.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=oellm-test"])
        if max_requeues:  # SLURM requeues the task; status says so while it waits or runs again
            doc = wait_until(lambda: (d := status_json(run))["requeued"] and d, 60, "status shows the requeue")
            assert doc["requeued"][0]["row_id"] == slow_row and "requeued by SLURM 1 time(s)" in \
                doc["requeued"][0]["reason"] and doc["counts"]["done"] == 1, doc
            wait_until(lambda: record(run, slow_row).get("slurm_restart_count") == 1, 90, "the requeued task runs")
            stop.touch()
            wait_for_jobs([job], timeout=120)
        else:  # no requeue: NODE_FAIL is final, and `resubmit --infra_only` retries exactly that task
            wait_for_jobs([job], timeout=60)
            doc = wait_until(lambda: (d := status_json(run))["counts"]["failed"] == 1 and d, 30, "sacct settles")
            (p,) = doc["problems"]
            assert (p["row_id"], p["infra"]) == (slow_row, True) and p["reason"].startswith("SLURM NODE_FAIL"), p
            r = oellm("resubmit", "--run_dir", str(run.path), "--infra_only", env={"OELLM_TINY_SLOW_S": "0"})
            assert r.returncode == 0 and "resubmitting 1 of 1 array task(s)" in r.stdout, r.stdout + r.stderr
            wait_for_jobs([run.read_manifest()["submissions"][-1]["job_id"]], timeout=120)
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)
    doc = wait_until(lambda: (d := status_json(run))["counts"]["done"] == 2 and d, 30, "all rows done")
    assert doc["problems"] == [] and doc["requeued"] == []
    assert sorted(p.stem for p in run.results.glob("*.json")) == sorted([fast_row, slow_row])
    assert record(run, fast_row)["attempt"] == 1  # done before the failure: not redone
    slow = record(run, slow_row)
    assert (slow["state"], slow["attempt"], slow["slurm_restart_count"]) == ("done", 2, 1 if max_requeues else 0)
    if max_requeues:
        log = (run.logs / f"{job}_0.err").read_text()  # --open-mode=append: both attempts in one log
        assert "DUE TO NODE FAILURE" in log and log.count("array task 0: 2 row(s)") == 2 and "1 already done" in log
        assert json.loads(run.result_path(slow_row).read_text())["oellm"]["slurm_restart_count"] == 1


@pytest.mark.e2e
def test_a_controller_restart_mid_run_loses_no_row(slurm_cluster, tiny_model, tiny_tasks, tmp_path):
    stop = tmp_path / "slow-rows-may-finish"
    cfile = clusters_file(tmp_path, slurm_cluster.partition, container=None, max_running=4)
    r = oellm("schedule-eval", "--cluster", "testslurm", "--clusters_file", str(cfile), "--models", str(tiny_model),
              "--tasks", "tiny_slow", "--n_shot", "0,1", "--limit", "4", "--evals_per_task", "1",
              "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / "runs"),
              env={"OELLM_TINY_SLOW_S": "600", "OELLM_TINY_SLOW_STOP": str(stop)}, timeout=180)
    assert r.returncode == 0, r.stderr
    run = the_run(tmp_path / "runs")
    rows = [row.row_id for row in read_jobs(run.jobs)]
    (job,) = [s["job_id"] for s in run.read_manifest()["submissions"]]
    wait_until(lambda: all(record(run, r).get("state") == "running" for r in rows), 150, "both tasks run")
    wait_until(lambda: status_json(run)["slurm_calls"] == 1, 30, "accounting shows both tasks")
    stop_controller(slurm_cluster)
    try:
        doc = status_json(run)  # sacct asks slurmdbd, which is still up; squeue would fail
        assert (doc["slurm"], doc["slurm_calls"], doc["counts"]["running"]) == ("ok", 1, 2), doc
        stop.touch()  # the rows finish while no controller listens
        wait_until(lambda: len(list(run.results.glob("*.json"))) == 2, 120, "both rows finish")
    finally:
        start_controller(slurm_cluster)
    wait_for_jobs([job], timeout=120)
    doc = wait_until(lambda: (d := status_json(run))["counts"]["done"] == 2 and d, 30, "accounting catches up")
    assert doc["problems"] == [] and sorted(p.stem for p in run.results.glob("*.json")) == sorted(rows)
    assert all(record(run, r)["attempt"] == 1 for r in rows)  # nothing ran twice


def test_the_same_command_twice_submits_nothing_twice(slurm_cluster, tiny_model, tiny_tasks, tmp_path):
    cfile = clusters_file(tmp_path, slurm_cluster.partition, container=None, sbatch_options={"begin": "now+1hour"})
    first = schedule(tmp_path, cfile, tiny_model, tiny_tasks, "tiny_mc_a,tiny_mc_b")  # stays pending: no CPU
    assert first.returncode == 0, first.stderr
    run = the_run(tmp_path / "runs")
    ids = [s["job_id"] for s in run.read_manifest()["submissions"]]
    try:
        again = schedule(tmp_path, cfile, tiny_model, tiny_tasks, "tiny_mc_a,tiny_mc_b")
        assert again.returncode == 0, again.stderr
        assert "skipping 2 row(s) queued or running in earlier run(s): " + str(run.path) in again.stdout
        assert "nothing to do: all 2 row(s)" in again.stdout and len(list((tmp_path / "runs").iterdir())) == 1
        more = schedule(tmp_path, cfile, tiny_model, tiny_tasks, "tiny_mc_a,tiny_mc_b,tiny_group")
        assert more.returncode == 0 and "skipping 2 row(s) queued or running" in more.stdout, more.stdout
        (new,) = [p for p in (tmp_path / "runs").iterdir() if p != run.path]
        ids += [s["job_id"] for s in RunDir(new).read_manifest()["submissions"]]
        assert [row.task for row in read_jobs(RunDir(new).jobs)] == ["tiny_group"]  # only the new row
        slurm.cancel(ids)
        forced = schedule(tmp_path, cfile, tiny_model, tiny_tasks, "tiny_mc_a")  # nothing in flight any more
        assert forced.returncode == 0 and "queued or running" not in forced.stdout, forced.stdout
        ids += [s["job_id"] for p in (tmp_path / "runs").iterdir()
                for s in RunDir(p).read_manifest()["submissions"]]
    finally:
        slurm.cancel(ids)
