"""Which models a local directory holds, in every layout we read, and whether a checkpoint is complete.

Layouts (one level, as upstream oellm-eval expands them, plus ours):
- a model dir (`config.json`, or a `.gguf`);
- a training run: checkpoint dirs `checkpoint-N`, `step_N`, `iter_N`, `global_stepN` directly in it, or
  in its `hf/` folder (`run/hf/iter_0001000`, what Megatron-to-HF conversion writes);
- a dir of models: each subdir a model dir or a training run of either kind (`runs/{a,b}/hf/iter_*`).

Completeness is decided here only, for the planner and for `--follow` alike: the weights are whole (one
weights file, or an index and every shard it names; `save_pretrained` writes the shards first and the index
last, so shards without their index, or fewer than N `*-0000k-of-0000N.*` files, are still being written)
and the ready-marker (`--checkpoint_ready_file`) is present; a follower also wants a weights file and sizes
unchanged since its previous look.

Named checkpoints under `hf/` (`run/hf/latest`, `final`, `best`, beside or instead of `iter_*`) are models
of the run, as upstream evaluates every `hf/` subdir with weights; one that links to a listed checkpoint
is that checkpoint.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from oellm.rows import CHECKPOINT, WEIGHTS, has_weights

INDEX_SUFFIX = ".index.json"  # model.safetensors.index.json, pytorch_model.bin.index.json
SHARD = re.compile(r"^(?P<stem>.+)-(?P<k>\d{5})-of-(?P<n>\d{5})\.(?P<ext>\w+)$")  # model-00001-of-00002.safetensors


@dataclass(frozen=True)
class Found:
    """One model a directory holds: its path, its training step (None: a model dir, not a checkpoint) and
    the training run it belongs to (last_n / stride count within a run)."""

    path: Path
    step: int | None
    run: Path


def _subdirs(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return [e for e in it if not e.name.startswith(".") and e.is_dir()]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _checkpoints(run: Path, is_model: Callable[[Path], bool]) -> list[Found]:
    """Checkpoint-named subdirs of `run` that `is_model` accepts, by step."""
    found = []
    for e in _subdirs(run):
        m = CHECKPOINT.match(e.name)
        if m and is_model(Path(e.path)):
            found.append(Found(Path(e.path), int(m.group(1)), run))
    return sorted(found, key=lambda f: f.step)  # type: ignore[arg-type, return-value]


def _run(path: Path, is_model: Callable[[Path], bool]) -> list[Found]:
    """A training run's checkpoints, directly in it or under `hf/` (with the named ones there)."""
    return _checkpoints(path, is_model) or _hf(path / "hf", is_model)


def _hf(hf: Path, is_model: Callable[[Path], bool]) -> list[Found]:
    """`run/hf`: its checkpoint dirs by step, then its named model dirs with weights (`latest`, `final`,
    `best`; step None, so stride and last_n keep them all), less those linking to a listed checkpoint."""
    found = _checkpoints(hf, is_model)
    listed = {f.path.resolve() for f in found}
    for e in sorted(_subdirs(hf), key=lambda e: e.name):
        sub = Path(e.path)
        if (not CHECKPOINT.match(e.name) and is_model(sub) and any(_is_weights(n) for n in _names(sub))
                and sub.resolve() not in listed):
            found.append(Found(sub, None, hf))
    return found


def discover(path: Path, is_model: Callable[[Path], bool] = has_weights) -> list[Found]:
    """Every model `path` holds (see the layouts above); [] when it holds none. `is_model` says what counts
    as a model dir: the planner wants a config (`has_weights`), a follower any model file (`has_model_file`),
    since it must also see the checkpoints still being written."""
    if has_weights(path):
        return [Found(path, None, path)]
    found = _run(path, is_model)
    if found:
        return found
    for e in sorted(_subdirs(path), key=lambda e: e.name):
        sub = Path(e.path)
        found += [Found(sub, None, path)] if is_model(sub) else _run(sub, is_model)
    return found


def select(found: Iterable[Found], stride: int = 1, last_n: int | None = None) -> list[Found]:
    """--checkpoint_stride and --last_n_checkpoints, within each training run (the newest checkpoint is
    always kept); model dirs of a dir of models are not checkpoints and are all kept."""
    runs: dict[Path, list[Found]] = {}
    out = []
    for f in found:
        if f.step is None:
            out.append(f)
        else:
            runs.setdefault(f.run, []).append(f)
    for ckpts in runs.values():
        ckpts = ckpts[::-1][::stride][::-1]
        out += ckpts[-last_n:] if last_n else ckpts
    return out


# ---------------------------------------------------------------- completeness


def _names(path: Path) -> dict[str, int]:
    """File name -> size of the files directly in `path` (one scandir)."""
    out = {}
    try:
        with os.scandir(path) as it:
            for e in it:
                try:
                    if e.is_file():
                        out[e.name] = e.stat().st_size
                except FileNotFoundError:  # renamed away between the listing and the stat
                    continue
    except (FileNotFoundError, NotADirectoryError):
        pass
    return out


def has_model_file(path: Path) -> bool:
    """Anything a model dir holds (config, weights, an index): a follower's candidate, complete or not."""
    return any(n == "config.json" or n.endswith(INDEX_SUFFIX) or _is_weights(n) for n in _names(path))


def _is_weights(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, w) for w in WEIGHTS)


def sizes(path: Path) -> dict[str, int]:
    """What a follower compares across two looks: the size of every file of the checkpoint."""
    return _names(path)


def _shards_missing(files: dict[str, int]) -> str | None:
    """Shards without their index (`save_pretrained` writes the index last), or fewer than N of N."""
    groups: dict[tuple[str, str, int], int] = {}
    for name in files:
        m = SHARD.match(name)
        if m:
            g = (m["stem"], m["ext"], int(m["n"]))
            groups[g] = groups.get(g, 0) + 1
    for (stem, ext, n), have in sorted(groups.items()):
        index = f"{stem}.{ext}{INDEX_SUFFIX}"
        if index not in files:
            return f"{index} not written yet ({have} of {n} shard(s) of {stem} on disk)"
        if have < n:
            return f"{have} of {n} shard(s) of {stem} on disk"
    return None


def incomplete(path: Path, ready_file: str | None = None, need_weights: bool = False,
               files: dict[str, int] | None = None) -> str | None:
    """Why the checkpoint at `path` is not complete yet, or None when it is: no config, shards without
    their index or fewer than their count, a file a `*.index.json` names missing (or the index itself
    half-written), with `need_weights` no weights file at all (a trainer that writes config.json first),
    the ready-marker missing. `files`: the listing already taken (`sizes`), so one look lists a dir once."""
    files = _names(path) if files is None else files
    if "config.json" not in files and not any(n.endswith(".gguf") for n in files):
        return "no config.json yet"
    for index in (n for n in files if n.endswith(INDEX_SUFFIX)):
        try:
            named = set((json.loads((path / index).read_text()).get("weight_map") or {}).values())
        except (OSError, ValueError, AttributeError):
            return f"{index} is not readable JSON yet"
        absent = sorted(n for n in named if n not in files and not (path / n).is_file())
        if absent:
            return f"{index} names {len(absent)} file(s) not on disk yet ({absent[0]}" + (", ...)" if len(absent) > 1 else ")")
    shards = _shards_missing(files)
    if shards:
        return shards
    if need_weights and not any(_is_weights(n) for n in files):
        return "no weights file yet"
    if ready_file and ready_file not in files:
        return f"no {ready_file} yet"
    return None
