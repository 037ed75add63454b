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
from oellm.task_groups import SHIPPED, load_task_groups, split_groups

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
    assert len(groups.expand(["european-multilingual"])) == 7 + 18 + 4 + 8 + 3


def test_a_reference_format_file_plans_the_expected_rows(tiny_model, tiny_tasks, tmp_path):
    f = tmp_path / "groups.yaml"
    f.write_text(REFERENCE)
    sel = Selection(models=str(tiny_model), task_groups="tiny-all", task_groups_file=f, tasks="tiny_mc_a",
                    n_shot="0")
    rows, dropped = plan_rows(sel, [str(tiny_tasks)])
    assert sorted((r.task, r.n_shot) for r in rows) == [("tiny_group", 0), ("tiny_mc_a", 0), ("tiny_mc_a", 2),
                                                         ("tiny_mc_b", 1)]
    assert dropped == 1  # tiny_mc_a 0-shot from --tasks and from the group: one row
    twice = Selection(models=f"{tiny_model},{tiny_model}", task_groups="tiny-all", task_groups_file=f,
                      tasks="tiny_mc_a", n_shot="0")
    again, dropped = plan_rows(twice, [str(tiny_tasks)])
    assert again == rows and dropped == 1 + 4 + 1  # within --tasks, within the group, then across them


def test_a_bad_group_is_one_line(tiny_model, tmp_path, monkeypatch):
    from oellm import suites

    monkeypatch.setattr(suites, "_IMAGES", [])  # no dry run asked before: nothing lets the shipped index answer
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


# A registry in oellm-eval's format (written for these tests): valid_langs with {lang} in task and subset,
# a group mixing suites, group dataset defaults, languages spelled as benchmarks do, a translation pair,
# a super group; `all` is generated.
UPSTREAM = """\
task_metrics:
  sib_deu_Latn: acc_norm
task_groups:
  sib-eu:
    description: "topic classification"
    suite: lm-eval-harness
    n_shots: [0]
    dataset: org/sib
    valid_langs: [deu_Latn, fra_Latn, pol_Latn]
    tasks:
      - task: "sib_{lang}"
        subset: "{lang}"
  mmlu-eu:
    description: "ISO-1 codes in the template"
    suite: lm-eval-harness
    n_shots: [5]
    valid_langs: [de, it]
    tasks:
      - task: "gmmlu_{lang}"
        subset: "{lang}"
  csqa-eu:
    description: "configs spelled X-CSQA-xx"
    suite: lm-eval-harness
    n_shots: [0]
    tasks:
      - task: csqa_de
        subset: X-CSQA-de
      - task: csqa_nl
        subset: X-CSQA-nl
  include-eu:
    description: "English names as subsets, a trailing code without subset"
    suite: lm-eval-harness
    n_shots: [0]
    tasks:
      - task: include_german
        subset: German
      - task: arc_mt_is
  flores-eu:
    description: "translation pairs: the non-English side"
    suite: lighteval
    n_shots: [0]
    valid_langs: [deu_Latn, ita_Latn]
    tasks:
      - task: "flores200:eng_Latn-{lang}"
  reasoning:
    description: "a group mixing suites, one oellm does not run"
    suite: lm-eval-harness
    tasks:
      - task: gsm8k
        n_shots: [4]
      - task: sib_deu_Latn
        n_shots: [0]
      - task: MATH500
        n_shots: [0]
        suite: evalchemy
super_groups:
  multi:
    description: "two groups"
    task_groups:
      - task: sib-eu
      - task: mmlu-eu
"""


def _registry(tmp_path, text=UPSTREAM):
    f = tmp_path / "task-groups.yaml"
    f.write_text(text)
    return load_task_groups(f)


def _names(tasks):
    return [(t.task, t.suite, t.n_shots) for t in tasks]


