"""Pre-caching on the login node: compute nodes are offline, so every model and dataset a run needs
must be in the cache the worker reads (the cluster's HF_HOME) before anything is submitted.

The fast path touches no network: a hub model pinned to a commit hash whose files our marker lists,
and a dataset whose marker names Arrow files that still exist, are "already there" without importing
huggingface_hub. Everything else goes to one `python -m oellm.cache.fetch` subprocess (see there why),
which resolves branches and tags to commits, downloads only the files a model needs and runs one
online `load_dataset` per dataset. Downloads rely on huggingface_hub's per-process `.incomplete` temp
file + rename (no file lock needed, so Lustre/GPFS are safe): a killed or concurrent pre-cache leaves
no half file under a final name; our markers are written the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from oellm.cache import nltk_data
from oellm.cache.paths import (
    cache_env,
    cached_dataset,
    cached_model,
    dataset_label,
    dataset_marker,
    hub_cache,
    local_commit,
    model_marker,
    nltk_dir,
    write_marker,
)
from oellm.clusters import ClusterConfig
from oellm.errors import OellmError
from oellm.offline import OFFLINE_ENV, offline_requested
from oellm.rows import COMMIT, HF_ID, WEIGHTS, EvalRow, has_weights, is_path, revision_key


def wanted(rows: Sequence[EvalRow], include_paths: Sequence[str]
           ) -> tuple[list[dict], list[str], list[dict], list[str]]:
    """(hub models, local model dirs, datasets, tasks whose dataset no YAML names) the rows need, each
    once; datasets list their tasks."""
    from oellm.suites import by_suite, get_suite

    refs = {r.ref for r in rows}
    models = sorted({(m.name, m.revision or "") for m in refs if m.is_hub})
    # `tokenizer=org/tok`: a checkpoint saved without tokenizer files borrows a hub tokenizer, fetched too
    tokenizers = sorted({t for m in refs if (t := m.arg_dict.get("tokenizer")) and not is_path(t) and HF_ID.match(t)}
                        - {name for name, _ in models})
    local = sorted({m.name for m in refs if not m.is_hub})
    needs, pools = {}, {}
    for name, group in by_suite(rows).items():
        suite = get_suite(name)
        needs.update(suite.datasets(sorted({r.task for r in group}), list(include_paths)))
        if hasattr(suite, "fewshot_pools"):  # lm-eval: its few-shot examples come from a split we can count
            pools.update(suite.fewshot_pools(group, list(include_paths)))
    by_key: dict[str, dict] = {}
    opaque = []
    for task, ds in needs.items():
        if ds is None:
            opaque.append(task)
            continue
        item = {"path": ds["dataset_path"], "name": ds["dataset_name"], "kwargs": ds["dataset_kwargs"]}
        key = json.dumps(item, sort_keys=True, default=str)
        by_key.setdefault(key, {**item, "key": hashlib.sha1(key.encode()).hexdigest()[:16], "tasks": []})
        by_key[key]["tasks"].append(task)
        if task in pools:
            by_key[key].setdefault("fewshot", []).append([task, *pools[task]])
    hub = [{"repo": m, "revision": r or None} for m, r in models]
    hub += [{"repo": t, "revision": None, "tokenizer_only": True} for t in tokenizers]
    return hub, local, list(by_key.values()), opaque


def check_local_model(path: str) -> str | None:
    """A local dir or checkpoint is used in place (never copied): it must hold a config and weights."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return f"model {path}: no such directory"
    if not has_weights(p):
        return f"model {path}: no config.json (or .gguf) in the directory"
    if not any(next(p.glob(g), None) for g in WEIGHTS):
        return f"model {path}: no weights (*.safetensors, *.bin, *.gguf) in the directory"
    return None


