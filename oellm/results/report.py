"""collect-results --html: one self-contained page of a whole campaign (leaderboard, per-language views,
learning curves, bench rows, provenance of every value, what is missing).

Aggregated before embedding: the page gets the leaderboard's cells (one per model x column, columnar
JSON), never the tidy table's rows, so 100k result files stay a page a browser opens in seconds. The
board is the one `--plot` draws its PNGs from (one reading of the files); the table's sorting and filtering is a small
script in the template (report.html.j2), the charts plotly.js (inline) draws from those cells. Everything
is inside the file: it opens offline after scp.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oellm.results.gather import Collected
from oellm.results.tables import Board
from oellm.rows import DEFAULT_SUITE, EvalRow
from oellm.rundir import atomic_open, utc_now

MAX_PROFILE_MODELS = 30
PROV = ["run", "dir", "cluster", "model_revision", "lm_eval_version", "oellm_version", "host", "gpu", "suite",
        "n_shot", "limit"]


def write_report(path: Path, got: Collected, board: Board | None, bench: Any, missing: dict[Path, list[EvalRow]],
                 states: dict[Path, dict[str, tuple[str, str]]], groups: dict[str, list[Any]]) -> None:
    """Render the page and write it whole (a temp file renamed into place: never half a page)."""
    from importlib.resources import files

    import jinja2

    import oellm

    data = page_data(got, board, missing, states, groups)
    data["bench"] = bench_rows(bench)
    template = jinja2.Template(files("oellm.results").joinpath("report.html.j2").read_text(), autoescape=True,
                               undefined=jinja2.StrictUndefined)
    html = template.render(data_json=_script_json(data), plotly_js=_plotly_js(), bench=data["bench"],
                           summary=data["summary"], missing=data["missing"], notes=data["notes"],
                           problems=data["problems"], languages=data["languages"], version=oellm.__version__)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        fh.write(html)


def _plotly_js() -> str:
    """plotly.js itself (the charts are drawn in the browser from the embedded cells: no figure per column
    made here, and zoom, hover and legend toggling for free), inline: the page needs no network."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _script_json(data: dict[str, Any]) -> str:
    """JSON safe inside <script>: no `<` at all, so no `</script>` or `<!--` in a task name can end or
    change the element (JSON reads `\\u003c` back as `<`)."""
    try:
        from orjson import dumps

        text = dumps(data).decode()
    except ImportError:  # pragma: no cover - orjson comes with the test extra
        text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c")


def page_data(got: Collected, board: Board | None, missing: dict[Path, list[EvalRow]],
              states: dict[Path, dict[str, tuple[str, str]]], groups: dict[str, list[Any]]) -> dict[str, Any]:
    """Everything the page's script shows, as plain lists (columnar where there are many)."""
    df = got.table
    data: dict[str, Any] = {
        "summary": {"files": got.n_files, "n_values": len(df), "generated": utc_now(),
                    "models": int(df["model"].nunique()) if len(df) else 0,
                    "tasks": int(df["task"].nunique()) if len(df) else 0,
                    "superseded": len(got.superseded), "problems": len(got.problems)},
        "problems": [{"path": p, "why": w} for p, w in got.problems[:200]],
        "notes": board.notes[:200] if board else [],
        "columns": [], "rows": [], "cells": {}, "prov": [], "status": {},
        "missing": missing_list(missing, states), "languages": [],
    }
    if board is None or board.table.empty:
        return data
    data["columns"] = column_list(board, groups)
    data["rows"], data["cells"], data["prov"] = cell_data(board)
    data["status"] = missing_cells(board, data["missing"], data["rows"], data["columns"])
    data["languages"] = language_views(board, data["columns"])
    return data


def _languages(task: str, groups: dict[str, list[Any]]) -> list[str]:
    from oellm.languages import task_languages

    for tasks in groups.values():
        for t in tasks:
            if t.task == task and getattr(t, "languages", ()):
                return list(t.languages)
    return list(task_languages(task, None))


