"""Environments of the suites that cannot share the worker's venv (pytest plugin).

- `lighteval_venv` (session): a venv with `oellm[worker,lighteval]` (lighteval 0.13 needs
  huggingface_hub<1 and transformers<5, the main venv has 1.x and 5.x), built with pip on first use
  (~1.5 min with a warm pip cache) under `.venvs/lighteval` and reused while its install command is
  unchanged. It is what a user's lighteval venv or image holds; tests run `oellm` from it.
- `lighteval_tasks` (session): a custom lighteval task file (`TASKS_TABLE`, ten multiple-choice tasks
  `tiny_lv_0..9`) over local JSONL data in lighteval's folder layout (train.jsonl/test.jsonl).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import missing_part
from tests.fixtures_models import _docs

REPO = Path(__file__).resolve().parent.parent
VENVS = REPO / ".venvs"
LIGHTEVAL_SPEC = ["torch==2.13.0", "-e", f"{REPO}[worker,lighteval]"]
N_TASKS = 10

TASK_FILE = '''\
from lighteval.metrics.metrics import Metrics
from lighteval.tasks.lighteval_task import LightevalTaskConfig
from lighteval.tasks.requests import Doc


def tiny_prompt(line, task_name: str = None):
    return Doc(task_name=task_name, query=line["query"], choices=[f" {{c}}" for c in line["choices"]],
               gold_index=line["label"])


TASKS_TABLE = [
    LightevalTaskConfig(name=f"tiny_lv_{{i}}", prompt_function=tiny_prompt, hf_repo={data!r}, hf_subset="default",
                        hf_avail_splits=["train", "test"], evaluation_splits=["test"], few_shots_split="train",
                        few_shots_select="random_sampling_from_train", generation_size=1,
                        metrics=[Metrics.loglikelihood_acc], stop_sequence=["\\n"], version=0)
    for i in range({n})
]
'''


def venv_python(name: str, spec: list[str]) -> Path:
    """`.venvs/<name>` with `spec` installed by pip, reused while the spec is the same."""
    venv = VENVS / name
    marker = venv / ".oellm-spec"
    python = venv / "bin" / "python"
    if python.exists() and marker.exists() and json.loads(marker.read_text()) == spec:
        return python
    log = VENVS / f"{name}.log"
    VENVS.mkdir(exist_ok=True)
    with log.open("w") as out:
        ok = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], stdout=out, stderr=out).returncode == 0
        ok = ok and subprocess.run([str(python), "-m", "pip", "install", "-q", *spec], stdout=out,
                                   stderr=out).returncode == 0
    if not ok:
        missing_part(f"the {name} venv (pip install {' '.join(spec)} failed; see {log})")
    marker.write_text(json.dumps(spec))
    return python


@pytest.fixture(scope="session")
def lighteval_venv() -> Path:
    """The venv's bin dir (python, oellm, lighteval)."""
    return venv_python("lighteval", LIGHTEVAL_SPEC).parent


@pytest.fixture(scope="session")
def lighteval_tasks(tmp_path_factory: pytest.TempPathFactory, hf_offline: Path) -> Path:
    """The custom task file; its data folder lies beside it."""
    root = tmp_path_factory.mktemp("lighteval_tasks")
    data = root / "data"
    data.mkdir()
    rng = random.Random(1)
    for split, n in (("train", 8), ("test", 24)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _docs(rng, n)))
    path = root / "tiny_lighteval_tasks.py"
    path.write_text(TASK_FILE.format(data=str(data), n=N_TASKS))
    return path
