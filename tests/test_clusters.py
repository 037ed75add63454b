"""clusters.json: validation naming the bad field, user overrides, detection by hostname."""

import dataclasses
import json

import pytest

from oellm.clusters import detect_cluster, load_clusters, require_resolved
from oellm.errors import OellmError
from oellm.plan import packing as arrays
from oellm.rows import EvalRow

pytestmark = pytest.mark.fast


def user_file(tmp_path, data):
    p = tmp_path / "my-clusters.json"
    p.write_text(json.dumps(data))
    return p


def test_shipped_clusters_load():
    c = load_clusters()
    assert {"leonardo", "lumi", "jureca", "jupiter", "snellius", "local"} <= set(c)
    assert c["lumi"].container.gpu_flag == "--rocm" and c["leonardo"].container.gpu_flag == "--nv"


@pytest.mark.parametrize("host, name", [("login01.leonardo.local", "leonardo"), ("uan03", "lumi"),
                                        ("jrlogin05.jureca", "jureca"), ("jpbl-s01-02", "jupiter"),
                                        ("int5.snellius.surf.nl", "snellius"), ("int4", "snellius")])
def test_detect_by_hostname(host, name):
    assert detect_cluster(load_clusters(), hostname=host).name == name


def test_unknown_host(monkeypatch):
    monkeypatch.delenv("OELLM_CLUSTER", raising=False)
    with pytest.raises(OellmError, match=r"matches no known cluster \(jupiter, jureca, leonardo, local, lumi, snellius\).*--cluster"):
        detect_cluster(load_clusters(), hostname="mybox", slurm_available=True)
    assert detect_cluster(load_clusters(), hostname="mybox", slurm_available=False).name == "local"


def test_override_order(monkeypatch):
    c = load_clusters()
    monkeypatch.setenv("OELLM_CLUSTER", "lumi")
    assert detect_cluster(c, hostname="login01.leonardo.local").name == "lumi"
    assert detect_cluster(c, requested="jureca").name == "jureca"
    with pytest.raises(OellmError, match="unknown cluster 'nope'; known clusters: jupiter, jureca, leonardo, local, lumi, snellius"):
        detect_cluster(c, requested="nope")


def test_user_file_overrides_fields_and_adds_clusters(tmp_path, monkeypatch):
    f = user_file(tmp_path, {"leonardo": {"account": "EUHPC_X"}, "mysite": {"hostname_pattern": "gpu-login*",
                                                                           "partition": "gpu", "container": None}})
    c = load_clusters(f)
    assert c["leonardo"].account == "EUHPC_X" and c["leonardo"].partition == "boost_usr_prod"
    assert detect_cluster(c, hostname="gpu-login2").name == "mysite"
    monkeypatch.setenv("OELLM_CLUSTERS_FILE", str(f))
    assert load_clusters()["leonardo"].account == "EUHPC_X"


@pytest.mark.parametrize("entry, words", [
    ({"partiton": "x"}, r"mysite: unknown field\(s\) partiton; valid fields: hostname_pattern, partition"),
    ({"gpus_per_task": "2"}, r"mysite.gpus_per_task: expected int, got \"2\""),
    ({"queue_limit": 0}, "mysite.queue_limit: must be >= 1"),
    ({"max_time": "2 days"}, "mysite.max_time: '2 days' is not a SLURM time"),
    ({"env": {"HF_HOME": "$(whoami)"}}, "mysite.env.HF_HOME: '\\$\\(whoami\\)' has characters a shell would interpret"),
    ({"container": {"runtime": "docker"}}, "mysite.container.runtime: 'docker' is not supported"),
    ({"container": {"imag": "x"}}, r"mysite.container: unknown field\(s\) imag"),
    ({"env": {"HF-HOME": "x"}}, r"mysite.env: 'HF-HOME' is not an environment variable name"),
    ({"max_time": "1:75:00"}, "minutes or seconds of 60 or more"),
    ({"env": {"HF_TOKEN": "hf_x"}}, "mysite.env: HF_TOKEN looks like a secret .* export HF_TOKEN"),
    ({"container": {"images": {"Light-Eval": "/x.sif"}}}, "mysite.container.images: 'Light-Eval' is not a suite name"),
    ({"container": {"images": {"lighteval": "$(x).sif"}}}, "mysite.container.images.lighteval: .* a shell would"),
    ({"container": {"images": ["/x.sif"]}}, r"mysite.container.images: expected dict"),
])
def test_bad_user_file_names_the_field(tmp_path, entry, words):
    with pytest.raises(OellmError, match=words):
        load_clusters(user_file(tmp_path, {"mysite": entry}))


def test_a_user_file_merges_into_nested_objects_field_by_field(tmp_path):
    """Every user sets the image; the site's GPU flag, binds, env and sbatch options must stay."""
    lumi = load_clusters()["lumi"]
    mine = load_clusters(user_file(tmp_path, {"lumi": {"container": {"image": "/p/eval.sif"},
                                                       "env": {"MY_VAR": "1"}}}))["lumi"]
    assert mine.container.image == "/p/eval.sif"
    assert (mine.container.gpu_flag, mine.container.binds) == (lumi.container.gpu_flag, lumi.container.binds)
    assert mine.container.gpu_flag == "--rocm" and mine.env == {**lumi.env, "MY_VAR": "1"}
    assert load_clusters(user_file(tmp_path, {"lumi": {"container": None}}))["lumi"].container is None


