"""The values every stage passes on: an evaluation row and the model it means.

A model is parsed here once, whatever it came from (a `--models` item, a CSV cell, a jobs.csv row, an
lm-eval result's `model_args`): what kind it is, its revision, its step, its other args. Planning,
pre-cache, worker and collect all ask `ModelRef`, so "is this a path?" or "which revision?" has one
answer (two answers once made a pinned row load another revision's weights).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oellm.errors import OellmError, refuse_secret
from oellm.options import shardable

# A Hugging Face repo id: `name` or `org/name`; anything else that is not a local dir is refused,
# so shell metacharacters in a model name never get further than planning.
HF_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
ARG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ARG_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+-]+$")
# Checkpoint dirs of a training run: checkpoint-1000, step_2000, iter_0003000, global_step400.
CHECKPOINT = re.compile(r"^(?:checkpoint|global_step|step|iter)[-_]?0*(\d+)$")
WEIGHTS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")
# lm-eval HF model args that name another model's files: a path must reach the node (bound, absolute)
PATH_ARGS = ("tokenizer", "peft", "delta")


def is_path(name: str) -> bool:
    """A local model: written as a path (`/`, `.`, `~`) or naming an existing folder. Anything else must
    be a hub id (`name` or `org/name`; planning checks `HF_ID`), and planning makes paths absolute."""
    return name.startswith(("/", ".", "~")) or os.path.exists(name)


def checkpoint_step(path: str) -> int | None:
    """The training step of a checkpoint dir named like `checkpoint-1000`, else None."""
    m = CHECKPOINT.match(path.rstrip("/").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def has_weights(path: Path) -> bool:
    """A model dir: an HF config, or a GGUF file (transformers reads its config from it)."""
    return (path / "config.json").is_file() or next(path.glob("*.gguf"), None) is not None


def revision_key(name: str, revision: str | None) -> str:
    """How run.json's `model_revisions` names the commit a hub model's revision resolved to."""
    return name if revision is None else f"{name}@{revision}"


# model args that permit a load but change no number: not part of an evaluation's identity
LOAD_ONLY_ARGS = ("trust_remote_code",)


def identity_args(args: str) -> str:
    """Model args as an evaluation's identity has them: without the load-only ones."""
    if not any(k in args for k in LOAD_ONLY_ARGS):
        return args
    return ",".join(p for p in args.split(",") if p.split("=", 1)[0] not in LOAD_ONLY_ARGS)


def parse_args(text: str) -> dict[str, str]:
    """`key=value,key=value` -> dict; the one reader of oellm's model-args strings."""
    return dict(p.split("=", 1) for p in text.split(",") if "=" in p)


def normalize_args(args: Iterable[str], model: str) -> str:
    """Validate `key=value` pairs as the user typed them; they reach lm-eval's model constructor, never a shell."""
    out = []
    for arg in args:
        key, _, val = arg.partition("=")
        key, val = key.strip(), val.strip()
        if key == "pretrained":
            raise OellmError(f"model {model}: pretrained= is the model itself; give the model path or id first")
        refuse_secret(key, f"model {model}: model arg {key}=", "jobs.csv and every result")
        if not ARG_KEY.match(key) or not ARG_VALUE.match(val):
            raise OellmError(f"model {model}: bad model arg {arg!r}; expected key=value with letters, digits and _.:/@+-")
        if key in PATH_ARGS and is_path(val):
            path = Path(val).expanduser().resolve()
            if not path.exists():
                raise OellmError(f"model {model}: {key}={val}: no such file or directory")
            val = str(path)
        out.append(f"{key}={val}")
    return ",".join(out)


