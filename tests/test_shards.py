"""Data-parallel shards of one evaluation and their exact merge (real lm-eval on the tiny model, offline):
each shard builds every request (the unsharded few-shot contexts) but sends only its own documents to the
model; the last shard replays all responses through lm-eval, which scores them once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.errors import OellmError
from oellm.plan.packing import pack
from oellm.plan.request import Request
from oellm.rows import EvalRow
from oellm.rundir import read_jobs, write_jobs
from tests.fixtures_slurm import wait_for_jobs

GEN_TASK = """\
task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: bleu
    aggregation: bleu
    higher_is_better: true
metadata:
  version: 1.0
"""


def oellm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oellm", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def results(root: Path) -> dict[tuple[str, int], dict]:
    """(task, shots) -> lm-eval's `results` of every scored result file under `root` (shards have none)."""
    out = {}
    for p in root.glob("*/results/*.json"):
        data = json.loads(p.read_text())
        if data.get("results"):
            row = data["oellm"]["row"]
            assert (row["task"], row["n_shot"]) not in out, "an evaluation was scored twice"
            out[(row["task"], row["n_shot"])] = data["results"]
    return out


@pytest.mark.fast
def test_shard_rows_are_rows_of_their_own(tmp_path, tiny_model, tiny_tasks):
    whole = EvalRow(model=str(tiny_model), task="tiny_mc_a", n_shot=2)
    parts = whole.shards(3)
    assert [p.shard for p in parts] == [0, 1, 2] and len({p.row_id for p in parts} | {whole.row_id}) == 4
    assert {p.whole.row_id for p in parts} == {whole.row_id} and whole.shards(1) == [whole]
    other = EvalRow(model=str(tiny_model), task="tiny_mc_b", n_shot=2).shards(3)
    packed = pack([*parts, *other], evals_per_task=10)
    tasks = {(r.task, r.shard): r.task_index for r in packed}
    assert len({tasks[("tiny_mc_a", k)] for k in range(3)}) == 3  # the shards of one evaluation run in parallel
    assert tasks[("tiny_mc_a", 1)] == tasks[("tiny_mc_b", 1)]  # the k-th shards of one model share a task
    write_jobs(tmp_path / "jobs.csv", packed)
    assert read_jobs(tmp_path / "jobs.csv") == packed
    with pytest.raises(OellmError, match="--num_shards: must be >= 1"):
        Request(models=str(tiny_model), tasks="tiny_mc_a", num_shards=0).plan([str(tiny_tasks)])


