"""What the worker's python imports, answered inside the image by the preflight's check (`oellm.cache.fetch`):
the oellm it finds first (the copy shipped onto its PYTHONPATH, `oellm.shipping`) and the worker modules it
cannot import, each with the package that is missing (an image with torch and lm-eval may lack one)."""

from __future__ import annotations

import importlib
from pathlib import Path


def oellm_found() -> dict[str, str]:
    """The imported oellm's version and dir (the image's installed one, if any, is `versions()["oellm"]`)."""
    import oellm

    return {"oellm_code": oellm.__version__, "oellm_from": str(Path(oellm.__file__).parent)}


def failed_imports(modules: list[str]) -> list[dict[str, str]]:
    """The modules this python cannot import: {module, missing (the package), error}."""
    failed = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            failed.append({"module": module, "missing": e.name or module, "error": " ".join(str(e).split())[:300]})
    return failed
