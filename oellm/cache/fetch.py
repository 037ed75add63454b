"""The networked half of the pre-cache and its offline check, run as
`python -m oellm.cache.fetch JOB OUT`.

A fresh interpreter, because huggingface_hub and datasets read HF_HOME, HF_ENDPOINT and the offline
flags once, at import: in the parent they may already be imported with other values (a login node
session, a test run), and the cluster's HF_HOME must be the one the worker will read. JOB is JSON
{"mode": "fetch"|"check", "models": [...], "datasets": [...]}; OUT receives {"results": [...]}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from oellm.cache import chat, nltk_data
from oellm.cache.imports import failed_imports, oellm_found
from oellm.cache.paths import dataset_label
from oellm.container import RESULT

# What a model needs to load besides its weights: config, tokenizer, chat template, remote code.
SIDE_FILES = ("*.json", "*.model", "*.txt", "*.tiktoken", "tokenizer*", "*.jinja", "*.py")
RETRIES = 3
STALE_S = 3600  # a temp file not written to for an hour belongs to a killed process


def weight_files(files: list[str]) -> list[str]:
    """Top-level weights in one format, safetensors preferred over PyTorch .bin."""
    top = [f for f in files if "/" not in f]
    for suffix in (".safetensors", ".bin"):
        chosen = [f for f in top if f.endswith(suffix) and not f.startswith(("optimizer", "training_args"))]
        if suffix == ".safetensors" and any(f.endswith(".safetensors.index.json") for f in top):
            # Mistral-style repos ship their own `consolidated.safetensors` beside the sharded HF weights
            # that transformers loads through the index: fetching both doubles the download
            chosen = [f for f in chosen if not f.startswith("consolidated")]
        if chosen:
            return chosen
    return []


def fetch_model(item: dict[str, Any]) -> dict[str, Any]:
    """Resolve the revision to a commit, then download only the files the model needs."""
    from fnmatch import fnmatch

    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    repo, rev = item["repo"], item.get("revision") or "main"
    label = f"model {repo}@{rev}"
    try:
        info = HfApi().model_info(repo, revision=rev)
    except GatedRepoError:
        return {**item, "error": f"{label}: access denied (gated or private); run `huggingface-cli login` or "
                                 "set HF_TOKEN on the login node, and accept the model's terms on its Hub page"}
    except RevisionNotFoundError:
        return {**item, "error": f"{label}: revision {rev!r} does not exist on the Hub (check the branch, tag "
                                 "or commit in revision=)"}
    except RepositoryNotFoundError:
        return {**item, "error": f"{label}: not found on the Hub, or private/gated and no valid token: check the "
                                 "name, or run `huggingface-cli login` / set HF_TOKEN on the login node"}
    except Exception as e:  # network down, proxy, 5xx
        return {**item, "error": f"{label}: cannot reach the Hub ({type(e).__name__}: {_short(e)})"}
    files = [s.rfilename for s in info.siblings or []]
    weights = weight_files(files)
    if item.get("tokenizer_only"):  # a `tokenizer=org/tok` model arg: its tokenizer files, no weights
        weights = []
    elif not weights:
        return {**item, "error": f"{label}: no .safetensors or .bin weights at the top level of the repo"}
    wanted = sorted({*weights, *(f for f in files if fnmatch(f, chat.NAMED)
                                 or "/" not in f and any(fnmatch(f, p) for p in SIDE_FILES))})
    sweep_stale(repo)
    for attempt in range(1, RETRIES + 1):
        try:
            path = download_files(repo, info.sha, wanted)
            break
        except Exception as e:
            if attempt == RETRIES:
                return {**item, "error": f"{label}: download failed after {RETRIES} attempts "
                                         f"({type(e).__name__}: {_short(e)}); run the same command again"}
            time.sleep(attempt)
    if rev != info.sha:  # the worker finds a branch or tag offline through refs/<rev> (the cache layout)
        _write_ref(Path(path).parent.parent / "refs" / rev, info.sha)
    size = sum((Path(path) / f).stat().st_size for f in wanted)
    return {**item, "commit": info.sha, "snapshot": path, "files": wanted, "bytes": size}


def sweep_stale(repo: str) -> list[str]:
    """Delete `*.incomplete` temp files of a killed download. huggingface_hub names each one per process
    and deletes it on failure, but a SIGKILLed process (OOM killer, time limit) leaves it on the shared
    file system forever; a live download keeps touching its file, so only old ones go."""
    from huggingface_hub import constants

    blobs = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "blobs"
    removed = []
    for f in blobs.glob("*.incomplete") if blobs.is_dir() else []:
        try:
            if time.time() - f.stat().st_mtime > STALE_S:
                f.unlink()
                removed.append(f.name)
        except OSError:  # another pre-cache removed or renamed it first
            pass
    if removed:
        print(f"removed {len(removed)} stale partial download(s) of {repo}", file=sys.stderr)
    return removed


def download_files(repo: str, commit: str, files: list[str]) -> str:
    """hf_hub_download per file, not snapshot_download(allow_patterns=): that one caches the full tree
    listing, and an offline snapshot_download (the worker's check) then calls our subset incomplete.
    huggingface_hub (>= 1.x) writes each blob to a per-process `<etag>.<uuid>.incomplete` and renames
    it: safe where file locks are not honoured (Lustre, GPFS); concurrent runs at worst both download."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import hf_hub_download

    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(lambda f: hf_hub_download(repo, f, revision=commit), files))
    return str(Path(paths[0]).parent) if paths else ""