def column_list(board: Board, groups: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Each column: name, task, suite, shots, metric, filter, the task groups it is in, its languages;
    averages with their member columns."""
    out = []
    member_of: dict[str, list[str]] = {}
    for name, members in board.averages.items():
        if name.startswith("avg "):
            for m in members:
                member_of.setdefault(m, []).append(name[4:])
    for name, meta in board.columns.items():
        out.append({"name": name, "task": meta["task"], "suite": meta["suite"], "n_shot": meta["n_shot"],
                    "metric": meta["metric"], "filter": meta["filter"], "groups": member_of.get(name, []),
                    "langs": _languages(meta["task"], groups), "avg": False, "members": []})
    index = {c["name"]: i for i, c in enumerate(out)}
    for name, members in board.averages.items():
        out.append({"name": name, "task": "", "suite": "", "n_shot": None, "metric": "mean", "filter": "",
                    "groups": [name[4:]] if name.startswith("avg ") else [], "langs": [], "avg": True,
                    "members": [index[m] for m in members]})
    return out


def cell_data(board: Board) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Rows (label, run, step, model, args, limit); the cells as parallel lists (row, column, value,
    stderr, provenance id, file id); the distinct provenances and files ([name in the provenance's dir,
    date]) they point at: a file's name and date once, not once per value (a third of a big page)."""
    cells = board.cells
    labels = list(board.table.index)
    row_of = {label: i for i, label in enumerate(labels)}
    col_of = {c: i for i, c in enumerate(board.table.columns)}
    first = cells.drop_duplicates("label").set_index("label").reindex(labels)
    rows = [{"label": lab, "base": b, "step": _num(s), "model": m, "args": a or "", "limit": _num(lim),
             "options": o if isinstance(o, str) else ""}
            for lab, b, s, m, a, lim, o in zip(labels, first["base"], first["step"], first["model"], first["model_args"],
                                               first["limit"], first["options"], strict=True)]
    sources = [str(x) for x in cells["source"].tolist()]
    file_codes, file_firsts = _factorize(sources)
    split = [sources[i].rpartition("/") for i in file_firsts]
    names, dates = [x[2] for x in split], cells["date"].iloc[file_firsts].fillna("").astype(str).tolist()
    dirs = [x[0] for x in split]
    prov = cells.assign(dir=[dirs[c] for c in file_codes]).reindex(columns=PROV).astype(object)
    codes, uniques = _factorize(prov.groupby(PROV, dropna=False, sort=False).ngroup())
    distinct = prov.iloc[uniques].to_dict("records")
    out = {"r": cells["label"].map(row_of).tolist(), "c": cells["column"].map(col_of).tolist(),
           "v": cells["value"].round(6).tolist(), "e": [_num(e, 6) for e in cells["stderr"]],
           "p": codes, "f": file_codes, "files": [list(x) for x in zip(names, dates, strict=True)]}
    for p in distinct:
        p.update({k: None if v is None or v != v else v for k, v in p.items()})  # NaN/NA: JSON null
        p["n_shot"], p["limit"] = _num(p["n_shot"]), _num(p["limit"])
    # averages are the table's own (complete rows only): one list per average column
    out["avg"] = {str(col_of[a]): [_num(v, 6) for v in board.table[a]] for a in board.averages}
    return rows, out, distinct


def _factorize(keys: Any) -> tuple[list[int], list[int]]:
    """Codes per cell and, per code, the position of its first cell."""
    import numpy as np
    import pandas as pd

    codes, _ = pd.factorize(np.asarray(keys, dtype=object))
    return codes.tolist(), np.unique(codes, return_index=True)[1].tolist()


def _num(v: Any, digits: int | None = None) -> float | int | None:
    """JSON-safe number: NaN/NA become null, whole floats ints."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if f != f:
        return None
    return int(f) if f.is_integer() and digits is None else (round(f, digits) if digits else f)


# ---------------------------------------------------------------- missing, failed, running


def missing_list(missing: dict[Path, list[EvalRow]], states: dict[Path, dict[str, tuple[str, str]]]) -> list[dict]:
    """Per run: its planned rows without a result, each with its state and reason (`oellm status`'s, when
    known), and the commands that show and re-plan them."""
    out = []
    for run, rows in missing.items():
        known = states.get(run, {})
        items = []
        for r in rows[:2000]:
            state, reason = known.get(r.row_id, ("missing", "no result file"))
            items.append({"row_id": r.row_id, "model": r.model, "args": r.model_args, "task": r.task,
                          "n_shot": r.n_shot, "limit": r.limit, "suite": r.suite, "step": r.step,
                          "options": r.options, "state": state, "reason": reason})
        limits = sorted({r.limit for r in rows}, key=lambda x: -1 if x is None else x)
        replan = [f"oellm collect-results {run} --check"] + [
            f"oellm schedule-eval --eval_csv_path {run}/"
            + ("missing.csv" if len(limits) == 1 else f"missing-limit-{'none' if lim is None else f'{lim:g}'}.csv")
            + ("" if lim is None else f" --limit {lim:g}") for lim in limits]
        out.append({"run": str(run), "count": len(rows), "rows": items, "commands": replan if rows else [],
                    "resubmit": f"oellm resubmit {run}" if rows else ""})
    return out


def missing_cells(board: Board, missing: list[dict], rows: list[dict], columns: list[dict]) -> dict[str, list]:
    """Cells of the table that a planned row would fill, with its state: columnar (row, column, state,
    reason). A planned row of a model with no result at all has no table row; the missing list shows it."""
    # a table row is one evaluation setting: plain and chat rows of one model are two rows
    by_key = {(r["model"], r["args"], r["limit"], r["step"], r.get("options") or ""): i for i, r in enumerate(rows)}
    cols: dict[tuple[str, str], list[tuple[int, int | None]]] = {}
    for j, c in enumerate(columns):
        if not c["avg"]:
            cols.setdefault((c["task"], c["suite"]), []).append((j, c["n_shot"]))
    out: dict[str, list] = {"r": [], "c": [], "s": [], "why": []}
    if not any(m["rows"] for m in missing):
        return out
    taken = {(r, c) for r, c in zip(board.cells["label"], board.cells["column"], strict=True)}
    labels = [r["label"] for r in rows]
    for m in missing:
        for item in m["rows"]:
            i = by_key.get((item["model"], item["args"], _num(item["limit"]), _num(item["step"]),
                            item.get("options") or ""))
            if i is None:
                continue
            for j, shots in cols.get((item["task"], item["suite"] or DEFAULT_SUITE), []):
                if shots in (None, item["n_shot"]) and (labels[i], columns[j]["name"]) not in taken:
                    out["r"].append(i), out["c"].append(j), out["s"].append(item["state"])
                    out["why"].append(f"{item['reason']} ({m['run']})".strip())
    return out


# ---------------------------------------------------------------- per-language views and bench rows


def language_views(board: Board, columns: list[dict]) -> list[dict[str, Any]]:
    """Per task group whose columns span two or more languages: language x model means (each model's
    last checkpoint), for the heatmap and each model's profile over languages. A mean is over the
    language's complete set, as the leaderboard's averages are: a model lacking one of its tasks gets none
    (a blank), not the mean of the tasks it has."""
    t = board.table
    last = board.cells.assign(_s=board.cells["step"].astype("float64").fillna(-1)).sort_values("_s")
    lasts = set(last.drop_duplicates("base", keep="last")["label"])
    labels = [lab for lab in t.index if lab in lasts][:MAX_PROFILE_MODELS]  # in the leaderboard's order
    views = []
    groups = sorted({g for c in columns if not c["avg"] for g in c["groups"]})
    for g in groups:
        by_lang: dict[str, list[str]] = {}
        for c in columns:
            if g in c["groups"] and not c["avg"]:
                for lang in c["langs"]:
                    by_lang.setdefault(lang, []).append(c["name"])
        if len(by_lang) < 2:
            continue
        langs = sorted(by_lang)
        matrix = [[_num(t.loc[lab, by_lang[lang]].mean(skipna=False), 4) for lab in labels] for lang in langs]
        views.append({"group": g, "langs": langs, "models": labels, "matrix": matrix})
    return views


def bench_rows(bench: Any) -> dict[str, Any] | None:
    """The bench table (model x workload: throughput, latency, energy, mean score) as header + rows of
    plain values (missing: null, never 0)."""
    if bench is None or bench.empty:
        return None
    wide = bench.reset_index()
    return {"head": [str(c) for c in wide.columns],
            "rows": [[v if isinstance(v, str) else _num(v, 6) for v in row] for row in wide.itertuples(index=False)]}