@pytest.mark.e2e
def test_three_shards_merge_to_exactly_the_unsharded_result(tiny_model, tiny_tasks, tmp_path):
    """Every metric and stderr, a group's size-weighted mean, and a generate_until task scored with a
    corpus-level metric (bleu), at 0 and 2 shots."""
    data = tmp_path / "gen.jsonl"
    data.write_text("".join(json.dumps({"question": f"what is {i} plus {i}", "answer": f"{2 * i} apples"}) + "\n"
                            for i in range(10)))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_gen.yaml").write_text(GEN_TASK.format(data=data))
    common = ["--cluster", "local", "--models", str(tiny_model), "--tasks", "tiny_mc_a,tiny_group,tiny_gen",
              "--n_shot", "0,2", "--lm_eval_include_path", f"{tiny_tasks},{tasks}"]
    whole = oellm("schedule-eval", *common, "--output_dir", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    sharded = oellm("schedule-eval", *common, "--output_dir", str(tmp_path / "sharded"), "--num_shards", "3",
                    "--workers", "2")
    assert sharded.returncode == 0, sharded.stderr
    assert "finished: 18 of 18 row(s) done" in sharded.stdout
    want, got = results(tmp_path / "whole"), results(tmp_path / "sharded")
    assert len(want) == 6 and got == want  # bit for bit, stderr included
    assert any("bleu,none" in r["tiny_gen"] for r in got.values() if "tiny_gen" in r)
    assert "tiny_group" in got[("tiny_group", 2)]


@pytest.mark.e2e
def test_a_missing_shard_keeps_the_evaluation_incomplete_until_it_is_redone(tiny_model, tiny_tasks, tmp_path):
    args = ["schedule-eval", "--cluster", "local", "--models", str(tiny_model), "--tasks", "tiny_mc_a", "--n_shot",
            "2", "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / "runs"), "--num_shards", "3"]
    assert oellm(*args).returncode == 0
    [run] = list((tmp_path / "runs").iterdir())
    before = results(tmp_path / "runs")
    rows = read_jobs(run / "jobs.csv")
    lost = next(r for r in rows if r.shard == 1)
    (run / "results" / f"{lost.row_id}.json").unlink()
    (run / "results" / f"{rows[0].whole.row_id}.json").unlink()  # as if the merge never happened
    check = oellm("collect-results", str(run), "--check", "--format", "none")
    assert f"{lost.row_id}" in check.stdout and "1 planned evaluation(s) without a result" in check.stdout
    assert results(tmp_path / "runs") == {}  # two shards are not an evaluation
    from oellm.plan.expand import rows_from_csv

    again_rows = rows_from_csv(run / "missing.csv")  # the whole evaluation again, as its 3 shards
    assert {r.row_id for r in again_rows} == {r.row_id for r in rows}
    again = oellm(*args)
    assert again.returncode == 0, again.stderr
    assert "skipping 2 of 3 row(s) with results already under" in again.stdout  # only the lost shard runs
    assert results(tmp_path / "runs") == before
    # a complete set nobody merged (the merging worker crashed): collect-results merges it
    merged = next(p for p in (tmp_path / "runs").glob("*/results/*.json") if "merged_from" in p.read_text())
    merged.unlink()
    col = oellm("collect-results", ",".join(str(p) for p in (tmp_path / "runs").iterdir()), "--format", "none")
    assert col.returncode == 0 and "merged the shards of" in col.stderr, col.stderr
    assert results(tmp_path / "runs") == before


@pytest.mark.slurm
@pytest.mark.e2e
def test_shards_run_as_parallel_slurm_array_tasks_and_merge(slurm_cluster, container_shim, tiny_model, tiny_tasks,
                                                            tmp_path, no_job_left_behind):
    from tests.test_schedule_slurm import clusters_file

    r = oellm("schedule-eval", "--cluster", "testslurm", "--clusters_file", str(clusters_file(tmp_path, "debug")),
              "--models", str(tiny_model), "--tasks", "tiny_group", "--n_shot", "2", "--lm_eval_include_path",
              str(tiny_tasks), "--output_dir", str(tmp_path / "runs"), "--num_shards", "3")
    assert r.returncode == 0, r.stderr
    assert "-> 3 array task(s)" in r.stdout
    [run] = list((tmp_path / "runs").iterdir())
    jobs = [s["job_id"] for s in json.loads((run / "run.json").read_text())["submissions"]]
    assert set(wait_for_jobs(jobs, timeout=300).values()) == {"COMPLETED"}
    local = oellm("schedule-eval", "--cluster", "local", "--models", str(tiny_model), "--tasks", "tiny_group",
                  "--n_shot", "2", "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    assert results(tmp_path / "runs") == results(tmp_path / "local")


@pytest.mark.fast
def test_the_advisor_trades_wall_time_for_gpu_hours():
    from oellm.clusters import load_clusters
    from oellm.plan.advisor import History, choose, predict

    cluster = load_clusters()["leonardo"]
    rows = [EvalRow(model="org/m", task="big", n_shot=0)]
    hist = History({("big", 0): 3600.0}, overhead_s=600.0, measured=True, shard_fixed_s={("big", 0): 60.0})
    preds = {p.num_shards: p for p in predict(rows, cluster, hist, evals_per_task=10, parallel=100)}
    # one shard: 10 min start + 60 min work; 8 shards: 10 + 1 + 59/8 min each, all at once, then the merge
    # (no merge measured: it costs what every shard pays in full, 1 min)
    assert preds[1].wall_s == pytest.approx(4200) and preds[8].wall_s == pytest.approx(600 + 60 + 3540 / 8 + 60)
    assert preds[8].gpu_hours == pytest.approx((8 * (600 + 60 + 3540 / 8) + 60) / 3600)  # more GPU-h, less wall
    assert choose(list(preds.values()), "00:20:00").num_shards == 8  # the smallest K meeting the deadline
    assert choose(list(preds.values()), "00:30:00").num_shards == 4
    # the knee: 1 -> 2 -> 4 save more wall time (41%, 36%) than they add GPU-hours (17%, 27%); 8 does not
    assert choose(list(preds.values()), None).num_shards == 4
    with pytest.raises(OellmError, match="--deadline 00:05:00: no shard count meets it; the fastest is"):
        choose(list(preds.values()), "00:05:00")
    slow = predict(rows, cluster, hist, evals_per_task=10, parallel=2)
    assert {p.num_shards: p for p in slow}[8].wall_s > {p.num_shards: p for p in slow}[2].wall_s  # queue-bound


@pytest.mark.fast
def test_the_advisor_counts_one_worker_per_gpu_in_workers_mode():
    """A 4-GPU task in `gpu_mode workers` runs its rows on 4 workers: its time is the busiest worker's,
    and the GPU-hours are that time x 4, not 4 x every row's time (the review's W4 estimate)."""
    from dataclasses import replace

    from oellm.clusters import load_clusters
    from oellm.plan.advisor import History, predict

    base = load_clusters()["leonardo"]
    rows = [EvalRow(model="org/m", task=f"t{i}", n_shot=0) for i in range(8)]
    hist = History({(f"t{i}", 0): 600.0 for i in range(8)}, overhead_s=60.0, measured=True)
    one = {p.num_shards: p for p in predict(rows, replace(base, gpus_per_task=1), hist, 8, 100, (1,))}[1]
    four = {p.num_shards: p for p in predict(rows, replace(base, gpus_per_task=4, gpu_mode="workers"), hist, 8,
                                               100, (1,))}[1]
    spread = {p.num_shards: p for p in predict(rows, replace(base, gpus_per_task=4, gpu_mode="spread"), hist, 8,
                                                 100, (1,))}[1]
    assert one.wall_s == pytest.approx(60 + 8 * 600) and one.gpu_hours == pytest.approx((60 + 8 * 600) / 3600)
    assert four.wall_s == pytest.approx(60 + 2 * 600) and four.gpu_hours == pytest.approx(4 * (60 + 2 * 600) / 3600)
    assert spread.wall_s == pytest.approx(60 + 8 * 600) and spread.gpu_hours == pytest.approx(4 * one.gpu_hours)


@pytest.mark.fast
def test_the_advisor_fills_its_slots_as_one_task_at_a_time_would():
    """Runs of equal array tasks are added in whole rounds (a 100k-row sweep at 128 shards is 180k tasks): the
    longest slot is what placing each task, longest first, on the least loaded slot gives."""
    import heapq
    import random

    from oellm.plan.advisor import _longest_slot

    def one_at_a_time(tasks: list[tuple[float, int]], parallel: int) -> float:
        flat = sorted((t for t, c in tasks for _ in range(c)), reverse=True)
        slots = [0.0] * max(1, min(parallel, len(flat)))
        for t in flat:
            heapq.heapreplace(slots, slots[0] + t)
        return max(slots)

    rng = random.Random(7)
    for _ in range(500):
        tasks = [(rng.choice([60.0, 600.0, 90.5, rng.uniform(1, 900)]), rng.randint(1, 40))
                 for _ in range(rng.randint(1, 5))]
        parallel = rng.randint(1, 16)
        assert _longest_slot(tasks, parallel) == pytest.approx(one_at_a_time(tasks, parallel))


@pytest.mark.fast
def test_packing_keeps_each_rows_identity_and_id():
    rows = [EvalRow(model=f"org/m{i % 3}", task=f"t{i}", n_shot=i % 2, options='{"seed": 1}' if i % 4 else "")
            for i in range(40)]
    ids = {r.identity: r.row_id for r in rows}
    packed = pack(rows, 5)
    assert sorted(r.identity for r in packed) == sorted(ids) and {r.row_id for r in packed} == set(ids.values())
    fresh = [EvalRow(**{f: getattr(r, f) for f in r.__dataclass_fields__}) for r in packed]  # nothing cached
    assert [r.row_id for r in fresh] == [ids[r.identity] for r in packed] and fresh == packed
    assert len({r.task_index for r in packed}) == 9 and max(r.task_index for r in packed) == 8


@pytest.mark.e2e
def test_auto_shards_follow_history_and_status_compares(tiny_model, tiny_tasks, tmp_path):
    runs = str(tmp_path / "runs")
    common = ["schedule-eval", "--cluster", "local", "--models", str(tiny_model), "--tasks", "tiny_mc_a",
              "--lm_eval_include_path", str(tiny_tasks), "--output_dir", runs]
    dry = oellm(*common, "--n_shot", "0", "--num_shards", "auto", "--dry_run")
    assert dry.returncode == 0, dry.stderr
    assert "predicted from cluster minutes_per_eval (no history yet)" in dry.stdout and "<- chosen" in dry.stdout
    done = oellm(*common, "--n_shot", "1", "--num_shards", "auto", "--deadline", "01:00:00")
    assert done.returncode == 0, done.stderr
    run = max(Path(runs).iterdir())
    status = oellm("status", str(run))
    assert "prediction: 1 shard(s)" in status.stdout and "measured wall" in status.stdout, status.stdout
    later = oellm(*common, "--n_shot", "2", "--num_shards", "auto", "--dry_run")
    assert "predicted from measured under the output root" in later.stdout
    bad = oellm(*common, "--n_shot", "2", "--num_shards", "3", "--deadline", "01:00:00", "--dry_run")
    assert bad.returncode == 2 and "--deadline: give it with --num_shards auto" in bad.stderr


@pytest.mark.fast
def test_an_eval_csv_may_name_the_suite_and_the_shards(tmp_path, tiny_model):
    from oellm.plan.expand import rows_from_csv

    csv_path = tmp_path / "evals.csv"
    csv_path.write_text(f"model_path,task_path,n_shot,eval_suite,num_shards\n{tiny_model},tiny_mc_a,0,lm-eval-harness,2\n"
                        f"{tiny_model},tiny_mc_b,0,,\n")
    rows = rows_from_csv(csv_path)
    assert [(r.task, r.shard, r.num_shards, r.suite) for r in rows] == [
        ("tiny_mc_a", 0, 2, "lm_eval"), ("tiny_mc_a", 1, 2, "lm_eval"), ("tiny_mc_b", None, None, "lm_eval")]
    csv_path.write_text(f"model_path,task_path,n_shot,num_shards\n{tiny_model},tiny_mc_a,0,0\n")
    with pytest.raises(OellmError, match="line 2: num_shards '0': must be an integer >= 1"):
        rows_from_csv(csv_path)
