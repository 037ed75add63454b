"""Run dirs both ways for oellm-eval users: oellm's jobs.csv carries oellm-eval's eval-CSV columns and is
planned again by `--eval_csv_path` (REVIEW Part 2 D8); `oellm-eval collect` takes each task's metric from
the registry the run was planned with (D4); oellm-eval's own task names never run as lm-eval's built-in
task of the same name (REVIEW Part 2, developers' note on `arc_challenge_mt_*`)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.errors import OellmError
from oellm.plan.request import Selection, plan_rows


def _cli(entry: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = f"import sys; from oellm.cli import {entry}; {entry}(sys.argv[1:])"
    env = {k: v for k, v in os.environ.items() if k not in ("EVAL_OUTPUT_DIR", "OELLM_CLUSTERS_FILE")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=env)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.e2e
def test_a_run_dirs_jobs_csv_is_an_eval_csv_of_either_tool(tiny_model, tiny_tasks, tmp_path):
    """D8: jobs.csv has model_path,task_path,n_shot,eval_suite (model args inside model_path, options as
    cells, LF line ends); `schedule --eval_csv_path RUN/jobs.csv` plans the same row ids again, sharded
    rows included; D4: the registry the run was planned with is recorded, and collect picks by it."""
    groups = tmp_path / "groups.yaml"
    groups.write_text("task_metrics:\n  tiny_mc_a: acc_norm\n")
    plan = ["--models", f"{tiny_model},dtype=float32", "--tasks", "tiny_mc_a,tiny_mc_b", "--n_shot", "0",
            "--system_instruction", "Answer.\n", "--lm_eval_include_path", str(tiny_tasks), "--limit", "4",
            "--task_groups_file", str(groups), "--local", "--dry_run", "true"]
    first = _cli("main_eval", "schedule", *plan, "--num_shards", "2", "--output_dir", str(tmp_path / "a"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (run,) = (tmp_path / "a").iterdir()
    jobs = run / "jobs.csv"
    assert b"\r" not in jobs.read_bytes()
    rows = _rows(jobs)
    assert len(rows) == 4  # 2 tasks x 2 shards
    assert {(r["model_path"], r["task_path"], r["n_shot"], r["eval_suite"], r["system_instruction"]) for r in rows} == {
        (f"{tiny_model},dtype=float32", t, "0", "lm_eval", "Answer.\n") for t in ("tiny_mc_a", "tiny_mc_b")}
    assert '"' + f"{tiny_model},dtype=float32" + '"' in jobs.read_text()  # quoted inside, as an eval CSV has it
    again = _cli("main", "schedule-eval", "--eval_csv_path", str(jobs), "--lm_eval_include_path", str(tiny_tasks),
                 "--limit", "4", "--cluster", "local", "--dry_run", "--output_dir", str(tmp_path / "b"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    (rerun,) = (tmp_path / "b").iterdir()
    assert sorted(r["row_id"] for r in _rows(rerun / "jobs.csv")) == sorted(r["row_id"] for r in rows)
    assert json.loads((run / "run.json").read_text())["task_groups_file"] == str(groups.resolve())
    # a result for tiny_mc_a, as the worker writes it (lm-eval's keys), collected without --task_groups_file
    row = next(r for r in rows if r["task_path"] == "tiny_mc_a")
    (run / "results").mkdir(exist_ok=True)
    (run / "results" / f"{row['row_id']}.json").write_text(json.dumps({
        "results": {"tiny_mc_a": {"acc,none": 0.25, "acc_norm,none": 0.5}}, "n-shot": {"tiny_mc_a": 0},
        "oellm": {"row": {"row_id": row["row_id"], "model": str(tiny_model), "model_args": "dtype=float32",
                          "task": "tiny_mc_a", "n_shot": 0, "limit": 4, "suite": "lm_eval", "options": row["options"]}}}))
    out = tmp_path / "scores.csv"
    got = _cli("main_eval", "collect", "--results_dir", str(tmp_path / "a"), "--output_csv", str(out), cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert [(r["task"], r["metric_name"], r["performance"]) for r in _rows(out)] == [("tiny_mc_a", "acc_norm,none", "0.5")]


@pytest.mark.fast
def test_jobs_csv_without_the_eval_csv_columns_is_still_read(tmp_path):
    """Run dirs written before D8 have no model_path/task_path/eval_suite: every reader still takes them."""
    from oellm.rows import EvalRow
    from oellm.rundir import read_job_refs, read_jobs, write_jobs

    row = EvalRow(model="org/m", model_args="revision=r1", task="t", n_shot=0, task_index=0)
    path = tmp_path / "jobs.csv"
    write_jobs(path, [row])
    assert _rows(path)[0]["model_path"] == "org/m,revision=r1"
    old = tmp_path / "old.csv"
    old.write_text("row_id,task_index,model,model_args,task,n_shot,limit,step\n"
                   f"{row.row_id},0,org/m,revision=r1,t,0,,\n")
    assert read_jobs(old) == read_jobs(path) == [row]
    assert read_job_refs(old)[0].row_id == row.row_id


@pytest.mark.fast
def test_oellm_evals_task_names_never_run_as_lm_evals_twin(tiny_model, tmp_path):
    """arc_challenge_mt_de is one of oellm-eval's custom tasks and also an lm-eval built-in (another
    dataset and prompt): without oellm-eval's include path it is refused with the hint; with an include dir
    that defines it, it plans."""
    sel = Selection(models=str(tiny_model), tasks="arc_challenge_mt_de", n_shot=0, suite="lm_eval")
    with pytest.raises(OellmError, match=r"^task arc_challenge_mt_de: this group needs the custom tasks of oellm-eval "
                                         r"\(lm-eval's built-in task of that name is another evaluation\); "
                                         r"pass --lm_eval_include_path"):
        plan_rows(sel, [])
    custom = tmp_path / "custom_lm_eval_tasks" / "arc_mt"
    custom.mkdir(parents=True)
    (custom / "arc_challenge_mt_de.yaml").write_text(
        "task: arc_challenge_mt_de\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: x.jsonl\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: q\ndoc_to_target: 0\ndoc_to_choice: [a, b]\n"
        "metric_list:\n  - metric: acc\n")
    rows, _ = plan_rows(sel, [str(custom.parent)])
    assert [r.task for r in rows] == ["arc_challenge_mt_de"]