def fetch_dataset(item: dict[str, Any], offline: bool) -> dict[str, Any]:
    """An online load_dataset builds the Arrow cache an offline one needs (a snapshot alone is not enough)."""
    import datasets

    label = dataset_label(item, with_tasks=True)
    err = None
    for attempt in range(1, (1 if offline else RETRIES) + 1):
        try:
            kwargs = {k: v for k, v in item["kwargs"].items() if k != "trust_remote_code"}  # as lm-eval does
            ds = datasets.load_dataset(item["path"], item["name"], **kwargs)
            break
        except Exception as e:
            err = e
            if offline or _not_found(e) or attempt == RETRIES:
                return {**item, "error": f"{label}: {'not in the offline cache' if offline else 'cannot be loaded'}"
                                         f" ({type(err).__name__}: {_short(err)})"}
            time.sleep(attempt)
    short = [f"task {task}: {n}-shot needs {n} examples from its few-shot split {split!r}, which has "
             f"{len(ds[split]) if split in ds else 'no such split'}"
             for task, split, n in item.get("fewshot") or [] if isinstance(ds, dict)
             and (split not in ds or len(ds[split]) < n)]
    if short:  # lm-eval would fail every such row on the node ("sample larger than population")
        return {**item, "error": f"{label}: " + "; ".join(short)}
    splits = ds.values() if isinstance(ds, dict) else [ds]
    cache = sorted({f["filename"] for d in splits for f in d.cache_files})
    return {**item, "cache_files": cache, "bytes": sum(Path(f).stat().st_size for f in cache if Path(f).exists())}


def _write_ref(ref: Path, commit: str) -> None:
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, ref)  # readers see the old or the new commit, never an empty file


def check_model(item: dict[str, Any]) -> dict[str, Any]:
    """What the worker does first: find the snapshot offline, then read its config and tokenizer."""
    from huggingface_hub import snapshot_download

    repo, rev = item["repo"], item.get("revision")
    label = f"model {repo}" + (f"@{rev}" if rev else "")
    try:
        path = snapshot_download(repo, revision=rev, local_files_only=True)
    except Exception as e:
        return {**item, "error": f"{label}: not in the offline cache ({type(e).__name__})"}
    if item.get("tokenizer_only"):
        return _loads(item, f"tokenizer {repo}", path, config=False)
    if not weight_files([p.name for p in Path(path).iterdir()]):
        return {**item, "error": f"{label}: snapshot {path} holds no weights"}
    return _loads(item, label, path)


def _loads(item: dict[str, Any], label: str, path: str | Path, config: bool = True) -> dict[str, Any]:
    """What the worker reads first: the config and the tokenizer (the row's, when its args name one)."""
    try:
        from transformers import AutoConfig, AutoTokenizer
    except ImportError:  # a torch-free login node: the files are there, which is what we can check
        return item
    load = item.get("load") or {}
    trust = {"trust_remote_code": True} if load.get("trust_remote_code") else {}
    try:
        if config:
            AutoConfig.from_pretrained(path, **trust)
        tokenizer = AutoTokenizer.from_pretrained(load.get("tokenizer") or path, **trust)
    except Exception as e:
        return {**item, "error": f"{label}: config or tokenizer does not load offline ({type(e).__name__}: {_short(e)})"}
    return chat.checked(item, label, tokenizer)  # the chat templates its rows apply are there


