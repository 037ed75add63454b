"""oellm's shipped index of lighteval's task names, so that a login node without lighteval plans lighteval
rows (oellm-eval's `flores-200-*` and `belebele-eu-cf` groups run lighteval from the cluster's image): every
task of the pinned lighteval, base and multilingual, with what planning needs of it (`TaskFacts`: dataset,
NLTK data, whether its module needs the `lighteval[multilingual]` extra). Superset names (`mmlu` -> `mmlu:*`)
expand over it as lighteval expands them (`Table.expand`).

Which source answers (`oellm.suites.get_suite`): lighteval importable here > the image lighteval rows run in,
or a --venv_path python (`oellm.suites.remote`) > this index, only when nothing will prove the workers'
lighteval before they run (--dry_run, --skip_checks) or the image cannot be asked from here.

Regenerate it inside an environment with the pinned lighteval (`pip install 'oellm[lighteval]'`):
    python -m oellm.suites.lighteval_index build oellm/suites/data/lighteval-0.13.0.json.gz
tests/test_lighteval_index.py rebuilds it in such a venv and compares, so it cannot drift silently.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.offline import OFFLINE_ENV
from oellm.suites import lighteval_tasks as registry
from oellm.suites.lighteval_tasks import Table, TaskFacts

VERSION = "0.13.0"  # the pinned lighteval (pyproject's `lighteval` extra)
SHIPPED = Path(__file__).with_name("data") / f"lighteval-{VERSION}.json.gz"
FORMAT = 1


def table(sources: Sequence[str], path: Path = SHIPPED) -> Table:
    """The shipped index as a Table. A custom task file is Python that only lighteval can read."""
    custom = registry.custom_tasks(sources)
    if custom:
        raise OellmError(f"--lighteval_custom_tasks {custom}: a custom task file needs a real lighteval to read it; "
                         "none can be asked here (not installed, and no image or --venv_path python this login node "
                         f"can run): {registry.INSTALL}")
    return _table(path)


@functools.lru_cache(maxsize=2)
def _table(path: Path) -> Table:
    """One per index: its superset map is built once however often planning asks."""
    data = read(path)
    tasks, facts = data["tasks"], data["sources"]

    def one(leaf: str) -> TaskFacts:
        i, subset = tasks[leaf]
        repo, revision, nltk, extra = facts[i]
        return TaskFacts(repo, subset, revision, tuple(nltk), extra)

    return Table(tasks, one, lambda: f"; checked against oellm's index of lighteval {data['lighteval']}'s tasks (no "
                                     "lighteval here), which leaves out lighteval's modules "
                                     + ", ".join(f"{m} ({why})" for m, why in sorted(data["left_out"].items())))


@functools.lru_cache(maxsize=2)
def read(path: Path = SHIPPED) -> dict[str, Any]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise OellmError(f"oellm's index of lighteval's tasks {path} is missing from this install; reinstall "
                         f"oellm, or {registry.INSTALL}") from None
    if data.get("format") != FORMAT:
        raise OellmError(f"{path}: index format {data.get('format')!r}, this oellm reads {FORMAT}; rebuild it with "
                         "python -m oellm.suites.lighteval_index build")
    return data


def encode(facts: dict[str, TaskFacts], left_out: dict[str, str], version: str) -> dict[str, Any]:
    """The index's JSON: each distinct (repo, revision, NLTK data, extra) once, each task a pointer to one
    plus its subset (~51k names in ~0.5 MB gzipped)."""
    sources: list[list[Any]] = []
    seen: dict[tuple, int] = {}
    tasks: dict[str, list[Any]] = {}
    for name in sorted(facts):
        f = facts[name]
        key = (f.hf_repo, f.hf_revision, f.nltk, f.extra)
        if key not in seen:
            seen[key] = len(sources)
            sources.append([f.hf_repo, f.hf_revision, list(f.nltk), f.extra])
        tasks[name] = [seen[key], f.hf_subset]
    return {"format": FORMAT, "lighteval": version, "left_out": left_out, "sources": sources, "tasks": tasks}


def write(data: dict[str, Any], out: Path) -> None:
    """Byte for byte the same for the same tasks (no gzip timestamp), so a rebuild can be compared."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as z:
        z.write(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())


def build(out: Path) -> dict[str, Any]:
    """Index the lighteval installed here (it must be the pinned version) into `out`."""
    from importlib.metadata import version

    found = version("lighteval")
    if found != VERSION:
        raise OellmError(f"lighteval {found} is installed here; oellm's index is of lighteval {VERSION} "
                         f"(pip install lighteval=={VERSION})")
    data = encode(*registry.every_task(), found)
    write(data, out)
    return data


def main(argv: Sequence[str] = ()) -> None:
    args = list(argv or sys.argv[1:])
    if len(args) != 2 or args[0] != "build":
        raise SystemExit("usage: python -m oellm.suites.lighteval_index build OUT.json.gz")
    out = Path(args[1])
    os.environ.update(OFFLINE_ENV)  # listing tasks fetches nothing (lighteval calls nltk.download at import)
    try:
        data = build(out)
    except OellmError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"{out}: {len(data['tasks'])} lighteval {data['lighteval']} tasks, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
