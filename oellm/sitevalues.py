"""Values in a site's settings as SLURM and a shell read them: wall times (`MM:SS`, `D-HH`, ...), what one
array task may book (one node, a --gres agreeing with gpus_per_task), and the cluster `env`, exported in an order where every value comes after the keys it uses, and expanded on the
login node the same way the script expands it on the node."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from oellm.errors import OellmError

TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_VAR = re.compile(r"\$(?:(\w+)|\{(\w+)\})")
# `gpu`, `gpu:4`, `gpu:a100`, `gpu:a100:4`: the GPUs a --gres books (other gres values are not checked)
GPU_GRES = re.compile(r"^gpu(?::(?P<type>(?!\d+$)[^:,]+))?(?::(?P<count>\d+))?$")
# one process on one node: more tasks or nodes would stay idle (the worker does not srun)
SINGLE_NODE = ("nodes", "ntasks", "ntasks-per-node", "N", "n")


def parse_time(value: str, where: str) -> int:
    """A time as sbatch reads it -> whole minutes (seconds round up): `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`,
    `D-HH:MM` or `D-HH:MM:SS`. So `30:00` is thirty minutes, as SLURM takes it, not thirty hours."""
    m = TIME.match(value.strip())
    if not m:
        raise OellmError(f"{where}: {value!r} is not a SLURM time; use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or "
                         "D-HH:MM:SS")
    days, *fields = m.groups()
    parts = [int(p) for p in fields if p is not None]
    if days is not None:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:
        hours, minutes, seconds = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
    if seconds >= 60 or (len(parts) == 3 or days is not None) and minutes >= 60:
        raise OellmError(f"{where}: {value!r} has minutes or seconds of 60 or more")
    return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def format_minutes(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


TIME_KEYS = ("time", "t")  # sbatch's --time and -t


def sbatch_time(options: Mapping[str, str]) -> str | None:
    """The time limit that sbatch options give (`time` or `t`), None when they give none."""
    return next((options[k] for k in TIME_KEYS if options.get(k)), None)


def env_order(env: dict[str, str], where: str) -> list[tuple[str, str]]:
    """The cluster `env` in the order the script exports it: by name, except that a value using another key
    (`HF_DATASETS_CACHE: $HF_HOME/datasets`) comes after that key, so `set -u` never meets it unset. A value
    naming itself (`PATH: $PATH:/x`) reads the node's own; a cycle is refused, naming its keys."""
    out: dict[str, str] = {}
    visiting: list[str] = []

    def visit(key: str) -> None:
        if key in out:
            return
        if key in visiting:
            cycle = " -> ".join([*visiting[visiting.index(key):], key])
            raise OellmError(f"{where}: the values use each other in a cycle ({cycle}); one must not name the other")
        visiting.append(key)
        for m in _VAR.finditer(env[key]):
            name = m.group(1) or m.group(2)
            if name != key and name in env:
                visit(name)
        visiting.pop()
        out[key] = env[key]

    for key in sorted(env):
        visit(key)
    return list(out.items())


def expand_env(env: dict[str, str], environ: Mapping[str, str], where: str) -> dict[str, str]:
    """A cluster `env` expanded on this host the way the script sets it on the node: in `env_order`, each
    value seeing the keys before it, then this host's environment; an unset variable is an error (as `set -u`
    on the node), naming the key."""
    out: dict[str, str] = {}
    for key, value in env_order(env, where):
        def one(m: re.Match, key: str = key, value: str = value) -> str:
            name = m.group(1) or m.group(2)
            if name in out or name in environ:  # an earlier key, else the host's (a self-reference: the host's)
                return out[name] if name in out else environ[name]
            raise OellmError(f"{where}.{key}: {value!r} uses ${name}, which is not set here")
        out[key] = os.path.expanduser(_VAR.sub(one, value))
    return out


def expand(value: str, where: str) -> str:
    """Expand ~ and $VARS of the login node; an unset variable is an error, not a literal `$VAR` dir."""
    out = os.path.expanduser(os.path.expandvars(value))
    if "$" in out:
        raise OellmError(f"{where}: {value!r} uses an environment variable that is not set here")
    return out


def check_one_node(where: str, sbatch_options: Mapping[str, str], gres: str | None, gpus_per_task: int) -> None:
    """Refuse what the one-process worker cannot use: several tasks or nodes, or a --gres booking a GPU count
    other than gpus_per_task (the estimate and the worker count follow gpus_per_task)."""
    for key, value in sbatch_options.items():
        if key.replace("_", "-") in SINGLE_NODE and value not in ("", "1"):
            raise OellmError(f"{where}.sbatch_options.{key}: {value!r}; an array task is one worker process on one "
                             "node, so more nodes or tasks would sit idle; use gpus_per_task N (GPUs of one node)")
    gres = sbatch_options.get("gres", gres)
    m = GPU_GRES.match(gres or "")
    if m and int(m["count"] or 1) != gpus_per_task:
        raise OellmError(f"{where}: gres {gres!r} books {int(m['count'] or 1)} GPU(s) but gpus_per_task is "
                         f"{gpus_per_task}; give both the same count (--gpus_per_task and gres)")


def gres_for(gres: str | None, gpus: int) -> str:
    """The --gres value for `gpus` GPUs, keeping the GPU type a site's gres names (gpu:a100:N)."""
    m = GPU_GRES.match(gres or "")
    return f"gpu:{m['type']}:{gpus}" if m and m["type"] else f"gpu:{gpus}"


_HOSTS = re.compile(r"\[([^\]]*)\]")


def host_count(hostlist: str) -> int:
    """Nodes a SLURM hostlist names (`n[1-2,5],gpu7` -> 4). By hand: `scontrol show hostnames` exists only where
    SLURM is installed, and a dry run or a test must count without it."""
    count, depth, item = 0, 0, ""
    for c in f"{hostlist},":
        depth += (c == "[") - (c == "]")
        if c == "," and depth == 0:
            if item.strip():
                n = 1
                for group in _HOSTS.findall(item):
                    n *= sum(int(b) - int(a) + 1 if a.isdigit() and b.isdigit() else 1
                             for a, _, b in (part.partition("-") if "-" in part else (part, "", part)
                                             for part in group.split(",")))
                count += n
            item = ""
        else:
            item += c
    return count


def nodelist_note(where: str, sbatch_options: Mapping[str, str]) -> str | None:
    """A nodelist of several nodes on a one-node array task: SLURM (22.05 here) refuses the job with "invalid
    number of nodes"; a note, not an error, since a site's submit plugin may rewrite it (oellm-eval's UFAL
    entry lists 20 nodes with NODES 1)."""
    nodelist = sbatch_options.get("nodelist") or sbatch_options.get("w") or ""
    n = host_count(nodelist)
    if n < 2:
        return None
    return (f"note: {where} asks for nodelist {nodelist} ({n} nodes) but an array task runs on one node; SLURM "
            "refuses such a job (\"invalid number of nodes\") unless the site rewrites it: name one node with "
            "--nodelist, or steer with --sbatch_option exclude=NODES or constraint=FEATURE")
