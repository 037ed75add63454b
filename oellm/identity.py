"""Which evaluation a result file holds: the one answer for every kind of file collect-results meets.

A planned row's identity is its `EvalRow.row_id` (model, model args, task, shots, limit, suite, shard and
the options that change the numbers, canonical as `oellm.options.row_options` writes them). A file oellm's
worker wrote names its row. A file the `lm_eval` CLI wrote (or oellm-eval's workers, which run it) is read
here into the same parts, options included: its seeds, gen_kwargs, chat template, system instruction and
few-shot turns, with lm-eval's meanings (gen_kwargs only count for a generating task, as only there lm-eval
applies them). A key it does not record means lm-eval's default for it. A value that is there but cannot be
read makes the file its own evaluation (`UNREAD`): it never completes, supersedes or hides a planned row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from oellm.errors import OellmError
from oellm.options import DEFAULT_SEEDS, row_options, without_ignored
from oellm.rows import EvalRow

# lm-eval's config keys for its four seeds, in `--seed` order (random, numpy, torch, fewshot)
CLI_SEED_KEYS = ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")
UNREAD = "unread"  # the options key of a file whose identity could not be read whole


def row_id(model: str, args: str, task: str, n_shot: int | None, limit: float | None, suite: str,
           options: str = "") -> str:
    """The id of an evaluation given by its parts (a file's shots as run: a missing count is no planned row's)."""
    return EvalRow(model=model, model_args=args, task=task, n_shot=-1 if n_shot is None else n_shot, limit=limit,
                   suite=suite, options=options).row_id


def shots_as_run(result: Mapping[str, Any], task: str) -> int | None:
    """The few-shot count `task` ran with: its `n-shot` entry, else (a group, which lm-eval may leave out)
    the one count all its subtasks ran with; None when not recorded or not one count."""
    shots = result.get("n-shot") or {}
    subtasks = result.get("group_subtasks") or {}
    seen, todo, counts = set(), [task], set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if isinstance(shots.get(t), (int, float)) and not isinstance(shots.get(t), bool):
            counts.add(int(shots[t]))
            if t == task:
                return int(shots[t])
        else:
            todo.extend(subtasks.get(t) or ())
    return counts.pop() if len(counts) == 1 else None


def generates(result: Mapping[str, Any], task: str) -> bool | None:
    """Whether lm-eval generated text for `task` (or any task of the group) in this file; None: not recorded."""
    configs = result.get("configs") or {}
    subtasks = result.get("group_subtasks") or {}
    seen, todo, types = set(), [task], []
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        todo.extend(subtasks.get(t) or ())
        cfg = configs.get(t)
        if isinstance(cfg, Mapping) and cfg.get("output_type"):
            types.append(cfg["output_type"])
    return ("generate_until" in types) if types else None


def cli_options(result: Mapping[str, Any], task: str) -> str:
    """The options of a file the `lm_eval` CLI wrote, for the task (or group) `task`: the canonical JSON a row
    planned with the same flags carries, or an `UNREAD` marker naming what could not be read."""
    config = result.get("config") or {}
    try:
        seeds = _seeds(config)
        template = result.get("chat_template")
        given = {
            # lm-eval records the template's text, not its name: any template is read as the tokenizer's own
            "apply_chat_template": True if template else None,
            "fewshot_as_multiturn": result.get("fewshot_as_multiturn") if template else None,
            "system_instruction": result.get("system_instruction") or None,
            "gen_kwargs": config.get("gen_kwargs") or None,
            "seed": seeds,
        }
        options = row_options(**given)
    except (OellmError, TypeError, ValueError, AttributeError) as e:
        return unread(f"{type(e).__name__}: {e}")
    return without_ignored(options, generates(result, task) is not False)


def _seeds(config: Mapping[str, Any]) -> list[int | None] | None:
    """The four seeds as `--seed` takes them; an absent key is lm-eval's default, a present None stays None."""
    values = [config.get(k, d) for k, d in zip(CLI_SEED_KEYS, DEFAULT_SEEDS, strict=True)]
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"seed {v!r} is not an integer")
    return None if tuple(values) == DEFAULT_SEEDS else values


def unread(why: str) -> str:
    """Options that no planned row has: the file is an evaluation of its own, tagged by a short hash."""
    return json.dumps({UNREAD: hashlib.sha1(why.encode()).hexdigest()[:8]}, separators=(",", ":"))


def is_unread(options: str) -> bool:
    return f'"{UNREAD}"' in options

