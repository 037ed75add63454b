"""lm-eval's evaluation options, with lm-eval's names and meanings, decided in one place.

Two kinds, because they matter differently:
- options that change the numbers (chat template, system instruction, gen_kwargs, seeds, predict-only,
  task metadata) are part of a row's identity: `row_options` turns them into one canonical JSON string
  that jobs.csv stores and the row id hashes, so the same evaluation always has the same id and a chat
  evaluation never counts as done by a plain one;
- run settings (max_batch_size, bootstrap_iters, confirm_run_unsafe_code) go to run.json and reach
  every worker, like the batch size.

`simple_evaluate_kwargs` is the one reader the worker uses, so planning and evaluation cannot disagree
about what an option means.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from oellm.errors import OellmError, refuse_secret

# lm-eval's `--seed` default: random, numpy, torch, fewshot
DEFAULT_SEEDS = (0, 1234, 1234, 1234)
SEED_KEYS = ("random_seed", "numpy_random_seed", "torch_random_seed", "fewshot_random_seed")
# the names a per-row CSV column may carry (the same as the flags)
ROW_OPTIONS = ("apply_chat_template", "fewshot_as_multiturn", "system_instruction", "gen_kwargs", "seed",
               "predict_only", "metadata")
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _flag(name: str, value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise OellmError(f"--{name}: expected true or false, got {value!r}")


def chat_template(value: Any) -> bool | str:
    """`--apply_chat_template` bare or true: the tokenizer's default template; a name: that template."""
    if value is None or value is False or str(value).strip().lower() in ("", *FALSE):
        return False
    if value is True or str(value).strip().lower() in TRUE:
        return True
    return str(value).strip()


def _json_object(flag: str, value: Any) -> dict[str, Any] | None:
    """A mapping, or text holding a JSON object; None when empty or not JSON (the caller's other form)."""
    if isinstance(value, Mapping):
        return dict(value)
    text = str(value).strip()
    if not text.startswith("{"):
        return None
    try:
        parsed = json.loads(text)
    except ValueError as e:
        raise OellmError(f"--{flag}: not valid JSON ({e}): {text!r}") from None
    if not isinstance(parsed, dict):
        raise OellmError(f"--{flag}: expected a JSON object, got {text!r}")
    return parsed


def canonical(value: Any) -> Any:
    """One spelling per value, with lm-eval's meanings: a whole float is the integer (`temperature=0.0` and
    `temperature=0` decode alike, and are one evaluation), recursively; text is kept exactly. Whole floats
    go to the integer, not the other way, so rows planned with `temperature=0` keep their ids."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def _no_secrets(flag: str, value: Any) -> None:
    """Secret-named keys anywhere inside a JSON/kv option: the same rule as model args and env values."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            refuse_secret(str(k), f"--{flag}: key {k!r}", "jobs.csv, run.json and every result")
            _no_secrets(flag, v)
    elif isinstance(value, list):
        for v in value:
            _no_secrets(flag, v)


def gen_kwargs(value: Any) -> dict[str, Any] | None:
    """lm-eval's `key=value,key=value` (or a JSON object / a mapping) -> a dict with typed values."""
    if value is None or value == "" or value == {}:
        return None
    parsed = _json_object("gen_kwargs", value)
    if parsed is not None:
        _no_secrets("gen_kwargs", parsed)
        return canonical(parsed)
    text = str(value).strip()
    from lm_eval.utils import simple_parse_args_string  # lm-eval's own parser: its types (int, float, bool)

    bad = [p for p in text.split(",") if p.strip() and "=" not in p]
    if bad:
        raise OellmError(f"--gen_kwargs: {bad[0]!r} has no value; expected key=value,key=value, "
                         "e.g. temperature=0,max_gen_toks=256")
    try:
        parsed = simple_parse_args_string(text)
    except ValueError as e:
        raise OellmError(f"--gen_kwargs: {e}; expected key=value,key=value, e.g. temperature=0,max_gen_toks=256") from None
    _no_secrets("gen_kwargs", parsed)
    return canonical(parsed)


