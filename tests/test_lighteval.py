"""lighteval as a suite: oellm's rows give what lighteval's own CLI gives on the same model, one model load
for all rows; lighteval's multilingual tasks (belebele `_cf`, flores200) pre-cached and run offline; mixed
lm-eval + lighteval CSVs; lighteval output folders in collect-results; one-line errors.

The e2e tests run `oellm` from the lighteval venv (tests/fixtures_suites.py), as a user with
`pip install 'oellm[lighteval]'` would: lighteval cannot live beside the main venv's transformers 5."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from oellm import formats
from oellm.container import RESULT
from oellm.errors import OellmError
from oellm.plan.request import Selection, plan_rows
from oellm.results.gather import collect
from oellm.results.tables import leaderboard
from oellm.task_groups import SHIPPED, load_task_groups
from tests.fixtures_hub import OFFLINE_FLAGS, Hub
from tests.fixtures_suites import TASK_FILE, belebele_repo, flores_repo, punkt_tab_mirror

# lighteval's own CLI, offline: its registry import downloads tinyBenchmarks.pkl (oellm leaves that module out),
# and its BLEU metrics call nltk.download on every sample and bootstrap draw, data present or not (~70 ms a
# failed lookup here: 70 s per flores200 row; oellm's worker makes it a no-op offline, as here)
LIGHTEVAL_CLI = ("import sys, types, nltk; n = 'lighteval.tasks.tasks.tiny_benchmarks'; "
                 "sys.modules[n] = types.ModuleType(n); nltk.download = lambda *a, **k: False; "
                 "sys.argv[0] = 'lighteval'; from lighteval.__main__ import app; app()")


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def lighteval_cli(venv: Path, model: Path, spec: str, tasks_file: Path, out: Path) -> dict:
    """`lighteval accelerate` on one task spec -> its results file read through oellm.formats."""
    proc = run([str(venv / "python"), "-c", LIGHTEVAL_CLI, "accelerate", f"model_name={model},batch_size=16,device=cpu",
                spec, "--custom-tasks", str(tasks_file), "--output-dir", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(out.rglob("results_*.json"))
    assert len(files) == 1, files
    return formats.from_lighteval(json.loads(files[0].read_text()), str(files[0]))


def results(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "results").glob("*.json"))]


@pytest.mark.e2e
def test_lighteval_rows_equal_lighteval_itself_with_one_model_load(lighteval_venv, lighteval_tasks, tiny_model,
                                                                   tmp_path):
    proc = run([str(lighteval_venv / "oellm"), "schedule-eval", "--cluster", "local", "--models", str(tiny_model),
                "--suite", "lighteval", "--tasks", "tiny_lv_0,tiny_lv_1", "--n_shot", "0,2",
                "--lighteval_custom_tasks", str(lighteval_tasks), "--output_dir", str(tmp_path / "runs")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    [run_dir] = (tmp_path / "runs").iterdir()
    got = results(run_dir)
    assert len(got) == 4 and {r["oellm"]["row"]["suite"] for r in got} == {"lighteval"}
    assert len({(r["oellm"]["model_load"]["pid"], r["oellm"]["model_load"]["started"]) for r in got}) == 1
    assert {r["oellm"]["model_load"]["loads_in_process"] for r in got} == {1}
    model = tmp_path / "model"  # lighteval's CLI caches predictions inside an absolute model path: a copy
    shutil.copytree(tiny_model, model)
    for r in got:
        task, shots = r["oellm"]["row"]["task"], r["oellm"]["row"]["n_shot"]
        ref = lighteval_cli(lighteval_venv, model, f"{task}|{shots}", lighteval_tasks, tmp_path / f"ref-{task}-{shots}")
        assert r["results"] == ref["results"] and r["n-shot"] == {task: shots}
        assert r["results"][task]["acc,none"] > 0
    assert not [p for p in tiny_model.iterdir() if p.is_dir()]  # oellm wrote nothing into the model dir


@pytest.mark.e2e
def test_a_mixed_csv_runs_both_suites_and_collect_shows_both(lighteval_venv, lighteval_tasks, tiny_model, tiny_tasks,
                                                            tmp_path):
    csv = tmp_path / "evals.csv"
    csv.write_text("model_path,task_path,n_shot,eval_suite\n"
                   f"{tiny_model},tiny_mc_a,0,lm-eval-harness\n"
                   f"{tiny_model},tiny_lv_3,0,lighteval\n"
                   f"{tiny_model},tiny_lv_4,1,lighteval\n")
    proc = run([str(lighteval_venv / "oellm"), "schedule-eval", "--cluster", "local", "--eval_csv_path", str(csv),
                "--lm_eval_include_path", str(tiny_tasks), "--lighteval_custom_tasks", str(lighteval_tasks),
                "--output_dir", str(tmp_path / "runs")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    [run_dir] = (tmp_path / "runs").iterdir()
    jobs = (run_dir / "jobs.csv").read_text()
    assert "lighteval" in jobs
    table = collect([run_dir]).table
    assert set(zip(table["task"], table["suite"], strict=True)) >= {
        ("tiny_mc_a", "lm_eval"), ("tiny_lv_3", "lighteval"), ("tiny_lv_4", "lighteval")}
    board = leaderboard(table)
    assert {"tiny_mc_a acc_norm", "tiny_lv_3 [lighteval] acc", "tiny_lv_4 [lighteval] acc"} <= set(board.columns)
    shown = run([sys.executable, "-m", "oellm", "collect-results", str(run_dir)])  # the main venv reads them too
    assert shown.returncode == 0 and "tiny_lv_4 [lighteval] acc" in shown.stdout, shown.stderr


@pytest.mark.e2e
def test_a_typo_in_a_lighteval_task_is_one_line_with_the_closest_names(lighteval_venv, lighteval_tasks, tiny_model,
                                                                      tmp_path):
    proc = run([str(lighteval_venv / "oellm"), "schedule-eval", "--cluster", "local", "--models", str(tiny_model),
                "--suite", "lighteval", "--tasks", "tiny_lv_11", "--lighteval_custom_tasks", str(lighteval_tasks),
                "--output_dir", str(tmp_path / "runs")])
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "unknown lighteval task(s): tiny_lv_11 (did you mean tiny_lv_1" in err[0], proc.stderr
    assert not (tmp_path / "runs").exists()


MULTILINGUAL = ("belebele_deu_Latn_cf", "flores200:eng_Latn-deu_Latn")


@pytest.mark.e2e
def test_multilingual_tasks_are_pre_cached_and_run_offline_as_lighteval_runs_them(
        hub: Hub, lighteval_venv, tiny_model, tmp_path, monkeypatch):
    """Names from lighteval's multilingual registry (which the venv's lighteval cannot load whole: no
    lighteval[multilingual] extra), their datasets served under the real repo ids and flores200's NLTK data
    pre-cached by schedule-eval, the rows run offline and equal lighteval's own CLI on the same cache."""
    hub.add_repo("facebook/belebele", belebele_repo(["deu_Latn"]), kind="dataset")
    hub.add_repo("facebook/flores", flores_repo([("eng_Latn", "deu_Latn")]), kind="dataset")
    mirror, nltk_dir = punkt_tab_mirror(tmp_path / "mirror"), tmp_path / "nltk_data"
    monkeypatch.setenv("NLTK_DATA", f"{nltk_dir}:{mirror}")  # nltk reads file:// URLs only under its roots
    monkeypatch.setenv("NLTK_DOWNLOAD_URL", f"file://{mirror}/index.xml")
    proc = run([str(lighteval_venv / "oellm"), "schedule-eval", "--cluster", "local", "--models", str(tiny_model),
                "--suite", "lighteval", "--tasks", ",".join(MULTILINGUAL), "--n_shot", "0",
                "--output_dir", str(tmp_path / "runs")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (nltk_dir / "tokenizers" / "punkt_tab").is_dir()
    assert hub.count("GET", "facebook/belebele") and hub.count("GET", "facebook/flores")
    [run_dir] = (tmp_path / "runs").iterdir()
    got = {r["oellm"]["row"]["task"]: r for r in results(run_dir)}
    assert set(got) == set(MULTILINGUAL)
    assert {"acc_norm_token,none", "acc_norm,none"} <= set(got["belebele_deu_Latn_cf"]["results"]["belebele_deu_Latn_cf"])
    assert {"chrf++,none", "bleu,none", "bleu_4,none"} <= set(got[MULTILINGUAL[1]]["results"][MULTILINGUAL[1]])

    hub.server.stop()  # lighteval's CLI, offline on the cache the pre-cache filled, on lighteval's own task files
    for flag in OFFLINE_FLAGS:
        monkeypatch.setenv(flag, "1")
    where = run([str(lighteval_venv / "python"), "-c", "import lighteval, os; print(os.path.dirname(lighteval.__file__))"])
    files = Path(where.stdout.strip()) / "tasks" / "multilingual" / "tasks"
    model = tmp_path / "model"  # lighteval's CLI caches predictions inside an absolute model path: a copy
    shutil.copytree(tiny_model, model)
    for task, module in zip(MULTILINGUAL, ("belebele", "flores200"), strict=True):
        ref = lighteval_cli(lighteval_venv, model, f"{task}|0", files / f"{module}.py", tmp_path / f"ref-{module}")
        assert got[task]["results"] == ref["results"], task


@pytest.mark.e2e
def test_a_misspelt_multilingual_task_is_one_line_naming_the_close_match(lighteval_venv, tiny_model, tmp_path):
    proc = run([str(lighteval_venv / "oellm"), "schedule-eval", "--cluster", "local", "--models", str(tiny_model),
                "--suite", "lighteval", "--tasks", "belebele_deu_Latn_cff", "--output_dir", str(tmp_path / "runs")])
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert "unknown lighteval task(s): belebele_deu_Latn_cff (did you mean belebele_deu_Latn_cf," in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_a_lighteval_image_tells_the_login_node_a_multilingual_tasks_dataset_and_nltk_data(lighteval_venv):
    """What `oellm.suites.remote` asks a lighteval image when the login node has no lighteval."""
    question = {"suite": "lighteval", "tasks": list(MULTILINGUAL), "sources": []}
    proc = subprocess.run([str(lighteval_venv / "python"), "-m", "oellm.suites.probe"], input=json.dumps(question),
                          capture_output=True, text=True, timeout=300)
    answer = json.loads(proc.stdout.strip().splitlines()[-1].removeprefix(RESULT))
    assert answer["datasets"] == {
        "belebele_deu_Latn_cf": {"dataset_path": "facebook/belebele", "dataset_name": "deu_Latn", "dataset_kwargs": {}},
        MULTILINGUAL[1]: {"dataset_path": "facebook/flores", "dataset_name": "eng_Latn-deu_Latn", "dataset_kwargs": {}}}
    assert answer["nltk"] == {"punkt_tab": [MULTILINGUAL[1]]}, proc.stderr[-2000:]


@pytest.mark.e2e
def test_every_shipped_lighteval_task_resolves_in_the_pinned_lighteval(lighteval_venv):
    groups = load_task_groups(SHIPPED)
    names = sorted({t.task for g in groups.groups.values() for t in g if t.suite == "lighteval"})
    assert "arc:challenge" in names
    code = ("import json, sys; from oellm.suites.lighteval import LightevalSuite; "
            "LightevalSuite().validate(json.loads(sys.argv[1]), []); print('ok')")
    proc = run([str(lighteval_venv / "python"), "-c", code, json.dumps(names)])
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


@pytest.mark.fast
def test_without_lighteval_installed_a_lighteval_row_is_one_line(tiny_model, tmp_path):
    if subprocess.run([sys.executable, "-c", "import lighteval"], capture_output=True).returncode == 0:
        pytest.skip("lighteval is installed in this venv")
    proc = run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models", str(tiny_model),
                "--suite", "lighteval", "--tasks", "arc:easy", "--output_dir", str(tmp_path / "runs")])
    assert proc.returncode == 2 and "lighteval rows need lighteval, which is not installed" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_a_fractional_limit_on_lighteval_rows_is_refused_at_plan_time(lighteval_venv, lighteval_tasks, tiny_model,
                                                                     tmp_path):
    proc = run([str(lighteval_venv / "oellm"), "schedule-eval", "--cluster", "local", "--models", str(tiny_model),
                "--suite", "lighteval", "--tasks", "tiny_lv_1", "--limit", "0.5", "--lighteval_custom_tasks",
                str(lighteval_tasks), "--output_dir", str(tmp_path / "runs")])
    assert proc.returncode == 2 and "--limit: lighteval takes a number of samples per task" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.fast
