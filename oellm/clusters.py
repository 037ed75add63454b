"""clusters.json: per-site settings as data, validated, and detection of the current cluster.

The shipped file holds leonardo, lumi, jureca and local; a user's own file (`--clusters_file` or
`OELLM_CLUSTERS_FILE`) adds clusters or overrides single fields of shipped ones (a clusters.yaml site replaces).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oellm.clusters_yaml import base_of, is_clusters_yaml, read_clusters_yaml
from oellm.errors import OellmError, refuse_secret
from oellm.resources import data_path
from oellm.sitevalues import check_one_node, env_order, parse_time
from oellm.sitevalues import expand as expand  # re-exported: its old home

LOCAL = "local"
PLACEHOLDER = re.compile(r"<[^<>]+>")
# Values that reach the sbatch script: names, paths and $VARS, but nothing a shell would run.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_@%+=:,./~${}<>\-\[\] ]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # what a shell can export
OPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")  # sbatch spells its options with -
NESTED = ("container", "env", "sbatch_options")  # a user's file merges into these field by field
GPU_MODES = ("workers", "spread")


@dataclass(frozen=True)
class ContainerConfig:
    runtime: str = "singularity"  # singularity | apptainer
    image: str = ""
    gpu_flag: str | None = "--nv"  # --nv (NVIDIA) or --rocm (AMD)
    binds: tuple[str, ...] = ()
    python: str = "python3"  # the interpreter inside the image that has oellm installed
    # suite -> its own image (lighteval needs transformers<5); the other suites run in `image`
    images: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    hostname_pattern: tuple[str, ...] = ()
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_task: int = 1
    gres: str | None = None
    cpus_per_task: int = 8
    mem: str | None = None
    minutes_per_eval: float = 10.0
    max_time: str = "24:00:00"
    queue_limit: int = 1000
    max_array_size: int = 1000
    max_running: int = 100
    container: ContainerConfig | None = None
    modules: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    output_root: str | None = None
    batch_size: str = "auto"
    sbatch_options: dict[str, str] = field(default_factory=dict)
    local_workers: int | None = None
    max_requeues: int = 2  # SLURM requeues an array task after a node failure or preemption, this often
    executor: str = "slurm"  # a module of oellm/executors: slurm, or local (this machine)
    # several GPUs per task: one worker per GPU draining the task's rows, or one model spread over them
    gpu_mode: str = "workers"
    from_environment: dict[str, str] = field(default_factory=dict)  # set by oellm: clusters.yaml's env values

    @property
    def max_minutes(self) -> int:
        return parse_time(self.max_time, f"{self.name}.max_time")

    @property
    def spreads(self) -> bool:
        """One model over the task's GPUs (lm-eval's parallelize), else (`workers`) one process per GPU."""
        return self.gpu_mode == "spread" and self.gpus_per_task > 1

    @property
    def row_workers(self) -> int:
        """Processes evaluating a task's rows at once: one per GPU in `workers` mode, else one."""
        return self.gpus_per_task if self.gpu_mode == "workers" and self.gpus_per_task > 1 else 1

    def image_key(self, suite: str) -> str:
        """The suite, when it runs in an image of its own (the script picks that image by it), else ""."""
        return suite if self.container and suite in self.container.images else ""

    def for_suite(self, suite: str) -> ClusterConfig:
        """This cluster as the workers of one suite see it: the suite's image in place of the default."""
        if not self.image_key(suite):
            return self
        assert self.container is not None
        return dataclasses.replace(self, container=dataclasses.replace(self.container,
                                                                       image=self.container.images[suite]))


_SCALAR_TYPES: dict[str, tuple[type, ...]] = {
    "partition": (str, type(None)), "account": (str, type(None)), "qos": (str, type(None)),
    "gpus_per_task": (int,), "gres": (str, type(None)), "cpus_per_task": (int,), "mem": (str, type(None)),
    "minutes_per_eval": (int, float), "max_time": (str,), "queue_limit": (int,), "max_array_size": (int,),
    "max_running": (int,), "output_root": (str, type(None)), "batch_size": (str, int),
    "local_workers": (int, type(None)), "max_requeues": (int,), "executor": (str,), "gpu_mode": (str,),
}
_CONTAINER_TYPES: dict[str, tuple[type, ...]] = {
    "runtime": (str,), "image": (str,), "gpu_flag": (str, type(None)), "python": (str,), "binds": (list,),
    "images": (dict,),
}
SUITE_KEY = re.compile(r"^[a-z][a-z0-9_]*$")  # a suite's name, which the script matches in a `case`


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _check_keys(where: str, data: dict[str, Any], valid: list[str]) -> None:
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise OellmError(f"{where}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(valid)}")


