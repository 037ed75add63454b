"""The interface every evaluation framework implements (lm-eval first; lighteval, bigcodebench and
the `bench` performance suite later), so planning, pre-cache and the worker never branch on one.

A suite is asked, in the order of the data flow:
  plan time    `validate` the task names (one error listing every unknown name);
  pre-cache    `datasets` each task will load, so the login node fetches them for offline nodes;
  worker       `load` a row's model once, `evaluate` each of its rows on it, `unload` it.
`evaluate` returns the result normalised to lm-eval's layout ({"results": {task: {"metric,filter":
value}}, "n-shot", "configs", ...}), which is what the worker writes and `collect-results` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from oellm.rows import EvalRow, ModelRef


class RowFailure(Exception):
    """A failure a suite can name; `kind` goes into the row's state record (error_kind)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Suite(Protocol):
    name: str

    def validate(self, tasks: Sequence[str], include_paths: Sequence[str]) -> None:
        """Raise one OellmError naming every task this suite does not know."""

    def datasets(self, tasks: Sequence[str], include_paths: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Leaf task -> {"dataset_path", "dataset_name", "dataset_kwargs"} it loads, or None when the task
        loads its data with its own code (the pre-cache cannot see it)."""

    def load(self, ref: ModelRef, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Load a model once for several rows; returns (model, facts for provenance). Raises RowFailure
        ("missing_model") when it is not on disk: compute nodes cannot fetch it."""

    def evaluate(self, model: Any, info: dict[str, Any], row: EvalRow, rows: Sequence[EvalRow],
                 settings: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """One row on a loaded model -> (normalised result, per-sample records or None). `rows` are all
        rows of this worker (a suite may prepare for them once). Raises RowFailure("no_metrics") for a
        run that reports nothing."""

    def unload(self) -> None:
        """Free the memory of the model just evaluated."""


def on_disk(ref: ModelRef, revision: str | None) -> tuple[str, str | None]:
    """(where to load the model from, the revision evaluated): fail fast when it is not on disk, since
    compute nodes cannot fetch it; a hub model's path is its cached snapshot, named by its commit."""
    if not ref.is_hub:
        if not Path(ref.name).expanduser().is_dir():
            raise RowFailure("missing_model", f"model directory {ref.name} not found; fetch or convert it first "
                             "with `oellm schedule-eval ... --download_only` on a login node")
        return ref.name, revision
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(ref.name, revision=revision, local_files_only=True)
    except (OSError, ValueError) as e:  # LocalEntryNotFoundError is an OSError
        raise RowFailure("missing_model", f"model {ref.name}{'@' + revision if revision else ''} is not in the "
                         "local Hugging Face cache and compute nodes are offline; run `oellm schedule-eval "
                         f"... --download_only` on a login node first ({type(e).__name__})") from None
    return snapshot, Path(snapshot).name  # snapshots/<commit>: the revision actually evaluated
