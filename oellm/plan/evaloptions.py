"""lm-eval's evaluation options as flags (a base of `Selection`): what the user typed, turned into each
row's canonical options by `oellm.options`, the one place that decides what they mean."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from oellm.rows import DEFAULT_SUITE, EvalRow, ModelRef

TRUSTED = "trust_remote_code=True"


@dataclass
class EvalOptions:
    """lm-eval's options, with lm-eval's names and meanings (docs/evaluation.md).

    Args:
        apply_chat_template: lm-eval's --apply_chat_template: format prompts with the tokenizer's chat
            template ("true"), or the named one of several; part of each row's identity.
        fewshot_as_multiturn: lm-eval's --fewshot_as_multiturn: few-shot examples as chat turns (on by default
            with a chat template, as in lm-eval; "false" turns it off).
        system_instruction: lm-eval's --system_instruction: a system prompt before every request.
        gen_kwargs: lm-eval's --gen_kwargs for generation tasks: "temperature=0,max_gen_toks=256" (or JSON).
        seed: lm-eval's --seed: one integer for all, or four (python,numpy,torch,fewshot; "None" leaves one
            unset); default lm-eval's 0,1234,1234,1234.
        predict_only: lm-eval's --predict_only: generate and keep the samples, compute no metrics.
        metadata: lm-eval's --metadata: a JSON object passed to every task's config (e.g. RULER's
            '{"max_seq_lengths": [4096]}').
        trust_remote_code: Let models run the code of their repos: adds trust_remote_code=True to every
            model's args, as lm-eval's --trust_remote_code does (the preflight loads them that way too).
        confirm_run_unsafe_code: lm-eval's --confirm_run_unsafe_code: run tasks that execute model-written code
            (humaneval, mbpp, ...); without it such tasks are refused when planning.
    """

    apply_chat_template: str | None = None
    fewshot_as_multiturn: bool | None = None
    system_instruction: str | None = None
    gen_kwargs: str | None = None
    seed: str | int | None = None
    predict_only: bool = False
    metadata: str | None = None
    trust_remote_code: bool = False
    confirm_run_unsafe_code: bool = False

    def row_options(self, cells: dict[str, str] | None = None) -> str:
        """The rows' lm-eval options (`oellm.options`): the flags, with an eval CSV row's own cells over them."""
        from oellm.options import row_options

        given = {"apply_chat_template": self.apply_chat_template, "fewshot_as_multiturn": self.fewshot_as_multiturn,
                 "system_instruction": self.system_instruction, "gen_kwargs": self.gen_kwargs, "seed": self.seed,
                 "predict_only": self.predict_only, "metadata": self.metadata}
        return row_options(**{**given, **(cells or {})})

    def trusting(self, models: list[ModelRef]) -> list[ModelRef]:
        """--trust_remote_code: `trust_remote_code=True` in every model's args, as lm-eval's flag does."""
        if not self.trust_remote_code:
            return models
        return [m if "trust_remote_code" in m.arg_dict else
                ModelRef(m.name, ",".join(p for p in (m.args, TRUSTED) if p), m.step) for m in models]

    def trusting_row(self, row: EvalRow) -> EvalRow:
        """The same for an eval CSV's rows."""
        if not self.trust_remote_code or "trust_remote_code" in row.ref.arg_dict:
            return row
        return replace(row, model_args=",".join(p for p in (row.model_args, TRUSTED) if p))


def as_applied(rows: list[EvalRow], includes: Sequence[str]) -> list[EvalRow]:
    """Rows whose options hold only what lm-eval applies to their task (`oellm.options.without_ignored`):
    gen_kwargs on a loglikelihood task are dropped, so they neither split an evaluation nor re-run it."""
    from oellm.options import without_ignored

    tasks = sorted({r.task for r in rows if r.suite == DEFAULT_SUITE and '"gen_kwargs"' in r.options})
    if not tasks:
        return rows
    from oellm.suites.lm_eval import yaml_dirs
    from oellm.suites.lm_eval_tasks import generating

    gen = generating(tasks, yaml_dirs(includes))
    return [replace(r, options=without_ignored(r.options, False))
            if r.task in tasks and r.task not in gen and r.suite == DEFAULT_SUITE else r for r in rows]
