"""Bench rows of a collected table: throughput and latency per model and workload, joined with the
model's scores (ML.ENERGY style: pick a checkpoint on score and cost), and their plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oellm.results.tables import OVERALL, Board, with_labels

SHOWN = ("output_tokens_per_s", "latency_s", "ttft_s", "tpot_s", "energy_per_token_j", "avg_power_w",
         "peak_rss_mb")
WORKLOAD = ["backend", "batch_size", "input_tokens", "output_tokens"]


def split(df: Any) -> tuple[Any, Any]:
    """(score rows, bench rows) of a tidy table."""
    is_bench = df["suite"] == "bench"
    return df[~is_bench], df[is_bench]


def bench_table(bench: Any, scores: Board | None = None) -> Any:
    """One row per model and workload: the figures in SHOWN (missing ones empty, never 0) and, when the
    model was also evaluated, its mean headline score (the leaderboard's overall average, else its one
    evaluated task or group) under the leaderboard's label (label both tables from one table: `with_labels`)."""
    b = bench[bench["metric"].isin(SHOWN)].reset_index(drop=True)
    b = b if "label" in b else with_labels(b)
    table = b.pivot_table(index=["label", *WORKLOAD], columns="metric", values="value", aggfunc="first")
    # energy stays visible as a column even when no row had a meter: missing ("-"), never 0
    table = table.reindex(columns=[c for c in SHOWN if c in table.columns or c == "energy_per_token_j"])
    table.columns.name = None
    if scores is not None and not scores.table.empty:
        t = scores.table
        direct = [c for c, m in scores.columns.items() if m["direct"]] or list(scores.columns)
        mean = t[OVERALL] if OVERALL in t else t[direct].mean(axis=1, skipna=False)
        table["mean_score"] = [mean.get(label) for label in table.index.get_level_values("label")]
    return table


def plot_bench(bench: Any, out: Path) -> list[Path]:
    """Throughput vs batch size, and latency vs throughput, one line per model and lengths."""
    from oellm.results.plots import pyplot

    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    wide = bench_table(bench).reset_index()
    written = []
    for name, x, y, xlabel, ylabel in (
            ("bench_throughput.png", "batch_size", "output_tokens_per_s", "batch size", "generated tokens / s"),
            ("bench_latency_throughput.png", "output_tokens_per_s", "latency_s", "generated tokens / s",
             "latency per generate call (s)")):
        if y not in wide or x not in wide:
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        for key, g in wide.groupby(["label", "backend", "input_tokens", "output_tokens"], sort=True):
            g = g.sort_values("batch_size")
            ax.plot(g[x], g[y], marker="o", label=f"{key[0]} ({key[1]}, {key[2]}->{key[3]} tokens)")
        if x == "batch_size":
            ax.set_xscale("log", base=2)  # batch sizes double: 1, 8, 32 ...
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)
    return written
