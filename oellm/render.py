"""Rendering the sbatch script: a pure function of validated cluster values and paths.

No clock, no environment, no files but the template, so the text is deterministic and checked
against one golden file per cluster. Values are quoted by the `q` filter; env values and binds are
double-quoted so `$SCRATCH` expands on the node (clusters.py refused anything else a shell runs).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from oellm.clusters import ClusterConfig
from oellm.container import (
    NODE_ENV,
    Binds,
    check_env,
    code_path,
    env_prefix,
    exec_flags,
    fixed_env,
    plan_binds,
)
from oellm.resources import data_path
from oellm.shipping import SHIP_DIR
from oellm.sitevalues import TIME_KEYS, env_order, format_minutes, parse_time, sbatch_time

TEMPLATE = "eval.sbatch.j2"
_SWITCHES = ("requeue", "no-requeue")  # flags without a value


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("templates"))),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 -- a shell script, not HTML; values go through `q`
    )
    env.filters["q"] = lambda v: shlex.quote(str(v))
    return env


def sbatch_flags(cluster: ClusterConfig, time_minutes: int) -> list[str]:
    """`#SBATCH` options in a fixed order; config keys use SLURM's spelling with underscores. The time is
    `time_minutes` alone: an sbatch option's time was weighed where the limit is decided
    (oellm.plan.timelimit), and one that won here would disagree with the packing and the summary."""
    opts: dict[str, str | None] = {
        "partition": cluster.partition, "account": cluster.account, "qos": cluster.qos,
        "nodes": "1", "ntasks": "1", "cpus-per-task": str(cluster.cpus_per_task), "mem": cluster.mem,
        "gres": cluster.gres or (f"gpu:{cluster.gpus_per_task}" if cluster.gpus_per_task else None),
        "time": format_minutes(time_minutes),
        # node failure or preemption: SLURM runs the task again (the worker skips rows already done and
        # stops after max_requeues); append, so the log of the failed attempt is kept
        "requeue" if cluster.max_requeues else "no-requeue": None, "open-mode": "append",
    }
    switches = set(_SWITCHES)
    for key, value in cluster.sbatch_options.items():
        k = key.replace("_", "-")
        if k in TIME_KEYS:
            continue
        if value == "" and k not in opts:  # {"exclusive": ""}: a bare switch
            switches.add(k)
            opts[k] = None
        else:  # "" for an option oellm sets itself ({"gres": ""}) leaves it out
            opts[k] = value
    return [f"--{k}" if v is None else f"--{k}={shlex.quote(v)}" for k, v in opts.items()
            if v != "" and (v is not None or k in switches)]


def render_sbatch(cluster: ClusterConfig, *, run_dir: str, job_name: str, time_minutes: int, python: str,
                  binds: Binds | None = None, inherited: Mapping[str, str] | None = None) -> str:
    """The array script for one run; chunks differ only in the offset they pass as `$1`.

    `binds.paths` are the login node's paths (see `oellm.container.plan_binds`): single-quoted, so `$(...)`
    or `$x` in a directory name stays a name. The site's binds and images are double-quoted: their `$SCRATCH`
    is the compute node's (clusters.py vetted them). The cluster's `env` is exported in `env_order` (a value
    after the keys it uses). `inherited`: the login node's cache variables
    (`oellm.container.inherited_env`), written literally. The workers find the oellm shipped into `run_dir`
    (`oellm.shipping`) first on their PYTHONPATH, derived from `run_dir` so a moved dir's script names its own."""
    binds, inherited = binds or Binds(), inherited or {}
    check_env(cluster, inherited)
    fixed = fixed_env(cluster, inherited)
    c = cluster.container
    return _environment().get_template(TEMPLATE).render(
        run_dir=run_dir, job_name=job_name, log_dir=f"{run_dir}/slurm_logs",
        sbatch_flags=sbatch_flags(cluster, time_minutes), modules=list(cluster.modules),
        offline=[(k, v) for k, v in fixed.items() if k not in cluster.env],
        env=env_order(cluster.env, f"cluster {cluster.name}.env"), env_args=" ".join(f'--env "{k}=${{{k}}}"' for k in fixed), container=c, python=python,
        exec_flags=exec_flags(c) if c else [], env_prefix=env_prefix(c) if c else "", node_env=NODE_ENV,
        site_binds=list(binds.site), path_binds=list(binds.paths), images=sorted(c.images.items()) if c else [],
        code_dir=f"{run_dir}/{SHIP_DIR}", code_path=code_path(f"{run_dir}/{SHIP_DIR}"),
    )


def rendered_for(script: str) -> str | None:
    """The run dir a script's worker line names (for run dirs made before run.json recorded it)."""
    m = re.search(r"-m oellm worker --run_dir (.+?) --index ", script)
    return shlex.split(m.group(1))[0] if m else None


def render_for_path(cluster: ClusterConfig, manifest: Mapping[str, Any], old: str, new: str, python: str) -> str:
    """A run's script rendered again for its dir's current path `new` (copied or moved from `old`): the worker,
    the logs and the output-root bind follow the dir, so nothing is written into the original."""
    def moved(p: str) -> str:
        old_root, new_root = os.path.dirname(old), os.path.dirname(new)
        return new_root + p[len(old_root):] if p == old_root or p.startswith(old_root + "/") else p

    recorded = manifest.get("script") or {}
    binds = Binds()
    if cluster.container:
        paths = recorded.get("bind_paths")
        if paths is None:  # an older run: its recorded binds less the site's
            paths = [b.split(":")[-1] for b in manifest.get("binds") or [] if b not in cluster.container.binds]
        binds = plan_binds(cluster, [moved(p) for p in paths])
    return render_sbatch(cluster, run_dir=new, job_name=f"oellm-{os.path.basename(new)}",
                         time_minutes=script_minutes(manifest),
                         python=recorded.get("python") or python, binds=binds, inherited=recorded.get("inherited"))


def script_minutes(manifest: Mapping[str, Any]) -> int:
    """The time limit in a run's script: run.json's `time_limit`. In a run made before `time_limit_from` was
    recorded, a cluster `sbatch_options.time` overrode it in the script."""
    old = None if "time_limit_from" in manifest else \
        sbatch_time((manifest.get("cluster_config") or {}).get("sbatch_options") or {})
    return parse_time(old or manifest.get("time_limit") or "00:10:00", "run.json time_limit")