def _check_type(where: str, value: Any, types: tuple[type, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        raise OellmError(f"{where}: expected {_type_name(types)}, got {json.dumps(value)}")


def _check_safe(where: str, value: str) -> None:
    if not SAFE_VALUE.match(value):
        raise OellmError(f"{where}: {value!r} has characters a shell would interpret; "
                         "allowed are letters, digits, space, $VAR and _@%+=:,./~{}<>-[]")


def build_cluster(name: str, data: dict[str, Any], source: str) -> ClusterConfig:
    """Validate one entry (naming the bad field) and turn it into a ClusterConfig."""
    where = f"{source}: {name}"
    if not isinstance(data, dict):
        raise OellmError(f"{where}: expected an object of settings, got {json.dumps(data)}")
    valid = [f.name for f in dataclasses.fields(ClusterConfig) if f.name != "name"]
    _check_keys(where, data, valid)
    kw: dict[str, Any] = {}
    for key, value in data.items():
        w = f"{where}.{key}"
        if key in _SCALAR_TYPES:
            _check_type(w, value, _SCALAR_TYPES[key])
            if isinstance(value, str):
                _check_safe(w, value)
            kw[key] = value
        elif key in ("hostname_pattern", "modules"):
            items = [value] if isinstance(value, str) else value
            _check_type(w, items, (list,))
            for i, item in enumerate(items):
                _check_type(f"{w}[{i}]", item, (str,))
                if key == "modules":  # patterns are matched in Python, module names reach the script
                    _check_safe(f"{w}[{i}]", item)
            kw[key] = tuple(items)
        elif key in ("env", "sbatch_options", "from_environment"):
            _check_type(w, value, (dict,))
            for k, v in value.items():
                if not (OPTION_NAME if key == "sbatch_options" else ENV_NAME).match(k):
                    what = "an sbatch option" if key == "sbatch_options" else "an environment variable name (letters, digits, _)"
                    raise OellmError(f"{w}: {k!r} is not {what}")
                if key == "env":
                    refuse_secret(k, f"{w}: {k}", "the sbatch script and run.json")
                _check_type(f"{w}.{k}", v, (str, int))
                _check_safe(f"{w}.{k}", str(v))
            kw[key] = {k: str(v) for k, v in value.items()}
        elif key == "container":
            kw[key] = None if value is None else _build_container(w, value)
    for key in ("gpus_per_task", "cpus_per_task", "queue_limit", "max_array_size", "max_running"):
        if key in kw and kw[key] < (0 if key == "gpus_per_task" else 1):
            raise OellmError(f"{where}.{key}: must be {'>= 0' if key == 'gpus_per_task' else '>= 1'}, got {kw[key]}")
    if kw.get("max_requeues", 0) < 0:
        raise OellmError(f"{where}.max_requeues: must be >= 0 (0 turns requeueing off), got {kw['max_requeues']}")
    if "minutes_per_eval" in kw and kw["minutes_per_eval"] <= 0:
        raise OellmError(f"{where}.minutes_per_eval: must be > 0, got {kw['minutes_per_eval']}")
    if kw.get("gpu_mode", GPU_MODES[0]) not in GPU_MODES:
        raise OellmError(f"{where}.gpu_mode: {kw['gpu_mode']!r}; use workers (one per GPU, each taking rows) or "
                         "spread (one model over all GPUs)")
    cfg = ClusterConfig(name=name, **kw)
    cfg.max_minutes  # noqa: B018 -- validates max_time now, not at submission
    check_one_node(where, cfg.sbatch_options, cfg.gres, cfg.gpus_per_task)
    env_order(cfg.env, f"{where}.env")
    return cfg


def _build_container(where: str, data: Any) -> ContainerConfig:
    _check_type(where, data, (dict,))
    _check_keys(where, data, list(_CONTAINER_TYPES))
    for key, value in data.items():
        _check_type(f"{where}.{key}", value, _CONTAINER_TYPES[key])
        if key == "images":
            for suite, image in value.items():
                if not SUITE_KEY.match(suite):
                    raise OellmError(f"{where}.images: {suite!r} is not a suite name (lighteval, bigcodebench, ...)")
                _check_type(f"{where}.images.{suite}", image, (str,))
                _check_safe(f"{where}.images.{suite}", image)
            continue
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if item is not None:
                _check_type(f"{where}.{key}[{i}]" if isinstance(value, list) else f"{where}.{key}", item, (str,))
                _check_safe(f"{where}.{key}", item)
    if data.get("runtime", "singularity") not in ("singularity", "apptainer"):
        raise OellmError(f"{where}.runtime: {data['runtime']!r} is not supported; use singularity or apptainer")
    if data.get("gpu_flag") not in (None, "--nv", "--rocm"):
        raise OellmError(f"{where}.gpu_flag: {data['gpu_flag']!r}; use --nv (NVIDIA), --rocm (AMD) or null")
    return ContainerConfig(**{**data, "binds": tuple(data.get("binds", ())), "images": dict(data.get("images", {}))})


def _read(path: Path) -> dict[str, Any]:
    if is_clusters_yaml(path):  # oellm-eval's clusters.yaml, turned into clusters.json entries
        return read_clusters_yaml(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise OellmError(f"clusters file {path} not found") from None
    except json.JSONDecodeError as e:
        raise OellmError(f"clusters file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise OellmError(f"clusters file {path}: expected an object mapping cluster names to settings")
    return data


def load_clusters(user_file: str | Path | None = None) -> dict[str, ClusterConfig]:
    """Shipped clusters, with a user's file merged over them field by field."""
    raw = {k: v for k, v in _read(data_path("clusters.json")).items() if not k.startswith("_")}
    sources = {k: "clusters.json" for k in raw}
    user_file = user_file or os.environ.get("OELLM_CLUSTERS_FILE") or None
    if user_file:
        for name, entry in _read(Path(user_file)).items():
            if name.startswith("_"):
                continue
            base = base_of(entry, raw, user_file) if is_clusters_yaml(user_file) else raw.get(name, {})
            raw[name] = merge_entry(base, entry) if isinstance(entry, dict) and isinstance(base, dict) else entry
            sources[name] = str(user_file)
    return {name: build_cluster(name, entry, sources[name]) for name, entry in raw.items()}


def merge_entry(base: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A user's entry over a shipped one: top-level fields replace, and the objects `container`, `env` and
    `sbatch_options` merge field by field, so setting a site's image keeps its GPU flag and binds
    (`"container": null` still turns the container off)."""
    out = {**base, **entry}
    for key in NESTED:
        if isinstance(base.get(key), dict) and isinstance(entry.get(key), dict):
            out[key] = {**base[key], **entry[key]}
    return out


def detect_cluster(clusters: dict[str, ClusterConfig], requested: str | None = None,
                   hostname: str | None = None, slurm_available: bool | None = None) -> ClusterConfig:
    """`--cluster`/`OELLM_CLUSTER` first, then the hostname; with no match and no SLURM, the local executor."""
    requested = requested or os.environ.get("OELLM_CLUSTER") or None
    if requested:
        if requested not in clusters:
            raise OellmError(f"unknown cluster {requested!r}; known clusters: {', '.join(sorted(clusters))}")
        return clusters[requested]
    hostname = hostname or socket.gethostname()
    for host in _names(hostname):  # the short name, then the FQDN (sites whose patterns name the domain)
        for cfg in clusters.values():
            if any(fnmatch.fnmatch(host, pat) for pat in cfg.hostname_pattern):
                return cfg
    if slurm_available is None:
        slurm_available = shutil.which("sbatch") is not None
    if not slurm_available and LOCAL in clusters:
        return clusters[LOCAL]
    raise OellmError(
        f"host {hostname!r} matches no known cluster ({', '.join(sorted(clusters))}); pass --cluster NAME, "
        "or add your site to a clusters file (--clusters_file or OELLM_CLUSTERS_FILE) with a hostname_pattern"
    )


def _names(hostname: str):
    yield hostname
    fqdn = socket.getfqdn(hostname)
    if fqdn != hostname:
        yield fqdn


def require_resolved(cfg: ClusterConfig) -> None:
    """Refuse to submit with a site placeholder such as `<your-account>` still in place."""
    for key, value in _flat(dataclasses.asdict(cfg)):
        if isinstance(value, str) and PLACEHOLDER.search(value):
            top = key.split(".")[0]
            raise OellmError(
                f"cluster {cfg.name}: {key} is still the site placeholder {value!r}; set it in your clusters file "
                f"(--clusters_file or OELLM_CLUSTERS_FILE), e.g. {{\"{cfg.name}\": {{\"{top}\": ...}}}}"
            )


def _flat(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        return [kv for k, v in data.items() for kv in _flat(v, f"{prefix}.{k}" if prefix else k)]
    if isinstance(data, (list, tuple)):
        return [kv for i, v in enumerate(data) for kv in _flat(v, f"{prefix}[{i}]")]
    return [(prefix, data)]
