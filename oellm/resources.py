"""Where the shipped data files (clusters.json, templates/) are: inside the wheel, or the source tree."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(name: str) -> Path:
    """`name` under `oellm/_data/` of an installed wheel, else at the top of a source checkout."""
    try:
        p = Path(str(resources.files("oellm") / "_data" / name))
        if p.exists():
            return p
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / name
