"""oellm-eval's `clusters.yaml` as a clusters file: each site's upper-case variables become oellm's cluster
fields, so `--clusters_file clusters.yaml` works as it is and is then validated like clusters.json.

Its format: a `shared` block applied to every site (a site's own value wins), `{VAR}` templates filled from
the site's and the shared values (anything else, such as `{USER}`, is left to the login node's environment
as `$VAR`), and per site EVAL_BASE_DIR, EVAL_OUTPUT_DIR, PARTITION, ACCOUNT, QUEUE_LIMIT, GPUS_PER_NODE,
SLURM_MEM, NODES, NODELIST, EVAL_CONTAINER_IMAGE (a file in EVAL_BASE_DIR, or a path) with SINGULARITY_ARGS,
and environment variables for the jobs (HF_HOME, HF_HUB_OFFLINE, ...). A site without an image runs the
worker without a container (a venv-only site such as UFAL).

As in oellm-eval (`os.environ.setdefault`), the login environment wins over the file: SLURM_MEM, PARTITION,
ACCOUNT, GPUS_PER_NODE, EVAL_CONTAINER_IMAGE, QUEUE_LIMIT, BATCH_SIZE, MODEL_ARGS (its batch_size) and
LM_EVAL_INCLUDE_PATH when set, and the jobs' variables the site sets (a flag of the run still wins; the
values taken are recorded as the cluster's `from_environment`, which the plan summary names). A site stands
alone with oellm-eval's defaults (memory 96G, no `--cpus-per-task`, HF_HOME from the login environment),
unless `OELLM_BASE: <shipped cluster>` asks to start from oellm's shipped entry.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
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
USED = ("hostname_pattern", "EVAL_BASE_DIR", "EVAL_CONTAINER_IMAGE", "SINGULARITY_ARGS", "TIME_LIMIT",
        "LIGHTEVAL_CONTAINER_IMAGE")  # oellm's: lighteval rows in another image than EVAL_CONTAINER_IMAGE
BASE = "OELLM_BASE"  # oellm's own key: start from this shipped cluster (clusters.json) instead of nothing
KNOWN = (*USED, *SCALARS, *SBATCH, *ENV, BASE)
# oellm-eval's defaults for what a site leaves out (its template: `--mem=96G`, no cpus line)
DEFAULT_MEM = "96G"
# the login environment over the file, as oellm-eval reads it -> the oellm field a flag of the run sets instead
FROM_ENV = {"SLURM_MEM": "mem", "PARTITION": "partition", "ACCOUNT": "account", "GPUS_PER_NODE": "gpus_per_task",
            "EVAL_CONTAINER_IMAGE": "container", "QUEUE_LIMIT": "queue_limit", "BATCH_SIZE": "batch_size",
            "MODEL_ARGS": "batch_size", "LM_EVAL_INCLUDE_PATH": "lm_eval_include_path"}
TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_clusters_yaml(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file's sites as clusters.json entries (name -> fields), the login environment (`environ`,
    default os.environ) over their values; a site with OELLM_BASE carries it as `_base`."""
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
        merged = {**shared, **site}
        out[str(name)] = _entry(f"{path}: {name}", merged, environment(merged, os.environ if environ is None else environ))
    return out


def is_clusters_yaml(path: str | Path | None) -> bool:
    """A clusters file in oellm-eval's format."""
    return bool(path) and Path(str(path)).suffix in (".yaml", ".yml")


def base_of(entry: dict[str, Any], shipped: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A site's starting point: nothing (oellm's shipped entry of its name does not leak in), or the
    shipped entry its OELLM_BASE names."""
    name = entry.pop("_base", None)
    if name is None:
        return {}
    if name not in shipped:
        raise OellmError(f"{path}: OELLM_BASE {name!r} is not a shipped cluster; shipped: {', '.join(sorted(shipped))}")
    return shipped[name]


def environment(site: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """The login environment's values that replace the site's (oellm-eval's `os.environ.setdefault`): the
    variables oellm-eval reads (FROM_ENV), and the jobs' variables (HF_HOME, ...) the site sets itself."""
    keys = (*FROM_ENV, *(k for k in ENV if k in site))
    return {k: str(environ[k]).strip() for k in keys if str(environ.get(k) or "").strip()}


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


def _entry(where: str, site: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if "hostname_pattern" in site:
        entry["hostname_pattern"] = site["hostname_pattern"]

    def value(key: str) -> str:  # the login environment's, else the file's
        return environ[key] if key in environ else _fill(site[key], site)

    for key, field in SCALARS.items():
        if key in site or key in environ:
            text = value(key)
            if field in INTS:
                if not text.strip().isdigit():
                    given = f"${key}={text!r} (from the environment)" if key in environ else repr(site[key])
                    raise OellmError(f"{where}.{key}: expected a whole number, got {given}")
                entry[field] = int(text)
            else:
                entry[field] = text or None  # ACCOUNT: "" books no account, as oellm-eval drops the line
    options = {opt: _fill(site[key], site) for key, opt in SBATCH.items() if site.get(key) not in (None, "")}
    if BASE in site:  # the shipped entry's values stand where this site sets none
        entry["_base"] = str(site[BASE])
    else:
        entry.setdefault("mem", DEFAULT_MEM)
        options["cpus-per-task"] = ""  # oellm-eval's script has no such line: the partition's default
    if options:
        entry["sbatch_options"] = options
    batch = _batch_size(where, environ)
    if batch:
        entry["batch_size"] = batch
    if environ:
        entry["from_environment"] = dict(environ)
    env = {key: value(key) for key in ENV if key in site}
    image = value("EVAL_CONTAINER_IMAGE") if "EVAL_CONTAINER_IMAGE" in site or "EVAL_CONTAINER_IMAGE" in environ else ""
    if image:
        base = _fill(site.get("EVAL_BASE_DIR", ""), site)
        def at(f: str) -> str:
            return f if f.startswith(("/", "$", "~")) or not base else f"{base}/{f}"

        container, more_env = _container(where, str(site.get("SINGULARITY_ARGS", "")))
        entry["container"] = {**container, "image": at(image), "binds": [base] if base else []}
        if site.get("LIGHTEVAL_CONTAINER_IMAGE"):  # else lighteval rows run in the one image (oellm-eval's have it)
            entry["container"]["images"] = {"lighteval": at(_fill(site["LIGHTEVAL_CONTAINER_IMAGE"], site))}
        env.update(more_env)
    elif BASE not in site:
        entry["container"] = None
    if env:
        entry["env"] = env
    return entry


def _batch_size(where: str, environ: dict[str, str]) -> str | None:
    """BATCH_SIZE, or MODEL_ARGS' batch_size (which wins, as in oellm-eval): a whole number >= 1."""
    from_args = dict(p.split("=", 1) for p in environ.get("MODEL_ARGS", "").split(",") if "=" in p)
    other = sorted(set(from_args) - {"batch_size"})
    if other:
        raise OellmError(f"{where}: $MODEL_ARGS sets {', '.join(other)}; oellm reads only its batch_size=N (give other "
                         "model args per model: --models 'org/m,dtype=bfloat16')")
    name, text = ("MODEL_ARGS", from_args["batch_size"]) if "batch_size" in from_args else \
        ("BATCH_SIZE", environ.get("BATCH_SIZE"))
    if text is None:
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise OellmError(f"{where}: ${name} batch size {text!r} (from the environment): expected a whole number >= 1")
    return text.strip()


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
