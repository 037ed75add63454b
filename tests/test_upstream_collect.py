"""`oellm-eval collect` over oellm-eval's run dirs as they are: the real lm_eval CLI's files
(`results/<hex>_<date>.json`), a lighteval output folder nested under results/, jobs.csv in oellm-eval's
columns; written in oellm-eval's CSV schema, and the missing CSV planned again by `schedule`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIMIT = 6


def oellm_eval(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The `oellm-eval` entry point, as installed by pyproject.toml's [project.scripts]."""
    code = "import sys; from oellm.cli import main_eval; main_eval(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd or REPO)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def upstream_runs(tiny_model, tiny_tasks, tmp_path_factory) -> Path:
    """Two run dirs as oellm-eval leaves them: one evaluated tiny_mc_a 0-shot and tiny_group 2-shot with the
    real lm_eval CLI (tiny_mc_b was scheduled but never ran), one a lighteval run (its output folder, in
    lighteval 0.13's layout, written here)."""
    root = tmp_path_factory.mktemp("upstream") / "evals"
    lm = root / "2026-08-01-10-00-00"
    (lm / "results").mkdir(parents=True)
    jobs = [("tiny_mc_a", 0), ("tiny_group", 2), ("tiny_mc_b", 0)]
    with open(lm / "jobs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model_path", "task_path", "n_shot", "eval_suite"])
        w.writerows([str(tiny_model), t, n, "lm_eval"] for t, n in jobs)
    for i, (task, n) in enumerate(jobs[:2]):
        argv = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args",
                f"pretrained={tiny_model},trust_remote_code=True", "--tasks", task, "--num_fewshot", str(n),
                "--output_path", str(lm / "results" / f"{i:08x}.json"), "--include_path", str(tiny_tasks),
                "--limit", str(LIMIT), "--device", "cpu", "--batch_size", "1", "--trust_remote_code"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    light = root / "2026-08-02-10-00-00"
    out = light / "results" / "0000abcd" / "results" / "org__tiny"
    out.mkdir(parents=True)
    with open(light / "jobs.csv", "w", newline="") as fh:
        fh.write("model_path,task_path,n_shot,eval_suite\norg/tiny,flores200:eng_Latn-deu_Latn,0,lighteval\n")
    (out / "results_2026-08-02T10-30-00.123456.json").write_text(json.dumps({
        "config_general": {"model_name": "org/tiny", "max_samples": None},
        "results": {"flores200:eng_Latn-deu_Latn|0": {"chrf++": 41.5, "bleu": 12.25},
                    "all": {"chrf++": 41.5, "bleu": 12.25}}}))
    return root


