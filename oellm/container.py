"""The container boundary of the worker, decided once for the sbatch script and the login-node preflight:
which flags, which binds, which environment. Inside, the worker sees only its binds, the image's packages
and the variables passed here (`--cleanenv`): nothing of the login shell (PYTHONPATH, VIRTUAL_ENV) leaks in.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from oellm.clusters import ClusterConfig, ContainerConfig
from oellm.errors import OellmError
from oellm.offline import WORKER_ENV

# Variables the node sets per task (SLURM's, GPU visibility): passed as <RUNTIME>ENV_X, which survives
# --cleanenv, because `--env` splits on commas and CUDA_VISIBLE_DEVICES=0,1 has one.
NODE_ENV = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
            "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
# Caches the pre-cache filled from the login environment: the worker must read the same ones.
CACHE_VARS = ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "OELLM_CACHE_DIR", "NLTK_DATA")
# ~/.local is on HOME, which the runtime binds: its packages must not shadow the image's.
IMAGE_ENV = {"PYTHONNOUSERSITE": "1"}
UNBINDABLE = ":,\n"  # Singularity splits --bind on ':' and ','
RESULT = "RESULT "  # the prefix of the answer line a command run through the image prints last
_VAR = re.compile(r"\$(?:(\w+)|\{(\w+)\})")


@dataclass(frozen=True)
class Binds:
    """`site`: the cluster's binds as written (their $VARS expand on the node); `paths`: what the worker
    opens that no site bind covers, as `src` or `realpath:path`; `unresolved`: site binds whose $VARS are
    unset here, so nothing can be checked against them."""

    site: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()

    def expanded(self, environ: Mapping[str, str]) -> list[str]:
        """Every bind as the login node resolves it (for the preflight); unresolved ones are left out."""
        site = [_expandvars(b, environ) for b in self.site if b not in self.unresolved]
        return [*site, *self.paths]


def inherited_env(cluster: ClusterConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The login node's cache locations the cluster does not set itself: the pre-cache filled them, so the
    script pins them, with or without a container (a resubmit from cron has no HF_HOME of its own)."""
    return {k: environ[k] for k in CACHE_VARS if environ.get(k) and k not in cluster.env}


def fixed_env(cluster: ClusterConfig, inherited: Mapping[str, str]) -> dict[str, str]:
    """What the worker runs under: literal values, then the cluster's (which may use the node's $VARS)."""
    extra = IMAGE_ENV if cluster.container else {}
    return {**WORKER_ENV, **extra, **inherited, **cluster.env}


def check_env(cluster: ClusterConfig, inherited: Mapping[str, str]) -> None:
    if cluster.container:
        bad = sorted(k for k, v in {**inherited, **cluster.env}.items() if "," in v)
        if bad:
            raise OellmError(f"environment variable {bad[0]} (cluster {cluster.name}): a value with ',' cannot be "
                             "passed into the container (`--env` splits on commas)")


def code_path(code_dir: str) -> str:
    """The workers' PYTHONPATH: oellm's shipped code (`oellm.shipping`) first, then whatever the image or the
    node had. In a container the value goes through `--env`, where Apptainer (and Singularity >= 3.6) evaluate
    `$PYTHONPATH` as the image's own (its %environment), so an image that sets PYTHONPATH keeps it; on a node
    without one, bash does the same with the module-loaded value."""
    return f"{code_dir}${{PYTHONPATH:+:$PYTHONPATH}}"


def env_prefix(container: ContainerConfig) -> str:
    return f"{container.runtime.upper()}ENV_"


def exec_flags(container: ContainerConfig) -> list[str]:
    return ["exec", "--cleanenv", *([container.gpu_flag] if container.gpu_flag else [])]


def _expandvars(value: str, environ: Mapping[str, str]) -> str:
    """$VAR and ${VAR} from `environ` (os.path.expandvars reads only os.environ); unset ones stay as written."""
    def one(m: re.Match) -> str:
        return environ.get(m.group(1) or m.group(2), m.group(0))

    return os.path.expanduser(_VAR.sub(one, value))


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def plan_binds(cluster: ClusterConfig, paths: Iterable[str], environ: Mapping[str, str] = os.environ) -> Binds:
    """The site's binds plus one for each path the worker opens that they miss. A path is visible when it
    lies under a bind's destination; its realpath too (a symlink such as LUMI's /scratch/project_x ->
    /pfs/lustre... would otherwise dangle inside). Paths that do not exist are not bound (the runtime
    refuses missing sources); ':' or ',' cannot be bound at all."""
    if not cluster.container:
        return Binds()
    site = tuple(cluster.container.binds)
    unresolved = tuple(b for b in site if "$" in _expandvars(b, environ))
    dests = []
    for b in site:
        if b not in unresolved:
            parts = _expandvars(b, environ).split(":")
            dests.append(parts[1] if len(parts) > 1 and parts[1] else parts[0])
    extra: list[str] = []
    for raw in sorted({os.path.abspath(os.path.expanduser(p)) for p in paths}):
        if not os.path.exists(raw):
            continue
        path = raw if os.path.isdir(raw) else os.path.dirname(raw)
        real = os.path.realpath(path)
        for p in {path, real}:
            if any(c in p for c in UNBINDABLE):
                raise OellmError(f"cannot bind {p!r} into the container: Singularity splits --bind on ':' and ','; "
                                 "rename or move it (a path without ':', ',' or a newline)")
        if not _under(path, dests):  # mounted where the worker looks, whatever the symlinks on the way
            extra.append(path if real == path else f"{real}:{path}")
            dests.append(path)
        elif real != path and not _under(real, dests):  # visible as a link: its target must be too
            extra.append(real)
            dests.append(real)
    return Binds(site, tuple(extra), unresolved)


def preflight_argv(cluster: ClusterConfig, binds: Binds, environ: Mapping[str, str], command: list[str],
                   code_dir: str) -> list[str]:
    """The worker's container invocation as the login node runs it: same runtime, flags, binds, env, image and
    shipped oellm (`code_dir`, a copy of what the run dir gets, `oellm.shipping.staged`; a bind must cover it)
    as the sbatch script, with the login node's values of $VARS."""
    c = cluster.container
    assert c is not None
    argv = [c.runtime, *exec_flags(c)]
    for b in binds.expanded(environ):
        argv += ["--bind", b]
    for k, v in fixed_env(cluster, inherited_env(cluster, environ)).items():
        argv += ["--env", f"{k}={_expandvars(v, environ)}"]
    argv += ["--env", f"PYTHONPATH={code_path(code_dir)}"]
    return [*argv, _expandvars(c.image, environ), c.python, *command]


@functools.lru_cache(maxsize=8)
def venv_python(venv: str | Path | None) -> str | None:
    """--venv_path's interpreter (`VENV/bin/python`, not resolved: a venv's python is a symlink out of it),
    checked on the login node: it must exist and find lm-eval."""
    if not venv:
        return None
    import subprocess

    python = Path(venv).expanduser().absolute() / "bin" / "python"
    if not python.exists():
        raise OellmError(f"--venv_path {venv}: no bin/python in it; give a virtual environment's directory")
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('lm_eval') is not None)"],
                           capture_output=True, text=True, timeout=60)
    if probe.stdout.strip() != "True":
        raise OellmError(f"--venv_path {venv}: its Python has no lm-eval; install the worker's stack there "
                         "(pip install 'oellm[worker]')")
    return str(python)
