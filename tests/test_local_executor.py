"""The local executor as a user runs it: parallel workers, Ctrl-C, re-running the same command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def schedule(tmp_path: Path, tiny_tasks: Path, models: str, tasks: str, *extra: str, **popen) -> subprocess.Popen:
    argv = [sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models", models, "--tasks", tasks,
            "--n_shot", "0", "--limit", "4", "--lm_eval_include_path", str(tiny_tasks),
            "--output_dir", str(tmp_path / "runs"), *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def states(run: Path) -> dict[str, str]:
    return {p.stem: json.loads(p.read_text())["state"]
            for p in (run / "state").glob("*.json")}


def test_two_workers_then_rerun_skips_done_rows(tmp_path, tiny_model, tiny_tasks):
    other = tmp_path / "model-copy"
    shutil.copytree(tiny_model, other)
    p = schedule(tmp_path, tiny_tasks, f"{tiny_model},{other}", "tiny_mc_a,tiny_mc_b", "--workers", "2")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "with 2 worker(s)" in out and "finished: 4 of 4 row(s) done" in out
    assert "tiny_mc_a" in out and "acc_norm" in out  # the score table
    (run,) = (tmp_path / "runs").iterdir()
    assert len(list((run / "results").glob("*.json"))) == 4
    again = schedule(tmp_path, tiny_tasks, f"{tiny_model},{other}", "tiny_mc_a,tiny_mc_b")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0 and "nothing to do: all 4 row(s) already have results" in out, err
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_ctrl_c_stops_workers_and_keeps_finished_results(tmp_path, tiny_model, tiny_tasks):
    env = {**os.environ, "OELLM_TINY_SLOW_S": "300"}
    p = schedule(tmp_path, tiny_tasks, str(tiny_model), "tiny_mc_a,tiny_slow", env=env)
    deadline = time.monotonic() + 180
    run = None
    while time.monotonic() < deadline:
        runs = [r for r in (tmp_path / "runs").glob("2*")] if (tmp_path / "runs").exists() else []
        if runs and any(s == "running" for s in states(runs[0]).values()) and list((runs[0] / "results").glob("*.json")):
            run = runs[0]
            break
        time.sleep(0.5)
    assert run is not None, "the first row never finished"
    p.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "interrupted: 1 of 2 row(s) done" in err, (out, err)
    assert sorted(states(run).values()) == ["done", "interrupted"]
    assert len(list((run / "results").glob("*.json"))) == 1 and not list((run / "results").glob(".*tmp"))
    leftover = subprocess.run(["pgrep", "-f", f"oellm worker --run_dir {run}"], capture_output=True, text=True)
    assert leftover.stdout == "", "worker processes left running"


def test_a_task_with_several_gpus_runs_one_worker_per_gpu(tmp_path, tiny_model, tiny_tasks):
    """W4: an array task that books N GPUs (the node sets CUDA_VISIBLE_DEVICES=0,1: faked here on CPU) runs N
    workers, each on one GPU with its share of the rows and its own model load; `spread` keeps one process."""
    from oellm.rows import EvalRow
    from tests.fixtures_models import make_run_dir

    rows = [EvalRow(str(tiny_model), t, s, limit=4) for t in ("tiny_mc_a", "tiny_mc_b") for s in (0, 1)]
    for parallelize, workers in ((False, 2), (True, 1)):
        run = make_run_dir(tmp_path / str(parallelize), rows, include_paths=[tiny_tasks], parallelize=parallelize)
        p = subprocess.run([sys.executable, "-m", "oellm", "worker", "--run_dir", str(run.path), "--index", "0"],
                           env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, p.stderr
        pids: dict[int, int] = {}
        for r in rows:
            doc = json.loads(run.result_path(r.row_id).read_text())["oellm"]
            pids[doc["model_load"]["pid"]] = pids.get(doc["model_load"]["pid"], 0) + 1
        assert sorted(pids.values()) == ([2, 2] if workers == 2 else [4]), pids
        assert p.stderr.count("loading pretrained=") == workers
        assert ("2 workers, one per GPU (CUDA_VISIBLE_DEVICES=0,1)" in p.stderr) == (workers == 2)


def test_the_gpu_mode_is_planned_recorded_and_estimated_honestly(tmp_path, tiny_model, tiny_tasks):
    """W4: `--gpus_per_task 4` on a whole-node site books 4 GPUs in every mode; the estimate and the time limit
    follow what the GPUs do (4 workers: a quarter of the rows each; spread: all rows in one process)."""
    def plan(*extra: str) -> tuple[str, dict]:
        out = tmp_path / f"runs{len(extra)}"
        r = subprocess.run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "jureca", "--models",
                            str(tiny_model), "--tasks", "tiny_mc_a,tiny_mc_b,tiny_group,tiny_raises", "--n_shot", "0,1",
                            "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(out), "--dry_run", *extra],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        (run,) = out.iterdir()
        return r.stdout, json.loads((run / "run.json").read_text())

    text, manifest = plan()  # jureca ships 4 GPUs per task, workers
    assert (manifest["gpu_mode"], manifest["parallelize"], manifest["time_limit"]) == ("workers", False, "00:35:00")
    assert "estimate:  1.3 GPU-hours booked at 10 min per evaluation (4 GPUs per task: one worker per GPU" in text
    text, manifest = plan("--gpu_mode", "spread")
    assert (manifest["gpu_mode"], manifest["parallelize"], manifest["time_limit"]) == ("spread", True, "02:05:00")
    assert "estimate:  5.3 GPU-hours booked" in text and "one model spread over them" in text
    assert "#SBATCH --gres=gpu:4" in next((tmp_path / "runs2").iterdir()).joinpath("submit_evals.sbatch").read_text()
