"""Task groups in the reference oellm's YAML format: planning from groups and super groups, the shipped
file's names against the pinned lm-eval, and `task_metrics` as collect-results' headline metric."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pandas as pd
import pytest

from oellm.errors import OellmError
from oellm.plan.request import Selection, plan_rows
from oellm.results.tables import leaderboard
from oellm.suites.lm_eval_tasks import validate_tasks
from oellm.task_groups import SHIPPED, load_task_groups

pytestmark = pytest.mark.fast

REFERENCE = """
task_metrics:
  tiny_mc_a: acc
task_groups:
  tiny-pair:
    description: "both tiny tasks"
    suite: lm-eval-harness
    n_shots: [0, 2]
    dataset: org/ignored
    tasks:
      - task: tiny_mc_a
      - task: tiny_mc_b
        n_shots: [1]
        subset: default
  tiny-agg:
    description: "the group task"
    suite: lm_eval
    n_shots: [0]
    tasks:
      - task: tiny_group
super_groups:
  tiny-all:
    description: "everything tiny"
    task_groups:
      - task: tiny-pair
      - task: tiny-agg
"""


def test_every_shipped_task_resolves_in_the_pinned_lm_eval():
    groups = load_task_groups(SHIPPED)
    tasks = [t for g in groups.groups.values() for t in g]
    assert {t.suite for t in tasks} == {"lm_eval", "lighteval"}  # lighteval's: tests/test_lighteval.py
    # offline: oellm's task index of the installed lm-eval
    validate_tasks(sorted({t.task for t in tasks if t.suite == "lm_eval"}), [])
    assert set(groups.metrics) <= {t.task for t in tasks}
    board = groups.expand(["open-llm-leaderboard-v1"])
    assert {(t.task, t.n_shots) for t in board} == {
        ("arc_challenge", (25,)), ("hellaswag", (10,)), ("mmlu", (5,)), ("truthfulqa_mc2", (0,)),
        ("winogrande", (5,)), ("gsm8k", (5,))}
    assert len(groups.expand(["european-multilingual"])) == 7 + 5 + 3 + 8 + 3


def test_a_reference_format_file_plans_the_expected_rows(tiny_model, tiny_tasks, tmp_path):
    f = tmp_path / "groups.yaml"
    f.write_text(REFERENCE)
    sel = Selection(models=str(tiny_model), task_groups="tiny-all", task_groups_file=f, tasks="tiny_mc_a",
                    n_shot="0")
    rows, dropped = plan_rows(sel, [str(tiny_tasks)])
    assert sorted((r.task, r.n_shot) for r in rows) == [("tiny_group", 0), ("tiny_mc_a", 0), ("tiny_mc_a", 2),
                                                         ("tiny_mc_b", 1)]
    assert dropped == 1  # tiny_mc_a 0-shot from --tasks and from the group: one row


def test_a_bad_group_is_one_line(tiny_model, tmp_path):
    env = {**os.environ, "OELLM_TASK_GROUPS_FILE": str(SHIPPED)}
    r = subprocess.run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models",
                        str(tiny_model), "--task_groups", "open-llm-leaderbord-v1", "--output_dir", str(tmp_path),
                        "--dry_run"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "unknown group 'open-llm-leaderbord-v1'" in r.stderr and "did you mean open-llm-leaderboard-v1" in r.stderr
    f = tmp_path / "light.yaml"
    f.write_text("task_groups:\n  fl:\n    suite: lighteval\n    n_shots: [0]\n    tasks:\n      - task: flores200\n")
    if importlib.util.find_spec("lighteval") is None:  # its rows are asked of lighteval, or of its image
        with pytest.raises(OellmError, match="lighteval rows need lighteval, which is not installed"):
            plan_rows(Selection(models=str(tiny_model), task_groups="fl", task_groups_file=f), [])
    f.write_text("task_groups:\n  g:\n    tasks:\n      - task: x\n")
    with pytest.raises(OellmError, match=r"task_groups.g.tasks\[0\]: needs a task name and n_shots"):
        load_task_groups(f)


def test_task_metrics_choose_the_leaderboard_metric():
    rows = [("m", "t", metric, v) for metric, v in (("acc", 0.3), ("acc_norm", 0.4))]
    df = pd.DataFrame([{"model": m, "model_args": "", "step": None, "task": t, "metric": k, "filter": "none",
                        "value": v, "n_shot": 0} for m, t, k, v in rows])
    assert list(leaderboard(df).columns) == ["t acc_norm"]
    assert list(leaderboard(df, task_metrics={"t": "acc"}).columns) == ["t acc"]
    assert list(leaderboard(df, "acc_norm", {"t": "acc"}).columns) == ["t acc_norm"]  # --metric wins
