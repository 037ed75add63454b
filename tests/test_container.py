"""The worker's container boundary: binds derived from what it opens, the preflight through the image
(tests/shim/singularity isolates with bubblewrap: only the image, the binds and the passed env)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from oellm import __version__
from oellm.clusters import build_cluster
from oellm.container import plan_binds
from oellm.errors import OellmError
from tests.fixtures_slurm import image_dirs, shim_calls, write_image


def site(binds: list[str], **container) -> object:
    return build_cluster("site", {"container": {"image": "/i.sif", "binds": binds, **container}}, "test")


@pytest.mark.fast
def test_binds_cover_every_path_and_its_realpath(tmp_path: Path):
    """LUMI: /scratch/project_x is a symlink into /pfs/lustre...; a site bind of /scratch shows the link, so
    its target is bound too. A path no site bind covers is bound itself; a missing one is not bound."""
    lustre = tmp_path / "pfs" / "lustre" / "project_x"
    (lustre / "run7").mkdir(parents=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "project_x").symlink_to(lustre)
    other = tmp_path / "other" / "tasks"
    other.mkdir(parents=True)
    env = {"SCR": str(scratch)}
    b = plan_binds(site(["$SCR", "$UNSET_HERE/x"]), [str(scratch / "project_x" / "run7"), str(other),
                                                     str(other / "a.yaml"), str(tmp_path / "gone")], env)
    assert b.site == ("$SCR", "$UNSET_HERE/x") and b.unresolved == ("$UNSET_HERE/x",)
    assert b.paths == (str(other), str(lustre / "run7"))
    assert b.expanded(env) == [str(scratch), str(other), str(lustre / "run7")]
    # not under any site bind and behind a symlink: the real dir is mounted where the worker looks
    alone = plan_binds(site([]), [str(scratch / "project_x" / "run7")], env)
    assert alone.paths == (f"{lustre / 'run7'}:{scratch / 'project_x' / 'run7'}",)
    (tmp_path / "a,b").mkdir()
    with pytest.raises(OellmError, match="Singularity splits --bind on ':' and ','"):
        plan_binds(site([]), [str(tmp_path / "a,b")], env)


def check(tmp_path: Path, model: Path, tasks: Path, extra: tuple[str, ...] = (), env: dict | None = None,
          **container) -> subprocess.CompletedProcess:
    entry = {"executor": "local", "gpus_per_task": 0,
             "container": {"runtime": "singularity", "image": str(tmp_path / "eval.sif"), "gpu_flag": None,
                           "binds": [], "python": "python3", **container}}
    cfile = tmp_path / "clusters.json"
    cfile.write_text(json.dumps({"site": entry}))
    return subprocess.run([sys.executable, "-m", "oellm", "check-cache", "--cluster", "site", "--clusters_file",
                           str(cfile), "--models", str(model), "--tasks", "tiny_mc_a", "--lm_eval_include_path",
                           str(tasks), *extra], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def fake_dist(root: Path, name: str, version: str) -> Path:
    """A dist-info that importlib.metadata finds first: the image "has" this version of `name`."""
    d = root / f"{name}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return root


@pytest.mark.e2e
def test_preflight_proves_loads_through_the_image(container_shim, tiny_model, tiny_tasks, tmp_path):
    write_image(tmp_path / "eval.sif")
    ok = check(tmp_path, tiny_model, tiny_tasks)
    assert ok.returncode == 0, ok.stderr
    assert "load offline through singularity exec" in ok.stdout
    # an image built from containers/ has an oellm of its own: the workers run the login node's, shipped
    assert f"workers run oellm {__version__} shipped in the run dir ({tmp_path / 'eval.sif'}: the image's own " \
        f"oellm {version('oellm')} is not used)" in ok.stdout
    [call] = shim_calls(container_shim)
    binds = [call[i + 1] for i, a in enumerate(call) if a == "--bind"]
    assert str(tiny_model) in binds and str(tiny_tasks) in binds and "--cleanenv" in call
    [code] = [call[i + 1] for i, a in enumerate(call) if a == "--env" and call[i + 1].startswith("PYTHONPATH=")]
    assert code.endswith("${PYTHONPATH:+:$PYTHONPATH}") and "/code/oellm-" in code


@pytest.mark.e2e
def test_an_image_with_an_older_oellm_runs_the_shipped_one(container_shim, tiny_model, tiny_tasks, tmp_path):
    """An image built from containers/ before an upgrade: no rebuild, its oellm is not the one imported."""
    old = fake_dist(tmp_path / "old", "oellm", "0.0.9")
    write_image(tmp_path / "eval.sif", dirs=[*image_dirs(), str(old)], env={"PYTHONPATH": str(old)})
    ok = check(tmp_path, tiny_model, tiny_tasks)
    assert ok.returncode == 0, ok.stderr
    assert f"workers run oellm {__version__} shipped in the run dir ({tmp_path / 'eval.sif'}: the image's own " \
        "oellm 0.0.9 is not used)" in ok.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["no_image", "no_runtime", "no_packages", "ignores_pythonpath", "old_lm_eval",
                                  "cpu_torch_on_nv"])
def test_preflight_refuses_a_bad_image_in_one_line(case, container_shim, tiny_model, tiny_tasks, tmp_path):
    over: dict = {}
    env: dict = {}
    if case == "no_image":
        message = "eval.sif' (cluster site) does not exist: build or pull it (containers/README.md)"
    elif case == "no_runtime":
        write_image(tmp_path / "eval.sif")
        over, message = {"runtime": "apptainer"}, "container runtime 'apptainer' (cluster site) is not on PATH"
        env = {"PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if "shim" not in p)}
    elif case == "no_packages":  # the bare interpreter: oellm is shipped, the worker's packages are not there
        write_image(tmp_path / "eval.sif", dirs=[sys.base_prefix], env={"PATH": f"{sys.base_prefix}/bin:/usr/bin"})
        message = "that oellm's worker needs (its python cannot import it): install it in the image"
    elif case == "ignores_pythonpath":  # a python that skips PYTHONPATH finds the image's own oellm instead
        wrap = tmp_path / "wrap"
        wrap.mkdir()
        (wrap / "python-isolated").write_text(f"#!/bin/sh\nexec {sys.executable} -I \"$@\"\n")
        (wrap / "python-isolated").chmod(0o755)
        write_image(tmp_path / "eval.sif", dirs=[*image_dirs(), str(wrap)])
        over = {"python": str(wrap / "python-isolated")}
        message = f"eval.sif: it imports oellm {__version__} from "
    elif case == "old_lm_eval":
        old = fake_dist(tmp_path / "old", "lm_eval", "0.4.9")
        write_image(tmp_path / "eval.sif", dirs=[*image_dirs(), str(old)], env={"PYTHONPATH": str(old)})
        message = "has lm-eval 0.4.9; oellm needs lm-eval >= 0.4.12"
    else:
        write_image(tmp_path / "eval.sif")
        over, message = {"gpu_flag": "--nv"}, "has a cpu build of torch, but cluster site runs it with --nv"
    r = check(tmp_path, tiny_model, tiny_tasks, env=env, **over)
    assert r.returncode == 2, r.stdout
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.fast
def test_a_bind_with_a_variable_unset_here_is_reported_at_plan_time(tmp_path: Path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfile = tmp_path / "clusters.json"
    cfile.write_text(json.dumps({"site": {"partition": "p", "container": {"image": "/i.sif", "gpu_flag": None,
                                                                           "binds": ["$OELLM_NOT_SET_HERE/x"]}}}))
    r = subprocess.run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "site", "--clusters_file",
                        str(cfile), "--models", str(model), "--tasks", "hellaswag", "--output_dir",
                        str(tmp_path / "runs"), "--dry_run"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "note: bind $OELLM_NOT_SET_HERE/x of cluster site uses a variable not set here" in r.stdout
    script = next((tmp_path / "runs").glob("*/submit_evals.sbatch")).read_text()
    assert f"--bind {model}" in script and '--bind "$OELLM_NOT_SET_HERE/x"' in script
