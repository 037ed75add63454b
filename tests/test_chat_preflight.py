"""REVIEW finding 11: `--apply_chat_template` with a tokenizer that cannot apply it is refused by the preflight,
before anything is submitted, in one line naming the model, instead of failing every row on the node after
the queue wait and the model load. The preflight loads each model's tokenizer in the workers' interpreter and
checks the templates its rows ask for (lm-eval's rule: bare is the default template, a name one of them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.cache.preflight import prove
from oellm.clusters import load_clusters
from oellm.options import row_options
from oellm.rows import EvalRow

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def chat_models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the tiny model with one chat template, the tiny model with a default and a `chatml` template)."""
    root = tmp_path_factory.mktemp("chat_models")
    one, several = root / "tiny-chat", root / "tiny-chats"
    for d in (one, several):
        shutil.copytree(tiny_model, d)
        (d / "chat_template.jinja").write_text(TEMPLATE)
    (several / "additional_chat_templates").mkdir()
    (several / "additional_chat_templates" / "chatml.jinja").write_text("{% for m in messages %}<|{{ m['role'] }}|>"
                                                                        "{% endfor %}")
    return one, several


def missing(model: Path, tasks: Path, template: bool | str) -> list[str]:
    rows = [EvalRow(str(model), "tiny_mc_a", 0, options=row_options(apply_chat_template=template))]
    return prove(rows, load_clusters()["local"], [str(tasks)], remember=False).missing


def test_apply_chat_template_without_a_template_is_refused_before_anything_is_submitted(
        tiny_model: Path, tiny_tasks: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    p = subprocess.run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models",
                        str(tiny_model), "--tasks", "tiny_mc_a", "--n_shot", "0", "--limit", "2",
                        "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(out), "--dry_run", "false",
                        "--apply_chat_template"],
                       capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=600)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr
    assert f"model {tiny_model}: its tokenizer has no chat template" in err[0] and "nothing submitted" in err[0]
    assert not out.exists() or not list(out.glob("2*")), "a run dir was left"


def test_the_templates_rows_ask_for_must_be_in_the_tokenizer(
        tiny_model: Path, tiny_tasks: Path, chat_models: tuple[Path, Path]) -> None:
    one, several = chat_models
    assert missing(one, tiny_tasks, True) == []
    assert missing(several, tiny_tasks, True) == [] and missing(several, tiny_tasks, "chatml") == []
    [named] = missing(one, tiny_tasks, "chatml")
    assert named.startswith(f"model {one}: --apply_chat_template chatml: its tokenizer has no chat template named "
                            "'chatml'; it has: default")
    [plain] = missing(tiny_model, tiny_tasks, True)
    assert "no chat template, which --apply_chat_template needs" in plain
    assert missing(tiny_model, tiny_tasks, False) == []  # plain rows ask for nothing
