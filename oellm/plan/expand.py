"""Planning: models, checkpoints, tasks, shot counts or an eval CSV -> validated, deduplicated rows.

Pure apart from looking at local model directories; task names are validated by the suite.
Every problem in an input is collected first and reported in one error.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from oellm.errors import OellmError
from oellm.plan import checkpoints as ck
from oellm.rows import (
    DEFAULT_SHOTS,
    DEFAULT_SUITE,
    HF_ID,
    EvalRow,
    ModelRef,
    has_weights,
    is_path,
    normalize_args,
    shot_label,
)

log = logging.getLogger(__name__)
TASK_NAME = re.compile(r"^[A-Za-z0-9_.:+-]+$")


def split_list(value: str | Sequence[str | int] | int | None) -> list[str]:
    """`"a,b"`, `["a", "b"]` (from a config file) or a bare int -> list of stripped strings."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return [s.strip() for s in items if s.strip()]


def parse_models(value: str | Sequence[str] | None) -> list[ModelRef]:
    """`org/a,org/b,revision=x,dtype=float16,/path/c`: a token with `=` is a model arg of the model before it."""
    specs: list[tuple[str, list[str]]] = []
    for token in split_list(value):
        if "=" in token and not os.path.exists(token):
            if not specs:
                raise OellmError(f"--models: model arg {token!r} comes before any model; write MODEL,{token}")
            specs[-1][1].append(token)
        else:
            specs.append((token, []))
    return [ModelRef(name, normalize_args(args, name)) for name, args in specs]


def parse_tasks(value: str | Sequence[str] | None) -> list[str]:
    tasks = split_list(value)
    bad = [t for t in tasks if not TASK_NAME.match(t)]
    if bad:
        raise OellmError(f"--tasks: invalid task name(s) {', '.join(map(repr, bad))}; use lm-eval task, group or tag names")
    return tasks


def parse_shots(value: str | int | Sequence[int] | None, what: str = "--n_shot") -> list[int | None]:
    """Shot counts; `default` (and no --n_shot at all) is the task's own count, as lm-eval's
    num_fewshot=None: tasks such as gsm8k_cot or leaderboard_* define theirs."""
    if value is None:
        return [None]
    shots: list[int | None] = []
    for s in split_list(value):
        if s.lower() == DEFAULT_SHOTS:
            shots.append(None)
        elif re.fullmatch(r"\d+", s):
            shots.append(int(s))
        else:
            raise OellmError(f"{what}: {s!r} is not a non-negative integer or {DEFAULT_SHOTS!r} (the task's own "
                             f"count); e.g. --n_shot 0,5")
    return list(dict.fromkeys(shots))


def check_limit(limit: float | None) -> float | None:
    if limit is None:
        return None
    if limit <= 0 or (limit >= 1 and not float(limit).is_integer()):
        raise OellmError(f"--limit: {limit} must be a whole number of samples (>= 1) or a fraction in (0, 1)")
    return float(limit)


def expand_model(ref: ModelRef, stride: int = 1, last_n: int | None = None,
                 ready_file: str | None = None) -> list[ModelRef]:
    """A model id, a model dir, a training-run dir (`checkpoint-N`, `step_N`, `iter_N`, also under `hf/`) or
    a dir of models -> its models, checkpoints sorted by step (oellm.plan.checkpoints has the layouts);
    checkpoints not complete yet are left out with a warning. Local paths become absolute, the form every
    later stage (and the row id) sees."""
    if not is_path(ref.name):
        if not HF_ID.match(ref.name):
            raise OellmError(f"model {ref.name!r} is neither an existing local directory nor a Hugging Face id (org/name)")
        return [ref]
    path = Path(ref.name).expanduser().resolve()
    if not path.is_dir():
        raise OellmError(f"model path {ref.name} does not exist (or is not a directory)")
    if has_weights(path):
        return [ModelRef(str(path), ref.args, ref.step)]
    found = ck.discover(path)
    if not found:
        raise OellmError(f"model path {ref.name} holds no config.json and no checkpoint dirs "
                         "(checkpoint-N, step_N, iter_N, global_stepN, also under hf/) or model dirs with weights")
    waiting = {f.path: why for f in found if (why := ck.incomplete(f.path, ready_file))}
    if waiting:
        first = next(iter(waiting.items()))
        log.warning("%s: leaving out %d checkpoint(s) not complete yet: %s: %s%s", ref.name, len(waiting),
                    first[0].name, first[1], " ..." if len(waiting) > 1 else "")
    kept = ck.select([f for f in found if f.path not in waiting], stride, last_n)
    if not kept:
        raise OellmError(f"model path {ref.name}: none of its {len(found)} checkpoint(s) is complete yet "
                         f"({next(iter(waiting.values()))})")
    return [ModelRef(str(f.path), ref.args, f.step) for f in kept]


