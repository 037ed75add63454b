"""--venv_path (oellm-eval's flag for sites without containers): the workers run with that environment's
Python, on this machine (--local) and in the sbatch script, and a cluster's container is not used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def venv(tmp_path) -> Path:
    """A stand-in environment: its bin/python logs each call, then runs this environment's Python."""
    v = tmp_path / "site-venv"
    (v / "bin").mkdir(parents=True)
    python = v / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {v}/calls.log\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return v


def oellm_eval(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from oellm.cli import main_eval; main_eval(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.mark.e2e
def test_local_workers_run_with_the_venvs_python(venv, tiny_model, tiny_tasks, tmp_path):
    r = oellm_eval("schedule", "--models", str(tiny_model), "--tasks", "tiny_mc_a", "--n_shot", "0", "--limit", "4",
                   "--lm_eval_include_path", str(tiny_tasks), "--venv_path", str(venv), "--local", "true",
                   "--skip_checks", "--output_dir", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr[-3000:]
    calls = (venv / "calls.log").read_text()
    assert "-m oellm worker --run_dir" in calls
    (run,) = (tmp_path / "runs").iterdir()
    assert len(list((run / "results").glob("*.json"))) == 1
    assert json.loads((run / "run.json").read_text())["script"]["python"] == str(venv / "bin" / "python")


@pytest.mark.fast
def test_the_sbatch_script_runs_the_venvs_python_without_the_container(venv, tiny_model, tmp_path):
    r = oellm_eval("schedule", "--models", str(tiny_model), "--tasks", "hellaswag", "--cluster", "leonardo",
                   "--venv_path", str(venv), "--skip_checks", "--dry_run", "--output_dir", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "runs").iterdir()
    script = (run / "submit_evals.sbatch").read_text()
    assert f"{venv}/bin/python -m oellm worker" in script and "singularity" not in script
    bad = oellm_eval("schedule", "--models", str(tiny_model), "--tasks", "hellaswag", "--cluster", "leonardo",
                     "--venv_path", str(tmp_path), "--dry_run", "--output_dir", str(tmp_path / "runs2"))
    assert bad.returncode == 2 and "--venv_path" in bad.stderr and "no bin/python" in bad.stderr
    assert not (tmp_path / "runs2").exists()


@pytest.mark.e2e
def test_a_venv_only_site_asks_and_proves_through_the_venvs_python(lighteval_venv, lighteval_tasks, tiny_model,
                                                                    tmp_path):
    """oellm-eval's UFAL shape: no container, lighteval only in the workers' venv. The venv's python names the
    lighteval tasks at plan time, the preflight loads everything with it (the shipped oellm first on its path),
    and its workers evaluate the rows."""
    from importlib.util import find_spec

    assert find_spec("lighteval") is None  # this (the login node's) environment cannot answer for lighteval
    python = lighteval_venv / "python"
    # run from a checkout of oellm-eval, whose package is also `oellm`: `python -m` must not import it
    checkout = tmp_path / "oellm-eval"
    (checkout / "oellm").mkdir(parents=True)
    (checkout / "oellm" / "__init__.py").write_text("raise ImportError('the oellm-eval checkout was imported')\n")
    r = subprocess.run([str(Path(sys.executable).parent / "oellm-eval"), "schedule", "--models", str(tiny_model),
                        "--suite", "lighteval", "--tasks", "tiny_lv_5", "--n_shot", "0", "--lighteval_custom_tasks",
                        str(lighteval_tasks), "--venv_path", str(lighteval_venv.parent), "--local", "true",
                        "--output_dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=600,
                       cwd=checkout)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"with {python}" in r.stdout and f"workers run oellm 0.1.0 shipped in the run dir ({python}:" in r.stdout
    (run,) = (tmp_path / "runs").iterdir()
    (result,) = (run / "results").glob("*.json")
    assert json.loads(result.read_text())["results"]["tiny_lv_5"]["acc,none"] >= 0
    typo = oellm_eval("schedule", "--models", str(tiny_model), "--suite", "lighteval", "--tasks", "tiny_lv_55",
                      "--lighteval_custom_tasks", str(lighteval_tasks), "--venv_path", str(lighteval_venv.parent),
                      "--local", "true", "--output_dir", str(tmp_path / "typo"))
    assert typo.returncode == 2 and "unknown lighteval task(s): tiny_lv_55" in typo.stderr, typo.stderr
