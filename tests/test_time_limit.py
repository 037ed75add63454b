"""One time limit per array task (REVIEW finding 10 and Part 2 D3): decided once (oellm.plan.timelimit), it is
what packing fits rows to, the script's `#SBATCH --time`, every sbatch call, the summary, run.json, `status`
and `resubmit`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from oellm import slurm
from oellm.clusters import build_cluster
from oellm.plan.packing import RunPlan
from oellm.plan.timelimit import TimeLimit, for_request
from oellm.rows import EvalRow

TASKS = "tiny_mc_a,tiny_mc_b,tiny_group"  # three rows of one model at one n_shot


def clusters_file(tmp_path: Path, partition: str = "debug", **over) -> Path:
    entry = {"partition": partition, "account": None, "gpus_per_task": 0, "cpus_per_task": 1, "mem": "400M",
             "minutes_per_eval": 10, "max_time": "10:00:00", "container": None, **over}
    path = tmp_path / "clusters.json"
    path.write_text(json.dumps({"testslurm": entry}))
    return path


def oellm(*args: str, env: dict | None = None, entry: str = "main") -> subprocess.CompletedProcess:
    code = f"import sys; from oellm.cli import {entry}; {entry}(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def stand_in_slurm(tmp_path: Path) -> tuple[dict, Path]:
    """sbatch that logs its argv (one JSON list a line) and answers a job id; an empty queue and accounting."""
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch.log"
    bin_dir.mkdir()
    tools = {
        "sbatch": f'{sys.executable} -c "import json, sys; print(json.dumps(sys.argv[1:]))" "$@" >> {log}\n'
                  'echo $((1000 + $(wc -l < ' + str(log) + ')))',
        "squeue": "true", "sacct": "true", "scancel": "true",
        "scontrol": "echo 'MaxArraySize            = 1001'",
    }
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, log


def the_run(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run


def rows_per_task(run: Path) -> Counter:
    with open(run / "jobs.csv", newline="") as fh:
        return Counter(int(r["task_index"]) for r in csv.DictReader(fh))


@pytest.mark.fast
def test_an_sbatch_option_time_is_every_tasks_limit_in_script_sbatch_and_summary(tmp_path, tiny_model, tiny_tasks):
    """Finding 10: three rows, 2 per task, --sbatch_option time=04:00:00. Before, task 1 (one row) was submitted
    with `--time=00:20:00`, which wins over the script's line, and the summary said 00:35:00."""
    env, log = stand_in_slurm(tmp_path)
    r = oellm("schedule-eval", "--cluster", "testslurm", "--clusters_file", str(clusters_file(tmp_path)),
              "--models", str(tiny_model), "--tasks", TASKS, "--n_shot", "0", "--evals_per_task", "2",
              "--sbatch_option", "time=04:00:00", "--lm_eval_include_path", str(tiny_tasks), "--no_precache",
              "--output_dir", str(tmp_path / "runs"), env=env)
    assert r.returncode == 0, r.stderr
    run = the_run(tmp_path / "runs")
    assert rows_per_task(run) == {0: 2, 1: 1}
    script = (run / "submit_evals.sbatch").read_text().splitlines()
    assert [line for line in script if "--time" in line] == ["#SBATCH --time=04:00:00"]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls and all(not a.startswith("--time") or a == "--time=04:00:00" for call in calls for a in call), calls
    assert [a for c in calls for a in c if a.startswith("--array=")] == ["--array=0-1%2"]  # both tasks, one call
    assert "time:      04:00:00 limit per array task (--sbatch_option time)" in r.stdout, r.stdout
    manifest = json.loads((run / "run.json").read_text())
    assert (manifest["time_limit"], manifest["time_limit_from"]) == ("04:00:00", "--sbatch_option time")

    from oellm.runs.report import last_minutes

    assert last_minutes(manifest) == {0: 240, 1: 240}  # what resubmit doubles after a timeout
    status = oellm("status", "--run_dir", str(run), "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["time_limit"] == "04:00:00 per array task (--sbatch_option time)"


@pytest.mark.fast
@pytest.mark.parametrize("entry, flags, source", [
    ("main_eval", ["--slurm_template_var", '{"TIME": "01:00:00"}'], "--slurm_template_var TIME"),
    ("main", ["--time_limit", "01:00:00"], "--time_limit"),
])
def test_a_one_hour_limit_packs_only_what_fits_an_hour(tmp_path, tiny_model, tiny_tasks, entry, flags, source):
    """D3: twelve rows of one model, 10 min each. Before, max_time/2 packed all 12 (about 3 h estimated) in one
    1 h task; now 3 per task (1.5 x 30 min + a model load = 50 min) -> 4 tasks."""
    command = "schedule" if entry == "main_eval" else "schedule-eval"
    r = oellm(command, "--cluster", "testslurm", "--clusters_file", str(clusters_file(tmp_path)), "--models",
              str(tiny_model), "--tasks", TASKS, "--n_shot", "0,1,2,3", "--lm_eval_include_path", str(tiny_tasks),
              "--output_dir", str(tmp_path / "runs"), "--dry_run", "--no_precache", *flags, entry=entry)
    assert r.returncode == 0, r.stderr
    run = the_run(tmp_path / "runs")
    assert sorted(rows_per_task(run).values()) == [3, 3, 3, 3]
    manifest = json.loads((run / "run.json").read_text())
    assert (manifest["n_tasks"], manifest["time_limit"], manifest["time_limit_from"]) == (4, "01:00:00", source)
    assert "#SBATCH --time=01:00:00" in (run / "submit_evals.sbatch").read_text()
    assert f"01:00:00 limit per array task ({source})" in r.stdout and "-> 4 array task(s)" in r.stdout, r.stdout
    assert "estimate:  2.0 CPU-hours booked" in r.stdout and "note:" not in r.stdout, r.stdout


@pytest.mark.fast
def test_the_limit_is_decided_once_in_the_issues_order():
    """--time_limit, then --sbatch_option time, then oellm-eval's TIME, then the site's sbatch_options.time,
    else estimated; more than max_time is refused with the flag named."""
    from oellm.errors import OellmError
    from oellm.plan.overrides import with_overrides

    site = build_cluster("c", {"max_time": "10:00:00", "sbatch_options": {"time": "03:00:00"}}, "test")

    def decided(**kw) -> tuple[int | None, str]:
        from oellm.cli.upstream_flags import UpstreamRequest  # the command line's edge: oellm-eval's TIME too

        req = UpstreamRequest(models="m", tasks="t", **kw).to_request()
        limit = for_request(req, with_overrides(site, req))
        return limit.minutes, limit.source

    time, opt = '{"TIME": "01:00:00"}', ["t=02:00:00"]  # sbatch's short spelling too
    assert decided(time_limit="00:30:00", sbatch_option=opt, slurm_template_var=time) == (30, "--time_limit")
    assert decided(sbatch_option=opt, slurm_template_var=time) == (120, "--sbatch_option time")
    assert decided(slurm_template_var=time) == (60, "--slurm_template_var TIME")
    assert decided() == (180, "cluster c sbatch_options.time")
    with pytest.raises(OellmError, match="--sbatch_option time 12:00:00 exceeds cluster c's max_time 10:00:00"):
        decided(sbatch_option=["time=12:00:00"])


@pytest.mark.fast
def test_rows_that_cannot_fit_the_limit_are_named_and_still_planned():
    cluster = build_cluster("c", {"max_time": "10:00:00", "minutes_per_eval": 10}, "test")
    rows = [EvalRow("m", f"t{i}", 0) for i in range(4)]
    plan = RunPlan.build(rows, cluster, None, None, 0, limit=TimeLimit(15, "--time_limit"))
    assert plan.n_tasks == 4 and plan.minutes == 15 and all(c.minutes is None for c in plan.submission.chunks)
    (note,) = plan.notes
    assert "one row alone is estimated at 00:20:00" in note and "above the 00:15:00 limit from --time_limit" in note
    assert "4 array task(s), e.g. m t0" in note
    plan = RunPlan.build(rows, cluster, 4, None, 0, limit=TimeLimit(60, "--time_limit"))
    assert plan.n_tasks == 1 and plan.notes == (
        "note: --evals_per_task 4 puts 4 rows in an array task, estimated at 01:05:00, above the 01:00:00 limit from "
        "--time_limit; 3 row(s) fit it (leave --evals_per_task out to pack that many); 1 task(s) may time out",)


@pytest.mark.fast
def test_the_scripts_limit_is_run_json_s_and_resubmit_gives_one_time_flag():
    from oellm.runs.report import last_minutes
    from oellm.runs.resubmit import Resubmit, _override_flags

    site = {"cluster_config": {"sbatch_options": {"time": "1-00:00:00"}}}
    decided = {**site, "time_limit": "01:00:00", "time_limit_from": "--time_limit",
               "submissions": [{"job_id": "5", "offset": 0, "size": 2}]}
    assert last_minutes(decided) == {0: 60, 1: 60}  # --time_limit won over the site's time: the script has 1 h
    older = {k: v for k, v in decided.items() if k != "time_limit_from"}
    assert last_minutes(older) == {0: 1440, 1: 1440}  # runs made before: the site's time won in the script
    opts = Resubmit(sbatch_option=["time=02:00:00", "constraint=a100"])
    assert _override_flags(opts) == ["--constraint=a100"]  # the time is the decided limit's, given once


@pytest.mark.slurm
def test_every_array_task_gets_the_same_limit_on_the_real_cluster(slurm_cluster, tiny_model, tiny_tasks, tmp_path):
    """Finding 10 on the real cluster: SLURM itself holds 04:00:00 for the 2-row task and the 1-row task."""
    cfile = clusters_file(tmp_path, slurm_cluster.partition, sbatch_options={"begin": "now+1hour"})  # stays pending
    r = oellm("schedule-eval", "--cluster", "testslurm", "--clusters_file", str(cfile), "--models", str(tiny_model),
              "--tasks", TASKS, "--n_shot", "0", "--evals_per_task", "2", "--sbatch_option", "time=04:00:00",
              "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / "runs"), "--no_preflight")
    assert r.returncode == 0, r.stderr
    subs = json.loads((the_run(tmp_path / "runs") / "run.json").read_text())["submissions"]
    try:
        limits = subprocess.run(["squeue", "--noheader", "--array", "--format=%i %l", "-j",
                                 ",".join(s["job_id"] for s in subs)], capture_output=True, text=True, check=True)
        assert sorted(line.split()[1] for line in limits.stdout.splitlines()) == ["4:00:00", "4:00:00"], limits.stdout
    finally:
        slurm.cancel([s["job_id"] for s in subs])
