"""Merging a sharded evaluation: when its last shard has a result, the shards' recorded responses are
scored once by the suite (`LmEvalSuite.merge`) and written as the result of the whole evaluation.

The worker of whichever shard finishes last does it, under a per-evaluation O_EXCL lock (Lustre-safe);
`collect-results` merges any complete set a worker could not (a crash, a failed merge).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oellm import runlock
from oellm.rows import EvalRow, shot_label
from oellm.rundir import RunDir, read_jobs, read_json, utc_now

log = logging.getLogger("oellm.worker")

Write = Callable[[RunDir, EvalRow, dict[str, Any], Any], None]


def merge_if_complete(run: RunDir, suite: Any, row: EvalRow, settings: dict[str, Any], model_args: str,
                      write: Write) -> bool:
    """Merge `row`'s evaluation if every shard has a result and nobody merged it yet; True when merged now."""
    whole = row.whole
    parts = whole.shards(row.num_shards or 1)
    if _result_under_root(run, whole) or None in (found := [_result_under_root(run, s) for s in parts]):
        return False
    with runlock.locked(run.path / f".merge-{whole.row_id}.lock", wait_s=3600):
        if _result_under_root(run, whole):  # another shard's worker merged while we waited
            return False
        shards = [read_json(p)["shard"] for p in found]
        t0 = time.perf_counter()
        out, samples = suite.merge(whole, shards, settings, model_args)
        out["oellm"] = {"row": whole.record(),
                        "merged_from": [s.row_id for s in parts], "num_shards": len(parts), "ended": utc_now(),
                        "merge_s": round(time.perf_counter() - t0, 3),
                        "model_revision": (settings.get("model_revisions") or {}).get(whole.ref.revision_key)}
        write(run, whole, out, samples)
    log.info("merged %d shard(s) of %s | %s | %s-shot into %s", len(parts), whole.model, whole.task, shot_label(whole.n_shot),
             whole.row_id)
    return True


def _result_under_root(run: RunDir, row: EvalRow) -> Path | None:
    """A row's result in this run, else in another run under the same root (a re-run of the same command
    plans only the shards still missing, in a new run dir; a merged result there counts too)."""
    if run.has_result(row.row_id):
        return run.result_path(row.row_id)
    for other in sorted(run.path.parent.glob(f"*/results/{row.row_id}.json"), reverse=True):
        if RunDir(other.parent.parent).has_result(row.row_id):
            return other
    return None


def merge_pending(run: RunDir, write: Write) -> list[str]:
    """Merge every complete shard set of a run that has no merged result; returns the merged row ids."""
    from oellm.suites import get_suite

    rows = [r for r in read_jobs(run.jobs) if r.num_shards] if run.jobs.is_file() else []
    if not rows:
        return []
    settings = run.read_manifest()
    revisions = settings.get("model_revisions") or {}
    suites: dict[str, Any] = {}
    merged = []
    for row in {r.whole: r for r in rows}.values():
        suite = suites.setdefault(row.suite, get_suite(row.suite))
        args = row.ref.lm_eval_args(row.ref.commit(revisions) or row.ref.revision)
        if merge_if_complete(run, suite, row, settings, args, write):
            merged.append(row.whole.row_id)
    return merged