def _needs_hub(kind: str, item: dict[str, Any]) -> bool:
    return kind == "model" or not Path(str(item["path"])).expanduser().exists()


def hub_unreachable(timeout: float = 10) -> str | None:
    """Why the Hub cannot be reached, or None. One request first: unreachable, huggingface_hub and datasets
    retry every file and dataset with backoff (76 s for one model and one dataset when DNS fails)."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # an answer, even 4xx/5xx: the network is there; the real requests say more
    except (OSError, ValueError) as e:  # URLError, timeouts, refused, bad URL
        reason = getattr(e, "reason", e)
        return (f"cannot reach the Hub at {endpoint} ({type(reason).__name__}: {_short(reason)}); pre-caching "
                "needs network on the login node: check HTTPS_PROXY/HF_ENDPOINT, or run where the Hub is reachable")
    return None


def _not_found(e: Exception) -> bool:
    return type(e).__name__ in ("DatasetNotFoundError", "RepositoryNotFoundError", "FileNotFoundError",
                                "RevisionNotFoundError", "GatedRepoError")


def _short(e: object) -> str:
    return " ".join(str(e).split())[:300]


def check_local(item: dict[str, Any]) -> dict[str, Any]:
    """A local model dir or checkpoint as the worker meets it: visible, with weights, config and tokenizer
    loading (inside the container this proves the binds)."""
    path = Path(item["path"])
    if not path.is_dir():
        return {**item, "error": f"model {path}: not visible here (no bind covers it, or it does not exist)"}
    if not (path / "config.json").is_file():  # a GGUF dir: lm-eval reads it itself; the files are there
        return item
    return _loads(item, f"model {path}", path)


def versions() -> dict[str, str | None]:
    """What the worker would run with: package versions (read from metadata, nothing imported) and the
    GPU build of torch (from torch/version.py, which importing torch would take seconds to tell)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("oellm", "lm_eval", "datasets", "transformers", "huggingface_hub", "torch", "lighteval", "bigcodebench"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    spec = find_spec("torch") if out["torch"] else None
    build = None
    if spec and spec.origin:
        fields = {}
        for line in (Path(spec.origin).parent / "version.py").read_text().splitlines():
            name, _, value = line.partition("=")
            fields[name.split(":")[0].strip()] = value.strip().strip("'\"")
        build = next((f"{k} {fields[k]}" for k in ("cuda", "hip") if fields.get(k) not in (None, "", "None")), "cpu")
    out["torch_build"] = build
    return {**out, **oellm_found()}  # in the preflight: the copy shipped first on its PYTHONPATH


def main(job_path: str, out_path: str) -> None:
    """JOB and OUT are files, or `-` for stdin and a last stdout line `RESULT <json>` (the container
    preflight: no file needs a bind)."""
    from tqdm import tqdm

    job = json.loads(sys.stdin.read() if job_path == "-" else Path(job_path).read_text())
    offline = job["mode"] == "check"
    todo = ([("model", m) for m in job["models"]] + [("dataset", d) for d in job["datasets"]]
            + [("nltk", n) for n in job.get("nltk", [])]
            + [("local", m) for m in job.get("local", [])])
    results = []
    down = None if offline or not any(_needs_hub(k, i) for k, i in todo if k not in ("local", "nltk")) \
        else hub_unreachable()
    for kind, item in tqdm(todo, desc="pre-cache" if not offline else "offline check", unit="item",
                           file=sys.stderr, disable=len(todo) < 2):
        if kind == "local":
            res = check_local(item)
        elif kind == "nltk":
            res = nltk_data.check(item) if offline else nltk_data.fetch(item)
        elif down and _needs_hub(kind, item):
            label = f"model {item['repo']}@{item.get('revision') or 'main'}" if kind == "model" else dataset_label(item, with_tasks=True)
            res = {**item, "error": f"{label}: not fetched", "hub_down": down}
        elif kind == "model":
            res = check_model(item) if offline else fetch_model(item)
        else:
            res = fetch_dataset(item, offline)
        results.append({**res, "kind": kind})
    results += [{"kind": "path", "path": p, "error": f"{p}: not visible here (no bind covers it)"}
                for p in job.get("paths", []) if not os.path.exists(p)]
    out = {"results": results, **({"versions": {**versions(), "imports": failed_imports(job.get("imports", []))}}
                                  if offline else {})}
    if out_path == "-":
        print(RESULT + json.dumps(out), flush=True)
    else:
        Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
