"""The chat templates a run's rows apply, checked by the preflight against each model's tokenizer: lm-eval
fails every row of a model whose tokenizer cannot apply the asked template, on the node, after the queue wait
and the model load. `wanted` runs on the login node (from the rows' options); `problem` in the workers'
interpreter, where `oellm.cache.fetch` loads the tokenizer anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from oellm.options import parse_row_options

if TYPE_CHECKING:  # the workers' interpreter imports this module through oellm.cache.fetch: no more than it needs
    from oellm.rows import EvalRow

NAMED = "additional_chat_templates/*.jinja"  # where transformers keeps a tokenizer's named templates: fetched too


def wanted(rows: Sequence[EvalRow]) -> dict[str, list[bool | str]]:
    """Model -> the chat templates its rows apply (True: the tokenizer's default; a name), from the rows'
    options; models of plain rows only are left out."""
    out: dict[str, set[bool | str]] = {}
    for name, options in {(r.ref.name, r.options) for r in rows if r.options}:
        template = parse_row_options(options).get("apply_chat_template")
        if template:
            out.setdefault(name, set()).add(template)
    return {name: sorted(ts, key=str) for name, ts in out.items()}


def problem(templates: Any, asked: Sequence[bool | str]) -> str | None:
    """Why lm-eval could not apply the `asked` templates with a tokenizer whose `chat_template` is `templates`,
    else None. lm-eval's rule: True is the tokenizer's one template, or its `default` among several; a name is
    one of several (a tokenizer with one template has only `default`)."""
    if not asked:
        return None
    if not templates:
        return ("its tokenizer has no chat template, which --apply_chat_template needs: drop the flag for this "
                "model, or use a model (or tokenizer=) that has one")
    names = sorted(templates) if isinstance(templates, dict) else ["default"]
    for want in asked:
        name = "default" if want is True else str(want)
        if name not in names:
            flag = "--apply_chat_template (its default template)" if want is True else f"--apply_chat_template {name}"
            return f"{flag}: its tokenizer has no chat template named {name!r}; it has: {', '.join(names)}"
    return None


def checked(item: dict[str, Any], label: str, tokenizer: Any) -> dict[str, Any]:
    """`item` (a model of the preflight's job), with an error when `tokenizer` lacks a template its rows apply."""
    why = problem(getattr(tokenizer, "chat_template", None), item.get("chat") or [])
    return {**item, "error": f"{label}: {why}"} if why else item