@dataclass(frozen=True)
class ModelRef:
    """A model as a row means it: a hub id or an absolute path, its model args, its checkpoint step."""

    name: str
    args: str = ""  # normalised `key=value,...`, revision included: part of the row's identity
    step: int | None = None  # training step of a checkpoint; provenance, not identity

    @property
    def kind(self) -> str:
        """"hub", "local" (a model dir) or "checkpoint" (a dir of a training run)."""
        if not is_path(self.name):
            return "hub"
        return "local" if self.step is None else "checkpoint"

    @property
    def is_hub(self) -> bool:
        return self.kind == "hub"

    @functools.cached_property
    def arg_dict(self) -> dict[str, str]:
        return parse_args(self.args)

    @property
    def revision(self) -> str | None:
        """The revision the user asked for (a branch, tag or commit), else None (main)."""
        return self.arg_dict.get("revision") or None

    @property
    def arg_paths(self) -> list[str]:
        """Local paths its model args name (tokenizer=, peft=, delta=): the worker opens them too."""
        return [v for k, v in self.arg_dict.items() if k in PATH_ARGS and is_path(v)]

    @property
    def load_args(self) -> dict[str, Any]:
        """The args that decide whether its config and tokenizer load (the preflight loads them so)."""
        out: dict[str, Any] = {}
        if self.arg_dict.get("trust_remote_code", "").lower() in ("true", "1", "yes"):
            out["trust_remote_code"] = True
        if self.arg_dict.get("tokenizer"):
            out["tokenizer"] = self.arg_dict["tokenizer"]
        return out

    @property
    def other_args(self) -> str:
        """The model args besides the revision."""
        return ",".join(f"{k}={v}" for k, v in self.arg_dict.items() if k != "revision")

    @property
    def revision_key(self) -> str:
        """How run.json's `model_revisions` names this model's resolved commit."""
        return revision_key(self.name, self.revision)

    def commit(self, revisions: Mapping[str, str]) -> str | None:
        """The commit this row evaluates: the one the pre-cache resolved (recorded in run.json), the
        requested revision when it is already a commit, else None (not resolved: a local dir, or a run
        planned without pre-cache)."""
        if not self.is_hub:
            return None
        if self.revision and COMMIT.match(self.revision):
            return self.revision
        return revisions.get(self.revision_key)

    def lm_eval_args(self, revision: str | None, swap: Mapping[str, str] | None = None, **extra: Any) -> str:
        """lm-eval's model_args string: pretrained, the row's args (values in `swap` replaced) with
        `revision` as given, `extra` last (unless the row sets them itself)."""
        other = ",".join(f"{k}={(swap or {}).get(k, v)}" for k, v in self.arg_dict.items() if k != "revision")
        parts = [f"pretrained={self.name}", other, revision and f"revision={revision}"]
        parts += [f"{k}={v}" for k, v in extra.items() if v is not None and k not in self.arg_dict]
        return ",".join(p for p in parts if p)

    @classmethod
    def from_lm_eval(cls, value: Any) -> ModelRef | None:
        """lm-eval's recorded `model_args` ("pretrained=x,dtype=y" or a dict) -> the model it ran, or None."""
        pairs = [(str(k), str(v)) for k, v in value.items()] if isinstance(value, dict) else \
            [tuple(p.split("=", 1)) for p in str(value or "").split(",") if "=" in p]
        kv = dict(pairs)
        if not kv.get("pretrained"):
            return None
        name = kv["pretrained"]
        return cls(name, ",".join(f"{k}={v}" for k, v in pairs if k != "pretrained"), checkpoint_step(name))


DEFAULT_SUITE = "lm_eval"
DEFAULT_SHOTS = "default"  # how lists, CSVs and jobs.csv spell "the task's own few-shot count"


class _once:
    """A value computed on first read and kept in the instance: `functools.cached_property` without the one
    lock Python 3.11 takes for every instance's first read (a third of the 100k-row planning floor). The
    value must depend only on frozen fields."""

    def __init__(self, compute: Any) -> None:
        self.compute, self.name, self.__doc__ = compute, compute.__name__, compute.__doc__

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.compute(obj)
        return value


