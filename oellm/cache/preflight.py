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
from oellm.cache.chat import wanted as chat_wanted
from oellm.cache.fetch import versions
from oellm.cache.paths import cache_env, dataset_marker, hub_cache, nltk_dir, write_marker
from oellm.cache.precache import check_local_model, local_files, run_fetch, wanted
from oellm.cache.workerpaths import worker_paths
from oellm.clusters import ClusterConfig
from oellm.container import RESULT, Binds, plan_binds, preflight_argv
from oellm.errors import OellmError
from oellm.offline import OFFLINE_ENV
from oellm.rows import COMMIT, EvalRow, revision_key
from oellm.shipping import pythonpath, staged
from oellm.suites import SUITES
from oellm.suites.lm_eval_tasks import MIN_LM_EVAL, cache_dir

SKIP = "--no_preflight skips this check"
# What a worker imports, tried through the image with the shipped oellm first on its path: oellm's worker
# entry, each suite's module and, for lm-eval, its `hf` model, whose imports (accelerate) a plain
# `pip install lm-eval` lacks. A module missing there is named in one line before anything queues.
WORKER_IMPORTS = ("oellm.worker.__main__", "oellm.worker.task")
SUITE_IMPORTS = {"lm_eval": ("lm_eval.models.huggingface",)}


@dataclass
class Proof:
    missing: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)  # of the interpreter the workers run (the image's)
    checked: int = 0  # items loaded this time
    remembered: int = 0  # items proven earlier with the same fingerprint
    seconds: float = 0.0
    revisions: dict = field(default_factory=dict)  # what the pre-cache resolved (run.json's model_revisions)
    code: list[str] = field(default_factory=list)  # which oellm the workers run, per image (see `_code`)


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


def _job(rows: Sequence[EvalRow], cluster: ClusterConfig, includes: Sequence[str], revisions: Mapping[str, str],
         python: str = sys.executable) -> tuple[dict, dict[str, str], list[str]]:
    """(the check job, {item key: label} of what it proves, problems found here already)."""
    env = cache_env(cluster)
    models, local, datasets, _ = wanted(rows, includes)
    problems = [e for e in map(check_local_model, local) if e]
    keys: dict[str, str] = {}
    job: dict = {"mode": "check", "models": [], "datasets": [], "local": [], "paths": []}
    # each model as its rows load it: trust_remote_code=, tokenizer= (one row's args decide; rows of one
    # model with different such args are rare and each loads the same files), with the chat templates its
    # rows apply (the tokenizer must have them)
    load = {r.ref.name: r.ref.load_args for r in rows if r.ref.load_args}
    chat = chat_wanted(rows)

    def how(name: str) -> dict:
        return {**({"load": load[name]} if load.get(name) else {}), **({"chat": chat[name]} if name in chat else {})}

    def key_of(name: str) -> str:  # a proof holds for the same loading args and templates only
        return (f" {json.dumps(load[name], sort_keys=True)}" if load.get(name) else "") + \
            (f" chat {json.dumps(chat[name])}" if name in chat else "")

    for m in models:
        m.update(how(m["repo"]))
        m["revision"] = m["revision"] or revisions.get(revision_key(m["repo"], None))
        rev = revisions.get(revision_key(m["repo"], m["revision"]), m["revision"])
        if rev and COMMIT.match(rev):
            keys[f"model {m['repo']}@{rev}" + key_of(m["repo"])] = ""
            m["revision"] = rev
        job["models"].append(m)
    for path in local:
        keys[f"local {path} {_stat_key(path)}" + key_of(path)] = ""
        job["local"].append({"path": path, **how(path)})
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
    if _workers_python(cluster, python):  # this interpreter's own stack answers here: nothing to learn
        suites = sorted({r.suite for r in rows if r.suite in SUITES})
        job["imports"] = [*WORKER_IMPORTS, *(SUITES[s].partition(":")[0] for s in suites),
                          *(m for s in suites for m in SUITE_IMPORTS.get(s, ()))]
    keys.update({f"path {p}": "" for p in job["paths"]})
    return job, keys, problems


