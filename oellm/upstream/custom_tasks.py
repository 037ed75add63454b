"""Tasks oellm-eval defines in its own lm-eval YAMLs (`oellm/resources/custom_lm_eval_tasks`, ~239 files),
which neither lm-eval nor oellm ships: when one is missing, the user is told where it comes from instead
of being offered a built-in task of another definition."""

from __future__ import annotations

import re
from collections.abc import Sequence

from oellm.errors import OellmError
from oellm.rows import EvalRow

# the task-name families of oellm-eval's custom task files (at upstream 238bea9)
FAMILIES = re.compile(
    r"^(?:arc_challenge_mt_[a-z]{2}|global_mgsm_[a-z]{2}|global_piqa_(?:completions|prompted)_\w+"
    r"|opensubtitles_multi40_[a-z]{2}_to_[a-z]{2}|pawsx_[a-z]{3}_[A-Z][a-z]{3}|polymath_[a-z]{2}_\w+"
    r"|sib200_[a-z]{3}_[A-Z][a-z]{3}|xcsqa_[a-z]{3}_[A-Z][a-z]{3}|xnli_[a-z]{3}_[A-Z][a-z]{3}|jeopardy)$")


def explain_missing(rows: Sequence[EvalRow], includes: Sequence[str]) -> None:
    """Raise the error for the first lm-eval task of the rows that no task dir defines and that is one of
    oellm-eval's own; return when there is none (the suite's own error then stands)."""
    from oellm.suites.lm_eval import yaml_dirs
    from oellm.suites.lm_eval_tasks import task_index

    index = task_index(yaml_dirs(includes))
    name = next((t for t in sorted({r.task for r in rows if r.suite == "lm_eval"}) if t not in index
                 and FAMILIES.match(t)), None)
    if name:
        raise OellmError(f"task {name}: this group needs the custom tasks of oellm-eval; pass --lm_eval_include_path "
                         f".../custom_lm_eval_tasks (oellm-eval's oellm/resources/custom_lm_eval_tasks)") from None
