"""`oellm bench`: workloads planned as rows of the `bench` suite, measured by the worker, collected beside
scores. The measuring itself is tested in tests/test_bench_measure.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.bench.task import Workload
from oellm.errors import OellmError
from oellm.plan.bench import Bench
from oellm.rundir import read_jobs
from tests.fixtures_slurm import wait_for_jobs


def oellm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oellm", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


@pytest.mark.fast
def test_workloads_are_rows_of_the_bench_suite(tmp_path: Path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    rows, _ = Bench(models=f"{model},dtype=float32", batch_size="1,8", input_tokens="16,32", output_tokens=4,
                    dtype="bfloat16").plan([])
    assert len(rows) == 4 and {r.suite for r in rows} == {"bench"}
    assert {Workload.parse(r.task).batch_size for r in rows} == {1, 8}
    assert {r.model_args for r in rows} == {"dtype=float32"}  # the model's own dtype wins
    lm_eval_twin = rows[0].__class__(model=rows[0].model, model_args=rows[0].model_args, task=rows[0].task, n_shot=0)
    assert lm_eval_twin.row_id != rows[0].row_id  # the suite is part of the identity
    w = Workload(batch_size=8, input_tokens=16, output_tokens=4)
    assert Workload.parse(w.task) == w


@pytest.mark.fast
@pytest.mark.parametrize(("args", "message"), [
    (["--output_tokens", "0"], "bench output_tokens: must be an integer >= 1, got 0"),
    (["--batch_size", "0"], "bench batch_size: must be an integer >= 1, got 0"),
    (["--batch_size", "x"], "--batch_size: 'x' is not a positive integer"),
    (["--backend", "tgi"], "bench backend 'tgi': use one of hf, vllm"),
    (["--data", "hellaswag"], "bench data 'hellaswag': only `random`"),
])
def test_bad_bench_options_are_one_line(args, message, tiny_model, tmp_path):
    r = oellm("bench", "--cluster", "local", "--models", str(tiny_model), "--output_dir", str(tmp_path / "runs"),
              "--dry_run", *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@pytest.mark.fast
def test_a_pace_config_file_plans_its_workload(tiny_model, tmp_path):
    pace = tmp_path / "pace.json"
    pace.write_text(json.dumps({"model_args": {"dtype": "float32"}, "generation_args": {"max_new_tokens": 7},
                                "warmup_runs": 0, "num_runs": 3}))
    r = oellm("bench", "--config", str(pace), "--cluster", "local", "--models", str(tiny_model),
              "--output_dir", str(tmp_path / "runs"), "--dry_run")
    assert r.returncode == 0, r.stderr
    [row] = read_jobs(next((tmp_path / "runs").iterdir()) / "jobs.csv")
    work = Workload.parse(row.task)
    assert (work.output_tokens, work.num_runs, work.warmup_runs, row.model_args) == (7, 3, 0, "dtype=float32")
    assert row.suite == "bench"  # kept through packing into jobs.csv
    unknown = tmp_path / "bad.json"
    unknown.write_text(json.dumps({"generation_args": {"top_k": 3}}))
    bad = oellm("bench", "--config", str(unknown), "--cluster", "local", "--models", str(tiny_model), "--dry_run")
    assert bad.returncode == 2 and "generation_args: unknown key(s) top_k" in bad.stderr
    with pytest.raises(OellmError, match="nothing to measure"):
        Bench().plan([])


@pytest.mark.e2e
def test_bench_runs_locally_and_lands_beside_scores(tiny_model, tiny_tasks, tmp_path):
    runs = tmp_path / "runs"
    r = oellm("bench", "--cluster", "local", "--models", str(tiny_model), "--batch_size", "1,2", "--input_tokens",
              "8", "--output_tokens", "4", "--num_runs", "2", "--warmup_runs", "1", "--output_dir", str(runs))
    assert r.returncode == 0, r.stderr
    ev = oellm("schedule-eval", "--cluster", "local", "--models", str(tiny_model), "--tasks", "tiny_mc_a",
               "--limit", "4", "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(runs))
    assert ev.returncode == 0, ev.stderr
    results = [json.loads(p.read_text()) for p in runs.glob("*/results/*.json")]
    bench = [res["bench"] for res in results if "bench" in res]
    assert sorted(b["batch_size"] for b in bench) == [1, 2]
    for b in bench:
        assert b["ttft_s"] < b["latency_s"] and b["output_tokens"] == 4
        assert b["energy_j"] is None and b["energy_per_token_j"] is None and b["energy_missing_reason"]
    out = tmp_path / "all.csv"
    col = oellm("collect-results", ",".join(str(p) for p in runs.iterdir()), "--output_csv", str(out))
    assert col.returncode == 0, col.stderr
    assert "output_tokens_per_s" in col.stdout and "mean_score" in col.stdout and "tiny_mc_a" in col.stdout
    import pandas as pd

    df = pd.read_csv(out)
    tput = df[(df["suite"] == "bench") & (df["metric"] == "output_tokens_per_s")]
    assert sorted(tput["batch_size"]) == [1, 2] and set(tput["backend"]) == {"hf"}
    assert not ((df["suite"] == "bench") & df["metric"].str.startswith("energy")).any()  # missing, not 0


@pytest.mark.slurm
@pytest.mark.e2e
def test_bench_rows_run_as_a_slurm_array(slurm_cluster, container_shim, tiny_model, tmp_path, no_job_left_behind):
    from tests.test_schedule_slurm import clusters_file

    r = oellm("bench", "--cluster", "testslurm", "--clusters_file", str(clusters_file(tmp_path, "debug")),
              "--models", str(tiny_model), "--batch_size", "1,2", "--input_tokens", "8", "--output_tokens", "3",
              "--num_runs", "1", "--warmup_runs", "0", "--output_dir", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    [run] = list((tmp_path / "runs").iterdir())
    jobs = [s["job_id"] for s in json.loads((run / "run.json").read_text())["submissions"]]
    assert set(wait_for_jobs(jobs, timeout=240).values()) == {"COMPLETED"}
    results = [json.loads(p.read_text()) for p in (run / "results").glob("*.json")]
    assert sorted(res["bench"]["batch_size"] for res in results) == [1, 2]
    status = oellm("status", str(run), "--json")
    assert json.loads(status.stdout)["counts"]["done"] == 2, status.stdout
