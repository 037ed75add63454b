"""oellm's own code shipped into a run, so the workers run the login node's oellm in any image that has torch
and lm-eval (a site's image, a stock PyTorch one, a venv without oellm), and never an older oellm the image
happens to hold.

oellm is pure Python: the package dir is copied as it is (a run dir gets `oellm_code/oellm/`) and the workers
find it first on their PYTHONPATH (`oellm.container.code_path`). A copy inside the run dir moves with the dir
(`oellm resubmit` of a moved dir renders its script again for the new path) and keeps the exact code the run
was planned with, whatever is installed later. The package dir itself is never bound: a development install
is editable, and its checkout holds far more than the package.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import oellm

SHIP_DIR = "oellm_code"  # in a run dir: what goes first on the workers' PYTHONPATH (it holds `oellm/`)


def pythonpath(code_dir: str | Path, environ: Mapping[str, str] = os.environ) -> str:
    """PYTHONPATH of a process that runs the shipped oellm: `code_dir` first, then what `environ` had (the
    local workers, the preflight and a suite's probe through a venv; the scripts' shell spelling of the same
    rule is `oellm.container.code_path`)."""
    return os.pathsep.join([str(code_dir), *filter(None, [environ.get("PYTHONPATH")])])


def worker_python(recorded: str | None = None) -> str:
    """The interpreter the workers run: the one a run recorded (a --venv_path venv's), else this one."""
    return recorded or sys.executable


def source() -> Path:
    """The package dir this process imported oellm from (an editable install's is the checkout's)."""
    return Path(oellm.__file__).resolve().parent


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@lru_cache(maxsize=1)
def digest() -> str:
    """A short hash of the package's files (names and contents): a staged copy is reused while it is the same."""
    h = hashlib.sha1()
    root = source()
    for p in _files(root):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def ship(dest: Path) -> Path:
    """Copy the package into `dest/oellm` (dest: a run dir's `oellm_code`); returns `dest`, the dir that goes
    on PYTHONPATH. Copied under a temporary name and renamed, so a reader never sees half a package."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".oellm-", dir=dest))
    root = source()
    try:
        # file by file: every schedule-eval (dry runs too) pays this, and copytree's copystat per file and dir
        # made it ten times slower (~150 ms instead of ~10 ms for ~90 files)
        for f in _files(root):
            out = tmp / "oellm" / f.relative_to(root)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out)
        os.replace(tmp / "oellm", dest / "oellm")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def staged(cache: Path) -> Path:
    """A copy in oellm's cache named by version and content (`code/oellm-0.1.0-<digest>`), made once and
    shared, for what runs in an image before a run dir exists (the preflight, a suite's plan-time probe): its
    path changes only with the code, so the preflight's remembered proofs hold while the code is unchanged."""
    root = cache / "code"
    dest = root / f"oellm-{oellm.__version__}-{digest()}"
    if not (dest / "oellm" / "__init__.py").is_file():
        try:
            ship(dest)
        except OSError:  # another process renamed its copy into place first: the same files
            if not (dest / "oellm" / "__init__.py").is_file():
                raise
        _prune(root, keep=dest)
    else:
        with contextlib.suppress(OSError):  # its mtime is its last use: _prune keeps a copy in use
            os.utime(dest)
    return dest


def _prune(root: Path, keep: Path, age_s: float = 86400) -> None:
    """Staged copies of other code unused for a day go (an upgrade, a developer's edits): `staged` marks each
    use on the copy's mtime, so a copy a long-lived installation keeps using is never removed under it; only
    preflights and probes read them, for seconds; runs have their own copy."""
    now = time.time()
    for old in root.glob("oellm-*"):
        try:
            if old != keep and now - old.stat().st_mtime > age_s:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