def test_a_misspelt_suite_names_the_known_ones(tiny_model):
    with pytest.raises(OellmError, match=r"--suite 'lightevl': known: lm-eval-harness, .*lighteval"):
        plan_rows(Selection(models=str(tiny_model), tasks="x", suite="lightevl"), [])


LIGHTEVAL_FILE = {
    "config_general": {"model_name": "org/model", "max_samples": None, "start_time": 1.0},
    "results": {"arc:challenge|25": {"acc": 0.5, "acc_stderr": 0.1}, "tiny:sub|0": {"em": 1.0},
                "all": {"acc": 0.5, "acc_stderr": 0.1}},
    "versions": {}, "config_tasks": {}}


@pytest.mark.fast
def test_lighteval_and_bigcodebench_folders_are_collected(tmp_path):
    out = tmp_path / "copied" / "results" / "org" / "model"
    out.mkdir(parents=True)
    (out / "results_2026-11-02T10-11-12.123456.json").write_text(json.dumps(LIGHTEVAL_FILE))
    (tmp_path / "copied" / "model--bigcodebench-complete_pass_at_k.json").write_text(
        json.dumps({"split": "complete", "subset": "hard", "pass@1": 0.25, "model": "org/model"}))
    got = collect([tmp_path / "copied"])
    assert not got.problems
    rows = {(r.task, r.suite, r.metric, r.n_shot): (r.value, None if pd.isna(r.stderr) else r.stderr)
            for r in got.table.itertuples()}
    assert rows == {("arc:challenge", "lighteval", "acc", 25): (0.5, 0.1), ("tiny:sub", "lighteval", "em", 0): (1.0, None),
                    ("complete-hard", "bigcodebench", "pass@1", 0): (0.25, None)}
    assert set(got.table["model"]) == {"org/model"}
    assert set(got.table["date"]) >= {"2026-11-02T10:11:12+00:00"}


