"""oellm's shipped index of lighteval's task names (REVIEW.md Part 2, D7): a login node without lighteval plans
oellm-eval's lighteval groups (`--dry_run`, `--skip_checks`) the same as one with lighteval 0.13, a misspelt
name still gets the closest names, and the shipped file is what the pinned lighteval rebuilds.

The fast tests run oellm from this repo's venv, which has no lighteval; the e2e tests also run it from the
lighteval venv (tests/fixtures_suites.py) and compare."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oellm.suites import lighteval_index

UPSTREAM = Path(__file__).parent / "upstream"  # oellm-eval 238bea9's clusters.yaml and task-groups.yaml, as they are
# the review's commands (all[deu_Latn] also needs oellm-eval's custom lm-eval tasks, which are not in this repo)
GROUPS = ("oellm-multilingual[deu_Latn]", "flores-200-eu-to-eng", "belebele-eu-cf")
ENTRY = "import sys; from oellm.cli import main_eval; main_eval(sys.argv[1:])"


def no_lighteval_here() -> None:
    if subprocess.run([sys.executable, "-c", "import lighteval"], capture_output=True).returncode == 0:
        pytest.skip("lighteval is installed in this venv")


def login_env() -> dict[str, str]:
    """A login node without a container runtime (leonardo's singularity is not on PATH)."""
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if not any((Path(d) / r).exists() for r in ("singularity", "apptainer"))]
    drop = ("EVAL_CONTAINER_IMAGE", "OELLM_CLUSTER", "OELLM_CLUSTERS_FILE", "OELLM_TASK_GROUPS_FILE")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PATH": os.pathsep.join(path),
            "HF_HOME": "/home/u/hf"}


def oellm_eval(python: Path | str, out: Path, *args: str) -> subprocess.CompletedProcess:
    """`oellm-eval schedule` on oellm-eval's leonardo site with its task groups file."""
    return subprocess.run([str(python), "-c", ENTRY, "schedule", "--clusters_file", str(UPSTREAM / "clusters.yaml"),
                           "--cluster", "leonardo", "--task_groups_file", str(UPSTREAM / "task-groups.yaml"),
                           "--models", "EleutherAI/pythia-160m", "--output_dir", str(out), *args],
                          capture_output=True, text=True, timeout=600, env=login_env(), cwd=out.parent)


def planned(out: Path) -> list[tuple[str, ...]]:
    (run,) = out.iterdir()
    lines = (run / "jobs.csv").read_text().splitlines()
    head = lines[0].split(",")
    cols = [head.index(c) for c in ("row_id", "model_path", "task_path", "n_shot", "eval_suite")]
    return sorted(tuple(line.split(",")[i] for i in cols) for line in lines[1:])


@pytest.mark.fast
def test_lighteval_groups_plan_without_lighteval_on_the_login_node(tmp_path):
    """D7: failed with "lighteval rows need lighteval ..." even with --dry_run --skip_checks."""
    no_lighteval_here()
    r = oellm_eval(sys.executable, tmp_path / "runs", "--task_groups", "oellm-multilingual[deu_Latn]", "--dry_run",
                   "true", "--skip_checks", "true")
    assert r.returncode == 0, r.stderr
    rows = planned(tmp_path / "runs")
    light = sorted((task, shots) for _, _, task, shots, suite in rows if suite == "lighteval")
    assert light == [("flores200:deu_Latn-eng_Latn", "0"), ("flores200:eng_Latn-deu_Latn", "0")]
    assert "dry run: nothing started" in r.stdout


@pytest.mark.fast
def test_a_misspelt_lighteval_task_is_one_line_with_the_closest_names_from_the_index(tmp_path):
    no_lighteval_here()
    r = oellm_eval(sys.executable, tmp_path / "runs", "--suite", "lighteval", "--tasks", "belebele_deu_Latn_cff",
                   "--skip_checks", "true")
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "unknown lighteval task(s): belebele_deu_Latn_cff (did you mean belebele_deu_Latn_cf," in err[0]
    assert "oellm's index of lighteval 0.13.0's tasks" in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.fast
def test_without_the_runtime_a_real_submit_or_a_custom_task_file_still_needs_a_real_lighteval(tmp_path):
    """The index answers only where nothing would prove the workers' lighteval, and it cannot read Python."""
    no_lighteval_here()
    r = oellm_eval(sys.executable, tmp_path / "runs", "--task_groups", "belebele-eu-cf[deu_Latn]")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "container runtime 'singularity' (cluster leonardo) is not on PATH here" in r.stderr
    assert "--dry_run or --skip_checks plan from oellm's index" in r.stderr
    tasks = tmp_path / "my_tasks.py"
    tasks.write_text("TASKS_TABLE = []\n")
    r = oellm_eval(sys.executable, tmp_path / "runs", "--suite", "lighteval", "--tasks", "my_task", "--dry_run", "true",
                   "--lighteval_custom_tasks", str(tasks))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"--lighteval_custom_tasks {tasks}: a custom task file needs a real lighteval" in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.fast
