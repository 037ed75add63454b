"""Golden sbatch scripts, one per clusters.json entry: the whole text must match."""

import dataclasses
import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.clusters import load_clusters
from oellm.container import Binds, plan_binds
from oellm.errors import OellmError
from oellm.render import render_sbatch

pytestmark = pytest.mark.fast
GOLDEN = Path(__file__).parent / "golden"
CLUSTERS = load_clusters()


def render(name: str) -> str:
    return render_sbatch(CLUSTERS[name], run_dir="/shared/runs/2026-01-02-03-04-05", job_name="oellm-2026-01-02-03-04-05",
                         time_minutes=125, python="/opt/venv/bin/python", binds=binds(name, "/shared/runs"))


def binds(name: str, *paths: str) -> Binds:
    c = CLUSTERS[name].container
    return Binds(site=c.binds, paths=paths) if c else Binds()


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_golden_sbatch(name):
    text, path = render(name), GOLDEN / f"{name}.sbatch"
    if os.environ.get("OELLM_UPDATE_GOLDEN") == "1":  # regenerate only on request, never because one is missing
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; create it with OELLM_UPDATE_GOLDEN=1 and review it"
    expected = path.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(path), "rendered"))
    assert text == expected, "rendered sbatch differs from golden file:\n" + diff


def test_every_cluster_has_a_golden_file():
    assert sorted(p.stem for p in GOLDEN.glob("*.sbatch")) == sorted(CLUSTERS)


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_rendered_script_is_valid_bash(name):
    subprocess.run(["bash", "-n"], input=render(name), text=True, check=True)


def test_the_second_argument_picks_a_suite_image(tmp_path):
    c = CLUSTERS["leonardo"]
    cfg = dataclasses.replace(c, container=dataclasses.replace(c.container, images={"lighteval": "/p/light eval.sif"}))
    text = render_sbatch(cfg, run_dir="/r", job_name="j", time_minutes=10, python="python3")
    head = text.split("# The worker sees")[0].split('OFFSET="${1:-0}"')[1]
    for arg, image in (("", "<path/to/eval.sif>"), ("lighteval", "/p/light eval.sif"), ("bench", "<path/to/eval.sif>")):
        out = subprocess.run(["bash", "-c", head + 'printf %s "$IMAGE"', "script", "0", arg], capture_output=True,
                             text=True, check=True).stdout
        assert out == image
    assert '"$IMAGE" \\\n' in text


def test_container_flags_per_vendor():
    assert "singularity exec --cleanenv --rocm" in render("lumi")
    assert "singularity exec --cleanenv --nv" in render("leonardo")
    assert "apptainer exec --cleanenv --nv" in render("jureca")
    assert "exec" not in render("local").split("OFFSET=")[1]


def test_awkward_run_dir_is_quoted():
    cfg = CLUSTERS["local"]
    text = render_sbatch(cfg, run_dir="/tmp/a b;rm -rf x", job_name="j", time_minutes=10, python="/p y/python")
    line = text.strip().splitlines()[-1]
    assert line.startswith("'/p y/python' -m oellm worker --run_dir '/tmp/a b;rm -rf x' ")


def test_requeue_after_node_failure_is_on_unless_max_requeues_is_0():
    from oellm.render import sbatch_flags

    on = sbatch_flags(CLUSTERS["leonardo"], 60)
    assert "--requeue" in on and "--no-requeue" not in on and "--open-mode=append" in on  # keep the failed log
    off = sbatch_flags(dataclasses.replace(CLUSTERS["leonardo"], max_requeues=0), 60)
    assert "--no-requeue" in off and "--requeue" not in off


def test_an_output_dir_with_shell_syntax_stays_a_name_on_the_node(tmp_path):
    """`$(...)`, `$x` and quotes in the output dir reach the container runtime literally: nothing runs."""
    root = tmp_path / 'runs $(touch pwned) "q" $HOME'
    root.mkdir()
    run_dir = f"{root}/2026-01-02-03-04-05"
    Path(run_dir).mkdir()  # the script runs the worker from its run dir
    script = render_sbatch(CLUSTERS["leonardo"], run_dir=run_dir, job_name="oellm-x", time_minutes=10,
                           python="python3", binds=plan_binds(CLUSTERS["leonardo"], [str(root)], {}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    (bin_dir / "singularity").write_text(f"#!{sys.executable}\nimport json, sys\n"
                                         f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    (bin_dir / "singularity").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SCRATCH": "/s", "WORK": "/w", "SLURM_ARRAY_TASK_ID": "0"}
    subprocess.run(["bash", "-c", script, "sbatch", "0"], cwd=tmp_path, env=env, check=True)
    argv = json.loads(record.read_text())
    assert argv[argv.index(str(root)) - 1] == "--bind" and run_dir in argv
    assert not (tmp_path / "pwned").exists()


def test_a_bind_singularity_would_split_is_refused(tmp_path):
    (tmp_path / "a:b").mkdir()
    with pytest.raises(OellmError, match="Singularity splits --bind on ':' and ','"):
        plan_binds(CLUSTERS["lumi"], [str(tmp_path / "a:b")])


def test_a_script_runs_as_written_on_a_node_image_var_env_order_and_modules():
    """C9: $WORK in the image expands on the node; C10: an env value using another key comes after it (set -u);
    Lmod's `module` reading unset variables does not trip `set -u`."""
    c = CLUSTERS["leonardo"]
    cfg = dataclasses.replace(c, modules=("python/3.11",), env={"HF_DATASETS_CACHE": "$HF_HOME/datasets",
                                                               "HF_HOME": "$SCRATCH/hf"},
                              container=dataclasses.replace(c.container, image="$WORK/images/eval.sif"))
    script = render_sbatch(cfg, run_dir="/r", job_name="j", time_minutes=10, python="python3")
    module = 'module() { : "$LMOD_UNSET_THING"; }; export -f module; '
    out = subprocess.run(["bash", "-c", module + 'bash -c "$0" x', _head_only(script)],
                         env={"PATH": "/usr/bin:/bin", "SCRATCH": "/s", "WORK": "/w"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["IMAGE=/w/images/eval.sif", "HF_HOME=/s/hf", "HF_DATASETS_CACHE=/s/hf/datasets"]


def _head_only(script: str) -> str:
    before, after = script.split('OFFSET="${1:-0}"')
    after = after.split("# The worker sees")[0] if "# The worker sees" in after else ""  # no container: the worker
    return (before + after
            + 'printf "%s\\n" "IMAGE=${IMAGE:-}" "HF_HOME=$HF_HOME" "HF_DATASETS_CACHE=${HF_DATASETS_CACHE:-}"\n')


def test_without_a_container_the_caches_the_pre_cache_filled_are_pinned():
    """C5: a resubmit from cron (no HF_HOME) must read the cache the login shell's pre-cache filled."""
    from oellm.container import inherited_env

    cfg = CLUSTERS["local"]
    inherited = inherited_env(cfg, {"HF_HOME": "/login/hf", "OELLM_CACHE_DIR": "/login/oellm", "PATH": "/x"})
    assert inherited == {"HF_HOME": "/login/hf", "OELLM_CACHE_DIR": "/login/oellm"}
    script = render_sbatch(cfg, run_dir="/r", job_name="j", time_minutes=10, python="python3", inherited=inherited)
    out = subprocess.run(["bash", "-c", _head_only(script)], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                         text=True, check=True)
    assert "HF_HOME=/login/hf" in out.stdout.splitlines()
