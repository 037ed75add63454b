"""Pre-cache and offline check against a local Hub server, with the real huggingface_hub and datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from oellm.cache.precache import precache
from oellm.cache.preflight import prove
from oellm.clusters import load_clusters
from oellm.errors import OellmError
from oellm.rows import EvalRow
from tests.fixtures_hub import OFFLINE_FLAGS, Hub, write_hub_task
from tests.fixtures_models import make_run_dir

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


def check_cache(*args) -> list[str]:
    """What a worker would miss (no proof remembered from an earlier test)."""
    return prove(*args, remember=False).missing


@pytest.fixture
def local():
    return load_clusters()["local"]


@pytest.fixture
def hub_tasks(tmp_path: Path) -> Path:
    return write_hub_task(tmp_path / "tasks", "hub_mc", "org/tinyds")


def row(model: str, task: str = "hub_mc", model_args: str = "") -> EvalRow:
    return EvalRow(model=model, task=task, n_shot=0, model_args=model_args, limit=2)


def snapshot_files(hub: Hub, commit: str) -> set[str]:
    return {p.name for p in (hub.home / "hub" / "models--org--tiny" / "snapshots" / commit).iterdir()}


def go_offline(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.server.stop()
    for flag in OFFLINE_FLAGS:
        monkeypatch.setenv(flag, "1")


def test_precache_then_everything_loads_offline(hub: Hub, hub_tasks: Path, local, monkeypatch, tmp_path):
    rows = [row("org/tiny")]
    logs: list[str] = []
    revisions = precache(rows, local, [str(hub_tasks)], log=logs.append)
    assert revisions == {"org/tiny": hub.tiny_v1}
    # only config, tokenizer and safetensors weights: not the .bin or .msgpack decoys
    assert snapshot_files(hub, hub.tiny_v1) == {"config.json", "generation_config.json", "model.safetensors",
                                                "tokenizer.json", "tokenizer_config.json"}
    assert hub.count("GET", "pytorch_model.bin") == 0 and hub.count("GET", "msgpack") == 0
    assert "fetched" in logs[-1] and "dataset org/tinyds" in logs[-1]
    go_offline(hub, monkeypatch)
    assert check_cache(rows, local, [str(hub_tasks)], revisions) == []
    code = ("import datasets, transformers as t\n"
            f"t.AutoModelForCausalLM.from_pretrained('org/tiny', revision='{hub.tiny_v1}')\n"
            "t.AutoTokenizer.from_pretrained('org/tiny')\n"
            "print(len(datasets.load_dataset('org/tinyds')['test']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("12")
    # and the worker evaluates it offline, pinned to the recorded commit
    run = make_run_dir(tmp_path, rows, include_paths=[str(hub_tasks)], model_revisions=revisions)
    w = subprocess.run([sys.executable, "-m", "oellm", "worker", "--run_dir", str(run.path), "--index", "0"],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=600)
    assert w.returncode == 0, w.stderr[-3000:]
    assert list(run.results.glob("*.json"))


def test_second_precache_of_pinned_cache_makes_no_request(hub: Hub, hub_tasks: Path, local):
    rows = [row("org/tiny", model_args=f"revision={hub.tiny_v1}")]
    precache(rows, local, [str(hub_tasks)], log=lambda s: None)
    hub.server.reset_counts()
    logs: list[str] = []
    assert precache(rows, local, [str(hub_tasks)], log=logs.append) == {}
    assert hub.server.requests == []
    assert "2 already there" in logs[-1]


def test_branch_and_tag_resolve_to_commit_and_are_recorded(hub: Hub, hub_tasks: Path, local):
    new = hub.add_repo("org/tiny", hub.server.repos[("model", "org/tiny")].commits[hub.tiny_v1], refs=("main",))
    assert new != hub.tiny_v1
    revisions = precache([row("org/tiny"), row("org/tiny", model_args="revision=v1")], local,
                         [str(hub_tasks)], log=lambda s: None)
    assert revisions == {"org/tiny": new, "org/tiny@v1": hub.tiny_v1}
    assert (hub.home / "hub" / "models--org--tiny" / "refs" / "v1").read_text() == hub.tiny_v1


def test_pinned_rows_evaluate_their_commit_on_the_offline_node(hub: Hub, hub_tasks: Path, local, monkeypatch,
                                                              tmp_path):
    """A row pinned to a tag or a commit loads exactly that commit offline, although main has moved on and
    the cache holds no refs/main (the pre-cache never fetched main for such rows)."""
    new = hub.add_repo("org/tiny", hub.server.repos[("model", "org/tiny")].commits[hub.tiny_v1], refs=("main",))
    rows = [row("org/tiny", model_args="revision=v1"), row("org/tiny", model_args=f"revision={hub.tiny_v1}")]
    revisions = precache(rows, local, [str(hub_tasks)], log=lambda s: None)
    assert revisions == {"org/tiny@v1": hub.tiny_v1}
    assert not (hub.home / "hub" / "models--org--tiny" / "refs" / "main").exists()
    go_offline(hub, monkeypatch)
    run = make_run_dir(tmp_path, rows, include_paths=[str(hub_tasks)], model_revisions=revisions)
    w = subprocess.run([sys.executable, "-m", "oellm", "worker", "--run_dir", str(run.path), "--index", "0"],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=600)
    assert w.returncode == 0, w.stderr[-3000:]
    for r in rows:
        prov = json.loads(run.result_path(r.row_id).read_text())["oellm"]
        assert prov["model_revision"] == hub.tiny_v1 != new


def test_hf_hub_offline_on_the_login_node_is_honoured(hub: Hub, hub_tasks: Path, local, monkeypatch, tmp_path):
    """After --download_only elsewhere, or on an offline login node: branches resolve from the cache, nothing
    is fetched, the offline proof passes; what is not cached is named with the flag that stops the fetch."""
    rows = [row("org/tiny"), row("org/tiny", model_args="revision=v1")]
    online = precache(rows, local, [str(hub_tasks)], log=lambda s: None)
    go_offline(hub, monkeypatch)  # the server is gone: any request would fail
    logs: list[str] = []
    assert precache(rows, local, [str(hub_tasks)], log=logs.append) == online == {"org/tiny": hub.tiny_v1,
                                                                                   "org/tiny@v1": hub.tiny_v1}
    assert "HF_HUB_OFFLINE is set" in logs[0] and check_cache(rows, local, [str(hub_tasks)], online) == []
    with pytest.raises(OellmError, match=r"model org/other@main: not in the cache, and HF_HUB_OFFLINE is set"):
        precache([row("org/other")], local, [str(hub_tasks)], log=lambda s: None)


def test_revision_that_does_not_exist_is_one_line_error(hub: Hub, hub_tasks: Path, local):
    with pytest.raises(OellmError) as e:
        precache([row("org/tiny", model_args="revision=nope")], local, [str(hub_tasks)], log=lambda s: None)
    msg = str(e.value)
    assert "\n" not in msg and "org/tiny@nope" in msg and "does not exist" in msg


def test_gated_model_says_how_to_log_in(hub: Hub, hub_tasks: Path, local, hub_model_files):
    hub.add_repo("org/gated", hub_model_files, gated=True)
    with pytest.raises(OellmError, match=r"huggingface-cli login.*HF_TOKEN"):
        precache([row("org/gated")], local, [str(hub_tasks)], log=lambda s: None)


def test_missing_dataset_names_task_and_dataset(hub: Hub, tmp_path: Path, local):
    tasks = write_hub_task(tmp_path / "t2", "lost_task", "org/no_such_dataset")
    with pytest.raises(OellmError) as e:
        precache([row("org/tiny", task="lost_task")], local, [str(tasks)], log=lambda s: None)
    msg = str(e.value)
    assert "\n" not in msg and "task lost_task: dataset org/no_such_dataset" in msg


def test_killed_mid_download_retries_and_leaves_no_corrupt_file(hub: Hub, hub_tasks: Path, local,
                                                                 hub_model_files):
    hub.kill_downloads(100)  # every body cut: the pre-cache fails, nothing half-written is published
    with pytest.raises(OellmError, match="download failed"):
        precache([row("org/tiny")], local, [str(hub_tasks)], log=lambda s: None)
    snap = hub.home / "hub" / "models--org--tiny" / "snapshots" / hub.tiny_v1
    for f in snap.iterdir() if snap.exists() else []:
        assert f.read_bytes() == hub_model_files[f.name], f"{f.name} corrupt"
    hub.kill_downloads(1)  # one more cut, then the server is healthy: the built-in retry completes
    precache([row("org/tiny")], local, [str(hub_tasks)], log=lambda s: None)
    for f in snap.iterdir():
        assert f.read_bytes() == hub_model_files[f.name]
    assert not list((hub.home / "hub" / "models--org--tiny" / "blobs").glob("*.incomplete"))


def test_two_concurrent_precaches_one_copy_both_succeed(hub: Hub, hub_tasks: Path, local):
    errors: list[BaseException] = []

    def one() -> None:
        try:
            precache([row("org/tiny")], local, [str(hub_tasks)], log=lambda s: None)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    blobs = list((hub.home / "hub" / "models--org--tiny" / "blobs").iterdir())
    assert len(blobs) == 5 and not [b for b in blobs if b.name.endswith(".incomplete")]
    assert hub.count("GET", "model.safetensors") <= 2  # each process may fetch; the cache holds one copy


def test_check_cache_lists_each_missing_item(hub: Hub, hub_tasks: Path, local, monkeypatch):
    go_offline(hub, monkeypatch)
    missing = check_cache([row("org/tiny")], local, [str(hub_tasks)])
    assert len(missing) == 2
    assert missing[0].startswith("model org/tiny") and "dataset org/tinyds" in missing[1]


def test_local_model_dir_is_verified_not_copied(hub: Hub, hub_tasks: Path, local, tiny_model, tmp_path):
    logs: list[str] = []
    precache([row(str(tiny_model))], local, [str(hub_tasks)], log=logs.append)
    assert not (hub.home / "hub").exists() or not list((hub.home / "hub").glob("models--*"))
    empty = tmp_path / "empty_model"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({}))
    with pytest.raises(OellmError, match="no weights"):
        precache([row(str(empty))], local, [str(hub_tasks)], log=lambda s: None)


def schedule_cli(tmp_path: Path, tasks: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models", "org/tiny",
            "--n_shot", "0", "--limit", "2", "--lm_eval_include_path", str(tasks),
            "--output_dir", str(tmp_path / "runs"), *extra]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=600)


def test_schedule_precaches_records_commit_then_runs_offline_worker(hub: Hub, hub_tasks: Path, tmp_path):
    only = schedule_cli(tmp_path, hub_tasks, "--tasks", "hub_mc", "--download_only")
    assert only.returncode == 0, only.stderr[-2000:]
    assert "1 fetched" in only.stdout or "2 fetched" in only.stdout
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())  # no run dir
    p = schedule_cli(tmp_path, hub_tasks, "--tasks", "hub_mc")
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = (tmp_path / "runs").glob("2*")
    assert json.loads((run / "run.json").read_text())["model_revisions"] == {"org/tiny": hub.tiny_v1}
    assert "finished: 1 of 1 row(s) done" in p.stdout


def test_schedule_refuses_and_submits_nothing_when_a_dataset_is_missing(hub: Hub, tmp_path):
    tasks = write_hub_task(tmp_path / "t3", "lost_task", "org/no_such_dataset")
    p = schedule_cli(tmp_path, tasks, "--tasks", "lost_task")
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()[-1]
    assert "lost_task" in err and "org/no_such_dataset" in err and "Traceback" not in p.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("2*"))


def test_check_cache_cmd_reports_offline_gaps(hub: Hub, hub_tasks: Path, local, monkeypatch):
    from oellm.cli.commands import check_cache as check_cache_command
    from oellm.plan.request import Selection

    precache([row("org/tiny")], local, [str(hub_tasks)], log=lambda s: None)
    go_offline(hub, monkeypatch)
    check_cache_command(Selection(models="org/tiny", tasks="hub_mc", lm_eval_include_path=str(hub_tasks), cluster="local"))
    with pytest.raises(OellmError, match=r"1 problem\(s\) the workers would hit offline.*org/tiny@nope: not in the offline cache"):
        check_cache_command(Selection(models="org/tiny,revision=nope", tasks="hub_mc",
                                      lm_eval_include_path=str(hub_tasks), cluster="local"))


def test_leftovers_of_a_killed_precache_are_cleaned_up(hub: Hub, hub_tasks: Path, local, hub_model_files):
    """A SIGKILLed download leaves a partial `*.incomplete` and a lock file; the next run still completes,
    removes the old partial file and keeps a fresh one (another pre-cache may be writing it)."""
    from tests.hub_server import _oid

    data = hub_model_files["model.safetensors"]
    repo = hub.home / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    stale, fresh = (repo / "blobs" / f"{_oid(data)}.{tag}.incomplete" for tag in ("deadbeef", "0fresh00"))
    for f in (stale, fresh):
        f.write_bytes(data[: len(data) // 3])
    os.utime(stale, (0, 1_000_000_000))
    lock = hub.home / "hub" / ".locks" / "models--org--tiny" / f"{_oid(data)}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    precache([row("org/tiny")], local, [str(hub_tasks)], log=lambda s: None)
    assert (repo / "snapshots" / hub.tiny_v1 / "model.safetensors").read_bytes() == data
    assert not stale.exists() and fresh.exists()


def test_group_resolves_to_leaf_datasets_each_once(tiny_tasks: Path, tmp_path: Path):
    from oellm.cache.precache import wanted
    from oellm.suites.lm_eval_needs import task_datasets

    ds = task_datasets(["tiny_group"], [str(tiny_tasks)])
    assert sorted(ds) == ["tiny_mc_a", "tiny_mc_b"]
    assert ds["tiny_mc_a"]["dataset_path"] == "json" and ds["tiny_mc_a"]["dataset_kwargs"]["data_files"]["test"]
    tasks = write_hub_task(tmp_path / "t", "hub_a", "org/tinyds")
    write_hub_task(tasks, "hub_b", "org/tinyds")
    _, _, items, opaque = wanted([row("org/tiny", task="hub_a"), row("org/tiny", task="hub_b")], [str(tasks)])
    assert [(i["path"], i["tasks"]) for i in items] == [("org/tinyds", ["hub_a", "hub_b"])] and opaque == []


def test_tasks_that_build_their_own_data_are_named(hub: Hub, hub_tasks: Path, local):
    (hub_tasks / "own_data.yaml").write_text((hub_tasks / "hub_mc.yaml").read_text().replace(
        "task: hub_mc", "task: own_data").replace("dataset_path: org/tinyds", "custom_dataset: !function x.make"))
    said: list[str] = []
    precache([row("org/tiny", task="own_data"), row("org/tiny")], local, [str(hub_tasks)], log=said.append)
    assert said[0] == "note: 1 task(s) load their data with their own code (a Python task class or " \
        "custom_dataset), which the pre-cache cannot see: own_data; it must not need the network (the workers " \
        "run offline)", said


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_an_unreachable_hub_fails_fast_with_one_line(hub: Hub, hub_tasks: Path, local, monkeypatch, kind):
    """Without the probe, huggingface_hub and datasets retry each item with backoff: 76 s for one model and
    one dataset when DNS fails, minutes when packets are dropped."""
    import socket
    import time

    with socket.socket() as sock:  # "silent": accepts connections, never answers (a firewall that drops)
        sock.bind(("127.0.0.1", 0))
        if kind == "silent":
            sock.listen(8)
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        t0 = time.monotonic()
        with pytest.raises(OellmError) as e:
            precache([row("org/tiny")], local, [str(hub_tasks)], log=lambda s: None)
        took = time.monotonic() - t0
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"cannot reach the Hub at {endpoint} ")
    assert "(1 model(s) and 1 dataset(s) to fetch; nothing was downloaded)" in msg, msg
    assert ("timed out" in msg) == (kind == "silent") and took < 60, (msg, took)
    assert not (hub.home / "hub" / "models--org--tiny").exists()