def local_files(ds: dict) -> list[str]:
    """The data_files of a dataset read from local files (`dataset_path: json` etc.), or its local folder,
    else []."""
    files = ds["kwargs"].get("data_files") if isinstance(ds["kwargs"], dict) else None
    if files is None:  # a local data folder (lighteval's train.jsonl/test.jsonl layout) is read as it is
        return [str(ds["path"])] if Path(str(ds["path"])).expanduser().is_dir() else []
    if ds["path"] not in ("json", "csv", "parquet", "text", "arrow") and not Path(str(ds["path"])).exists():
        return []
    if isinstance(files, dict):
        files = list(files.values())
    flat: list[str] = []
    for f in files if isinstance(files, list) else [files]:
        flat.extend(f if isinstance(f, list) else [f])
    return [str(f) for f in flat]


def run_fetch(job: dict, env: dict[str, str], python: str = sys.executable) -> dict:
    """Run `oellm.cache.fetch` on `job` in a fresh interpreter (`python`: this one, or a --venv_path venv's)
    with `env`; its progress bar goes to our stderr."""
    with tempfile.TemporaryDirectory(prefix="oellm-fetch-") as tmp:
        job_file, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(job))
        # run from the temp dir: `-m` puts the working dir first on sys.path, and the user's may hold another
        # `oellm` (a checkout of oellm-eval)
        proc = subprocess.run([python, "-m", "oellm.cache.fetch", str(job_file), str(out)], env=env, cwd=tmp,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0 or not out.is_file():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise OellmError(f"pre-cache helper ({job['mode']}) exited with code {proc.returncode}: {tail}")
        return json.loads(out.read_text())


def precache(rows: Sequence[EvalRow], cluster: ClusterConfig, include_paths: Sequence[str] = (),
             log: Callable[[str], None] = print) -> dict[str, str]:
    """Make every model and dataset of `rows` loadable offline from the cluster's cache; returns the
    resolved commits: {model: commit} for rows without a revision (what the worker pins) and
    {"model@rev": commit} for rows naming a branch or tag (provenance). One OellmError lists every failure."""
    env = cache_env(cluster)
    models, local, datasets, opaque = wanted(rows, include_paths)
    if opaque:
        log(f"note: {len(opaque)} task(s) load their data with their own code (a Python task class or "
            f"custom_dataset), which the pre-cache cannot see: {', '.join(opaque[:5])}"
            f"{' ...' if len(opaque) > 5 else ''}; it must not need the network (the workers run offline)")
    table: list[tuple[str, str, int]] = []
    errors = [e for e in map(check_local_model, local) if e]
    table += [(f"model {m}", "local", 0) for m in local]
    revisions: dict[str, str] = {}
    to_fetch, ds_fetch = [], []
    for m in models:
        rev = m["revision"]
        mark = cached_model(env, m["repo"], rev) if rev and COMMIT.match(rev) else None
        if mark:
            table.append((f"model {m['repo']}@{rev[:12]}", "already there", mark["bytes"]))
        else:
            to_fetch.append(m)
    for ds in datasets:
        files = local_files(ds)
        if files:
            missing = [f for f in files if not Path(f).expanduser().exists()]
            if missing:
                errors.append(f"task {', '.join(ds['tasks'])}: local data file(s) not found: {', '.join(missing)}")
            table.append((f"dataset {ds['path']} (local files)", "local", 0))
        elif (mark := cached_dataset(env, ds["key"])) is not None:
            table.append((dataset_label(ds), "already there", mark["bytes"]))
        else:
            ds_fetch.append(ds)
    nltk = [{"id": r, "tasks": t, "dir": str(nltk_dir(env))} for r, t in nltk_data.needs(rows, include_paths).items()]
    table += [(f"nltk {n['id']}", "already there", 0) for n in nltk if nltk_data.present(Path(n["dir"]), n["id"])]
    nltk = [n for n in nltk if not nltk_data.present(Path(n["dir"]), n["id"])]
    if (to_fetch or ds_fetch) and offline_requested(os.environ):  # the user's own flag on the login node
        errors += _resolve_offline(env, to_fetch, ds_fetch, table, revisions, log)
        to_fetch, ds_fetch = [], []  # (HF_HUB_OFFLINE is about the Hub: NLTK data is still fetched)
    if to_fetch or ds_fetch or nltk:
        log(f"pre-caching {len(to_fetch)} model(s) and {len(ds_fetch)} dataset(s) into "
            f"{hub_cache(env).parent} (cluster {cluster.name})" + (f", and NLTK data {', '.join(n['id'] for n in nltk)}"
                                                                    f" into {nltk[0]['dir']}" if nltk else ""))
        online = {k: v for k, v in env.items() if k not in OFFLINE_ENV}  # the login node is online
        job = {"mode": "fetch", "models": to_fetch, "datasets": ds_fetch, "nltk": nltk}
        for res in run_fetch(job, online)["results"]:
            if res.get("hub_down"):
                raise OellmError(f"{res['hub_down']} ({len(to_fetch)} model(s) and {len(ds_fetch)} dataset(s) "
                                 "to fetch; nothing was downloaded)")
            if res.get("error"):
                errors.append(res["error"])
            elif res["kind"] == "nltk":
                table.append((f"nltk {res['id']}", "fetched", 0))
            elif res["kind"] == "model":
                write_marker(model_marker(env, res["repo"], res["commit"]),
                              {"files": res["files"], "bytes": res["bytes"]})
                table.append((f"model {res['repo']}@{res['commit'][:12]}", "fetched", res["bytes"]))
                if res["revision"] != res["commit"]:  # a commit asked for needs no record
                    revisions[revision_key(res["repo"], res["revision"])] = res["commit"]
            else:
                write_marker(dataset_marker(env, res["key"]), {"cache_files": res["cache_files"],
                                                                  "bytes": res["bytes"], "tasks": res["tasks"]})
                table.append((dataset_label(res), "fetched", res["bytes"]))
    if errors:
        raise OellmError(f"pre-cache failed for {len(errors)} item(s): " + "; ".join(errors))
    log(format_table(table))
    return revisions


def _resolve_offline(env: dict[str, str], models: list[dict], datasets: list[dict], table: list,
                     revisions: dict[str, str], log: Callable[[str], None]) -> list[str]:
    """HF_HUB_OFFLINE is set where oellm runs (an offline login node, or after --download_only elsewhere):
    resolve revisions from the cache's refs, fetch nothing; the offline proof then checks every load."""
    log(f"HF_HUB_OFFLINE is set: resolving {len(models)} model(s) from the cache at {hub_cache(env).parent}, "
        f"fetching nothing" + (f"; {len(datasets)} dataset(s) are left to the offline check" if datasets else ""))
    errors = []
    for m in models:
        repo, rev = m["repo"], m["revision"]
        commit = local_commit(env, repo, rev)
        if commit is None:
            errors.append(f"model {repo}@{rev or 'main'}: not in the cache, and HF_HUB_OFFLINE is set here; "
                          "pre-cache it where the Hub is reachable (--download_only), or unset the flag")
            continue
        table.append((f"model {repo}@{commit[:12]}", "already there", 0))
        if rev != commit:
            revisions[revision_key(repo, rev)] = commit
    return errors


def format_table(table: list[tuple[str, str, int]]) -> str:
    if not table:
        return "pre-cache: nothing to cache"
    width = max(len(t[0]) for t in table)
    lines = [f"{what:<{width}}  {state:<13}  {_size(n) if n else '-':>9}" for what, state, n in table]
    counts = {s: sum(1 for t in table if t[1] == s) for s in ("fetched", "already there", "local")}
    lines.append(f"pre-cache: {counts['fetched']} fetched, {counts['already there']} already there, "
                 f"{counts['local']} local; {_size(sum(t[2] for t in table))} in the cache")
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
