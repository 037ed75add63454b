"""Load the example tasks' JSONL files from next to this file.

lm-eval hands a YAML's `dataset_kwargs.data_files` to `datasets.load_dataset`
unchanged, so a relative path there is relative to the *current working
directory*, not to the YAML. Loading the files here, by a path built from
`__file__`, works from any directory, offline, and writes nothing to the
Hugging Face datasets cache.
"""

import json
from pathlib import Path

import datasets

DATA_DIR = Path(__file__).resolve().parent / "data"


def _read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _load(name):
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(_read_jsonl(DATA_DIR / name / f"{split}.jsonl"))
            for split in ("train", "validation")
        }
    )


# lm-eval calls `custom_dataset(**metadata, **dataset_kwargs)`; the keywords are not needed here.
def load_qa(**kwargs):
    return _load("qa")


def load_opposites(**kwargs):
    return _load("opposites")
