"""Task names: unknown ones are refused with suggestions, the stock index is built once per lm-eval
version, and a worker's TaskManager indexes only the folders its tasks need.

Tests marked e2e read lm-eval's real stock index (built once for this module, ~13 s)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from oellm.errors import OellmError
from oellm.suites import lm_eval_tasks as tasks
from oellm.suites.lm_eval_manager import task_manager_for


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty oellm cache dir."""
    monkeypatch.setenv("OELLM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def stock_cache(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A cache dir holding the stock index, built cold here; yields the cache dir and the build time."""
    path = tmp_path_factory.mktemp("oellm_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OELLM_CACHE_DIR", str(path))
        t0 = time.perf_counter()
        index = tasks.task_index([])
        yield {"dir": path, "cold_s": time.perf_counter() - t0, "index": index}


@pytest.mark.fast
def test_include_path_tasks_resolve_without_the_stock_index(tiny_tasks: Path, cache: Path) -> None:
    tasks.validate_tasks(["tiny_mc_a", "tiny_group", "tiny_mc_a"], [str(tiny_tasks)])
    tm = task_manager_for(["tiny_group"], [str(tiny_tasks)])
    assert tm.include_path == [str(tiny_tasks)]
    assert {"tiny_group", "tiny_mc_a", "tiny_mc_b"} <= set(tm.task_index)
    assert len(tm.task_index) < 20  # the ~14.7k stock tasks were not indexed
    assert not list(cache.glob("lm_eval-*")), "custom tasks alone must not pay for indexing lm-eval's own tasks"
    loaded = tm.load(["tiny_group"])
    assert set(loaded["tasks"]) == {"tiny_mc_a", "tiny_mc_b"}


@pytest.mark.fast
def test_missing_include_path_is_one_clear_error(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(OellmError, match="task include path.*not found.*nowhere"):
        tasks.validate_tasks(["tiny_mc_a"], [str(tmp_path / "nowhere")])


@pytest.mark.e2e
def test_stock_index_is_cached_per_lm_eval_version(stock_cache: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    files = list(stock_cache["dir"].iterdir())
    assert [f.name for f in files] == [f"lm_eval-{tasks.lm_eval_version()}-tasks-{tasks.INDEX_FORMAT}.json"]
    cached = json.loads(files[0].read_text())
    assert not cached["hellaswag"]["yaml_path"].startswith("/"), "paths are stored relative to lm-eval's tasks dir"
    mtime = files[0].stat().st_mtime_ns

    from lm_eval.tasks._index import TaskIndex

    def no_rebuild(*a: object, **k: object) -> None:
        raise AssertionError("the stock index was rebuilt although it is cached")

    monkeypatch.setenv("OELLM_CACHE_DIR", str(stock_cache["dir"]))
    monkeypatch.setattr(TaskIndex, "build", staticmethod(no_rebuild))
    t0 = time.perf_counter()
    index = tasks.task_index([])
    warm_s = time.perf_counter() - t0
    print(f"stock index: cold {stock_cache['cold_s']:.1f} s, warm {warm_s:.3f} s, {len(index)} names")
    # (no timing assert: `no_rebuild` above fails the test if the cached index is not used)
    assert index == stock_cache["index"]
    assert files[0].stat().st_mtime_ns == mtime
    assert index["hellaswag"]["type"] == "task" and Path(index["hellaswag"]["yaml_path"]).is_file()
    assert index["mmlu"]["type"] == "group" and "mmlu_stem" in index["mmlu"]["children"]
    assert index["ai2_arc"]["type"] in ("group", "tag")


@pytest.mark.e2e
def test_unknown_tasks_are_listed_in_one_error_with_close_matches(
        stock_cache: dict, tiny_tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OELLM_CACHE_DIR", str(stock_cache["dir"]))
    scanned: list = []
    real_scan = tasks._scan
    monkeypatch.setattr(tasks, "_scan", lambda paths: scanned.append(paths) or real_scan(paths))
    tasks._stock_index_at.cache_clear()
    with pytest.raises(OellmError) as err:
        tasks.validate_tasks(["hellaswg", "arc_easy", "tiny_mc_a", "tiny_mc_c", "zzqqxx"], [str(tiny_tasks)])
    msg = str(err.value)
    assert msg.startswith("unknown task(s): hellaswg (did you mean hellaswag")
    listed = [part.split(" (")[0] for part in msg.split(": ", 1)[1].split("; see")[0].split(", ")]
    assert listed == ["hellaswg", "tiny_mc_c", "zzqqxx"]
    assert re.search(r"tiny_mc_c \(did you mean tiny_mc_[ab] or tiny_mc_[ab]\?\)", msg)
    assert "lm-eval ls tasks" in msg and "--lm_eval_include_path" in msg
    assert tasks.stock_tasks_dir() not in [p for paths in scanned for p in paths], "the warm stock index was rebuilt"
    tasks.validate_tasks(["hellaswag", "mmlu", "tiny_group"], [str(tiny_tasks)])  # all known: no error


@pytest.mark.e2e
def test_task_manager_indexes_only_the_needed_folders(
        stock_cache: dict, tiny_tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OELLM_CACHE_DIR", str(stock_cache["dir"]))
    full = stock_cache["index"]
    for names in (["hellaswag", "tiny_mc_a"], ["mmlu"], ["ai2_arc", "piqa"]):
        t0 = time.perf_counter()
        tm = task_manager_for(names, [str(tiny_tasks)])
        print(f"{names}: {time.perf_counter() - t0:.3f} s, {len(tm.task_index)} entries")
        assert len(tm.task_index) < 200, "the restricted TaskManager indexed far more than needed"
        needed, stack = set(), list(names)
        while stack:  # everything the names pull in through groups and tags
            n = stack.pop()
            if n in full and n not in needed:
                needed.add(n)
                stack.extend(full[n]["children"])
        for name in needed:
            entry = tm.task_index[name]
            assert (str(entry.yaml_path) if entry.yaml_path else None) == full[name]["yaml_path"], name
        assert str(tm.task_index["tiny_mc_a"].yaml_path) == str(tiny_tasks / "tiny_mc_a.yaml")
    assert len(needed) > 2  # ai2_arc pulled in arc_easy and arc_challenge


@pytest.mark.fast
def test_an_lm_eval_without_the_task_modules_is_one_clear_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval.tasks._index", None)  # as on lm-eval 0.4.9-0.4.11
    with pytest.raises(OellmError, match=r"oellm needs lm-eval >= 0\.4\.12"):
        tasks.validate_tasks(["my_task"], [str(tmp_path)])


@pytest.mark.fast
def test_include_dir_index_is_kept_until_a_task_file_changes(tiny_tasks: Path, cache: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated plan over unchanged include dirs reads the index from disk (building it imports lm-eval's
    task modules); an edited YAML is indexed again."""
    import shutil

    d = tmp_path / "tasks"
    shutil.copytree(tiny_tasks, d)
    scans = []
    real = tasks._scan
    monkeypatch.setattr(tasks, "_scan", lambda paths: scans.append(paths) or real(paths))
    for _ in range(2):
        tasks._include_index_of.cache_clear()  # a new process
        tasks.validate_tasks(["tiny_mc_a"], [str(d)])
    assert scans == [[d]]
    yaml = d / "tiny_mc_a.yaml"
    yaml.write_text(yaml.read_text().replace("task: tiny_mc_a", "task: tiny_mc_renamed"))
    tasks._include_index_of.cache_clear()
    with pytest.raises(OellmError, match="unknown task.*tiny_mc_a"):
        tasks.validate_tasks(["tiny_mc_a"], [str(d)])
    assert [p for p in scans if p == [d]] == [[d], [d]]  # (the stock index was also read, for the error's hints)