@pytest.mark.parametrize("value, minutes", [("30", 30), ("30:00", 30), ("30:01", 31), ("01:30:00", 90),
                                            ("2-0", 2880), ("1-02", 1560), ("1-02:30", 1590),
                                            ("1-00:00:01", 1441), ("24:00:00", 1440)])
def test_times_read_as_sbatch_reads_them(value, minutes):
    from oellm.sitevalues import parse_time

    assert parse_time(value, "max_time") == minutes


def test_bare_sbatch_switches_are_kept_and_empty_builtins_dropped(tmp_path):
    from oellm.render import sbatch_flags

    cfg = load_clusters(user_file(tmp_path, {"t": {"gpus_per_task": 1, "sbatch_options": {"exclusive": "",
                                                                                          "gres": ""}}}))["t"]
    flags = sbatch_flags(cfg, 10)
    assert "--exclusive" in flags and not any(f.startswith("--gres") for f in flags)


def test_broken_json_and_missing_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{nope")
    with pytest.raises(OellmError, match="is not valid JSON"):
        load_clusters(p)
    with pytest.raises(OellmError, match="not found"):
        load_clusters(tmp_path / "missing.json")


def test_placeholders_refused_before_submission(tmp_path):
    with pytest.raises(OellmError, match="leonardo: account is still the site placeholder '<your-account>'"):
        require_resolved(load_clusters()["leonardo"])
    ok = load_clusters(user_file(tmp_path, {"leonardo": {"account": "A", "container": None}}))["leonardo"]
    require_resolved(ok)


def test_packing_keeps_models_together_and_chunks_respect_limits(tmp_path):
    cfg = load_clusters(user_file(tmp_path, {"t": {"max_array_size": 4, "queue_limit": 9, "max_running": 3,
                                                     "minutes_per_eval": 10, "max_time": "01:00:00"}}))["t"]
    assert arrays.default_evals_per_task(cfg) == 3
    rows = [EvalRow(m, f"t{i}", 0) for m in ("a", "b") for i in range(7)]
    packed = arrays.pack(rows, 3)
    index = {(r.model, r.task): r.task_index for r in packed}
    assert [index[("a", f"t{i}")] for i in range(7)] == [0, 0, 0, 1, 1, 1, 4]  # full tasks first, remainders
    assert [index[("b", f"t{i}")] for i in range(7)] == [2, 2, 2, 3, 3, 3, 5]  # after them: one time limit each
    assert [r.task_index for r in packed] == sorted(r.task_index for r in packed)
    sub = arrays.plan_submission(range(6), cfg, slurm_max_array=None, queued_now=4)
    assert [(c.offset, c.size, c.array) for c in sub.chunks] == [(0, 4, "0-3%3"), (4, 1, "0-0%1")]
    assert sub.held_back == 1
    sub = arrays.plan_submission(range(6), cfg, slurm_max_array=2, queued_now=0)
    assert [c.array for c in sub.chunks] == ["0-1%2", "0-1%2", "0-1%2"]
    assert arrays.plan_submission(range(6), cfg, None, queued_now=20).chunks == ()
    assert arrays.time_limit(cfg, 3) == 50 and arrays.time_limit(cfg, 100) == 60


def test_a_suite_with_its_own_image_gets_its_own_tasks_and_chunks(tmp_path):
    cfg = load_clusters(user_file(tmp_path, {"t": {"max_array_size": 10, "container": {
        "image": "/e.sif", "images": {"lighteval": "/l.sif"}}}}))["t"]
    rows = [EvalRow("a", "x", 0), EvalRow("a", "y", 0, suite="lighteval"), EvalRow("a", "z", 0),
            EvalRow("b", "y", 0, suite="lighteval")]
    packed = arrays.pack(rows, 5)
    assert {(r.task, r.model, r.task_index) for r in packed} == {("x", "a", 0), ("z", "a", 0), ("y", "a", 1),
                                                                ("y", "b", 2)}
    sub = arrays.plan_submission(range(3), cfg, None, 0, arrays.image_keys(packed, cfg))
    assert [(c.offset, c.size, c.image) for c in sub.chunks] == [(0, 1, ""), (1, 2, "lighteval")]
    assert cfg.for_suite("lighteval").container.image == "/l.sif" and cfg.for_suite("lm_eval") is cfg


@pytest.mark.parametrize("entry, words", [
    ({"sbatch_options": {"nodes": "2"}}, "mysite.sbatch_options.nodes: '2'; an array task is one worker process on one node"),
    ({"sbatch_options": {"ntasks_per_node": "4"}}, "mysite.sbatch_options.ntasks_per_node: '4'"),
    ({"gres": "gpu:a100:1", "gpus_per_task": 4}, "gres 'gpu:a100:1' books 1 GPU\\(s\\) but gpus_per_task is 4"),
    ({"gpus_per_task": 2, "sbatch_options": {"gres": "gpu:4"}}, "gres 'gpu:4' books 4 GPU\\(s\\) but gpus_per_task is 2"),
    ({"gpu_mode": "both"}, "mysite.gpu_mode: 'both'; use workers"),
    ({"env": {"A": "$B/x", "B": "$A/y"}}, r"mysite.env: the values use each other in a cycle \(A -> B -> A\)"),
])
def test_what_one_worker_on_one_node_cannot_use_is_refused(tmp_path, entry, words):
    with pytest.raises(OellmError, match=words):
        load_clusters(user_file(tmp_path, {"mysite": entry}))


def test_command_line_multi_node_and_gres_disagreement_are_refused():
    from oellm.plan.overrides import SlurmOverrides, with_overrides
    from oellm.sitevalues import gres_for

    leo = load_clusters()["leonardo"]
    with pytest.raises(OellmError, match="command line: leonardo.sbatch_options.nodes: '2'"):
        with_overrides(leo, SlurmOverrides(sbatch_option=["nodes=2"]))
    with pytest.raises(OellmError, match="gres 'gpu:a100:1' books 1 GPU"):
        with_overrides(dataclasses.replace(leo, gres="gpu:a100:1"), SlurmOverrides(gpus_per_task=4))
    both = with_overrides(dataclasses.replace(leo, gres="gpu:a100:1"),
                          SlurmOverrides(gpus_per_task=4, sbatch_option=["gres=gpu:a100:4", "nodes=1"]))
    assert both.gpus_per_task == 4 and gres_for(both.sbatch_options["gres"], 2) == "gpu:a100:2"


def test_env_values_are_ordered_after_the_keys_they_use_and_expanded_that_way():
    from oellm.sitevalues import env_order, expand_env

    env = {"HF_DATASETS_CACHE": "$HF_HOME/datasets", "HF_HOME": "$SCRATCH/hf", "PATH": "$PATH:/x"}
    assert [k for k, _ in env_order(env, "e")] == ["HF_HOME", "HF_DATASETS_CACHE", "PATH"]
    out = expand_env(env, {"SCRATCH": "/s", "PATH": "/bin"}, "e")
    assert out == {"HF_HOME": "/s/hf", "HF_DATASETS_CACHE": "/s/hf/datasets", "PATH": "/bin:/x"}
    with pytest.raises(OellmError, match=r"e.HF_HOME: '\$SCRATCH/hf' uses \$SCRATCH, which is not set here"):
        expand_env(env, {"PATH": "/bin"}, "e")


def test_time_limit_0_is_refused_naming_what_slurm_means():
    with pytest.raises(OellmError, match="--time_limit 0: SLURM reads 0 as no limit"):
        from oellm.plan.timelimit import check_time_limit

        check_time_limit("0", load_clusters()["leonardo"])


def _limits(cfg, rows, per_task=None):
    plan = arrays.RunPlan.build(rows, cfg, per_task, None, 0)
    return plan.minutes, [(c.offset, c.size, c.minutes) for c in plan.submission.chunks]


def test_each_array_task_asks_for_the_time_of_its_own_rows():
    """U1: the limit follows the fullest task, not the run's row count; smaller tasks' chunks ask less."""
    leo = load_clusters()["leonardo"]  # 10 min per row, 24 h max: 1.5 x rows x 10 + 5
    assert _limits(leo, [EvalRow(f"m{i}", "t", 0) for i in range(4)]) == (20, [(0, 4, None)])
    assert _limits(leo, [EvalRow(f"m{i}", "t", 0) for i in range(72)])[0] == 20
    assert _limits(leo, [EvalRow(m, f"t{i}", 0) for m in "ab" for i in range(30)])[0] == 455  # 07:35:00
    minutes, chunks = _limits(leo, [EvalRow("a", f"t{i}", 0) for i in range(5)] + [EvalRow("b", "t", 0)], 4)
    assert minutes == 65 and chunks == [(0, 1, None), (1, 2, 20)]  # a: 4 rows, a: 1 row, b: 1 row
    rows = [EvalRow(m, f"t{i}", 0) for m in "abc" for i in range(5)]  # 4 + 1 rows per model: 2 sbatch calls, not 6
    assert _limits(leo, rows, 4) == (65, [(0, 3, None), (3, 3, 20)])


def test_workers_mode_divides_a_tasks_rows_over_its_gpus_in_limit_and_estimate():
    jureca = load_clusters()["jureca"]
    assert (jureca.gpus_per_task, jureca.gpu_mode, jureca.row_workers) == (4, "workers", 4)
    rows = arrays.pack([EvalRow("m", f"t{i}", 0) for i in range(8)], 8)
    assert arrays.time_limit(jureca, 8) == 35  # 2 rows per GPU worker
    assert arrays.gpu_hours(rows, jureca) == pytest.approx(2 * 10 / 60 * 4)
    spread = dataclasses.replace(jureca, gpu_mode="spread")
    assert spread.spreads and spread.row_workers == 1 and arrays.time_limit(spread, 8) == 125
    assert arrays.gpu_hours(rows, spread) == pytest.approx(8 * 10 / 60 * 4)
