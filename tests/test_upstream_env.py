"""oellm-eval users' environment and clusters.yaml, against oellm-eval's own file (tests/upstream/clusters.yaml,
byte-identical to oellm-eval 238bea9's oellm/resources/clusters.yaml): the login environment wins over the
yaml (REVIEW Part 2 D1), a yaml site takes nothing of oellm's shipped entry of its name (D2), and run dirs go
where oellm-eval puts them (D9, D10)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.clusters import load_clusters, require_resolved
from oellm.container import Binds, inherited_env
from oellm.errors import OellmError
from oellm.plan.overrides import SlurmOverrides, with_overrides
from oellm.render import render_sbatch

UPSTREAM_YAML = Path(__file__).parent / "upstream" / "clusters.yaml"
D1_ENV = {"SLURM_MEM": "64G", "PARTITION": "dev-g", "ACCOUNT": "otherproj", "GPUS_PER_NODE": "2",
          "EVAL_CONTAINER_IMAGE": "my.sif"}
VARS = ("SLURM_MEM", "PARTITION", "ACCOUNT", "GPUS_PER_NODE", "EVAL_CONTAINER_IMAGE", "QUEUE_LIMIT", "BATCH_SIZE",
        "MODEL_ARGS", "LM_EVAL_INCLUDE_PATH", "EVAL_OUTPUT_DIR", "OELLM_CLUSTERS_FILE", "OELLM_CLUSTER")


@pytest.fixture
def clean_env(monkeypatch):
    """None of oellm-eval's variables set, HF_HOME as oellm-eval's README asks."""
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", "/home/u/hf")
    return monkeypatch


def _script(cfg) -> str:
    binds = Binds(site=cfg.container.binds, paths=("/r",)) if cfg.container else Binds()
    return render_sbatch(cfg, run_dir="/r", job_name="j", time_minutes=60, python="/v/bin/python", binds=binds,
                         inherited=inherited_env(cfg, os.environ))


@pytest.mark.fast
def test_the_login_environment_wins_over_clusters_yaml_and_a_flag_over_both(clean_env):
    """D1: oellm-eval's `os.environ.setdefault`: SLURM_MEM, PARTITION, ACCOUNT, GPUS_PER_NODE and
    EVAL_CONTAINER_IMAGE set on the login node replace leonardo's values; an explicit flag still wins."""
    for key, value in D1_ENV.items():
        clean_env.setenv(key, value)
    cfg = load_clusters(UPSTREAM_YAML)["leonardo"]
    text = _script(cfg)
    for line in ("#SBATCH --mem=64G", "#SBATCH --partition=dev-g", "#SBATCH --account=otherproj",
                 "#SBATCH --gres=gpu:2", 'IMAGE="/leonardo_work/AIFAC_L01_028/oellm-cli-shared-evals/my.sif"'):
        assert line in text, line
    assert cfg.from_environment == D1_ENV  # what the plan summary names
    flagged = with_overrides(cfg, SlurmOverrides(partition="boost_usr_prod", mem="100G"))
    assert (flagged.partition, flagged.mem, flagged.account) == ("boost_usr_prod", "100G", "otherproj")
    assert set(flagged.from_environment) == {"ACCOUNT", "GPUS_PER_NODE", "EVAL_CONTAINER_IMAGE"}


@pytest.mark.fast
def test_batch_size_queue_limit_and_include_path_from_the_environment(clean_env, tmp_path):
    """D1: BATCH_SIZE (or MODEL_ARGS' batch_size), QUEUE_LIMIT and LM_EVAL_INCLUDE_PATH are read as
    oellm-eval reads them; a bad value names the variable."""
    from oellm.plan.request import Selection, include_paths

    clean_env.setenv("BATCH_SIZE", "8")
    clean_env.setenv("QUEUE_LIMIT", "50")
    clean_env.setenv("LM_EVAL_INCLUDE_PATH", str(tmp_path))
    cfg = load_clusters(UPSTREAM_YAML)["lumi"]
    assert (cfg.batch_size, cfg.queue_limit) == ("8", 50)
    assert include_paths(Selection(), cfg) == [str(tmp_path)]
    assert include_paths(Selection(lm_eval_include_path=str(tmp_path / "..")), cfg) == [str(tmp_path.parent)]
    clean_env.setenv("MODEL_ARGS", "batch_size=4")
    assert load_clusters(UPSTREAM_YAML)["lumi"].batch_size == "4"
    clean_env.setenv("QUEUE_LIMIT", "lots")
    with pytest.raises(OellmError, match=r"QUEUE_LIMIT: expected a whole number, got \$QUEUE_LIMIT='lots' \(from the environment\)"):
        load_clusters(UPSTREAM_YAML)