def test_the_index_loads_and_answers_a_100_name_plan_well_under_a_second():
    names = sorted(lighteval_index.read()["tasks"])[::500][:99] + ["mmlu"]  # a superset too: mmlu -> mmlu:*
    lighteval_index.read.cache_clear()
    lighteval_index._table.cache_clear()
    t0 = time.perf_counter()
    from oellm.suites.lighteval import planning_only

    suite = planning_only()
    suite.validate(names, [])
    datasets = suite.datasets(names, [])
    nltk = suite.nltk_resources(names, [])
    seconds = time.perf_counter() - t0
    assert seconds < 1.0, seconds  # ~0.15 s here
    assert len([t for t in datasets if t.startswith("mmlu:")]) == 57
    assert datasets["mmlu:anatomy"] == {"dataset_path": "lighteval/mmlu", "dataset_name": "anatomy",
                                        "dataset_kwargs": {}}
    assert all(t.startswith("flores200:") for t in nltk.get("punkt_tab", []))
    table = lighteval_index.table([])
    assert table.facts("mgsm_deu").extra == "mgsm"  # its module needs lighteval[multilingual]
    assert table.facts("belebele_deu_Latn_cf").extra is None
    assert lighteval_index.SHIPPED.stat().st_size < 1_000_000


@pytest.mark.e2e
def test_the_shipped_index_is_what_the_pinned_lighteval_rebuilds(lighteval_venv, tmp_path):
    out = tmp_path / "rebuilt.json.gz"
    r = subprocess.run([str(lighteval_venv / "python"), "-m", "oellm.suites.lighteval_index", "build", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rebuilt = json.loads(gzip.decompress(out.read_bytes()))
    shipped = json.loads(gzip.decompress(lighteval_index.SHIPPED.read_bytes()))
    assert sorted(rebuilt["tasks"]) == sorted(shipped["tasks"])  # the same names (a diff here reads shorter)
    assert rebuilt == shipped
    assert out.read_bytes() == lighteval_index.SHIPPED.read_bytes()


@pytest.mark.e2e
def test_without_lighteval_the_review_groups_plan_the_rows_lighteval_plans(lighteval_venv, tmp_path):
    """D7's check: with lighteval 0.13 importable the row sets are identical."""
    no_lighteval_here()
    for i, group in enumerate(GROUPS):
        got = {}
        for name, python in (("index", sys.executable), ("lighteval", lighteval_venv / "python")):
            out = tmp_path / f"{i}-{name}" / "runs"
            out.parent.mkdir()
            r = oellm_eval(python, out, "--task_groups", group, "--dry_run", "true", "--skip_checks", "true")
            assert r.returncode == 0, (group, name, r.stderr[-2000:])
            got[name] = planned(out)
        assert got["index"] == got["lighteval"], group
        assert any(row[4] == "lighteval" for row in got["index"]), group


@pytest.mark.fast
def test_a_clusters_yaml_site_runs_lighteval_rows_in_its_one_image_unless_it_names_another(tmp_path):
    """D7: a clusters.yaml could not name the image lighteval rows run in; oellm-eval's images carry lighteval."""
    from oellm.clusters import load_clusters
    from oellm.container import Binds
    from oellm.render import render_sbatch

    text = (UPSTREAM / "clusters.yaml").read_text()
    one = load_clusters(UPSTREAM / "clusters.yaml")["leonardo"]
    assert one.for_suite("lighteval").container.image == one.container.image
    assert one.container.image.endswith("/eval_env-leonardo.sif")
    mine = tmp_path / "clusters.yaml"
    mine.write_text(text.replace('SINGULARITY_ARGS: "--nv"\n', 'SINGULARITY_ARGS: "--nv"\n'
                                 '  LIGHTEVAL_CONTAINER_IMAGE: "lighteval.sif"\n', 1))
    site = load_clusters(mine)["leonardo"]
    image = "/leonardo_work/AIFAC_L01_028/oellm-cli-shared-evals/lighteval.sif"
    assert site.for_suite("lighteval").container.image == image
    assert site.for_suite("lm_eval").container.image == one.container.image
    script = render_sbatch(site, run_dir="/r", job_name="j", time_minutes=60, python="/v/bin/python",
                           binds=Binds(site=site.container.binds, paths=("/r",)), inherited={})
    assert image in script
