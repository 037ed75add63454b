"""A tiny causal LM and tiny lm-eval tasks, built on the spot with no network (pytest plugin).

`build_tiny_model` and `build_tiny_tasks` are plain functions (the benchmarks call them too); the
session fixtures `tiny_model` and `tiny_tasks` wrap them. Everything is seeded, so scores repeat.

Tasks in the `tiny_tasks` include dir (all `dataset_path: json` over local JSONL files):

- `tiny_mc_a`, `tiny_mc_b`: multiple_choice, metrics acc + acc_norm; 24 test docs, 8 fewshot docs.
- `tiny_group`: a group of both, with a size-weighted mean of acc and acc_norm.
- `tiny_raises`: its `process_docs` raises `ValueError("tiny_raises: deliberate failure")`.
- `tiny_no_metrics`: runs fine, but `process_results` returns `{}`: lm-eval "succeeds" with no metrics.
- `tiny_slow`: `process_docs` sleeps `$OELLM_TINY_SLOW_S` seconds (default 60), or until the file
  `$OELLM_TINY_SLOW_STOP` exists, for kill and requeue tests.

`make_run_dir(tmp_path, rows, **manifest)` writes jobs.csv + run.json the way the scheduler does.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from oellm.rows import EvalRow
from oellm.rundir import RunDir, creating, new_run_stamp, write_jobs, write_json

SEED = 1234
_SUBJECTS = ["cat", "dog", "bird", "fish", "cow", "fox", "owl", "bee"]
_VERBS = ["eats", "sees", "likes", "finds", "hears", "wants"]
_OBJECTS = ["grass", "seeds", "milk", "bread", "water", "apples", "honey", "rice"]
_SPECIALS = {"unk_token": "[UNK]", "pad_token": "[PAD]", "bos_token": "<s>", "eos_token": "</s>"}

# The smallest result the worker could have written: what a row that "finished" looks like to status.
A_RESULT = '{\n "results": {\n  "t": {\n   "acc,none": 0.5,\n   "acc_stderr,none": 0.1\n  }\n }\n}\n'



def _docs(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Docs like {"query": "the cat eats", "choices": [4 objects], "label": i}."""
    out = []
    for _ in range(n):
        choices = rng.sample(_OBJECTS, 4)
        out.append({"query": f"the {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)}",
                     "choices": choices, "label": rng.randrange(4)})
    return out


def _corpus() -> list[str]:
    """Every sentence the tasks can produce, so the tokenizer knows every word."""
    return [f"the {s} {v} {o}" for s in _SUBJECTS for v in _VERBS for o in _OBJECTS]


def build_tiny_model(dest: Path) -> Path:
    """Save a seeded 2-layer GPT-2 (hidden 32) and a word-level tokenizer to `dest` (about 1 s)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    dest.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=list(_SPECIALS.values())))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=128, **_SPECIALS)
    fast.save_pretrained(dest)
    # transformers 5 names its class TokenizersBackend, which transformers 4 (lighteval's stack) cannot load
    config_file = dest / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"}))

    torch.manual_seed(SEED)
    config = GPT2Config(vocab_size=len(fast), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                        pad_token_id=fast.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(dest, safe_serialization=True)
    return dest


_MC_TASK = """\
task: {name}
{source}output_type: multiple_choice
training_split: train
fewshot_split: train
test_split: test
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "{{{{choices}}}}"
{extra}metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def mc_task_yaml(name: str, source: str, extra: str = "") -> str:
    """A multiple-choice task over query/choices/label docs; `source` holds its dataset_* lines."""
    return _MC_TASK.format(name=name, source=source, extra=extra)


_GROUP = """\
group: tiny_group
task:
  - tiny_mc_a
  - tiny_mc_b
aggregate_metric_list:
  - metric: acc
    aggregation: mean
    weight_by_size: true
  - metric: acc_norm
    aggregation: mean
    weight_by_size: true
metadata:
  version: 1.0
"""

_UTILS = '''\
"""Hooks of the fault-test tasks."""
import os
import time


def explode(dataset):
    raise ValueError("tiny_raises: deliberate failure")


def no_metrics(doc, results):
    return {}


def slow(dataset):
    stop = os.environ.get("OELLM_TINY_SLOW_STOP")
    end = time.monotonic() + float(os.environ.get("OELLM_TINY_SLOW_S", "60"))
    while time.monotonic() < end and not (stop and os.path.exists(stop)):
        time.sleep(0.2)
    return dataset
'''

_EXTRA = {
    "tiny_mc_a": "", "tiny_mc_b": "",
    "tiny_raises": "process_docs: !function utils.explode\n",
    "tiny_no_metrics": "process_results: !function utils.no_metrics\n",
    "tiny_slow": "process_docs: !function utils.slow\n",
}


def build_tiny_tasks(dest: Path) -> Path:
    """Write the tiny task YAMLs and their JSONL data (absolute paths) into `dest`; milliseconds."""
    data = dest / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(_EXTRA):
        rng = random.Random(SEED + i)
        files = {}
        for split, n in (("train", 8), ("test", 24)):
            files[split] = data / f"{name}_{split}.jsonl"
            files[split].write_text("".join(json.dumps(d) + "\n" for d in _docs(rng, n)))
        (dest / f"{name}.yaml").write_text(
            mc_task_yaml(name, f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: {files['train']}\n"
                               f"    test: {files['test']}\n", _EXTRA[name]))
    (dest / "_tiny_group.yaml").write_text(_GROUP)
    (dest / "utils.py").write_text(_UTILS)
    return dest


def make_run_dir(tmp_path: Path, rows: list[EvalRow], **manifest: Any) -> RunDir:
    """A run dir as `oellm schedule-eval` leaves it: jobs.csv (rows without a task_index go to
    array task 0) and run.json (cluster "local", batch_size 1, no samples, unless overridden)."""
    output_root = tmp_path / "runs"
    output_root.mkdir(parents=True, exist_ok=True)
    rows = [r if r.task_index >= 0 else replace(r, task_index=0) for r in rows]
    meta = {"cluster": "local", "executor": "local", "include_paths": [], "batch_size": 1,
            "log_samples": False, "model_revisions": {}, "n_rows": len(rows), **manifest}
    meta["include_paths"] = [str(Path(p).resolve()) for p in meta["include_paths"]]
    with creating(output_root, new_run_stamp(output_root)) as (tmp, final):
        write_jobs(tmp.jobs, rows)
        write_json(tmp.manifest, meta)
    return RunDir(final)


@pytest.fixture(scope="session")
def hf_offline(tmp_path_factory: pytest.TempPathFactory):
    """No hub: HF libraries offline, their caches in a fresh temp dir (set for subprocesses too)."""
    home = tmp_path_factory.mktemp("hf_home")
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HOME": str(home)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield home


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, hf_offline: Path) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_tasks(tmp_path_factory: pytest.TempPathFactory, hf_offline: Path) -> Path:
    return build_tiny_tasks(tmp_path_factory.mktemp("tiny_tasks"))


__all__ = ["build_tiny_model", "build_tiny_tasks", "make_run_dir"]