@pytest.mark.fast
def test_from_lighteval_reads_both_spellings_of_task_and_shots():
    assert formats.from_lighteval({"config_general": {}, "results": {"arc:challenge:25": {"acc": 0.5}}})["n-shot"] == {
        "arc:challenge": 25}
    out = formats.from_lighteval(LIGHTEVAL_FILE)
    assert out["results"]["arc:challenge"] == {"acc,none": 0.5, "acc_stderr,none": 0.1} and "all" not in out["results"]
    assert out["config"]["model_args"] == "pretrained=org/model" and out["suite"] == "lighteval"


def site_with_lighteval_image(tmp_path: Path, partition: str, venv: Path) -> tuple[Path, Path]:
    """A clusters file whose lighteval rows run in a stand-in image of the lighteval venv."""
    from tests.fixtures_slurm import write_image
    from tests.test_schedule_slurm import clusters_file

    oellm_source = str(Path(formats.__file__).parent)  # the venv's oellm is this checkout (editable)
    image = write_image(tmp_path / "lighteval.sif", [str(venv.parent), sys.base_prefix, oellm_source],
                        env={"PATH": f"{venv}:/usr/local/bin:/usr/bin:/bin"})
    cfile = clusters_file(tmp_path, partition)
    entry = json.loads(cfile.read_text())
    entry["testslurm"]["container"]["images"] = {"lighteval": str(image)}
    cfile.write_text(json.dumps(entry))
    return cfile, image


