"""The offline proof before anything queues: every model, checkpoint, dataset and path a run's workers
open is loaded as a worker loads it, through the same container invocation (runtime, flags, binds, env,
image) when the cluster has one, else in a fresh interpreter here, offline either way.

A proof is remembered per fingerprint (the invocation and the image file's size and mtime) and per item
(a model's commit, a checkpoint dir's files, a dataset's cache marker), so repeating a cached sweep pays
only for stats; a new image, bind or item is proven again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oellm import __version__
from oellm.cache import nltk_data
from oellm.cache.fetch import versions
from oellm.cache.paths import cache_env, dataset_marker, datasets_cache, hub_cache, nltk_dir, write_marker
from oellm.cache.precache import check_local_model, local_files, run_fetch, wanted
from oellm.clusters import ClusterConfig
from oellm.container import RESULT, Binds, plan_binds, preflight_argv
from oellm.errors import OellmError
from oellm.offline import OFFLINE_ENV
from oellm.rows import COMMIT, EvalRow, revision_key
from oellm.suites.lm_eval_tasks import MIN_LM_EVAL, cache_dir

SKIP = "--no_preflight skips this check"


@dataclass
class Proof:
    missing: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)  # of the interpreter the workers run (the image's)
    checked: int = 0  # items loaded this time
    remembered: int = 0  # items proven earlier with the same fingerprint
    seconds: float = 0.0
    revisions: dict = field(default_factory=dict)  # what the pre-cache resolved (run.json's model_revisions)


def worker_paths(rows: Sequence[EvalRow], cluster: ClusterConfig, includes: Sequence[str],
                 root: Path | None = None) -> list[str]:
    """Every path a worker opens: the run root, the HF caches, oellm's cache, local models, task dirs and
    local data files (the container must bind each). The caches are created if missing."""
    try:
        env = cache_env(cluster)
        caches = [str(hub_cache(env)), str(datasets_cache(env)), str(nltk_dir(env))]  # NLTK: what tasks download
    except OellmError:  # the cluster's HF_HOME names a $VAR unset here: a dry run elsewhere; the pre-cache says so
        caches = []
    _, _, datasets, _ = wanted(rows, includes)
    files = [f for ds in datasets for f in local_files(ds)]
    arg_paths = {p for r in rows for p in r.ref.arg_paths}  # tokenizer=, peft= dirs: the worker opens them
    refs = {r.ref for r in rows if not r.ref.is_hub}
    # a training run's checkpoints: one bind for the run dir, not one per checkpoint
    models = {str(Path(m.name).parent) if m.kind == "checkpoint" else m.name for m in refs}
    linked = {os.path.dirname(os.path.realpath(e.path)) for m in refs for e in _entries(m.name) if e.is_symlink()}
    for d in [*caches, str(cache_dir())]:  # the worker writes there (Arrow files, locks): bound even when new
        os.makedirs(d, exist_ok=True)
    paths = [*([str(root)] if root else []), *caches, str(cache_dir()), *models, *linked, *sorted(arg_paths),
             *includes, *files]
    return [p for p in paths if os.path.exists(os.path.expanduser(p))]


def _entries(path: str) -> list[os.DirEntry]:
    try:
        return list(os.scandir(path))
    except OSError:
        return []


def _version(v: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v or "")[:3])


def _stat_key(path: str) -> str:
    """A checkpoint dir changes when a file in it does: names, sizes and mtimes of its top level."""
    p = Path(path)
    try:
        entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(p))
    except OSError:
        return ""
    return hashlib.sha1(json.dumps(entries).encode()).hexdigest()[:16]


def _job(rows: Sequence[EvalRow], cluster: ClusterConfig, includes: Sequence[str],
         revisions: Mapping[str, str]) -> tuple[dict, dict[str, str], list[str]]:
    """(the check job, {item key: label} of what it proves, problems found here already)."""
    env = cache_env(cluster)
    models, local, datasets, _ = wanted(rows, includes)
    problems = [e for e in map(check_local_model, local) if e]
    keys: dict[str, str] = {}
    job: dict = {"mode": "check", "models": [], "datasets": [], "local": [], "paths": []}
    # each model as its rows load it: trust_remote_code=, tokenizer= (one row's args decide; rows of one
    # model with different such args are rare and each loads the same files)
    load = {r.ref.name: r.ref.load_args for r in rows if r.ref.load_args}
    for m in models:
        if load.get(m["repo"]):
            m["load"] = load[m["repo"]]
        m["revision"] = m["revision"] or revisions.get(revision_key(m["repo"], None))
        rev = revisions.get(revision_key(m["repo"], m["revision"]), m["revision"])
        if rev and COMMIT.match(rev):
            keys[f"model {m['repo']}@{rev}" + (f" {json.dumps(m['load'], sort_keys=True)}" if m.get("load") else "")] = ""
            m["revision"] = rev
        job["models"].append(m)
    for path in local:
        keys[f"local {path} {_stat_key(path)}" + (f" {json.dumps(load[path], sort_keys=True)}" if load.get(path) else "")] = ""
        job["local"].append({"path": path, **({"load": load[path]} if load.get(path) else {})})
    for ds in datasets:
        files = local_files(ds)
        if files:
            problems += [f"task {', '.join(ds['tasks'])}: local data file not found: {f}"
                         for f in files if not Path(f).expanduser().exists()]
            job["paths"] += files
            continue
        marker = dataset_marker(env, ds["key"])
        if marker.is_file():
            keys[f"dataset {ds['key']} {marker.stat().st_mtime_ns} {ds.get('fewshot') or ''}"] = ""
        job["datasets"].append(ds)
    folder = str(nltk_dir(env))
    for resource, tasks in nltk_data.needs(rows, includes).items():  # NLTK data the tasks' code looks for
        keys[f"nltk {resource} {folder}"] = ""
        job.setdefault("nltk", []).append({"id": resource, "tasks": tasks, "dir": folder})
    job["paths"] += list(includes)
    keys.update({f"path {p}": "" for p in job["paths"]})
    return job, keys, problems


def prove(rows: Sequence[EvalRow], cluster: ClusterConfig, includes: Sequence[str] = (),
          revisions: Mapping[str, str] | None = None, binds: Binds | None = None,
          remember: bool = True) -> Proof:
    """Load everything the rows need offline, as the workers will: through each image the rows run in (a
    suite may have its own). With `remember`, items proven earlier with the same fingerprint are skipped
    (the pre-cache just checked their files are still there)."""
    groups: dict[str, list[EvalRow]] = {}
    for r in rows:
        groups.setdefault(cluster.image_key(r.suite), []).append(r)
    proofs = [_prove(group, cluster.for_suite(key), key, includes, revisions or {}, binds, remember)
              for key, group in groups.items()]
    if not proofs:
        return Proof()
    first = proofs[0]
    for p in proofs[1:]:
        first.missing += p.missing
        first.checked += p.checked
        first.remembered += p.remembered
        first.seconds += p.seconds
    return first


def _prove(rows: Sequence[EvalRow], cluster: ClusterConfig, suite: str, includes: Sequence[str],
           revisions: Mapping[str, str], binds: Binds | None, remember: bool) -> Proof:
    start = time.monotonic()
    job, keys, problems = _job(rows, cluster, includes, revisions)
    if cluster.container and binds is None:
        binds = plan_binds(cluster, worker_paths(rows, cluster, includes))
    fingerprint, run = _invocation(cluster, binds or Binds())
    store = hub_cache(cache_env(cluster)) / ".oellm" / "proofs" / f"{fingerprint}.json"
    try:
        earlier = json.loads(store.read_text())
    except (OSError, ValueError):
        earlier = {"items": [], "versions": {}}
    known = set(earlier["items"]) if remember else set()
    proof = Proof(missing=problems, versions=earlier["versions"], remembered=len(keys.keys() & known))
    if not problems and keys and keys.keys() <= known:
        proof.seconds = time.monotonic() - start
        return proof
    out = run(job)
    proof.versions = out.get("versions") or {}
    proof.missing += [r["error"] for r in out["results"] if r.get("error")]
    proof.missing += _version_problems(cluster, proof.versions, suite)
    proof.checked, proof.remembered = len(job["models"]) + len(job["datasets"]) + len(job["local"]), 0
    if not proof.missing:
        write_marker(store, {"items": sorted(known | keys.keys()), "versions": proof.versions})
    proof.seconds = time.monotonic() - start
    return proof


def _invocation(cluster: ClusterConfig, binds: Binds) -> tuple[str, Callable[[dict], dict]]:
    """(fingerprint, run(job) -> output) of the worker's interpreter: the container's, or this one."""
    env = {**cache_env(cluster), **OFFLINE_ENV}
    c = cluster.container
    if c is None:
        ident = [sys.executable, os.stat(sys.executable).st_mtime_ns, env.get("HF_HOME"), versions()]
        return _hash(ident), lambda job: run_fetch(job, env)
    runtime = shutil.which(c.runtime)
    if runtime is None:
        raise OellmError(f"container runtime {c.runtime!r} (cluster {cluster.name}) is not on PATH here: load its "
                         f"module, or set container.runtime to singularity or apptainer; {SKIP}")
    command = ["-m", "oellm.cache.fetch", "-", "-"]
    argv = preflight_argv(cluster, binds, env, command)
    image = argv[-len(command) - 2]
    try:
        st = os.stat(image)
    except OSError:
        raise OellmError(f"container image {image!r} (cluster {cluster.name}) does not exist: build or pull it "
                         "(containers/README.md) and set container.image in your clusters file") from None
    return _hash([runtime, *argv, st.st_size, st.st_mtime_ns]), lambda job: _run_container(argv, job, c.image)


def _run_container(argv: list[str], job: dict, image: str) -> dict:
    proc = subprocess.run(argv, input=json.dumps(job), capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len(RESULT):])
    err = proc.stderr.strip().splitlines()
    if any(re.search(r"No module named '?oellm\b", ln) for ln in err):
        raise OellmError(f"container image {image} has no oellm for its python: install it in the image "
                         f"(containers/install.sh, containers/README.md); {SKIP}")
    raise OellmError(f"preflight through the image failed (exit {proc.returncode}): "
                     f"{' | '.join(err[-3:]) or 'no output'}; {SKIP}")


def _version_problems(cluster: ClusterConfig, v: dict, suite: str = "") -> list[str]:
    """What the image lacks; `suite`: the suite the image is named for (its package must be there)."""
    if cluster.container is None or not v:
        return []
    image = cluster.container.image
    out = []
    if suite and not v.get(suite):
        out.append(f"image {image} (cluster {cluster.name}'s image for {suite}) has no {suite} installed: build it "
                   f"with `pip install 'oellm[{suite}]'` (containers/README.md)")
    if v.get("oellm") != __version__:
        out.append(f"image {image} has oellm {v.get('oellm')}, this login node {__version__}: rebuild the image "
                   f"from this version (containers/README.md), or install oellm=={v.get('oellm')} here")
    if _version(v.get("lm_eval")) < _version(MIN_LM_EVAL):
        out.append(f"image {image} has lm-eval {v.get('lm_eval')}; oellm needs lm-eval >= {MIN_LM_EVAL}")
    build, flag = v.get("torch_build"), cluster.container.gpu_flag
    if build is None:
        out.append(f"image {image} has no torch: the worker cannot load a model")
    elif flag == "--nv" and not build.startswith("cuda") or flag == "--rocm" and not build.startswith("hip"):
        out.append(f"image {image} has a {build} build of torch, but cluster {cluster.name} runs it with {flag}: "
                   f"use the image built for this site (containers/README.md)")
    return out


def _hash(parts: list) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]
