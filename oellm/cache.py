"""Pre-caching on the login node: compute nodes are offline, so every model and dataset a run needs
must be in the cache the worker reads (the cluster's HF_HOME) before anything is submitted.

The fast path touches no network: a hub model pinned to a commit hash whose files our marker lists,
and a dataset whose marker names Arrow files that still exist, are "already there" without importing
huggingface_hub. Everything else goes to one `python -m oellm.fetch` subprocess (see there why),
which resolves branches and tags to commits, downloads only the files a model needs and runs one
online `load_dataset` per dataset. Downloads rely on huggingface_hub's per-process `.incomplete` temp
file + rename (no file lock needed, so Lustre/GPFS are safe): a killed or concurrent pre-cache leaves
no half file under a final name; our markers are written the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from oellm.clusters import ClusterConfig, expand
from oellm.errors import OellmError
from oellm.plan import has_weights, is_local
from oellm.rundir import EvalRow, atomic_open

COMMIT = re.compile(r"^[0-9a-f]{40}$")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def cache_env(cluster: ClusterConfig) -> dict[str, str]:
    """This process's environment with the cluster's `env` (HF_HOME, ...) on top: what the worker sees."""
    env = dict(os.environ)
    env.update({k: expand(v, f"cluster {cluster.name}.env.{k}") for k, v in cluster.env.items()})
    return env


def hub_cache(env: dict[str, str]) -> Path:
    home = Path(env.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    return Path(env.get("HF_HUB_CACHE") or home / "hub").expanduser()


def datasets_cache(env: dict[str, str]) -> Path:
    home = Path(env.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    return Path(env.get("HF_DATASETS_CACHE") or home / "datasets").expanduser()


def row_revision(model_args: str) -> str | None:
    args = dict(a.split("=", 1) for a in model_args.split(",") if "=" in a)
    return args.get("revision")


def wanted(rows: Sequence[EvalRow], include_paths: Sequence[str]
           ) -> tuple[list[dict], list[str], list[dict], list[str]]:
    """(hub models, local model dirs, datasets, tasks whose dataset no YAML names) the rows need, each
    once; datasets list their tasks."""
    from oellm.tasks import task_datasets

    models = sorted({(r.model, row_revision(r.model_args) or "") for r in rows if not is_local(r.model)})
    local = sorted({r.model for r in rows if is_local(r.model)})
    by_key: dict[str, dict] = {}
    opaque = []
    for task, ds in task_datasets(sorted({r.task for r in rows}), list(include_paths)).items():
        if ds is None:
            opaque.append(task)
            continue
        item = {"path": ds["dataset_path"], "name": ds["dataset_name"], "kwargs": ds["dataset_kwargs"]}
        key = json.dumps(item, sort_keys=True, default=str)
        by_key.setdefault(key, {**item, "key": hashlib.sha1(key.encode()).hexdigest()[:16], "tasks": []})
        by_key[key]["tasks"].append(task)
    return [{"repo": m, "revision": r or None} for m, r in models], local, list(by_key.values()), opaque


def check_local_model(path: str) -> str | None:
    """A local dir or checkpoint is used in place (never copied): it must hold a config and weights."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return f"model {path}: no such directory"
    if not has_weights(p):
        return f"model {path}: no config.json (or .gguf) in the directory"
    if not any(next(p.glob(g), None) for g in ("*.safetensors", "*.bin", "*.gguf", "*.pt")):
        return f"model {path}: no weights (*.safetensors, *.bin, *.gguf) in the directory"
    return None


def local_files(ds: dict) -> list[str]:
    """The data_files of a dataset read from local files (`dataset_path: json` etc.), else []."""
    files = ds["kwargs"].get("data_files") if isinstance(ds["kwargs"], dict) else None
    if files is None or (ds["path"] not in ("json", "csv", "parquet", "text", "arrow")
                         and not Path(str(ds["path"])).exists()):
        return []
    if isinstance(files, dict):
        files = list(files.values())
    flat: list[str] = []
    for f in files if isinstance(files, list) else [files]:
        flat.extend(f if isinstance(f, list) else [f])
    return [str(f) for f in flat]


def _model_marker(env: dict[str, str], repo: str, commit: str) -> Path:
    return hub_cache(env) / ".oellm" / f"{repo.replace('/', '--')}@{commit}.json"


def _dataset_marker(env: dict[str, str], key: str) -> Path:
    return datasets_cache(env) / ".oellm" / f"{key}.json"


def _cached_model(env: dict[str, str], repo: str, commit: str) -> dict | None:
    """The marker of a pinned model whose listed files are all in its snapshot, else None."""
    try:
        mark = json.loads(_model_marker(env, repo, commit).read_text())
    except (OSError, ValueError):
        return None
    snap = hub_cache(env) / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    return mark if all((snap / f).is_file() for f in mark["files"]) else None


def _cached_dataset(env: dict[str, str], key: str) -> dict | None:
    try:
        mark = json.loads(_dataset_marker(env, key).read_text())
    except (OSError, ValueError):
        return None
    return mark if mark["cache_files"] and all(Path(f).is_file() for f in mark["cache_files"]) else None


