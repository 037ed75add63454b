"""Data loading for the example tasks (their YAMLs point here with `custom_dataset: !function`).

Why not `dataset_path: json` with `dataset_kwargs: {data_files: data/qa/train.jsonl}`? lm-eval
hands `data_files` to `datasets.load_dataset` unchanged, so a relative path there is relative to
the *current working directory*, not to the YAML, and the task would only work when started from
one particular directory. Here the paths are built from `__file__`, so the task works from any
directory, offline, and writes nothing to the Hugging Face datasets cache.
"""

import json
import logging
from pathlib import Path

import datasets

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("train", "validation")  # train: few-shot examples; validation: the scored questions


def _read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _load(name):
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(_read_jsonl(DATA_DIR / name / f"{split}.jsonl"))
            for split in SPLITS
        }
    )


# lm-eval calls `custom_dataset(**metadata, **dataset_kwargs)`; none of those keywords matter here.
def load_qa(**kwargs):
    return _load("qa")


def load_opposites(**kwargs):
    return _load("opposites")


class _QuietCustomDatasetHint(logging.Filter):
    """lm-eval warns on every load of a task with a `custom_dataset` that "custom kwargs can be
    passed to --metadata, for example max_seq_lengths"; that hint is for its RULER tasks and only
    confuses here, so drop it for these tasks (and nothing else)."""

    def filter(self, record):
        return not str(record.msg).startswith(
            ("oellm_example_qa: Custom kwargs", "oellm_example_opposites: Custom kwargs")
        )


_task_logger = logging.getLogger("lm_eval.api.task")
if not any(isinstance(f, _QuietCustomDatasetHint) for f in _task_logger.filters):
    _task_logger.addFilter(_QuietCustomDatasetHint())