def prove(rows: Sequence[EvalRow], cluster: ClusterConfig, includes: Sequence[str] = (),
          revisions: Mapping[str, str] | None = None, binds: Binds | None = None,
          remember: bool = True, python: str = sys.executable) -> Proof:
    """Load everything the rows need offline, as the workers will: through each image the rows run in (a
    suite may have its own), or, without a container, with the workers' `python` (a --venv_path venv's).
    With `remember`, items proven earlier with the same fingerprint are skipped (the pre-cache just checked
    their files are still there)."""
    groups: dict[str, list[EvalRow]] = {}
    for r in rows:
        groups.setdefault(cluster.image_key(r.suite), []).append(r)
    proofs = [_prove(group, cluster.for_suite(key), key, includes, revisions or {}, binds, remember, python)
              for key, group in groups.items()]
    if not proofs:
        return Proof()
    first = proofs[0]
    for p in proofs[1:]:
        first.missing += p.missing
        first.checked += p.checked
        first.remembered += p.remembered
        first.seconds += p.seconds
        first.code += p.code
    return first


def _prove(rows: Sequence[EvalRow], cluster: ClusterConfig, suite: str, includes: Sequence[str],
           revisions: Mapping[str, str], binds: Binds | None, remember: bool, python: str) -> Proof:
    start = time.monotonic()
    job, keys, problems = _job(rows, cluster, includes, revisions, python)
    if cluster.container and binds is None:
        binds = plan_binds(cluster, worker_paths(rows, cluster, includes))
    fingerprint, run, code_dir = _invocation(cluster, binds or Binds(), python)
    store = hub_cache(cache_env(cluster)) / ".oellm" / "proofs" / f"{fingerprint}.json"
    try:
        earlier = json.loads(store.read_text())
    except (OSError, ValueError):
        earlier = {"items": [], "versions": {}}
    known = set(earlier["items"]) if remember else set()
    proof = Proof(missing=problems, versions=earlier["versions"], remembered=len(keys.keys() & known))
    if not problems and keys and keys.keys() <= known:
        proof.seconds = time.monotonic() - start
        proof.code = _code(cluster, proof.versions, python)
        return proof
    out = run(job)
    proof.versions = out.get("versions") or {}
    proof.missing += [r["error"] for r in out["results"] if r.get("error")]
    proof.missing += _version_problems(cluster, proof.versions, suite, code_dir, python)
    proof.code = _code(cluster, proof.versions, python)
    proof.checked, proof.remembered = len(job["models"]) + len(job["datasets"]) + len(job["local"]), 0
    if not proof.missing:
        write_marker(store, {"items": sorted(known | keys.keys()), "versions": proof.versions})
    proof.seconds = time.monotonic() - start
    return proof


def _invocation(cluster: ClusterConfig, binds: Binds, python: str) -> tuple[str, Callable[[dict], dict], str]:
    """(fingerprint, run(job) -> output, the shipped oellm's dir) of the worker's interpreter: the container's,
    a --venv_path venv's `python`, or this one. The image or venv runs a copy of this oellm as the run dir will
    hold it, staged in oellm's cache (bound for the workers anyway) under a name that changes with the code
    only, so proofs stay remembered."""
    env = {**cache_env(cluster), **OFFLINE_ENV}
    c = cluster.container
    if c is None and python == sys.executable:
        ident = [sys.executable, os.stat(sys.executable).st_mtime_ns, env.get("HF_HOME"), versions()]
        return _hash(ident), lambda job: run_fetch(job, env), ""
    if c is None:  # the venv may have no oellm, or another one: it runs the shipped copy, as its workers do
        code_dir = _staged()
        env["PYTHONPATH"] = pythonpath(code_dir)
        ident = [python, os.stat(python).st_mtime_ns, env.get("HF_HOME"), code_dir]
        return _hash(ident), lambda job: run_fetch(job, env, python), code_dir
    runtime = shutil.which(c.runtime)
    if runtime is None:
        raise OellmError(f"container runtime {c.runtime!r} (cluster {cluster.name}) is not on PATH here: load its "
                         f"module, or set container.runtime to singularity or apptainer; {SKIP}")
    command = ["-m", "oellm.cache.fetch", "-", "-"]
    code_dir = _staged()
    argv = preflight_argv(cluster, binds, env, command, code_dir)
    image = argv[-len(command) - 2]
    try:
        st = os.stat(image)
    except OSError:
        raise OellmError(f"container image {image!r} (cluster {cluster.name}) does not exist: build or pull it "
                         "(containers/README.md) and set container.image in your clusters file") from None
    return (_hash([runtime, *argv, st.st_size, st.st_mtime_ns]), lambda job: _run_container(argv, job, c.image, code_dir),
            code_dir)


