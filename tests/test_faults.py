"""Faults injected into real runs (the local SLURM cluster, the local executor, the worker): what a site does
to a run (a full disk, a corrupt file, two people resubmitting at once) must lose no finished row and run no
row twice. docs/sites.md has the table of every fault tried, with the tests elsewhere that cover the others
(a node killed mid-row, sbatch timing out after accepting, a killed pre-cache, a controller restart)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.rows import EvalRow
from oellm.rundir import RunDir, read_jobs
from tests.conftest import missing_part
from tests.fixtures_models import build_tiny_tasks, make_run_dir
from tests.fixtures_slurm import wait_for_jobs
from tests.test_schedule_slurm import clusters_file, oellm, the_run

REPO = Path(__file__).resolve().parents[1]


def worker(run: RunDir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oellm", "worker", "--run_dir", str(run.path), "--index", "0"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def leftovers(run: RunDir) -> list[str]:
    return [p.name for d in (run.results, run.states) for p in d.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs: a disk that fills up (mounting needs root, as the slurm tier does)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        missing_part(f"a small tmpfs to fill (mount: {r.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` until `leave` bytes are free."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.e2e
def test_a_disk_full_while_writing_results_leaves_nothing_counted_done(small_disk, tiny_model, tiny_tasks):
    """The result (and its samples) cannot be written: the row is failed with the reason, no half file counts
    as done, and once there is room the same task finishes it."""
    rows = [EvalRow(str(tiny_model), "tiny_mc_a", 0, limit=24), EvalRow(str(tiny_model), "tiny_mc_b", 0, limit=24)]
    run = make_run_dir(small_disk, rows, include_paths=[tiny_tasks], log_samples=True)
    filler = fill(small_disk, 24 * 1024)  # room for the state records, not for the samples of a row
    w = worker(run)
    assert w.returncode != 0
    states = {r.row_id: json.loads(run.state_path(r.row_id).read_text()) for r in rows}
    assert {s["state"] for s in states.values()} == {"failed"}
    assert all("No space left on device" in s["error"] for s in states.values()), states
    assert run.done_ids() == set() and list(run.results.glob("*.json")) == [] and leftovers(run) == []
    filler.unlink()
    w = worker(run)
    assert w.returncode == 0, w.stderr[-2000:]
    assert run.done_ids() == {r.row_id for r in rows} and leftovers(run) == []
    assert [json.loads(run.state_path(r.row_id).read_text())["attempt"] for r in rows] == [2, 2]


@pytest.mark.e2e
def test_a_corrupt_result_is_evaluated_again_and_only_it(tmp_path, tiny_model, tiny_tasks):
    """A result cut short (a copy interrupted, a disk error) is not done: the same command redoes that row
    and leaves the others' files alone."""
    args = [sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models", str(tiny_model),
            "--tasks", "tiny_mc_a,tiny_mc_b", "--n_shot", "0", "--limit", "4", "--lm_eval_include_path",
            str(tiny_tasks), "--output_dir", str(tmp_path / "runs")]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    run = RunDir(the_run(tmp_path / "runs"))
    bad, good = sorted(run.results.glob("*.json"))
    bad.write_text(bad.read_text()[:500])
    kept = good.stat().st_mtime_ns
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "finished: 1 of 1 row(s) done" in again.stdout, again.stdout
    runs = sorted((tmp_path / "runs").glob("2*"))
    assert len(runs) == 2 and json.loads((runs[1] / "results" / bad.name).read_text())["results"]
    assert good.stat().st_mtime_ns == kept and not (runs[1] / "results" / good.name).exists()


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.usefixtures("no_job_left_behind")
def test_two_resubmits_racing_submit_each_task_once(slurm_cluster, tiny_model, tmp_path):
    """Cron's `resubmit --infra_only` and a person's `resubmit` at the same moment: the run lock makes them
    take turns, the second sees the task queued and leaves it; every row is done once."""
    tasks = build_tiny_tasks(tmp_path / "tasks")
    cfile = clusters_file(tmp_path, slurm_cluster.partition, container=None)
    r = oellm("schedule-eval", "--cluster", "testslurm", "--clusters_file", str(cfile), "--models", str(tiny_model),
              "--tasks", "tiny_mc_a,tiny_raises", "--limit", "4", "--evals_per_task", "1", "--lm_eval_include_path",
              str(tasks), "--output_dir", str(tmp_path / "runs"), "--no_preflight")
    assert r.returncode == 0, r.stderr
    run = RunDir(the_run(tmp_path / "runs"))
    first = [s["job_id"] for s in run.read_manifest()["submissions"]]
    wait_for_jobs(first, timeout=240)
    (tasks / "utils.py").write_text((tasks / "utils.py").read_text().replace(
        'raise ValueError("tiny_raises: deliberate failure")', "return dataset"))
    cmd = [sys.executable, "-m", "oellm", "resubmit", str(run.path)]
    racers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ}) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in racers]
    assert [p.returncode for p in racers] == [0, 0], outs
    subs = run.read_manifest()["submissions"]
    assert len(subs) == len(first) + 1, subs  # one resubmission of the failed task, not two
    assert sum("nothing to resubmit" in out for out, _ in outs) == 1, outs
    wait_for_jobs([s["job_id"] for s in subs], timeout=240)
    attempts = [json.loads(run.state_path(r.row_id).read_text())["attempt"] for r in read_jobs(run.jobs)]
    assert run.done_ids() == {r.row_id for r in read_jobs(run.jobs)} and sorted(attempts) == [1, 2]