def _write_marker(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:  # temp + rename: a concurrent pre-cache reads old or new, never half
        json.dump(data, fh)


def run_fetch(mode: str, models: list[dict], datasets: list[dict], env: dict[str, str]) -> list[dict]:
    """Run `oellm.fetch` in a fresh interpreter with `env`; its progress bar goes to our stderr."""
    with tempfile.TemporaryDirectory(prefix="oellm-fetch-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"mode": mode, "models": models, "datasets": datasets}))
        proc = subprocess.run([sys.executable, "-m", "oellm.fetch", str(job), str(out)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0 or not out.is_file():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise OellmError(f"pre-cache helper ({mode}) exited with code {proc.returncode}: {tail}")
        return json.loads(out.read_text())["results"]


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
        mark = _cached_model(env, m["repo"], rev) if rev and COMMIT.match(rev) else None
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
        elif (mark := _cached_dataset(env, ds["key"])) is not None:
            table.append((_ds_label(ds), "already there", mark["bytes"]))
        else:
            ds_fetch.append(ds)
    if to_fetch or ds_fetch:
        log(f"pre-caching {len(to_fetch)} model(s) and {len(ds_fetch)} dataset(s) into "
            f"{hub_cache(env).parent} (cluster {cluster.name})")
        online = {k: v for k, v in env.items() if k not in OFFLINE}  # the login node is online
        for res in run_fetch("fetch", to_fetch, ds_fetch, online):
            if res.get("hub_down"):
                raise OellmError(f"{res['hub_down']} ({len(to_fetch)} model(s) and {len(ds_fetch)} dataset(s) "
                                 "to fetch; nothing was downloaded)")
            if res.get("error"):
                errors.append(res["error"])
            elif res["kind"] == "model":
                _write_marker(_model_marker(env, res["repo"], res["commit"]),
                              {"files": res["files"], "bytes": res["bytes"]})
                table.append((f"model {res['repo']}@{res['commit'][:12]}", "fetched", res["bytes"]))
                if not res["revision"]:
                    revisions[res["repo"]] = res["commit"]
                elif res["revision"] != res["commit"]:
                    revisions[f"{res['repo']}@{res['revision']}"] = res["commit"]
            else:
                _write_marker(_dataset_marker(env, res["key"]), {"cache_files": res["cache_files"],
                                                                  "bytes": res["bytes"], "tasks": res["tasks"]})
                table.append((_ds_label(res), "fetched", res["bytes"]))
    if errors:
        raise OellmError(f"pre-cache failed for {len(errors)} item(s): " + "; ".join(errors))
    log(format_table(table))
    return revisions


def _ds_label(ds: dict) -> str:
    return f"dataset {ds['path']}" + (f" ({ds['name']})" if ds.get("name") else "")


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


def check_cache(rows: Sequence[EvalRow], cluster: ClusterConfig, include_paths: Sequence[str] = (),
                revisions: dict[str, str] | None = None) -> list[str]:
    """What a worker would miss: each hub model's config and tokenizer and each dataset loaded in a
    subprocess with the offline flags and the worker's cache paths. [] when all is there."""
    env = {**cache_env(cluster), **OFFLINE}
    models, local, datasets, _ = wanted(rows, include_paths)
    missing = [e for e in map(check_local_model, local) if e]
    for m in models:
        m["revision"] = m["revision"] or (revisions or {}).get(m["repo"])
    hub_ds = []
    for ds in datasets:
        files = local_files(ds)
        if files:
            missing += [f"task {', '.join(ds['tasks'])}: local data file not found: {f}"
                        for f in files if not Path(f).expanduser().exists()]
        else:
            hub_ds.append(ds)
    if models or hub_ds:
        missing += [r["error"] for r in run_fetch("check", models, hub_ds, env) if r.get("error")]
    return missing


def check_cache_cmd(
    models: str | list[str] | None = None,
    tasks: str | list[str] | None = None,
    n_shot: int | str | list[int] = 0,
    eval_csv_path: Path | None = None,
    lm_eval_include_path: str | list[str] | None = None,
    cluster: str | None = None,
    clusters_file: Path | None = None,
) -> None:
    """Check, offline, that every model and dataset of a planned run is in the cluster's cache.

    Loads each model's config and tokenizer and each task's dataset in a subprocess with the
    offline flags set, as a compute node would; prints what is missing and exits non-zero.

    Args:
        models: Comma-separated models, as for schedule-eval.
        tasks: Comma-separated lm-eval task, group or tag names.
        n_shot: Few-shot counts, e.g. 0 or "0,5".
        eval_csv_path: A CSV with columns model_path,task_path,n_shot instead of --models/--tasks/--n_shot.
        lm_eval_include_path: Dirs with custom lm-eval task YAMLs (comma-separated).
        cluster: Cluster name from clusters.json (default: detected from the hostname, or $OELLM_CLUSTER).
        clusters_file: Your own clusters JSON, merged over the shipped one (default: $OELLM_CLUSTERS_FILE).
    """
    from oellm.clusters import detect_cluster, load_clusters
    from oellm.schedule import Request, include_paths, plan_rows

    req = Request(models=models, tasks=tasks, n_shot=n_shot, eval_csv_path=eval_csv_path,
                  lm_eval_include_path=lm_eval_include_path, cluster=cluster, clusters_file=clusters_file)
    conf = detect_cluster(load_clusters(clusters_file), cluster)
    includes = include_paths(req)
    rows, _ = plan_rows(req, includes)
    missing = check_cache(rows, conf, includes)
    if missing:
        raise OellmError(f"{len(missing)} item(s) missing from the offline cache (run `oellm schedule-eval ... "
                         f"--download_only` on a login node): " + "; ".join(missing))
    print(f"cache complete: {len({r.model for r in rows})} model(s), {len({r.task for r in rows})} task(s) "
          f"load offline on cluster {conf.name}")