@pytest.mark.e2e
def test_collect_writes_oellm_evals_csv_and_plans_the_missing_rows_again(upstream_runs, tiny_model, tiny_tasks,
                                                                         tmp_path):
    results = sorted((upstream_runs / "2026-08-01-10-00-00" / "results").glob("*.json"))
    assert [p.name.split("_")[0] for p in results] == ["00000000", "00000001"]  # the lm_eval CLI's naming
    out = tmp_path / "scores.csv"
    proc = oellm_eval("collect", "--results_dir", str(upstream_runs), "--output_csv", str(out), "--check")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert list(rows[0]) == ["model_name", "task", "n_shot", "performance", "metric_name"]
    got = {(r["model_name"], r["task"], r["n_shot"]): (r["metric_name"], float(r["performance"])) for r in rows}
    assert set(got) == {(str(tiny_model), "tiny_mc_a", "0"), (str(tiny_model), "tiny_group", "2"),
                        ("org/tiny", "flores200:eng_Latn-deu_Latn", "0")}  # the group's aggregate, not its subtasks
    assert got[("org/tiny", "flores200:eng_Latn-deu_Latn", "0")] == ("chrf++", 41.5)
    lm_file = json.loads(results[0].read_text())
    # REVIEW Part 2 D4: metric_name is lm-eval's key, as oellm-eval writes it (lighteval's stays bare)
    assert got[(str(tiny_model), "tiny_mc_a", "0")] == ("acc,none", lm_file["results"]["tiny_mc_a"]["acc,none"])
    missing = tmp_path / "scores_missing.csv"
    assert _rows(missing) == [{"model_path": str(tiny_model), "task_path": "tiny_mc_b", "n_shot": "0",
                               "eval_suite": "lm_eval"}]
    assert "3 of 4 scheduled evaluation(s) have a result; 1 missing" in proc.stdout
    plan = oellm_eval("schedule", "--eval_csv_path", str(missing), "--local", "--skip_checks", "true", "--dry_run",
                      "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / "again"))
    assert plan.returncode == 0, plan.stderr
    (run,) = (tmp_path / "again").iterdir()
    assert [(r["task_path"], r["n_shot"]) for r in _rows(run / "jobs.csv")] == [("tiny_mc_b", "0")]


@pytest.mark.fast
def test_one_metric_per_task_as_oellm_eval_picks_it(tmp_path):
    """task_metrics decides, else acc before acc_norm before exact_match ...; a metric's first key as lm-eval
    wrote it (gsm8k: strict-match); metric_name is that key; a group's aggregate stands for its subtasks;
    LF line ends (REVIEW Part 2 D4)."""
    run = tmp_path / "evals" / "2026-08-01-10-00-00"
    (run / "results").mkdir(parents=True)
    (run / "jobs.csv").write_text("model_path,task_path,n_shot,eval_suite\norg/m,grp,0,lm_eval\norg/m,gsm,5,lm_eval\n"
                                  "org/m,mc,0,lm_eval\n")
    result = {"results": {"grp": {"acc,none": 0.5, "acc_norm,none": 0.6}, "grp_a": {"acc,none": 0.4},
                          "mc": {"acc_norm,none": 0.7, "acc,none": 0.3},
                          "gsm": {"exact_match,strict-match": 0.1, "exact_match,flexible-extract": 0.2}},
              "group_subtasks": {"grp": ["grp_a"]}, "n-shot": {"grp_a": 0, "mc": 0, "gsm": 5},
              "config": {"model": "hf", "model_args": "pretrained=org/m"}, "date": 1.7e9}
    (run / "results" / "00000000_2026-08-01T10-00-00.000001.json").write_text(json.dumps(result))
    (tmp_path / "groups.yaml").write_text("task_metrics:\n  mc: acc_norm\n")
    out = tmp_path / "out.csv"
    r = oellm_eval("collect", "--results_dir", str(tmp_path / "evals"), "--output_csv", str(out), "--check",
                   "--task_groups_file", str(tmp_path / "groups.yaml"))
    assert r.returncode == 0, r.stderr
    assert {(x["task"], x["n_shot"], x["metric_name"], x["performance"]) for x in _rows(out)} == {
        ("grp", "0", "acc,none", "0.5"), ("mc", "0", "acc_norm,none", "0.7"), ("gsm", "5", "exact_match,strict-match", "0.1")}
    assert b"\r" not in out.read_bytes() and b"\r" not in (tmp_path / "out_missing.csv").read_bytes()
    assert _rows(tmp_path / "out_missing.csv") == [] and "3 of 3 scheduled evaluation(s) have a result" in r.stdout
    bad = oellm_eval("collect", "--results_dir", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and bad.stderr.strip() == f"oellm-eval: error: --results_dir: {tmp_path / 'nowhere'} is not a directory"


@pytest.mark.fast
def test_without_a_flag_the_metric_is_the_one_oellm_evals_own_registry_names(tmp_path):
    """REVIEW Part 2 D4: oellm-eval's collect has no --task_groups_file; it picks sib200_deu_Latn's acc_norm
    from its own registry (0.35), not acc by the fallback list (0.3)."""
    import yaml

    upstream = yaml.safe_load((REPO / "tests" / "upstream" / "task-groups.yaml").read_text())["task_metrics"]
    from oellm.results.oellm_eval_csv import UPSTREAM_METRICS

    shipped = {k: v for k, v in json.loads(UPSTREAM_METRICS.read_text()).items() if not k.startswith("_")}
    assert shipped == upstream  # the facts ship as oellm-eval's file has them
    run = tmp_path / "evals" / "2026-08-01-10-00-00"
    (run / "results").mkdir(parents=True)
    (run / "jobs.csv").write_text("model_path,task_path,n_shot,eval_suite\norg/m,sib200_deu_Latn,0,lm_eval\n")
    (run / "results" / "00000000_2026-08-01T10-00-00.000001.json").write_text(json.dumps({
        "results": {"sib200_deu_Latn": {"acc,none": 0.3, "acc_norm,none": 0.35}}, "n-shot": {"sib200_deu_Latn": 0},
        "config": {"model": "hf", "model_args": "pretrained=org/m"}, "date": 1.7e9}))
    out = tmp_path / "out.csv"
    r = oellm_eval("collect", "--results_dir", str(tmp_path / "evals"), "--output_csv", str(out))
    assert r.returncode == 0, r.stderr
    assert [(x["task"], x["metric_name"], x["performance"]) for x in _rows(out)] == [
        ("sib200_deu_Latn", "acc_norm,none", "0.35")]