@pytest.mark.slurm
@pytest.mark.e2e
def test_lighteval_rows_run_in_their_own_image_on_slurm(slurm_cluster, container_shim, lighteval_venv, lighteval_tasks,
                                                        tiny_model, tiny_tasks, tmp_path, no_job_left_behind):
    """The login node (this venv) has no lighteval: task names and datasets come from the lighteval image,
    the preflight proves both images, and each chunk's workers run in their suite's image."""
    from tests.fixtures_slurm import shim_calls, wait_for_jobs

    cfile, lighteval_image = site_with_lighteval_image(tmp_path, slurm_cluster.partition, lighteval_venv)
    csv = tmp_path / "evals.csv"
    csv.write_text("model_path,task_path,n_shot,eval_suite\n"
                   f"{tiny_model},tiny_mc_a,0,lm_eval\n"
                   f"{tiny_model},tiny_lv_5,0,lighteval\n"
                   f"{tiny_model},tiny_lv_6,2,lighteval\n")
    proc = run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "testslurm", "--clusters_file", str(cfile),
                "--eval_csv_path", str(csv), "--lm_eval_include_path", str(tiny_tasks), "--lighteval_custom_tasks",
                str(lighteval_tasks), "--output_dir", str(tmp_path / "runs")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    [run_dir] = (tmp_path / "runs").iterdir()
    subs = json.loads((run_dir / "run.json").read_text())["submissions"]
    assert sorted(s.get("image", "") for s in subs) == ["", "lighteval"]
    states = wait_for_jobs([s["job_id"] for s in subs], timeout=300)
    assert set(states.values()) == {"COMPLETED"}, states
    got = {r["oellm"]["row"]["task"]: r for r in results(run_dir)}
    assert set(got) == {"tiny_mc_a", "tiny_lv_5", "tiny_lv_6"}
    assert got["tiny_lv_6"]["lighteval"]["version"] == "0.13.0" and "lighteval" not in got["tiny_mc_a"]
    assert got["tiny_lv_6"]["results"]["tiny_lv_6"]["acc,none"] > 0
    calls = shim_calls(container_shim)
    probes = [c for c in calls if "oellm.suites.probe" in c]
    assert probes and all(c[c.index("python3") - 1] == str(lighteval_image) for c in probes)
    proofs = {c[c.index("python3") - 1] for c in calls if "oellm.cache.fetch" in c}
    assert proofs == {str(lighteval_image), str(tmp_path / "eval.sif")}
    workers = [c for c in calls if "worker" in c]
    assert {c[c.index("python3") - 1] for c in workers} == {str(lighteval_image), str(tmp_path / "eval.sif")}