def test_upstream_registry_expands_langs_suites_and_defaults(tmp_path):
    reg = _registry(tmp_path)
    sib = reg.groups["sib-eu"]
    assert [(t.task, t.subset, t.dataset, t.languages) for t in sib] == [
        ("sib_deu_Latn", "deu_Latn", "org/sib", ("deu_Latn",)), ("sib_fra_Latn", "fra_Latn", "org/sib", ("fra_Latn",)),
        ("sib_pol_Latn", "pol_Latn", "org/sib", ("pol_Latn",))]
    langs = {t.task: t.languages for ts in reg.groups.values() for t in ts}
    assert langs["gmmlu_de"] == ("deu_Latn",) and langs["csqa_nl"] == ("nld_Latn",)
    assert langs["include_german"] == ("deu_Latn",) and langs["arc_mt_is"] == ("isl_Latn",)
    assert langs["flores200:eng_Latn-ita_Latn"] == ("ita_Latn",) and langs["gsm8k"] == ()
    assert {t.suite for t in reg.groups["reasoning"]} == {"lm_eval", "evalchemy"}
    assert reg.suites_of(["flores200:eng_Latn-deu_Latn", "sib_fra_Latn", "hellaswag"]) == {
        "lighteval": ["flores200:eng_Latn-deu_Latn"], "lm_eval": ["sib_fra_Latn", "hellaswag"]}
    with pytest.raises(OellmError, match="task MATH500 needs suite evalchemy"):
        reg.suites_of(["MATH500"])


def test_language_brackets_select_across_groups(tmp_path, caplog):
    reg = _registry(tmp_path)
    assert split_groups("sib-eu[deu_Latn,fra_Latn],mmlu-eu , multi[ita_Latn|pol_Latn]") == [
        "sib-eu[deu_Latn,fra_Latn]", "mmlu-eu", "multi[ita_Latn|pol_Latn]"]
    got = reg.expand(split_groups("sib-eu[deu_Latn,fra_Latn]"))
    assert [t.task for t in got] == ["sib_deu_Latn", "sib_fra_Latn"]
    assert [t.task for t in reg.expand(["multi[ita_Latn|pol_Latn]"])] == ["sib_pol_Latn", "gmmlu_it"]
    # `all` with a bracket: one language across every benchmark; the shared task runs once
    german = reg.expand(["all[deu_Latn]", "sib-eu[deu_Latn]"])
    assert _names(german) == [("sib_deu_Latn", "lm_eval", (0,)), ("gmmlu_de", "lm_eval", (5,)),
                              ("csqa_de", "lm_eval", (0,)), ("include_german", "lm_eval", (0,)),
                              ("flores200:eng_Latn-deu_Latn", "lighteval", (0,))]
    # a partial match keeps what matched, with a warning naming what did not
    with caplog.at_level("WARNING"):
        assert [t.task for t in reg.expand(["mmlu-eu[deu_Latn|pol_Latn]"])] == ["gmmlu_de"]
    assert "no task of mmlu-eu is in pol_Latn" in caplog.text
    with pytest.raises(OellmError, match=r"--task_groups csqa-eu\[pol_Latn\]: no task of csqa-eu is in pol_Latn"):
        reg.expand(["csqa-eu[pol_Latn]"])
    with pytest.raises(OellmError, match=r"unknown language code\(s\) 'de' \(write deu_Latn\), 'deu_latn' \(write "
                                         r"deu_Latn\); use the lang_Scri form"):
        reg.expand(["sib-eu[de|deu_latn]"])
    with pytest.raises(OellmError, match="empty language bracket"):
        reg.expand(["sib-eu[]"])


def test_suites_oellm_does_not_run_are_refused_or_left_out_of_all(tmp_path, caplog):
    reg = _registry(tmp_path)
    with pytest.raises(OellmError, match="--task_groups reasoning: task MATH500 needs suite evalchemy"):
        reg.expand(["reasoning"])
    with caplog.at_level("WARNING"):
        everything = reg.expand(["all"])
    assert "leaving out 1 task(s) of suites oellm does not run: MATH500 (evalchemy)" in caplog.text
    assert "MATH500" not in {t.task for t in everything}
    assert len(everything) == 3 + 2 + 2 + 2 + 2 + 1  # reasoning: gsm8k; its sib_deu_Latn 0-shot is sib-eu's, once


