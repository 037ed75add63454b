"""Any image with torch and lm-eval runs the workers: oellm ships itself into the run (oellm.shipping), the
preflight proves the image imports that copy and says so, and names a package the worker needs that the image
lacks. Images are stand-ins for the container shim (tests/shim/singularity, bubblewrap): only their dirs, the
binds and the passed environment are visible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oellm import __version__
from tests.fixtures_slurm import shim_calls, wait_for_jobs, write_image

SHIPPED = f"workers run oellm {__version__} shipped in the run dir"


def bare_image(path: Path, python: Path, pythonpath: Path | None = None) -> Path:
    """An image whose python is the bare venv's (torch, lm-eval; no oellm, no jsonargparse), with `pythonpath`
    (a dir of the image) as its own PYTHONPATH."""
    venv = python.parent.parent
    base = json.loads(subprocess.run([str(python), "-c", "import sys, json; print(json.dumps(sys.base_prefix))"],
                                     capture_output=True, text=True, check=True).stdout)
    extra = {"PYTHONPATH": str(pythonpath)} if pythonpath else {}
    return write_image(path, dirs=[str(venv), base, *([str(pythonpath)] if pythonpath else [])],
                       env={"PATH": f"{venv}/bin:/usr/bin:/bin", **extra})


def site(tmp_path: Path, image: Path, **over) -> Path:
    entry = {"partition": "debug", "account": None, "gpus_per_task": 0, "cpus_per_task": 1, "mem": "400M",
             "minutes_per_eval": 1, "max_time": "00:30:00", "max_running": 2,
             "container": {"runtime": "singularity", "image": str(image), "gpu_flag": None, "binds": [],
                           "python": "python3"}, **over}
    path = tmp_path / "clusters.json"
    path.write_text(json.dumps({"site": entry}))
    return path


def oellm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run from `cwd`, not the checkout: `python -m` puts the working dir first on sys.path, where the
    checkout's oellm would be found without being shipped."""
    return subprocess.run([sys.executable, "-m", "oellm", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


@pytest.mark.slurm
@pytest.mark.e2e
def test_a_bare_image_runs_the_oellm_shipped_into_the_run(bare_venv, slurm_cluster, container_shim, tiny_model,
                                                          tiny_tasks, tmp_path):
    for module in ("oellm", "jsonargparse"):  # the premise: a stock image's python
        assert subprocess.run([str(bare_venv), "-c", f"import {module}"], capture_output=True, cwd=tmp_path,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).returncode != 0
    cfile = site(tmp_path, bare_image(tmp_path / "bare.sif", bare_venv), partition=slurm_cluster.partition)
    r = oellm("schedule-eval", "--cluster", "site", "--clusters_file", str(cfile), "--models", str(tiny_model),
              "--tasks", "tiny_mc_a,tiny_mc_b", "--n_shot", "0", "--limit", "4", "--lm_eval_include_path",
              str(tiny_tasks), "--output_dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"preflight: {SHIPPED} ({tmp_path / 'bare.sif'}: the image has none)" in r.stdout, r.stdout
    (run,) = (tmp_path / "runs").iterdir()
    subs = json.loads((run / "run.json").read_text())["submissions"]
    assert set(wait_for_jobs([s["job_id"] for s in subs], timeout=300).values()) == {"COMPLETED"}
    results = [json.loads(p.read_text()) for p in (run / "results").glob("*.json")]
    assert len(results) == 2 and all(d["oellm"]["oellm_version"] == __version__ for d in results)
    assert all("acc,none" in m for d in results for m in d["results"].values())
    worker = shim_calls(container_shim)[-1]
    assert f"PYTHONPATH={run}/oellm_code${{PYTHONPATH:+:$PYTHONPATH}}" in worker
    assert (run / "oellm_code" / "oellm" / "worker" / "task.py").is_file()


@pytest.mark.e2e
def test_a_venv_without_oellm_runs_local_workers(bare_venv, tiny_model, tiny_tasks, tmp_path):
    """--venv_path (a site without containers): the local workers run that venv's python with the shipped
    oellm first on PYTHONPATH, as the sbatch script does."""
    r = oellm("schedule-eval", "--cluster", "local", "--venv_path", str(bare_venv.parent.parent), "--models",
              str(tiny_model), "--tasks", "tiny_mc_a", "--n_shot", "0", "--limit", "4", "--lm_eval_include_path",
              str(tiny_tasks), "--output_dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "runs").iterdir()
    [result] = [json.loads(p.read_text()) for p in (run / "results").glob("*.json")]
    assert result["oellm"]["oellm_version"] == __version__ and "acc,none" in result["results"]["tiny_mc_a"]
    assert json.loads((run / "run.json").read_text())["script"]["python"] == str(bare_venv)


@pytest.mark.e2e
def test_an_image_lacking_a_package_the_worker_imports_is_named_in_one_line(bare_venv, container_shim, tiny_model,
                                                                             tiny_tasks, tmp_path):
    """lm-eval without its `hf` extra has no accelerate, which lm-eval's HF model imports: the check-cache
    preflight names it (the image's own PYTHONPATH is kept behind the shipped oellm, and hides it here)."""
    hide = tmp_path / "hide" / "accelerate"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'accelerate\'", name="accelerate")\n')
    image = bare_image(tmp_path / "bare.sif", bare_venv, pythonpath=hide.parent)
    cfile = site(tmp_path, image, executor="local")
    r = oellm("check-cache", "--cluster", "site", "--clusters_file", str(cfile), "--models", str(tiny_model),
              "--tasks", "tiny_mc_a", "--lm_eval_include_path", str(tiny_tasks), cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert f"image {image} lacks accelerate that oellm's worker needs (importing lm_eval.models.huggingface" \
        in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.fast
def test_an_image_without_the_workers_packages_submits_nothing(container_shim, tiny_model, tmp_path):
    """The bare interpreter (no torch, no lm-eval): oellm is shipped, so what fails is a package of the image's,
    named in one line, exit 2, and no run dir is written."""
    image = write_image(tmp_path / "python.sif", dirs=[sys.base_prefix], env={"PATH": f"{sys.base_prefix}/bin:/usr/bin"})
    cfile = site(tmp_path, image, executor="local")
    r = oellm("schedule-eval", "--cluster", "site", "--clusters_file", str(cfile), "--models", str(tiny_model),
              "--tasks", "hellaswag", "--n_shot", "0", "--output_dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert f"image {image} lacks " in r.stderr and "that oellm's worker needs" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.fast
def test_the_worker_entry_needs_no_cli_stack(tmp_path):
    """`python -m oellm worker` parses with argparse: jsonargparse is never imported on the worker's path."""
    code = ("import sys, runpy; sys.argv = ['oellm', 'worker', '--run_dir', sys.argv[1], '--index', '0']\n"
            "try:\n    runpy.run_module('oellm', run_name='__main__')\n"
            "except SystemExit as e:\n    print('exit', e.code)\n"
            "print('jsonargparse' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nope")], capture_output=True, text=True,
                       env={**os.environ, "SLURM_ARRAY_TASK_ID": ""})
    assert r.stdout.split() == ["exit", "2", "False"], (r.stdout, r.stderr)
    assert "oellm worker: error:" in r.stderr and "Traceback" not in r.stderr
