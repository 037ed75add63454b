"""oellm-eval's `clusters.yaml` as a clusters file: each site's upper-case variables become oellm's cluster
fields, so `--clusters_file clusters.yaml` works as it is and is then validated like clusters.json.

Its format: a `shared` block applied to every site (a site's own value wins), `{VAR}` templates filled from
the site's and the shared values (anything else, such as `{USER}`, is left to the login node's environment
as `$VAR`), and per site EVAL_BASE_DIR, EVAL_OUTPUT_DIR, PARTITION, ACCOUNT, QUEUE_LIMIT, GPUS_PER_NODE,
SLURM_MEM, NODES, NODELIST, EVAL_CONTAINER_IMAGE (a file in EVAL_BASE_DIR, or a path) with SINGULARITY_ARGS,
and environment variables for the jobs (HF_HOME, HF_HUB_OFFLINE, ...). A site without an image runs the
worker without a container (a venv-only site such as UFAL).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from oellm.errors import OellmError

SCALARS = {"PARTITION": "partition", "ACCOUNT": "account", "QUEUE_LIMIT": "queue_limit",
           "GPUS_PER_NODE": "gpus_per_task", "SLURM_MEM": "mem", "EVAL_OUTPUT_DIR": "output_root"}
INTS = ("queue_limit", "gpus_per_task")
SBATCH = {"NODES": "nodes", "NODELIST": "nodelist"}
# the jobs' environment, as oellm-eval exports it
ENV = ("HF_HOME", "HF_HUB_OFFLINE", "UV_LINK_MODE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS",
       "TRANSFORMERS_OFFLINE", "NLTK_DATA")
# read for templates and the image path, or oellm-eval's own default (oellm estimates each task's time itself)
USED = ("hostname_pattern", "EVAL_BASE_DIR", "EVAL_CONTAINER_IMAGE", "SINGULARITY_ARGS", "TIME_LIMIT")
KNOWN = (*USED, *SCALARS, *SBATCH, *ENV)
TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_clusters_yaml(path: Path) -> dict[str, Any]:
    """The file's sites as clusters.json entries (name -> fields)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise OellmError(f"clusters file {path} not found") from None
    except yaml.YAMLError as e:
        raise OellmError(f"clusters file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise OellmError(f"clusters file {path}: expected a mapping of site names to settings")
    shared = data.get("shared") or {}
    _check(f"{path}: shared", shared)
    out = {}
    for name, site in data.items():
        if name == "shared":
            continue
        _check(f"{path}: {name}", site)
        out[str(name)] = _entry(f"{path}: {name}", {**shared, **site})
    return out


def _check(where: str, site: Any) -> None:
    if not isinstance(site, dict):
        raise OellmError(f"{where}: expected a mapping of settings, got {site!r}")
    unknown = sorted(set(map(str, site)) - set(KNOWN))
    if unknown:
        raise OellmError(f"{where}: unknown setting(s) {', '.join(unknown)}; oellm-eval's are {', '.join(KNOWN)}")


def _fill(value: Any, site: dict[str, Any], depth: int = 0) -> str:
    """`{VAR}` from the site's settings; other names become `$VAR`, expanded on the login node or node."""
    def one(m: re.Match) -> str:
        key = m.group(1)
        if key in site and depth < 5:
            return _fill(site[key], site, depth + 1)
        return f"${key}"

    return TEMPLATE.sub(one, str(value))


def _entry(where: str, site: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if "hostname_pattern" in site:
        entry["hostname_pattern"] = site["hostname_pattern"]
    for key, field in SCALARS.items():
        if key in site:
            value = _fill(site[key], site)
            if field in INTS:
                if not value.strip().isdigit():
                    raise OellmError(f"{where}.{key}: expected a whole number, got {site[key]!r}")
                entry[field] = int(value)
            else:
                entry[field] = value or None  # ACCOUNT: "" books no account, as oellm-eval drops the line
    options = {opt: _fill(site[key], site) for key, opt in SBATCH.items() if site.get(key) not in (None, "")}
    if options:
        entry["sbatch_options"] = options
    env = {key: _fill(site[key], site) for key in ENV if key in site}
    image = site.get("EVAL_CONTAINER_IMAGE")
    if image:
        base = _fill(site.get("EVAL_BASE_DIR", ""), site)
        image = _fill(image, site)
        path = image if image.startswith(("/", "$", "~")) or not base else f"{base}/{image}"
        container, more_env = _container(where, str(site.get("SINGULARITY_ARGS", "")))
        entry["container"] = {**container, "image": path, "binds": [base] if base else []}
        env.update(more_env)
    else:
        entry["container"] = None
    if env:
        entry["env"] = env
    return entry


def _container(where: str, args: str) -> tuple[dict[str, Any], dict[str, str]]:
    """SINGULARITY_ARGS -> (container fields, environment): `--nv`/`--rocm` is the GPU flag, `--env K=V` the
    jobs' environment; `--contain` and `--cleanenv` are what oellm's container boundary always does."""
    words = shlex.split(args)
    container: dict[str, Any] = {"gpu_flag": None}
    env: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("--nv", "--rocm"):
            container["gpu_flag"] = word
        elif word == "--env" and i + 1 < len(words) and "=" in words[i + 1]:
            key, _, value = words[i + 1].partition("=")
            env[key] = value
            i += 1
        elif word.startswith("--env=") and "=" in word[6:]:
            key, _, value = word[6:].partition("=")
            env[key] = value
        elif word not in ("--contain", "--cleanenv", "-c", "-e"):
            raise OellmError(f"{where}.SINGULARITY_ARGS: {word!r} has no oellm equivalent; oellm takes --nv, --rocm, "
                             "--env K=V and --contain (its container boundary always isolates the worker)")
        i += 1
    return container, env