def _row_hash(row: EvalRow, model_args: str) -> str:
    limit = "" if row.limit is None else repr(float(row.limit))  # 10 and 10.0 are the same evaluation
    parts: tuple[str, ...] = (row.model, model_args, row.task, shot_label(row.n_shot), limit)
    if row.suite != DEFAULT_SUITE:
        parts += (row.suite,)
    if row.num_shards:
        parts += (f"shard {row.shard}/{row.num_shards}",)
    if row.options:
        parts += (f"options {row.options}",)
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def shot_label(n_shot: int | None) -> str:
    """A shot count as oellm writes it: the number, or "default" for the task's own count."""
    return DEFAULT_SHOTS if n_shot is None else str(n_shot)


@dataclass(frozen=True)
class EvalRow:
    """One evaluation: a model (with its lm-eval model args), a task or group, a shot count."""

    model: str
    task: str
    n_shot: int | None  # None: the task's own count (lm-eval's num_fewshot=None), spelled "default"
    model_args: str = ""
    limit: float | None = None
    step: int | None = None  # training step of a checkpoint; provenance, not identity
    task_index: int = -1  # the array task that evaluates this row; set by packing
    suite: str = DEFAULT_SUITE  # the framework that evaluates it (oellm.suites)
    shard: int | None = None  # this row evaluates docs with doc_id % num_shards == shard of its evaluation
    num_shards: int | None = None
    options: str = ""  # lm-eval options that change the numbers, canonical JSON (oellm.options); identity

    @_once
    def row_id(self) -> str:
        """Stable id: the same evaluation always gets the same id, in any run, on any cluster (lm-eval rows
        keep the ids they had before rows named a suite or a shard). Model args that only permit a load
        (`trust_remote_code`) change no number, so they are not part of it (docs/evaluation.md)."""
        args = self.model_args  # LOAD_ONLY_ARGS tested inline: 100k rows are planned at once
        return _row_hash(self, identity_args(args) if "trust_remote_code" in args else args)

    @property
    def legacy_ids(self) -> tuple[str, ...]:
        """The ids rows with a load-only model arg had before it left the identity: the ledger still finds
        their results, and their run dirs still read (a one-time mapping, never a re-run)."""
        return () if identity_args(self.model_args) == self.model_args else (_row_hash(self, self.model_args),)

    @property
    def identity(self) -> tuple:
        limit = None if self.limit is None else float(self.limit)
        return (self.model, self.model_args, self.task, self.n_shot, limit, self.suite, self.shard, self.num_shards,
                self.options)

    def at(self, task_index: int) -> EvalRow:
        """This row in array task `task_index` (packing). The index is not identity, so the id computed so
        far comes along: copying the fields beats the frozen dataclass's __init__ 3x at 100k rows."""
        row = object.__new__(EvalRow)
        row.__dict__.update(self.__dict__, task_index=task_index)
        return row

    @property
    def whole(self) -> EvalRow:
        """The evaluation a shard is part of (itself when not sharded): its merged result's row."""
        return EvalRow(self.model, self.task, self.n_shot, self.model_args, self.limit, self.step, -1, self.suite,
                       options=self.options)

    def shards(self, num_shards: int) -> list[EvalRow]:
        """The rows of its shards; only lm-eval rows shard (their exact merge replays lm-eval's own scoring),
        other suites' rows stay whole, and so does a row that is a shard already (an eval CSV's num_shards
        column wins over --num_shards: shards of shards would evaluate every document twice). A row with
        a chat template stays whole too: the merge replays requests, and the replay has no tokenizer."""
        if num_shards < 2 or self.suite != DEFAULT_SUITE or self.num_shards or not shardable(self.options):
            return [self]
        return [EvalRow(self.model, self.task, self.n_shot, self.model_args, self.limit, self.step, -1, self.suite,
                        k, num_shards, self.options) for k in range(num_shards)]

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.model, self.model_args, self.step)

    def record(self) -> dict[str, Any]:
        """The row as a result's provenance names it (`oellm.row`); collect-results reads it back."""
        return {"row_id": self.row_id, "model": self.model, "model_args": self.model_args, "task": self.task,
                "n_shot": self.n_shot, "limit": self.limit, "step": self.step, "suite": self.suite,
                **({"options": self.options} if self.options else {})}