@pytest.mark.fast
def test_an_upstream_site_takes_nothing_of_the_shipped_entry_of_its_name(clean_env, tmp_path):
    """D2: LUMI's shipped placeholder HF_HOME no longer blocks a submission; Leonardo's script has the
    user's HF_HOME, --mem=96G and no --cpus-per-task (oellm-eval's defaults), not oellm's $SCRATCH/hf, 120G, 8."""
    clusters = load_clusters(UPSTREAM_YAML)
    require_resolved(clusters["lumi"])  # was: "env.HF_HOME is still the site placeholder"
    for name in ("leonardo", "jureca", "jupiter", "lumi"):
        text = _script(clusters[name])
        assert "#SBATCH --mem=96G" in text and "--cpus-per-task" not in text, name
    leo = _script(clusters["leonardo"])
    assert "HF_HOME=/home/u/hf" in leo and "SCRATCH" not in leo
    # jupiter's yaml sets HF_HOME; an exported one wins, as in oellm-eval
    assert clusters["jupiter"].env["HF_HOME"] == "/home/u/hf"
    # asking for the merge explicitly: OELLM_BASE
    mine = tmp_path / "clusters.yaml"
    mine.write_text(UPSTREAM_YAML.read_text().replace('  ACCOUNT: "OELLM_prod2026"', '  ACCOUNT: "OELLM_prod2026"\n  OELLM_BASE: leonardo'))
    merged = load_clusters(mine)["leonardo"]
    assert (merged.mem, merged.cpus_per_task, merged.env["HF_HOME"]) == ("120G", 8, "$SCRATCH/hf")
    assert merged.account == "OELLM_prod2026"
    mine.write_text(UPSTREAM_YAML.read_text().replace('  ACCOUNT: "OELLM_prod2026"', '  ACCOUNT: "x"\n  OELLM_BASE: leo'))
    with pytest.raises(OellmError, match="OELLM_BASE 'leo' is not a shipped cluster; shipped: "):
        load_clusters(mine)


def _oellm_eval(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "import sys; from oellm.cli import main_eval; main_eval(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=env)


@pytest.mark.e2e
def test_summary_names_the_environment_and_run_dirs_go_where_oellm_eval_puts_them(tiny_model, tiny_tasks, tmp_path):
    """D1 summary line; D9: $EVAL_OUTPUT_DIR/<ts>, not $EVAL_OUTPUT_DIR/$USER/<ts>; D10: --local writes
    ./oellm-output/<ts>."""
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    common = ["--models", str(tiny_model), "--tasks", "tiny_mc_a", "--n_shot", "0", "--lm_eval_include_path",
              str(tiny_tasks), "--dry_run", "true", "--skip_checks", "true"]
    out = tmp_path / "evals"
    r = _oellm_eval("schedule", "--clusters_file", str(UPSTREAM_YAML), "--cluster", "leonardo", *common,
                    cwd=tmp_path, env={**env, **D1_ENV, "EVAL_OUTPUT_DIR": str(out)})
    assert r.returncode == 0, r.stderr
    assert "from the environment: SLURM_MEM=64G, PARTITION=dev-g, ACCOUNT=otherproj, GPUS_PER_NODE=2, " \
           "EVAL_CONTAINER_IMAGE=my.sif" in r.stdout
    (run,) = out.iterdir()
    assert (run / "submit_evals.sbatch").is_file()  # right under EVAL_OUTPUT_DIR
    r = _oellm_eval("schedule", "--local", *common, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "oellm-output").iterdir()
    assert (run / "jobs.csv").is_file() and "from the environment" not in r.stdout