def seeds(value: Any) -> list[int | None] | None:
    """lm-eval's `--seed`: one integer for all four generators, or four values (None leaves one unset)."""
    if value is None or value == "":
        return None
    items = [value] if isinstance(value, int) else \
        (list(value) if isinstance(value, (list, tuple)) else str(value).split(","))
    out: list[int | None] = []
    for item in items:
        text = str(item).strip()
        if text.lower() == "none":
            out.append(None)
        elif text.lstrip("-").isdigit():
            out.append(int(text))
        else:
            raise OellmError(f"--seed: {item!r} is not an integer or None; e.g. --seed 42 or --seed 0,1234,1234,1234")
    if len(out) == 1:
        out *= 4
    if len(out) != 4:
        raise OellmError(f"--seed: give one value or four (random,numpy,torch,fewshot), got {value!r}")
    return None if tuple(out) == DEFAULT_SEEDS else out


def metadata(value: Any) -> dict[str, Any] | None:
    """lm-eval's `--metadata`: a JSON object passed to every task's config."""
    if value is None or value == "" or value == {}:
        return None
    parsed = _json_object("metadata", value)
    if parsed is None:
        raise OellmError(f"--metadata: expected a JSON object, e.g. '{{\"max_seq_lengths\": [4096]}}', got {value!r}")
    _no_secrets("metadata", parsed)
    return canonical(parsed)