@pytest.mark.parametrize(("edit", "at", "message"), [
    (("    valid_langs: [deu_Latn, fra_Latn, pol_Latn]\n", ""), '"sib_{lang}"',
     r"sib-eu.tasks\[0\]: uses \{lang\} but the group has no valid_langs"),
    (("        n_shots: [4]\n", "        n_shots: [-4]\n"), "[-4]", r"reasoning.tasks\[0\].n_shots: expected a list of shot"),
    (("        suite: evalchemy\n", "        suite: evalchimy\n"), "evalchimy", "unknown suite 'evalchimy'"),
    (("      - task: mmlu-eu\n", "      - task: mmlu-uk\n"), "mmlu-uk", "unknown group 'mmlu-uk'; did you mean mmlu-eu"),
    (("    dataset: org/sib\n", "    dataset: org/sib\n    langs: [x]\n"), "langs:", r"sib-eu.langs: unknown field\(s\) langs"),
    (('      - task: "sib_{lang}"\n', '      - task: "sib_{language}"\n'), "{language}", r"'sib_\{language\}' is not a task name"),
    (("  include-eu:\n", "  multi:\n"), "  multi:\n    description: \"two", "'multi' is also the name of a group"),
])
def test_every_registry_error_names_its_line(tmp_path, edit, at, message):
    """Each mistake is one line, `FILE:LINE: path: what`, LINE being where the mistake is."""
    assert edit[0] in UPSTREAM
    text = UPSTREAM.replace(*edit)
    with pytest.raises(OellmError, match=message) as e:
        _registry(tmp_path, text)
    line = text[:text.index(at)].count("\n") + 1
    assert str(e.value).startswith(f"{tmp_path / 'task-groups.yaml'}:{line}: ")
    assert "\n" not in str(e.value)


def test_a_group_of_oellm_evals_custom_tasks_says_where_they_come_from(tiny_model, tmp_path):
    """Upstream's xnli-eu names task files only oellm-eval ships: the error says so, and never falls back to
    lm-eval's built-in xnli_de (another prompt)."""
    f = tmp_path / "groups.yaml"
    f.write_text("task_groups:\n  xnli-eu:\n    description: x\n    suite: lm-eval-harness\n    n_shots: [0]\n"
                 "    tasks:\n      - task: xnli_deu_Latn\n        subset: de\n")
    with pytest.raises(OellmError, match=r"^task xnli_deu_Latn: this group needs the custom tasks of oellm-eval; "
                                         r"pass --lm_eval_include_path .../custom_lm_eval_tasks"):
        plan_rows(Selection(models=str(tiny_model), task_groups="xnli-eu[deu_Latn]", task_groups_file=f), [])


def test_shipped_groups_named_as_upstream_evaluate_the_same_tasks():
    reg = load_task_groups(SHIPPED)
    gm = reg.groups["global-mmlu-eu"]
    assert {t.n_shots for t in gm} == {(5,)} and len(gm) == 18
    assert {t.task for t in gm} == {f"global_mmlu_full_{c}" for c in
                                    ["cs", "de", "el", "en", "es", "fr", "it", "lt", "nl", "pl", "pt", "ro", "ru", "sr", "sv", "tr", "uk", "he"]}
    assert _names(reg.groups["mgsm-eu"]) == [(f"mgsm_native_cot_{c}", "lm_eval", (5,)) for c in ("en", "de", "es", "fr")]
    assert "xnli-eu" not in reg.groups  # ours uses lm-eval's built-in XNLI: another evaluation, another name
    assert [t.task for t in reg.expand(["all[deu_Latn]"])] == [
        "belebele_deu_Latn", "global_mmlu_full_de", "mgsm_native_cot_de", "arc_de", "hellaswag_de", "xnli_de"]


def test_a_bracket_plans_only_that_languages_rows(tiny_model, tiny_tasks, tmp_path):
    f = tmp_path / "groups.yaml"
    f.write_text("task_groups:\n  tiny-eu:\n    description: x\n    suite: lm-eval-harness\n    n_shots: [0, 2]\n"
                 "    tasks:\n      - task: tiny_mc_a\n        subset: de\n      - task: tiny_mc_b\n        subset: fr\n")
    sel = Selection(models=str(tiny_model), task_groups="tiny-eu[fra_Latn],tiny-eu[deu_Latn|fra_Latn]",
                    task_groups_file=f, tasks="tiny_mc_b", n_shot="2")
    rows, dropped = plan_rows(sel, [str(tiny_tasks)])
    assert sorted((r.task, r.n_shot, r.suite) for r in rows) == [("tiny_mc_a", 0, "lm_eval"), ("tiny_mc_a", 2, "lm_eval"),
                                                                 ("tiny_mc_b", 0, "lm_eval"), ("tiny_mc_b", 2, "lm_eval")]
    assert dropped == 1  # tiny_mc_b 2-shot from --tasks (its suite looked up in the registry) and the group
