"""Reading result files back: for now the headline scores a finished local run prints.

(collect-results, with every metric in a tidy table, builds on this.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oellm.rundir import EvalRow, RunDir, read_json

PREFERRED = ("acc_norm", "acc", "exact_match", "f1", "bleu")


def headline(result: dict[str, Any], task: str) -> tuple[str, float] | None:
    """The task's (or group's) main metric: acc_norm over acc over others, first filter."""
    metrics = result.get("results", {}).get(task) or {}
    values = {k: v for k, v in metrics.items() if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
    for name in PREFERRED:
        for key, value in values.items():
            if key.split(",")[0] == name:
                return key, float(value)
    return next(iter(values.items()), None)


def score_table(run: RunDir, rows: Sequence[EvalRow]) -> str:
    """One line per row with a result: model, task, shots, headline metric."""
    lines = []
    for r in rows:
        path = run.result_path(r.row_id)
        if not path.exists():
            continue
        best = headline(read_json(path), r.task)
        score = f"{best[0].split(',')[0]} {best[1]:.4f}" if best else "no metric"
        model = r.model if len(r.model) <= 40 else "..." + r.model[-37:]
        lines.append(f"  {model:<40} {r.task:<28} {r.n_shot:>2}-shot  {score}")
    return "\n".join(lines)
