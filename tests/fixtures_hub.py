"""A local Hugging Face Hub (tests/hub_server.py) for pre-cache tests (pytest plugin).

`hub` starts a server per test, points HF_ENDPOINT at it, turns the session's offline flags off and
gives the test its own HF_HOME, all through monkeypatch (subprocesses inherit them). It serves:

- model `org/tiny`: the tiny GPT-2 of fixtures_models, plus a `pytorch_model.bin` and a `flax_model.msgpack`
  decoy that a pre-cache must not fetch; commit `hub.tiny_v1` is branch `main` and tag `v1`.
- dataset `org/tinyds`: JSONL train/test files (the fields of the tiny tasks), branch `main`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures_models import mc_task_yaml
from tests.hub_server import HubServer

OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")



@dataclass
class Hub:
    server: HubServer
    url: str
    home: Path  # this test's HF_HOME
    tiny_v1: str  # commit of org/tiny at main and v1

    def add_repo(self, *args, **kwargs) -> str:
        return self.server.add_repo(*args, **kwargs)

    def count(self, method: str | None = None, contains: str = "") -> int:
        return self.server.count(method, contains)

    def kill_downloads(self, n: int) -> None:
        """The next `n` file bodies stop half way and the connection drops."""
        self.server.cut_downloads = n


def tiny_dataset_files(seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    words = ["grass", "seeds", "milk", "bread", "water", "apples", "honey", "rice"]

    def docs(n: int) -> bytes:
        return b"".join(json.dumps({"query": f"the cat {rng.choice(['eats', 'likes'])}",
                                    "choices": rng.sample(words, 4), "label": rng.randrange(4)}).encode() + b"\n"
                        for _ in range(n))

    return {"data/train.jsonl": docs(8), "data/test.jsonl": docs(12), "README.md": b"# tiny dataset\n"}


def write_hub_task(dest: Path, name: str, dataset: str) -> Path:
    """A task YAML reading `dataset` from the hub (dest is an --lm_eval_include_path dir)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{name}.yaml").write_text(mc_task_yaml(name, f"dataset_path: {dataset}\n"))
    return dest


@pytest.fixture(scope="session")
def hub_model_files(tiny_model: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in tiny_model.iterdir() if p.is_file()}
    files["pytorch_model.bin"] = b"decoy: safetensors are preferred\n" * 64
    files["flax_model.msgpack"] = b"decoy: other framework\n" * 64
    return files


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hub_model_files: dict[str, bytes]) -> Iterator[Hub]:
    server = HubServer().start()
    sha = server.add_repo("org/tiny", hub_model_files, refs=("main", "v1"))
    server.add_repo("org/tinyds", tiny_dataset_files(), kind="dataset")
    home = tmp_path / "hf_home"
    home.mkdir()
    for flag in OFFLINE_FLAGS:
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield Hub(server, server.url, home, sha)
    finally:
        server.stop()


__all__ = ["Hub", "tiny_dataset_files", "write_hub_task"]
