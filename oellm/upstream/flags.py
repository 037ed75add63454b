"""oellm-eval's `schedule` flags, with oellm-eval's meaning, each mapped onto oellm's own option, so a
command line (or a training pipeline's call) written for oellm-eval runs unchanged under either entry
point, and nothing past the request knows which spelling was used."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oellm.errors import OellmError

# --slurm_template_var keys -> oellm's field (NODES becomes an sbatch option)
TEMPLATE_VARS = {"PARTITION": "partition", "ACCOUNT": "account", "GPUS_PER_NODE": "gpus_per_task",
                 "SLURM_MEM": "mem", "TIME": "time_limit", "NODES": "nodes"}


@dataclass
class UpstreamFlags:
    """oellm-eval's spellings of options oellm has under other names.

    Args:
        slurm_template_var: oellm-eval's JSON of SLURM settings for this run, e.g.
            '{"PARTITION": "gpu", "ACCOUNT": "p1", "GPUS_PER_NODE": 2, "SLURM_MEM": "64G", "NODES": 1,
            "TIME": "04:00:00"}': the same as --partition, --account, --gpus_per_task, --mem,
            --sbatch_option nodes=N and --time_limit (which win when both are given).
        max_array_len: oellm-eval's array throttle: at most this many array tasks of the run at once (the
            `%N` of --array), instead of the cluster's max_running.
        nodelist: Run only on these nodes (`#SBATCH --nodelist`), as --sbatch_option nodelist=...
        venv_path: A virtual environment (with lm-eval and torch) whose Python runs the workers, locally and on
            SLURM, without a container: for sites that have none (the cluster's container is not used).
        local: Run on this machine instead of submitting to SLURM (as --cluster local).
        skip_checks: Skip the pre-cache of models and datasets and the preflight (as --no_precache
            --no_preflight), when the cache is known to be complete.
        verbose: Log what each step does.
    """

    slurm_template_var: str | None = None
    max_array_len: int | None = None
    nodelist: str | None = None
    venv_path: Path | None = None
    local: bool = False
    skip_checks: bool = False
    verbose: bool = False

    def ours(self, given: dict[str, Any]) -> dict[str, Any]:
        """oellm's fields these flags mean, not overriding `given` (oellm's own flags as set)."""
        out: dict[str, Any] = {}
        options: list[str] = []
        for key, value in template_vars(self.slurm_template_var).items():
            if TEMPLATE_VARS[key] == "nodes":
                options.append(f"nodes={value}")
            elif given.get(TEMPLATE_VARS[key]) is None:
                out[TEMPLATE_VARS[key]] = value
        if self.nodelist:
            options.append(f"nodelist={self.nodelist}")
        mine = list(given.get("sbatch_option") or [])
        if new := [o for o in options if o not in mine]:  # idempotent: dataclasses.replace runs this again
            out["sbatch_option"] = new + mine
        if self.local:
            if given.get("cluster") not in (None, "local"):
                raise OellmError(f"--local runs on this machine; it cannot be combined with --cluster {given['cluster']}")
            out["cluster"] = "local"
        venv_python(self.venv_path)  # checked before anything is planned or written
        if self.skip_checks:
            out.update(precache=False, preflight=False)
        if self.max_array_len is not None and self.max_array_len < 1:
            raise OellmError(f"--max_array_len: must be >= 1, got {self.max_array_len}")
        return out

    def cluster_fields(self) -> dict[str, Any]:
        """The cluster fields they set (clusters.json names)."""
        out: dict[str, Any] = {} if self.max_array_len is None else {"max_running": self.max_array_len}
        return {**out, "container": None} if self.venv_path else out

    def worker_python(self) -> str:
        """The interpreter the workers run: --venv_path's, else this one."""
        return venv_python(self.venv_path) or sys.executable


def template_vars(text: str | dict | None) -> dict[str, Any]:
    """--slurm_template_var's JSON, checked: known keys, values of the right kind."""
    if not text:
        return {}
    try:
        data = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as e:
        raise OellmError(f"--slurm_template_var: not JSON ({e.msg}); e.g. '{{\"PARTITION\": \"gpu\"}}'") from None
    if not isinstance(data, dict):
        raise OellmError(f"--slurm_template_var: expected a JSON object, got {text!r}")
    unknown = sorted(set(data) - set(TEMPLATE_VARS))
    if unknown:
        raise OellmError(f"--slurm_template_var: unknown key(s) {', '.join(unknown)}; known: {', '.join(TEMPLATE_VARS)}")
    out = {}
    for key, value in data.items():
        if key in ("GPUS_PER_NODE", "NODES"):
            if isinstance(value, bool) or not str(value).strip().isdigit():
                raise OellmError(f"--slurm_template_var: {key} must be a whole number, got {value!r}")
            out[key] = int(value)
        elif isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            out[key] = str(value).strip()
        else:
            raise OellmError(f"--slurm_template_var: {key} must be a non-empty string, got {value!r}")
    return out


@functools.lru_cache(maxsize=8)
def venv_python(venv: str | Path | None) -> str | None:
    """--venv_path's interpreter (`VENV/bin/python`, not resolved: a venv's python is a symlink out of it),
    checked on the login node: it must exist and find lm-eval."""
    if not venv:
        return None
    python = Path(venv).expanduser().absolute() / "bin" / "python"
    if not python.exists():
        raise OellmError(f"--venv_path {venv}: no bin/python in it; give a virtual environment's directory")
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('lm_eval') is not None)"],
                           capture_output=True, text=True, timeout=60)
    if probe.stdout.strip() != "True":
        raise OellmError(f"--venv_path {venv}: its Python has no lm-eval; install the worker's stack there "
                         "(pip install 'oellm[worker]')")
    return str(python)
