"""`oellm schedule-eval` against the real local SLURM cluster, as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oellm import slurm
from tests.fixtures_slurm import image_dirs, shim_calls, wait_for_jobs, write_image


def clusters_file(tmp_path: Path, partition: str, **over) -> Path:
    """A site whose workers run in the test image (tests/shim/singularity): only derived binds, CPU torch."""
    image = write_image(tmp_path / "eval.sif")
    entry = {"partition": partition, "account": None, "gpus_per_task": 0, "cpus_per_task": 1, "mem": "400M",
             "minutes_per_eval": 1, "max_time": "00:30:00", "queue_limit": 100, "max_array_size": 1000,
             "max_running": 2, "container": {"runtime": "singularity", "image": str(image), "gpu_flag": None,
                                             "binds": [], "python": "python3"}}
    entry.update(over)
    path = tmp_path / "clusters.json"
    path.write_text(json.dumps({"testslurm": entry}))
    return path


def oellm(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oellm", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def the_run(root: Path) -> Path:
    runs = [p for p in root.iterdir()]
    assert len(runs) == 1, runs
    return runs[0]


def metrics(run: Path) -> dict[str, dict]:
    out = {}
    for p in (run / "results").glob("*.json"):
        res = json.loads(p.read_text())["results"]
        out[p.stem] = {task: {k: v for k, v in m.items() if k != "alias"} for task, m in res.items()}
    return out


@pytest.mark.slurm
@pytest.mark.e2e
def test_local_and_slurm_runs_give_the_same_results(slurm_cluster, container_shim, tiny_model, tiny_tasks, tmp_path):
    common = ["--models", str(tiny_model), "--tasks", "tiny_mc_a,tiny_group", "--n_shot", "0,2", "--limit", "8",
              "--lm_eval_include_path", str(tiny_tasks)]
    local = oellm("schedule-eval", "--cluster", "local", "--output_dir", str(tmp_path / "local"), *common)
    assert local.returncode == 0, local.stderr
    # the login shell's PYTHONPATH (on HOME, which the runtime binds) would break any python that sees it
    # without this marker, which only the login node has: it must not leak into the container
    home, marker = tmp_path / "home", tmp_path / "login-only"
    (home / "pylib").mkdir(parents=True)
    marker.touch()
    (home / "pylib" / "sitecustomize.py").write_text(
        f"import os\nif not os.path.exists({str(marker)!r}):\n    raise SystemExit('login PYTHONPATH leaked')\n")
    sub = oellm("schedule-eval", "--cluster", "testslurm", "--output_dir", str(tmp_path / "slurm"), "--evals_per_task",
                "2", "--clusters_file", str(clusters_file(tmp_path, slurm_cluster.partition)), *common,
                env={"HOME": str(home), "PYTHONPATH": str(home / "pylib"), "VIRTUAL_ENV": str(home)})
    assert sub.returncode == 0, sub.stderr
    run = the_run(tmp_path / "slurm")
    jobs = [s["job_id"] for s in json.loads((run / "run.json").read_text())["submissions"]]
    states = wait_for_jobs(jobs, timeout=240)
    assert set(states.values()) == {"COMPLETED"}, states

    got, want = metrics(run), metrics(the_run(tmp_path / "local"))
    assert len(want) == 4 and got == want
    assert any("acc_norm,none" in m for r in got.values() for m in r.values())
    preflight, *workers = shim_calls(container_shim)
    image = str(tmp_path / "eval.sif")
    assert preflight[preflight.index(image) + 1:] == ["python3", "-m", "oellm.cache.fetch", "-", "-"]
    assert len(workers) == 2 and all(c[:3] == ["singularity", "exec", "--cleanenv"] for c in workers)
    for call in (preflight, *workers):  # the same boundary: binds derived from what the worker opens
        binds = [call[i + 1] for i, a in enumerate(call) if a == "--bind"]
        assert str(tmp_path / "slurm") in binds and str(tiny_model) in binds and str(tiny_tasks) in binds
    assert "--env" in workers[0] and "PYTHONNOUSERSITE=1" in workers[0]


@pytest.mark.slurm
@pytest.mark.e2e
def test_checkpoints_chunked_over_max_array_size_logs_in_run_dir(slurm_cluster, container_shim, tiny_model,
                                                                   tiny_tasks, tmp_path):
    run7 = tmp_path / "run7"
    n = slurm_cluster.max_array_size + 1  # one more array task than SLURM allows in one array
    for step in range(1, n + 1):
        (run7 / f"checkpoint-{step * 100}").mkdir(parents=True)
        for f in tiny_model.iterdir():
            (run7 / f"checkpoint-{step * 100}" / f.name).symlink_to(f)
    r = oellm("schedule-eval", "--cluster", "testslurm", "--models", str(run7), "--tasks", "tiny_mc_a",
              "--n_shot", "0", "--limit", "2", "--evals_per_task", "1", "--lm_eval_include_path", str(tiny_tasks),
              "--output_dir", str(tmp_path / "runs"), "--clusters_file", str(clusters_file(tmp_path, "debug")))
    assert r.returncode == 0, r.stderr
    run = the_run(tmp_path / "runs")
    subs = json.loads((run / "run.json").read_text())["submissions"]
    assert [(s["offset"], s["array"]) for s in subs] == [(0, f"0-{n - 2}%2"), (n - 1, "0-0%1")]
    states = wait_for_jobs([s["job_id"] for s in subs], timeout=300)
    assert len(states) == n and set(states.values()) == {"COMPLETED"}, states
    logs = {p.name for p in (run / "slurm_logs").iterdir()}
    assert {f"{s['job_id']}_{i}.out" for s in subs for i in range(s["size"])} <= logs
    steps = sorted(json.loads(p.read_text())["oellm"]["row"]["step"] for p in (run / "results").glob("*.json"))
    assert steps == [step * 100 for step in range(1, n + 1)]


@pytest.mark.slurm
def test_queue_limit_holds_tasks_back_and_says_so(slurm_cluster, tiny_model, tiny_tasks, tmp_path):
    queued = slurm.queued_jobs()
    limit = queued + 5
    cfile = clusters_file(tmp_path, "debug", queue_limit=limit, container=None,
                          sbatch_options={"begin": "now+1hour"})  # stays pending: we only count
    r = oellm("schedule-eval", "--cluster", "testslurm", "--models", str(tiny_model), "--tasks", "tiny_mc_a,tiny_mc_b",
              "--n_shot", "0,1,2,3", "--evals_per_task", "1", "--lm_eval_include_path", str(tiny_tasks),
              "--output_dir", str(tmp_path / "runs"), "--clusters_file", str(cfile))
    assert r.returncode == 0, r.stderr
    run = the_run(tmp_path / "runs")
    subs = json.loads((run / "run.json").read_text())["submissions"]
    try:
        assert sum(s["size"] for s in subs) == 5
        assert "3 of 8 array task(s) not submitted yet" in r.stdout
        assert slurm.queued_jobs() == limit
    finally:
        slurm.cancel([s["job_id"] for s in subs])


@pytest.mark.slurm
@pytest.mark.parametrize("case", ["bad_partition", "no_sbatch", "slurm_down"])
def test_slurm_refusals_are_one_line_and_leave_no_run(case, slurm_cluster, tiny_model, tiny_tasks, tmp_path, request):
    env, partition, words = {}, "debug", ""
    if case == "bad_partition":
        partition, words = "nope", "Invalid partition name specified"
    elif case == "no_sbatch":
        env, words = {"PATH": str(Path(sys.executable).parent)}, "not found on PATH"
    else:
        request.getfixturevalue("slurm_down")
        words = "Unable to contact slurm controller"
    t0 = time.monotonic()
    r = oellm("schedule-eval", "--cluster", "testslurm", "--models", str(tiny_model), "--tasks", "tiny_mc_a",
              "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / "runs"),
              "--clusters_file", str(clusters_file(tmp_path, partition, container=None)), env=env)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and time.monotonic() - t0 < 120
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


@pytest.mark.slurm
@pytest.mark.e2e
def test_preflight_is_remembered_and_a_bad_image_submits_nothing(slurm_cluster, container_shim, tiny_model,
                                                                  tiny_tasks, tmp_path, no_job_left_behind):
    cfile = clusters_file(tmp_path, "debug", sbatch_options={"begin": "now+1hour"})  # pending: we only count
    args = ["schedule-eval", "--cluster", "testslurm", "--clusters_file", str(cfile), "--models", str(tiny_model),
            "--tasks", "tiny_mc_a", "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / "runs")]
    first = oellm(*args)
    assert first.returncode == 0, first.stderr
    assert "item(s) load offline through singularity exec" in first.stdout
    assert len(shim_calls(container_shim)) == 1
    again = oellm(*args, "--force")
    assert again.returncode == 0, again.stderr
    assert "proven earlier through singularity exec" in again.stdout
    assert len(shim_calls(container_shim)) == 1  # the same image, binds and items: no second container start
    runs = sorted((tmp_path / "runs").iterdir())
    manifest = json.loads((runs[-1] / "run.json").read_text())
    assert manifest["worker_versions"]["oellm"] and manifest["worker_versions"]["torch_build"] == "cpu"
    assert str(tiny_model) in manifest["binds"] and manifest["login_versions"]["lm_eval"]

    old = tmp_path / "old"
    (old / "lm_eval-0.4.9.dist-info").mkdir(parents=True)
    (old / "lm_eval-0.4.9.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: lm_eval\nVersion: 0.4.9\n")
    write_image(tmp_path / "eval.sif", dirs=[*image_dirs(), str(old)], env={"PYTHONPATH": str(old)})
    bad = oellm(*args, "--force")
    assert bad.returncode == 2 and "has lm-eval 0.4.9; oellm needs lm-eval >= 0.4.12" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and sorted((tmp_path / "runs").iterdir()) == runs
    skipped = oellm(*args, "--force", "--no_preflight")
    assert skipped.returncode == 0 and "preflight:" not in skipped.stdout, skipped.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 3


@pytest.mark.slurm
@pytest.mark.e2e
def test_every_gpu_a_task_books_runs_a_worker_on_slurm(slurm_cluster, container_shim, tiny_model, tiny_tasks,
                                                        tmp_path):
    """W4 on the real cluster: the task's node sets CUDA_VISIBLE_DEVICES=0,1 (faked: sbatch passes the
    submitting shell's, as a --gres=gpu:2 node would set it); inside the container the task runs two workers,
    each with its own device and half the rows."""
    r = oellm("schedule-eval", "--cluster", "testslurm", "--models", str(tiny_model), "--tasks", "tiny_mc_a,tiny_mc_b",
              "--n_shot", "0,1", "--limit", "4", "--lm_eval_include_path", str(tiny_tasks), "--output_dir",
              str(tmp_path / "runs"), "--clusters_file", str(clusters_file(tmp_path, slurm_cluster.partition)),
              env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert r.returncode == 0, r.stderr
    run = the_run(tmp_path / "runs")
    subs = json.loads((run / "run.json").read_text())["submissions"]
    assert set(wait_for_jobs([s["job_id"] for s in subs], timeout=300).values()) == {"COMPLETED"}
    docs = [json.loads(p.read_text())["oellm"] for p in (run / "results").glob("*.json")]
    pids = sorted({d["model_load"]["pid"] for d in docs})
    assert len(docs) == 4 and len(pids) == 2 and all(d["array_task_id"] == 0 for d in docs)
    assert "2 workers, one per GPU (CUDA_VISIBLE_DEVICES=0,1)" in (run / "slurm_logs" / f"{subs[0]['job_id']}_0.err").read_text()


@pytest.mark.slurm
@pytest.mark.e2e
def test_a_copied_run_dir_resubmits_into_itself_never_the_original(slurm_cluster, container_shim, tiny_model,
                                                                    tmp_path):
    """C7: a run dir copied to another root (scratch -> project space) resubmits its failed row into the copy:
    the script is rendered for the copy and the container binds the copy's root, not the original's."""
    import shutil

    from tests.fixtures_models import build_tiny_tasks

    tasks = build_tiny_tasks(tmp_path / "tasks")
    cfile = clusters_file(tmp_path, slurm_cluster.partition)
    r = oellm("schedule-eval", "--cluster", "testslurm", "--models", str(tiny_model), "--tasks",
              "tiny_mc_a,tiny_raises", "--limit", "4", "--lm_eval_include_path", str(tasks), "--output_dir",
              str(tmp_path / "scratch"), "--clusters_file", str(cfile))
    assert r.returncode == 0, r.stderr
    original = the_run(tmp_path / "scratch")
    subs = json.loads((original / "run.json").read_text())["submissions"]
    wait_for_jobs([s["job_id"] for s in subs], timeout=240)
    copy = tmp_path / "project" / original.name
    shutil.copytree(original, copy)
    before = sorted(p.name for p in (original / "results").iterdir())
    (tasks / "utils.py").write_text((tasks / "utils.py").read_text().replace(
        'raise ValueError("tiny_raises: deliberate failure")', "return dataset"))
    again = oellm("resubmit", str(copy))
    assert again.returncode == 0 and f"its script now names {copy}" in again.stdout, again.stderr
    new = [s["job_id"] for s in json.loads((copy / "run.json").read_text())["submissions"]][len(subs):]
    assert set(wait_for_jobs(new, timeout=240).values()) == {"COMPLETED"}
    assert len(list((copy / "results").glob("*.json"))) == 2
    assert sorted(p.name for p in (original / "results").iterdir()) == before  # nothing written there
    call = shim_calls(container_shim)[-1]
    binds = [call[i + 1] for i, a in enumerate(call) if a == "--bind"]
    assert str(copy.parent) in binds and str(original.parent) not in binds
    status = oellm("status", str(copy), "--json")
    assert json.loads(status.stdout)["counts"]["done"] == 2, status.stdout


@pytest.mark.slurm
def test_each_chunk_asks_for_the_time_of_its_own_tasks(slurm_cluster, tiny_model, tiny_tasks, tmp_path):
    """U1 on the real cluster: a task of 3 rows and a task of 1 row get SLURM time limits of their own."""
    other = tmp_path / "other"
    other.mkdir()
    for f in tiny_model.iterdir():
        (other / f.name).symlink_to(f)
    cfile = clusters_file(tmp_path, "debug", container=None, minutes_per_eval=10, max_time="10:00:00",
                          sbatch_options={"begin": "now+1hour"})  # stays pending: we only read its limits
    r = oellm("schedule-eval", "--cluster", "testslurm", "--models", f"{tiny_model},{other}", "--tasks",
              "tiny_mc_a,tiny_mc_b,tiny_group", "--n_shot", "0", "--evals_per_task", "3", "--lm_eval_include_path",
              str(tiny_tasks), "--output_dir", str(tmp_path / "runs"), "--clusters_file", str(cfile), "--no_preflight")
    assert r.returncode == 0, r.stderr
    subs = json.loads((the_run(tmp_path / "runs") / "run.json").read_text())["submissions"]
    try:
        assert [(s["offset"], s["size"], s.get("options")) for s in subs] == [(0, 2, None)]  # both tasks: 3 rows
        assert "time:      00:50:00 limit per array task" in r.stdout
    finally:
        slurm.cancel([s["job_id"] for s in subs])
    r = oellm("schedule-eval", "--cluster", "testslurm", "--models", f"{tiny_model},{other}", "--tasks",
              "tiny_mc_a,tiny_mc_b,tiny_group", "--n_shot", "0", "--evals_per_task", "2", "--lm_eval_include_path",
              str(tiny_tasks), "--output_dir", str(tmp_path / "runs2"), "--clusters_file", str(cfile), "--no_preflight")
    assert r.returncode == 0, r.stderr
    subs = json.loads((the_run(tmp_path / "runs2") / "run.json").read_text())["submissions"]
    try:
        limits = subprocess.run(["squeue", "--noheader", "--array", "--format=%i %l", "-j",
                                 ",".join(s["job_id"] for s in subs)], capture_output=True, text=True, check=True)
        got = sorted(line.split()[1] for line in limits.stdout.splitlines())
        assert got == ["20:00", "20:00", "35:00", "35:00"], limits.stdout  # 2 rows: 35 min; 1 row: 20 min
    finally:
        slurm.cancel([s["job_id"] for s in subs])


@pytest.mark.slurm
def test_sbatch_reads_the_quoted_nodelist_and_several_nodes_are_noted_before_sbatch_refuses(slurm_cluster, tiny_model,
                                                                                            tmp_path):
    """Option values are shell-quoted in `#SBATCH` lines (`--nodelist='node[2-2]'`), and sbatch strips the quotes
    as a shell would. A nodelist of several nodes on a one-node array task is refused by SLURM; the dry run
    says so first (oellm-eval's UFAL entry lists 16 nodes with NODES 1)."""
    clusters = clusters_file(tmp_path, slurm_cluster.partition)
    for nodelist, one in (("node[2-2]", True), ("node[1-2]", False)):
        out = tmp_path / nodelist
        r = oellm("schedule-eval", "--models", str(tiny_model), "--tasks", "hellaswag", "--n_shot", "0", "--dry_run",
                  "--cluster", "testslurm", "--clusters_file", str(clusters), "--no_precache", "--output_dir",
                  str(out), "--sbatch_option", f"nodelist={nodelist}")
        assert r.returncode == 0, r.stderr
        assert ("2 nodes" in r.stdout and "--nodelist" in r.stdout) is not one, r.stdout
        script = the_run(out) / "submit_evals.sbatch"
        assert f"#SBATCH --nodelist='{nodelist}'" in script.read_text()
        test = subprocess.run(["sbatch", "--test-only", str(script), "0"], capture_output=True, text=True, timeout=60)
        if one:
            assert test.returncode == 0 and "node2" in test.stderr, test.stderr
        else:
            assert test.returncode != 0 and "invalid number of nodes" in test.stderr, test.stderr
