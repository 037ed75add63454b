"""oellm-eval's clusters.yaml as --clusters_file: its sites become oellm clusters (validated like
clusters.json) and render the sbatch script a user of oellm-eval expects; hostname detection falls back
to the FQDN; a site without a container image runs the worker from a Python environment."""

from __future__ import annotations

import socket

import pytest

from oellm.clusters import detect_cluster, load_clusters
from oellm.container import Binds
from oellm.errors import OellmError
from oellm.render import render_sbatch

pytestmark = pytest.mark.fast

# written for these tests in oellm-eval's format (a shared block, {VAR} templates, upper-case settings)
CLUSTERS_YAML = """\
shared:
  TIME_LIMIT: "00:30:00"
  EVAL_OUTPUT_DIR: "{EVAL_BASE_DIR}/{USER}"
  GPUS_PER_NODE: 1
  HF_HUB_DISABLE_PROGRESS_BARS: "1"
gpusite:
  hostname_pattern: "login*.gpu.example"
  EVAL_BASE_DIR: "/p/evals"
  PARTITION: "booster"
  ACCOUNT: "proj1"
  QUEUE_LIMIT: 250
  EVAL_CONTAINER_IMAGE: "eval_env.sif"
  SINGULARITY_ARGS: "--nv --contain --env PYTHONNOUSERSITE=1"
  HF_HOME: "{EVAL_BASE_DIR}/hf"
venvsite:
  hostname_pattern: ["*.venv.example.org", "gpu-login"]
  EVAL_BASE_DIR: "/lnet/evals"
  PARTITION: "gpu-a,gpu-b"
  QUEUE_LIMIT: 10
  GPUS_PER_NODE: 2
  HF_HUB_OFFLINE: "0"
  SLURM_MEM: "32G"
  NODES: "1"
  NODELIST: "node-8gpu[1-2],node-3gpu1"
"""


@pytest.fixture
def clusters(tmp_path, monkeypatch):
    for name in ("HF_HOME", "HF_HUB_OFFLINE", "PARTITION", "ACCOUNT", "SLURM_MEM", "GPUS_PER_NODE", "QUEUE_LIMIT",
                 "EVAL_CONTAINER_IMAGE", "BATCH_SIZE", "MODEL_ARGS", "LM_EVAL_INCLUDE_PATH"):
        monkeypatch.delenv(name, raising=False)  # the login environment would win over the yaml (test_upstream_env)
    f = tmp_path / "clusters.yaml"
    f.write_text(CLUSTERS_YAML)
    return load_clusters(f)


def _script(cfg) -> str:
    binds = Binds(site=cfg.container.binds, paths=("/r",)) if cfg.container else Binds()
    return render_sbatch(cfg, run_dir="/r", job_name="j", time_minutes=60, python="/v/bin/python", binds=binds)


def test_an_upstream_site_with_an_image_renders_its_settings(clusters):
    cfg = clusters["gpusite"]
    assert (cfg.partition, cfg.account, cfg.queue_limit, cfg.gpus_per_task) == ("booster", "proj1", 250, 1)
    assert cfg.output_root == "/p/evals/$USER"  # {USER} is the login node's, expanded there
    assert cfg.container.image == "/p/evals/eval_env.sif" and cfg.container.gpu_flag == "--nv"
    text = _script(cfg)
    for line in ("#SBATCH --partition=booster", "#SBATCH --account=proj1", "#SBATCH --gres=gpu:1",
                 'export HF_HOME="/p/evals/hf"', 'export PYTHONNOUSERSITE="1"', 'IMAGE="/p/evals/eval_env.sif"',
                 'singularity exec --cleanenv --nv --bind "/p/evals"'):
        assert line in text, line


def test_a_venv_only_site_runs_the_worker_without_a_container(clusters):
    cfg = clusters["venvsite"]
    assert cfg.container is None and cfg.account is None and cfg.mem == "32G"
    text = _script(cfg)
    for line in ("#SBATCH --partition=gpu-a,gpu-b", "#SBATCH --mem=32G", "#SBATCH --gres=gpu:2",
                 "#SBATCH --nodelist='node-8gpu[1-2],node-3gpu1'", 'export HF_HUB_OFFLINE="0"',
                 '/v/bin/python -m oellm worker'):
        assert line in text, line
    assert "--account" not in text and "singularity" not in text


def test_hostname_detection_falls_back_to_the_fqdn(clusters, monkeypatch):
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "node7.venv.example.org")
    assert detect_cluster(clusters, hostname="node7", slurm_available=True).name == "venvsite"
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "node7.elsewhere.org")
    with pytest.raises(OellmError, match="host 'node7' matches no known cluster"):
        detect_cluster(clusters, hostname="node7", slurm_available=True)


@pytest.mark.parametrize(("edit", "message"), [
    (('  QUEUE_LIMIT: 10\n', '  QUEUE_LIMIT: 10\n  EVAL_QUEUE: 3\n'), r"venvsite: unknown setting\(s\) EVAL_QUEUE"),
    (('  QUEUE_LIMIT: 250\n', '  QUEUE_LIMIT: many\n'), "gpusite.QUEUE_LIMIT: expected a whole number, got 'many'"),
    (('"--nv --contain', '"--nv --writable --contain'), "gpusite.SINGULARITY_ARGS: '--writable' has no oellm equivalent"),
    (('  PARTITION: "booster"\n', '  PARTITION: "booster; rm -rf ~"\n'), "gpusite.partition: .* has characters a shell"),
    (('  NODES: "1"\n', '  NODES: "4"\n'), "nodes: '4'; an array task is one worker process on one node"),
])
def test_a_bad_upstream_clusters_file_is_one_line(tmp_path, edit, message):
    f = tmp_path / "clusters.yaml"
    assert edit[0] in CLUSTERS_YAML
    f.write_text(CLUSTERS_YAML.replace(*edit))
    with pytest.raises(OellmError, match=message) as e:
        load_clusters(f)
    assert "\n" not in str(e.value)