@pytest.mark.fast
def test_only_lm_eval_rows_are_sharded(tiny_model):
    from oellm.rows import EvalRow

    assert len(EvalRow(str(tiny_model), "t", 0).shards(3)) == 3
    assert EvalRow(str(tiny_model), "arc:easy", 0, suite="lighteval").shards(3) == [
        EvalRow(str(tiny_model), "arc:easy", 0, suite="lighteval")]


@pytest.mark.slurm
@pytest.mark.e2e
def test_a_hub_model_and_dataset_cached_by_the_login_stack_load_in_the_lighteval_image(
        hub, slurm_cluster, container_shim, lighteval_venv, tmp_path, no_job_left_behind):
    """The login node (huggingface_hub 1.x, datasets of the main venv) pre-caches; the lighteval image
    (huggingface_hub<1, its own datasets) proves and evaluates from that cache offline."""
    from tests.fixtures_slurm import wait_for_jobs

    cfile, _ = site_with_lighteval_image(tmp_path, slurm_cluster.partition, lighteval_venv)
    tasks_file = tmp_path / "hub_tasks.py"
    tasks_file.write_text(TASK_FILE.format(data="org/tinyds", n=1))
    proc = run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "testslurm", "--clusters_file", str(cfile),
                "--models", "org/tiny", "--suite", "lighteval", "--tasks", "tiny_lv_0", "--n_shot", "0,1",
                "--lighteval_custom_tasks", str(tasks_file), "--output_dir", str(tmp_path / "runs")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "pre-cache: 2 fetched" in proc.stdout, proc.stdout
    [run_dir] = (tmp_path / "runs").iterdir()
    subs = json.loads((run_dir / "run.json").read_text())["submissions"]
    states = wait_for_jobs([s["job_id"] for s in subs], timeout=300)
    assert set(states.values()) == {"COMPLETED"}, states
    got = results(run_dir)
    assert len(got) == 2 and all(0 <= r["results"]["tiny_lv_0"]["acc,none"] <= 1 for r in got)
    # the lighteval image ran them (the login venv has no lighteval), one row per shot count
    assert {r["lighteval"]["version"] for r in got} == {"0.13.0"}
    assert sorted(r["oellm"]["row"]["n_shot"] for r in got) == [0, 1]
    assert {r["oellm"]["model_revision"] for r in got} == {hub.tiny_v1}