def row_options(**given: Any) -> str:
    """The options that change a row's numbers -> canonical JSON ("" when all are lm-eval's defaults, so
    the rows of earlier runs keep their ids). Validates each value; the error names the flag."""
    unknown = set(given) - set(ROW_OPTIONS)
    if unknown:
        raise OellmError(f"unknown evaluation option(s) {', '.join(sorted(unknown))}; known: {', '.join(ROW_OPTIONS)}")
    template = chat_template(given.get("apply_chat_template"))
    multiturn = _flag("fewshot_as_multiturn", given.get("fewshot_as_multiturn"))
    if multiturn and not template:
        raise OellmError("--fewshot_as_multiturn needs --apply_chat_template (as in lm-eval)")
    opts: dict[str, Any] = {
        "apply_chat_template": template or None,
        # lm-eval's CLI: multi-turn few-shot by default once a chat template is applied
        "fewshot_as_multiturn": (multiturn if multiturn is not None else True) if template else None,
        "system_instruction": (str(given["system_instruction"]) if given.get("system_instruction") else None),
        "gen_kwargs": gen_kwargs(given.get("gen_kwargs")),
        "seed": seeds(given.get("seed")),
        "predict_only": _flag("predict_only", given.get("predict_only")) or None,
        "metadata": metadata(given.get("metadata")),
    }
    opts = {k: v for k, v in opts.items() if v is not None}
    return json.dumps(opts, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if opts else ""


def csv_cells(options: str) -> dict[str, str]:
    """A row's options as eval CSV cells (`missing.csv`), which `row_options` reads back to the same JSON."""
    cells = {}
    for key, value in parse_row_options(options).items():
        if isinstance(value, bool):
            cells[key] = str(value).lower()
        elif key == "seed":
            cells[key] = ",".join("None" if s is None else str(s) for s in value)
        elif isinstance(value, dict):
            cells[key] = json.dumps(value, sort_keys=True)
        else:
            cells[key] = str(value)
    return cells


def shardable(options: str) -> bool:
    """Shards merge by replaying recorded requests through a model-less LM, which cannot apply a chat
    template: such rows run whole."""
    return not parse_row_options(options).get("apply_chat_template")


def parse_row_options(text: str) -> dict[str, Any]:
    return json.loads(text) if text else {}


def simple_evaluate_kwargs(options: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A row's options and the run's settings as `lm_eval.simple_evaluate` keyword arguments, meaning
    what the `lm_eval` CLI's flags of the same names mean."""
    opts = parse_row_options(options)
    template = opts.get("apply_chat_template") or False
    kwargs: dict[str, Any] = {
        "apply_chat_template": template,
        "fewshot_as_multiturn": bool(opts.get("fewshot_as_multiturn", False)) if template else False,
        "system_instruction": opts.get("system_instruction"),
        "gen_kwargs": opts.get("gen_kwargs"),
        "predict_only": bool(opts.get("predict_only", False)),
        "confirm_run_unsafe_code": bool(settings.get("confirm_run_unsafe_code", False)),
    }
    kwargs.update(zip(SEED_KEYS, opts.get("seed") or DEFAULT_SEEDS, strict=True))
    if settings.get("bootstrap_iters") is not None:
        kwargs["bootstrap_iters"] = int(settings["bootstrap_iters"])
    if settings.get("max_batch_size") is not None:
        kwargs["max_batch_size"] = int(settings["max_batch_size"])
    return kwargs


def check_batch_size(value: str | int | None, what: str) -> None:
    """lm-eval's batch sizes: a positive integer, "auto", or "auto:N" (re-probe N times); anything else
    would fail every row on the node."""
    if value is None:
        return
    text = str(value).strip().lower()
    head, sep, n = text.partition(":")
    if text.isdigit() and int(text) >= 1:
        return
    if head == "auto" and (not sep or (n.isdigit() and int(n) >= 1)):
        return
    raise OellmError(f"{what}: {value!r} is not a batch size; give a whole number >= 1, auto, or auto:N")


def without_ignored(options: str, generative: bool) -> str:
    """A row's options as lm-eval applies them to its task: gen_kwargs only reach generating tasks (lm-eval
    ignores them for loglikelihood ones), so there they neither split an evaluation nor change its id."""
    opts = parse_row_options(options)
    if generative or "gen_kwargs" not in opts:
        return options
    opts.pop("gen_kwargs")
    return json.dumps(opts, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if opts else ""


PREVIEW = 24  # characters of a system instruction or metadata shown in a label


def _preview(text: str, quote: bool = True) -> str:
    """Readable and unique: the text itself when short and plain, else its start and a short hash."""
    flat = " ".join(text.split())
    show = (lambda t: json.dumps(t, ensure_ascii=False)) if quote else (lambda t: t)
    if flat == text and len(text) <= PREVIEW:
        return show(text)
    import hashlib

    return show(flat[:PREVIEW] + ("…" if len(flat) > PREVIEW else "")) + "#" + hashlib.sha1(text.encode()).hexdigest()[:6]


def label(options: str) -> str:
    """A short tag for tables and logs that tells two evaluations apart: `chat`, `chat:NAME`,
    `sys="Be brief."`, `gen:temperature=0`, `seed=..`, `predict-only`, `meta={...}`; long texts are shown
    by their start and a short hash of the whole, so no two option sets share a tag."""
    opts = parse_row_options(options)
    parts = []
    if opts.get("apply_chat_template"):
        t = opts["apply_chat_template"]
        parts.append("chat" if t is True else f"chat:{t}")
        if not opts.get("fewshot_as_multiturn", True):
            parts.append("single-turn")
    if opts.get("system_instruction"):
        parts.append("sys=" + _preview(opts["system_instruction"]))
    if opts.get("gen_kwargs"):
        parts.append("gen:" + ",".join(f"{k}={v}" for k, v in sorted(opts["gen_kwargs"].items())))
    if opts.get("seed"):
        parts.append("seed=" + ",".join(str(s) for s in opts["seed"]))
    if opts.get("predict_only"):
        parts.append("predict-only")
    if opts.get("metadata"):
        parts.append("meta=" + _preview(json.dumps(opts["metadata"], sort_keys=True, separators=(",", ":"),
                                                  ensure_ascii=False), quote=False))
    return " ".join(parts)
