"""NLTK data that task code downloads at import (ifeval and leaderboard_ifeval: `punkt_tab`): fetched on
the login node into `paths.nltk_dir`, proven there offline, found by the worker through $NLTK_DATA.
A site's mirror is honoured as nltk's own downloader does it: $NLTK_DOWNLOAD_URL (its index.xml)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oellm.rows import EvalRow


def needs(rows: Sequence[EvalRow], include_paths: Sequence[str]) -> dict[str, list[str]]:
    """NLTK resource -> the tasks that download it, over every suite that can tell."""
    from oellm.suites import by_suite, get_suite

    out: dict[str, list[str]] = {}
    for name, group in by_suite(rows).items():
        suite = get_suite(name)
        if hasattr(suite, "nltk_resources"):
            for resource, tasks in suite.nltk_resources(sorted({r.task for r in group}), list(include_paths)).items():
                out.setdefault(resource, []).extend(tasks)
    return out


def present(folder: Path, resource: str) -> bool:
    """Installed as nltk installs a package: `<category>/<id>/` or `<category>/<id>.zip`."""
    return any(folder.glob(f"*/{resource}")) or any(folder.glob(f"*/{resource}.zip"))


def fetch(item: dict[str, Any]) -> dict[str, Any]:
    """Download one resource with nltk's own downloader (into item["dir"]); online, on the login node."""
    folder, resource = Path(item["dir"]), item["id"]
    if present(folder, resource):
        return item
    try:
        from nltk.downloader import Downloader
    except ImportError:
        return {**item, "error": f"nltk {resource} (tasks {', '.join(item['tasks'])}): nltk is not installed "
                                 "here to fetch it (pip install nltk)"}
    folder.mkdir(parents=True, exist_ok=True)
    try:
        ok = Downloader(server_index_url=os.environ.get("NLTK_DOWNLOAD_URL") or None).download(
            resource, download_dir=str(folder), quiet=True, raise_on_error=True)
    except Exception as e:  # ValueError for an unknown id, URLError/HTTPError for no network
        ok, why = False, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    else:
        why = "the downloader reported a failure"
    if not ok or not present(folder, resource):
        return {**item, "error": f"nltk {resource} (tasks {', '.join(item['tasks'])}): not fetched ({why}); "
                                 "set NLTK_DOWNLOAD_URL to a mirror, or put it in $NLTK_DATA by hand"}
    return item


def check(item: dict[str, Any]) -> dict[str, Any]:
    """Offline: the worker (NLTK_DATA = item["dir"]) finds it without the downloader."""
    if present(Path(item["dir"]), item["id"]):
        return item
    return {**item, "error": f"nltk {item['id']} (tasks {', '.join(item['tasks'])}): not in {item['dir']}; "
                             "run schedule-eval with --download_only where the network is reachable"}
