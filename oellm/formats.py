"""Other frameworks' result files in lm-eval's layout, the one the worker writes and `collect-results`
reads: {"results": {task: {"metric,filter": value, "metric_stderr,filter": err}}, "n-shot": {task: n}}.

Pure functions of parsed JSON, used twice: by the suites (what the worker writes) and by the collector
(result folders of lighteval or bigcodebench copied from elsewhere), so both read one rule.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

FILTER = "none"  # lighteval and bigcodebench have no filters; lm-eval calls that "none"
_SHOTS = re.compile(r"^(?P<task>.+)[|:](?P<shots>\d+)$")  # "arc:challenge|25" in files, "arc:challenge:25" from get_results()
_STAMP = re.compile(r"results_(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d(?:\.\d+)?)\.json$")


def is_lighteval(data: dict[str, Any]) -> bool:
    return isinstance(data.get("config_general"), dict) and isinstance(data.get("results"), dict)


def from_lighteval(data: dict[str, Any], path: str = "") -> dict[str, Any]:
    """A lighteval final dict (`Pipeline.get_results()` or its `results_<date>.json`): keys `task|shots`
    become the task and its shot count, `acc`/`acc_stderr` become `acc,none`/`acc_stderr,none`; the
    unweighted "all" average is dropped (a table can average itself, and weigh what it means to)."""
    results: dict[str, dict[str, float]] = {}
    shots: dict[str, int] = {}
    for key, metrics in (data.get("results") or {}).items():
        m = _SHOTS.match(key)
        if key == "all" or not isinstance(metrics, dict):
            continue
        task = m.group("task") if m else key
        if m:
            shots[task] = int(m.group("shots"))
        results[task] = {f"{name},{FILTER}": value for name, value in metrics.items()
                         if isinstance(value, (int, float)) and not isinstance(value, bool)}
    general = data.get("config_general") or {}
    model = general.get("model_name") or (general.get("model_config") or {}).get("model_name") or "?"
    out: dict[str, Any] = {"results": results, "n-shot": shots, "suite": "lighteval",
                           "config": {"model": "lighteval", "model_args": f"pretrained={model}",
                                      "limit": general.get("max_samples")}}
    stamp = _STAMP.search(path)
    if stamp:  # lighteval's times are monotonic clock readings; the file name has the wall-clock date
        when = datetime.strptime(stamp.group(1).split(".")[0], "%Y-%m-%dT%H-%M-%S").replace(tzinfo=timezone.utc)
        out["date"] = when.timestamp()
    return out


def is_pass_at_k(path: str) -> bool:
    return path.endswith("_pass_at_k.json")


def from_pass_at_k(data: dict[str, Any], path: str = "", task: str | None = None) -> dict[str, Any]:
    """bigcodebench's `<samples>_pass_at_k.json` ({"split", "subset", "pass@1", ..., "gt_pass_rate"}): one
    task named after its split (`complete`, `instruct`; `-hard` for the hard subset), always 0-shot. Keys in
    the worker's order (collect-results' fast reader); `bigcodebench` keeps the original."""
    split = str(data.get("split") or "complete")
    subset = str(data.get("subset") or "full")
    task = task or split + ("-hard" if subset == "hard" else "")
    metrics = {f"{k},{FILTER}": float(v) for k, v in data.items()
               if (k.startswith("pass@") or k == "gt_pass_rate") and _finite(v)}  # gt_pass_rate < 1: a poor sandbox
    config = {"task": task, "split": split, "subset": subset, "calibrated": data.get("calibrated"), "num_fewshot": 0}
    return {"results": {task: metrics}, "configs": {task: config}, "n-shot": {task: 0}, "suite": "bigcodebench",
            "config": {"model": "bigcodebench", "model_args": f"pretrained={data.get('model') or '?'}", "limit": None},
            "bigcodebench": data}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