def _staged() -> str:
    try:
        return str(staged(cache_dir()))
    except OSError as e:
        raise OellmError(f"cannot copy oellm's code into its cache {cache_dir()} for the workers' python ({e}): "
                         f"set $OELLM_CACHE_DIR to a writable dir the compute nodes see; {SKIP}") from None


def _run_container(argv: list[str], job: dict, image: str, code_dir: str) -> dict:
    """In the shipped code's dir: `-m` puts the working dir first on sys.path (Python < 3.11 images)."""
    proc = subprocess.run(argv, input=json.dumps(job), capture_output=True, text=True, cwd=code_dir)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len(RESULT):])
    err = proc.stderr.strip().splitlines()
    missing = next((m.group(1) for ln in reversed(err) if (m := re.search(r"No module named '([\w.]+)'", ln))), None)
    if missing and missing.split(".")[0] == "oellm":  # shipped first on PYTHONPATH, yet not found
        raise OellmError(f"image {image}: its python does not import the oellm shipped onto its PYTHONPATH (does "
                         f"container.python ignore PYTHONPATH, like `python -I`?); {SKIP}")
    if missing:  # the check itself cannot start: oellm's code is shipped, so this is a package the image lacks
        raise OellmError(f"image {image} lacks {missing.split('.')[0]} that oellm's worker needs (its python cannot "
                         f"import it): install it in the image; {SKIP}")
    raise OellmError(f"preflight through the image failed (exit {proc.returncode}): "
                     f"{' | '.join(err[-3:]) or 'no output'}; {SKIP}")


def _workers_python(cluster: ClusterConfig, python: str) -> str | None:
    """How messages name what the workers run in: the image, a --venv_path venv's python; None for this one."""
    if cluster.container:
        return f"image {cluster.container.image}"
    return None if python == sys.executable else f"python {python}"


def _version_problems(cluster: ClusterConfig, v: dict, suite: str = "", code_dir: str = "",
                      python: str = sys.executable) -> list[str]:
    """What the image (or the --venv_path venv) lacks; `suite`: the suite the image is named for (its package
    must be there); `code_dir`: where the shipped oellm lies (it must import that one, not its own)."""
    where = _workers_python(cluster, python)
    if where is None or not v:
        return []
    fix = "install it in the image" if cluster.container else "install it in that venv"
    out = []
    if suite and not v.get(suite):
        out.append(f"{where} (cluster {cluster.name}'s image for {suite}) has no {suite} installed: build it "
                   f"with `pip install 'oellm[{suite}]'` (containers/README.md)")
    for failed in v.get("imports") or []:
        out.append(f"{where} lacks {failed['missing']} that oellm's worker needs (importing {failed['module']}: "
                   f"{failed['error']}): {fix}")
    if v.get("oellm_code") != __version__ or (code_dir and v.get("oellm_from") != f"{code_dir}/oellm"):
        out.append(f"{where}: it imports oellm {v.get('oellm_code')} from {v.get('oellm_from')}, not the copy of "
                   f"this login node's oellm {__version__} shipped to {code_dir} (first on its PYTHONPATH)")
    if _version(v.get("lm_eval")) < _version(MIN_LM_EVAL):
        out.append(f"{where} has lm-eval {v.get('lm_eval')}; oellm needs lm-eval >= {MIN_LM_EVAL}")
    build, flag = v.get("torch_build"), cluster.container.gpu_flag if cluster.container else None
    if build is None:
        out.append(f"{where} has no torch: the worker cannot load a model")
    elif flag == "--nv" and not build.startswith("cuda") or flag == "--rocm" and not build.startswith("hip"):
        out.append(f"{where} has a {build} build of torch, but cluster {cluster.name} runs it with {flag}: "
                   f"use the image built for this site (containers/README.md)")
    return out


def _code(cluster: ClusterConfig, v: dict, python: str = sys.executable) -> list[str]:
    """Which oellm the workers run, as the preflight found it through the image or the venv."""
    where = _workers_python(cluster, python)
    if where is None or not v.get("oellm_code"):
        return []
    own = v.get("oellm")
    kind = "image" if cluster.container else "venv"
    there = f"the {kind}'s own oellm {own} is not used" if own else f"the {kind} has none"
    return [f"workers run oellm {v['oellm_code']} shipped in the run dir ({where.split(' ', 1)[1]}: {there})"]


def _hash(parts: list) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]