def read_eval_csv(path: Path) -> list[tuple[int, ModelRef, str, int | None, str, int, dict[str, str]]]:
    """CSV with columns model_path,task_path,n_shot (model args quoted inside model_path) and optional
    eval_suite (the reference oellm's spelling), num_shards and lm-eval options (`oellm.options.ROW_OPTIONS`:
    apply_chat_template, system_instruction, ...; a blank cell takes the flag's value) -> (line, model,
    task, shots, suite, shards, options). A UTF-8 BOM (Excel) and CRLF line ends are read."""
    from oellm.options import ROW_OPTIONS

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise OellmError(f"--eval_csv_path: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    reader = csv.DictReader(text.splitlines(keepends=True))
    missing = {"model_path", "task_path", "n_shot"} - set(reader.fieldnames or [])
    if missing:
        raise OellmError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                         "expected a header model_path,task_path,n_shot")
    out, errors = [], []
    for rec in reader:
        line = reader.line_num
        try:
            if None in rec or any(rec[k] is None for k in ("model_path", "task_path", "n_shot")):
                raise OellmError("wrong number of fields")
            models = parse_models(rec["model_path"])
            if len(models) != 1:
                raise OellmError(f"model_path {rec['model_path']!r} must name exactly one model")
            tasks = parse_tasks(rec["task_path"])
            shots = parse_shots(rec["n_shot"].strip() or DEFAULT_SHOTS, "n_shot")
            if len(tasks) != 1 or len(shots) != 1:
                raise OellmError("task_path and n_shot must each hold one value")
            # kept exactly (only emptiness is tested): a system instruction's closing newline is part of it
            opts = {k: rec[k] for k in ROW_OPTIONS if (rec.get(k) or "").strip()}
            out.append((line, models[0], tasks[0], shots[0], _suite(rec.get("eval_suite")),
                        _num_shards(rec.get("num_shards")), opts))
        except OellmError as e:
            errors.append(f"line {line}: {e}")
    if errors:
        raise OellmError(f"{path}: {len(errors)} bad row(s): " + "; ".join(errors[:5]) + (" ..." if len(errors) > 5 else ""))
    if not out:
        raise OellmError(f"{path}: no rows")
    return out


def build_rows(models: Sequence[ModelRef], tasks: Sequence[str], shots: Sequence[int | None],
               limit: float | None = None, stride: int = 1, last_n: int | None = None, suite: str = DEFAULT_SUITE,
               options: str = "", ready_file: str | None = None) -> tuple[list[EvalRow], int]:
    """The model x task x shot product; returns (rows, duplicates dropped)."""
    check_stride(stride, last_n)
    rows = [EvalRow(model=m.name, model_args=m.args, task=t, n_shot=n, limit=limit, step=m.step, suite=suite,
                    options=options)
            for spec in models for m in expand_model(spec, stride, last_n, ready_file) for t in tasks for n in shots]
    return dedupe(rows)


def check_stride(stride: int, last_n: int | None) -> None:
    if stride < 1 or (last_n is not None and last_n < 1):
        raise OellmError("--checkpoint_stride and --last_n_checkpoints must be >= 1")


def rows_from_csv(path: Path, limit: float | None = None, options: Callable[[dict[str, str]], str] = lambda o: "",
                  stride: int = 1, last_n: int | None = None) -> list[EvalRow]:
    """Rows of an eval CSV; a repeated evaluation is an error naming both lines (likely a copy-paste slip).
    `options(row's option cells)` gives a row's canonical options; a training-run dir in model_path
    expands to its checkpoints with --checkpoint_stride and --last_n_checkpoints."""
    check_stride(stride, last_n)
    rows, seen = [], {}
    for line, spec, task, n, suite, k, cells in read_eval_csv(path):
        try:
            opts = options(cells)
        except OellmError as e:
            raise OellmError(f"{path}: line {line}: {e}") from None
        for m in expand_model(spec, stride, last_n):
            row = EvalRow(model=m.name, model_args=m.args, task=task, n_shot=n, limit=limit, step=m.step, suite=suite,
                          options=opts)
            if row.identity in seen and k > 1:
                continue  # a run's jobs.csv lists each of its shards: the one evaluation, planned once
            if row.identity in seen:
                raise OellmError(f"{path}: line {line} repeats the evaluation of line {seen[row.identity]} "
                                 f"({spec.name}, {task}, {shot_label(n)}-shot); remove one of them")
            seen[row.identity] = line
            rows.extend(row.shards(k))
    return rows


def _suite(value: str | None) -> str:
    from oellm.task_groups import parse_suite

    return parse_suite(value, "eval_suite")


def _num_shards(value: str | None) -> int:
    text = (value or "").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise OellmError(f"num_shards {value!r}: must be an integer >= 1")
    return int(text)


def dedupe(rows: Iterable[EvalRow]) -> tuple[list[EvalRow], int]:
    out: dict[tuple, EvalRow] = {}
    n = 0
    for r in rows:
        n += 1
        out.setdefault(r.identity, r)
    return list(out.values()), n - len(out)
