"""Files written whole: a temp name beside the target, then a rename, so readers never see half a file
(results, run.json, jobs.csv, markers). Kept apart from the run-dir layout, which every stage reads."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, but results are meant to be shared


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", fsync: bool = False) -> Iterator[Any]:
    """Write to a per-process temp name beside `path`, then rename: readers never see half a file,
    and a process killed mid-write leaves only a `.tmp` file that nothing reads. `fsync` first puts
    the bytes on disk, so a node crash cannot leave a renamed but empty file (results)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, newline="" if "b" not in mode else None) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(data, fh, indent=1, default=str)


def read_json(path: Path | str) -> Any:
    with open(path) as fh:
        return json.load(fh)
