"""Tasks oellm-eval defines in its own lm-eval YAMLs (`oellm/resources/custom_lm_eval_tasks`, ~239 files),
which neither lm-eval nor oellm ships: when one is missing, the user is told where it comes from instead
of being offered (or silently given) a built-in task of another definition."""

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


def check_custom(rows: Sequence[EvalRow], includes: Sequence[str]) -> None:
    """Refuse the first lm-eval task of the rows that is one of oellm-eval's own and that no include dir
    defines: unknown, or lm-eval's built-in task of the same name (12 of oellm-eval's `arc_challenge_mt_*`
    are also lm-eval's), which is another evaluation and must not run in its place."""
    names = sorted(t for t in {r.task for r in rows if r.suite == "lm_eval"} if FAMILIES.match(t))  # 100k rows: few tasks
    if not names:
        return
    from oellm.suites.lm_eval import yaml_dirs
    from oellm.suites.lm_eval_tasks import resolve

    # the include dirs' index first: lm-eval's own (4 MB) is read only for a name they do not define
    index, _, user = resolve(names, yaml_dirs(includes))
    for name in names:
        if name not in user:
            twin = " (lm-eval's built-in task of that name is another evaluation)" if name in index else ""
            raise OellmError(f"task {name}: this group needs the custom tasks of oellm-eval{twin}; pass "
                             f"--lm_eval_include_path .../custom_lm_eval_tasks (oellm-eval's "
                             f"oellm/resources/custom_lm_eval_tasks, or $LM_EVAL_INCLUDE_PATH with its clusters.yaml)")
