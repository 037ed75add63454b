"""Environments of the suites that cannot share the worker's venv (pytest plugin).

- `lighteval_venv` (session): a venv with `oellm[worker,lighteval]` (lighteval 0.13 needs
  huggingface_hub<1 and transformers<5, the main venv has 1.x and 5.x), built with pip on first use
  (~1.5 min with a warm pip cache) under `.venvs/lighteval` and reused while its install command is
  unchanged. It is what a user's lighteval venv or image holds; tests run `oellm` from it.
- `lighteval_tasks` (session): a custom lighteval task file (`TASKS_TABLE`, ten multiple-choice tasks
  `tiny_lv_0..9`) over local JSONL data in lighteval's folder layout (train.jsonl/test.jsonl).
- `belebele_repo` / `flores_repo`: tiny stand-ins for the Hub datasets of lighteval's multilingual
  `belebele_*` and `flores200:*` tasks, in the real repos' configs, splits and columns, for the local hub;
  `punkt_tab_mirror`: the NLTK data flores200's BLEU metrics need, from a stand-in NLTK mirror.
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


def _jsonl(docs: list[dict]) -> bytes:
    return "".join(json.dumps(d) + "\n" for d in docs).encode()


def _readme(configs: dict[str, dict[str, str]]) -> bytes:
    """A dataset card whose `configs:` map each config's splits to files, as the Hub reads it."""
    body = "".join(f"- config_name: {name}\n  data_files:\n" + "".join(
        f"  - split: {split}\n    path: {path}\n" for split, path in splits.items()) for name, splits in configs.items())
    return f"---\nconfigs:\n{body}---\n# tiny stand-in\n".encode()


def belebele_repo(langs: list[str], n: int = 6, seed: int = 3) -> dict[str, bytes]:
    """`facebook/belebele`: one config per language (`deu_Latn`), split `test`, its columns (a FLORES passage,
    a question, `mc_answer1..4`, `correct_answer_num` as a string). Each answer is 4 tokens of the tiny model
    (lighteval capitalises the first word: [UNK]): lighteval 0.13 keeps only as many of a document's answers
    as its longest answer has tokens, and its token norm then fails (huggingface/lighteval#1170, open)."""
    rng = random.Random(seed)
    files = {}
    for lang in langs:
        docs = [{"link": f"https://example.org/{i}", "question_number": 1, "dialect": lang, "ds": "2023-05-03",
                 "flores_passage": " ".join(d["choices"]), "question": d["query"],
                 **{f"mc_answer{k + 1}": f"the {d['query'].split()[1]} eats {c}" for k, c in enumerate(d["choices"])},
                 "correct_answer_num": str(d["label"] + 1)} for i, d in enumerate(_docs(rng, n))]
        files[f"data/{lang}.jsonl"] = _jsonl(docs)
    files["README.md"] = _readme({lang: {"test": f"data/{lang}.jsonl"} for lang in langs})
    return files


def flores_repo(pairs: list[tuple[str, str]], n: int = 4, seed: int = 5) -> dict[str, bytes]:
    """`facebook/flores`: one config per language pair (`eng_Latn-deu_Latn`), splits `dev` and `devtest`,
    a `sentence_<lang>` column per side."""
    rng = random.Random(seed)
    files, configs = {}, {}
    for src, tgt in pairs:
        name = f"{src}-{tgt}"
        for split in ("dev", "devtest"):
            docs = [{"id": i, "URL": f"https://example.org/{i}", "domain": "wikinews", "topic": "animals",
                     "has_image": 0, "has_hyperlink": 0, f"sentence_{src}": f"{d['query']} {d['choices'][0]}",
                     f"sentence_{tgt}": f"{d['query']} {d['choices'][d['label']]}"} for i, d in enumerate(_docs(rng, n))]
            files[f"{name}/{split}.jsonl"] = _jsonl(docs)
        configs[name] = {s: f"{name}/{s}.jsonl" for s in ("dev", "devtest")}
    files["README.md"] = _readme(configs)
    return files


def punkt_tab_mirror(root: Path) -> Path:
    """A site's NLTK mirror (nltk's downloader reads its index.xml) holding `punkt_tab` with empty English
    parameters: enough for nltk's word_tokenize, which lighteval's BLEU metrics call (the real one is on
    NLTK's server, out of reach here)."""
    import hashlib
    import zipfile

    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "punkt_tab.zip", "w") as z:
        for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
            z.writestr(f"punkt_tab/english/{name}", "")
    data = (root / "punkt_tab.zip").read_bytes()
    (root / "index.xml").write_text(
        f'<?xml version="1.0"?>\n<nltk_data><packages><package id="punkt_tab" name="Punkt" subdir="tokenizers" '
        f'url="file://{root}/punkt_tab.zip" size="{len(data)}" unzipped_size="0" '
        f'checksum="{hashlib.md5(data).hexdigest()}" unzip="1" /></packages><collections></collections></nltk_data>\n')
    return root


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


def bare_spec() -> list[str]:
    """What a stock image with torch and lm-eval holds: lm-eval with its `hf` model stack (accelerate) at the
    main venv's versions, and no oellm, jsonargparse or other login-node package."""
    from importlib.metadata import version

    return ["torch==2.13.0", *(f"{d}=={version(d)}" for d in ("lm_eval", "transformers", "datasets", "accelerate"))]


@pytest.fixture(scope="session")
def bare_venv() -> Path:
    """`.venvs/bare/bin/python` (built on first use, ~1.5 min, then reused): the Python of a bare image."""
    return venv_python("bare", bare_spec())
