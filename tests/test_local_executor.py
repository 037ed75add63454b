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
