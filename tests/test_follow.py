"""Checkpoint layouts (upstream's `run/hf/iter_*`, a dir of models), checkpoint completeness, and
`schedule-eval --follow`: in the foreground with the local executor, and as a SLURM job that resubmits itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from oellm.errors import OellmError
from oellm.follow.state import Until, parse_duration
from oellm.plan import checkpoints as ck
from oellm.plan import expand as plan
from oellm.rows import ModelRef


def make_model(path: Path, weights: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    if weights:
        (path / "model.safetensors").write_bytes(b"\0" * 64)
    return path


def steps(refs: list[ModelRef]) -> list[int | None]:
    return [r.step for r in refs]


# ---------------------------------------------------------------- layouts (fast)


@pytest.mark.fast
def test_hf_iter_layout_expands_with_stride_and_last_n(tmp_path):
    run = tmp_path / "run"
    for step in (100, 200, 300, 400, 500):
        make_model(run / "hf" / f"iter_{step:07d}")
    (run / "hf" / "iter_0000600").mkdir()  # being converted: nothing in it yet
    (run / "checkpoints_megatron").mkdir()  # the trainer's own format, not HF
    got = plan.expand_model(ModelRef(str(run), "dtype=float16"))
    assert steps(got) == [100, 200, 300, 400, 500]
    assert got[0].name == str(run / "hf" / "iter_0000100") and got[0].kind == "checkpoint"
    assert {r.args for r in got} == {"dtype=float16"}
    assert steps(plan.expand_model(ModelRef(str(run)), stride=2)) == [100, 300, 500]
    assert steps(plan.expand_model(ModelRef(str(run)), last_n=2)) == [400, 500]


@pytest.mark.fast
def test_dir_of_models_and_of_runs_one_level(tmp_path):
    models = tmp_path / "models"
    make_model(models / "a")
    make_model(models / "b")
    for step in (10, 20, 30):
        make_model(models / "run1" / "hf" / f"iter_{step:07d}")
        make_model(models / "run2" / f"checkpoint-{step}")
    make_model(models / "deep" / "x" / "y")  # two levels down: not a model of this dir
    (models / "notes").mkdir()
    got = plan.expand_model(ModelRef(str(models)))
    names = [Path(r.name).relative_to(models).as_posix() for r in got]
    assert names == ["a", "b", "run1/hf/iter_0000010", "run1/hf/iter_0000020", "run1/hf/iter_0000030",
                     "run2/checkpoint-10", "run2/checkpoint-20", "run2/checkpoint-30"]
    assert steps(got) == [None, None, 10, 20, 30, 10, 20, 30]
    # last_n and stride count within each training run; plain model dirs are not checkpoints
    assert steps(plan.expand_model(ModelRef(str(models)), last_n=1)) == [None, None, 30, 30]
    assert steps(plan.expand_model(ModelRef(str(models)), stride=2)) == [None, None, 10, 30, 10, 30]
    with pytest.raises(OellmError, match="no config.json and no checkpoint dirs"):
        plan.expand_model(ModelRef(str(models / "notes")))


@pytest.mark.fast
def test_hf_iter_checkpoints_are_labelled_by_their_run():
    from oellm.results.tables import short_names

    got = short_names(["/x/run7/hf/iter_0001000", "/x/run7/hf/iter_0002000", "/x/run8/hf/iter_0000100"])
    assert got == {"/x/run7/hf/iter_0001000": "run7", "/x/run7/hf/iter_0002000": "run7",
                   "/x/run8/hf/iter_0000100": "run8"}


@pytest.mark.fast
def test_planner_leaves_out_incomplete_checkpoints(tmp_path, caplog):
    run = tmp_path / "run"
    make_model(run / "checkpoint-100")
    sharded = make_model(run / "checkpoint-200", weights=False)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    (sharded / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 8)
    got = plan.expand_model(ModelRef(str(run)))
    assert steps(got) == [100]
    assert "checkpoint-200: model.safetensors.index.json names 1 file(s) not on disk yet " \
           "(model-00002-of-00002.safetensors)" in caplog.text
    (sharded / "model-00002-of-00002.safetensors").write_bytes(b"\0" * 8)
    assert steps(plan.expand_model(ModelRef(str(run)))) == [100, 200]
    # a ready-marker: only checkpoints that have it
    (run / "checkpoint-200" / "DONE").touch()
    assert steps(plan.expand_model(ModelRef(str(run)), ready_file="DONE")) == [200]
    with pytest.raises(OellmError, match="none of its 2 checkpoint"):
        plan.expand_model(ModelRef(str(run)), ready_file="MISSING")


@pytest.mark.fast
def test_completeness_rules(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    assert ck.incomplete(d) == "no config.json yet"
    (d / "config.json").write_text("{}")
    assert ck.incomplete(d) is None and ck.incomplete(d, need_weights=True) == "no weights file yet"
    (d / "model.safetensors.index.json").write_text('{"weight_map": {"a": "model-1.safe')  # half-written
    assert "not readable JSON yet" in ck.incomplete(d)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors"}}))
    assert "names 1 file(s) not on disk yet" in ck.incomplete(d, need_weights=True)
    (d / "model-1.safetensors").write_bytes(b"x")
    assert ck.incomplete(d, need_weights=True) is None
    assert ck.incomplete(d, "DONE") == "no DONE yet"
    assert ck.sizes(d)["model-1.safetensors"] == 1


@pytest.mark.fast
def test_follow_flags_are_checked():
    assert parse_duration("5m", "x") == 300 and parse_duration("90", "x") == 90 and parse_duration("2h", "x") == 7200
    for bad in ("5 minutes", "-1", "0", "01:00:00"):
        with pytest.raises(OellmError, match="not a duration"):
            parse_duration(bad, "--follow_interval")
    assert Until.parse("job:1234", 0).job == "1234" and Until.parse("2h", 100).at == 7300
    assert Until.parse("2999-12-24T00:00", 0).at > 0 and Until.parse(None, 0) == Until()
    for bad, words in (("job:abc", "numeric id"), ("soon", "not a duration"), ("2001-01-01T00:00", "already past")):
        with pytest.raises(OellmError, match=words):
            Until.parse(bad, time.time())


@pytest.mark.fast
def test_follow_refusals_are_one_line_and_leave_nothing(tmp_path):
    run = tmp_path / "run"
    make_model(run / "checkpoint-1")
    for extra, words in ((["--dry_run"], "--follow and --dry_run"),
                         (["--follow_interval", "soon"], "--follow_interval: 'soon' is not a duration"),
                         (["--follow_until", "job:x"], "job:JOBID")):
        p = oellm("schedule-eval", "--cluster", "local", "--models", str(run), "--tasks", "x", "--follow",
                  "--output_dir", str(tmp_path / "runs"), *extra)
        assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


class Scheduler:
    """Stands in for oellm.schedule.schedule at the look's boundary (the real one runs in the e2e and slurm
    tests below): records which checkpoints each look sends, or fails like a refused plan."""

    def __init__(self, root: Path, fail: bool = False):
        self.root, self.fail, self.calls = root, fail, []

    def __call__(self, req, log) -> Path:
        self.calls.append([Path(r.name).name for r in req.model_refs()])
        assert req.checkpoint_stride == 1 and req.last_n_checkpoints is None and not req.follow
        if self.fail:
            raise OellmError("preflight: checkpoint does not load")
        return self.root / f"run{len(self.calls)}"


def follower_state(run: Path, interval: float = 0.02):
    from oellm.follow.state import FollowState

    return FollowState(request={}, cluster="local", executor="local", interval_s=interval, until={}, created=0.0)


@pytest.mark.fast
def test_look_follows_last_n_then_every_new_checkpoint_once(tmp_path):
    from oellm.follow.look import look
    from oellm.plan.request import Request

    run = tmp_path / "run"
    for step in (100, 200, 300):
        make_model(run / "hf" / f"iter_{step:07d}")
    req, state, sched = Request(models=str(run), last_n_checkpoints=2), follower_state(run), Scheduler(tmp_path)
    out = look(req, state, False, tmp_path, sched, print)
    assert sched.calls == [["iter_0000200", "iter_0000300"]] and out.run == str(tmp_path / "run1")
    look(req, state, False, tmp_path, sched, print)
    assert len(sched.calls) == 1  # nothing new: schedule() is not even called
    make_model(run / "hf" / "iter_0000050")  # older than what the first look kept: never followed
    make_model(run / "hf" / "iter_0000400")
    make_model(run / "hf" / "iter_0000500", weights=False)  # config.json first, weights later
    look(req, state, False, tmp_path, sched, print)
    assert sched.calls[-1] == ["iter_0000400"] and list(state.waiting) == [str(run / "hf" / "iter_0000500")]
    assert state.waiting[str(run / "hf" / "iter_0000500")]["why"] == "no weights file yet"
    (run / "hf" / "iter_0000500" / "model.safetensors").write_bytes(b"\0" * 8)
    look(req, state, False, tmp_path, sched, print)
    assert sched.calls[-1] == ["iter_0000500"] and not state.waiting
    assert {Path(k).name: v["step"] for k, v in state.scheduled.items()} == \
        {"iter_0000200": 200, "iter_0000300": 300, "iter_0000400": 400, "iter_0000500": 500}


@pytest.mark.fast
def test_look_stride_grid_stays_put_and_final_look_takes_the_newest(tmp_path):
    from oellm.follow.look import look
    from oellm.plan.request import Request

    run = tmp_path / "run"
    for step in (1, 2, 3):
        make_model(run / f"step_{step}")
    req, state, sched = Request(models=str(run), checkpoint_stride=2), follower_state(run), Scheduler(tmp_path)
    look(req, state, False, tmp_path, sched, print)
    make_model(run / "step_4")
    look(req, state, False, tmp_path, sched, print)  # step_4 is off the grid 1, 3, 5, ...
    make_model(run / "step_5")
    make_model(run / "step_6")
    look(req, state, False, tmp_path, sched, print)
    look(req, state, True, tmp_path, sched, print)  # the last look: the newest whatever the stride
    assert sched.calls == [["step_1", "step_3"], ["step_5"], ["step_6"]]


@pytest.mark.fast
def test_a_checkpoint_that_never_completes_or_never_schedules_is_given_up(tmp_path):
    from oellm.follow import look as lk
    from oellm.plan.request import Request

    run = tmp_path / "run"
    make_model(run / "checkpoint-1", weights=False)
    req, state, sched = Request(models=str(run)), follower_state(run), Scheduler(tmp_path)
    lines: list[str] = []
    for i in range(lk.GIVE_UP_LOOKS):
        lk.look(req, state, False, tmp_path, sched, lines.append, at=i * lk.GIVE_UP_MIN_S / (lk.GIVE_UP_LOOKS - 1))
    assert not sched.calls and not state.waiting
    assert "not complete 12 looks after" in state.given_up[str(run / "checkpoint-1")]
    assert lines == [f"follow: giving up on {run / 'checkpoint-1'}: {state.given_up[str(run / 'checkpoint-1')]}"]
    lk.look(req, state, False, tmp_path, sched, print)
    assert not sched.calls and not state.waiting  # reported once, not retried

    make_model(run / "checkpoint-2")
    failing = Scheduler(tmp_path, fail=True)
    for _ in range(lk.MAX_FAILURES + 1):
        lk.look(req, state, False, tmp_path, failing, print)
    assert len(failing.calls) == lk.MAX_FAILURES and "preflight: checkpoint does not load" in state.last_error
    assert "scheduling failed 3 times" in state.given_up[str(run / "checkpoint-2")]


@pytest.mark.fast
def test_ctrl_c_and_cancel_end_a_foreground_follower_cleanly(tmp_path):
    run = tmp_path / "run"
    make_model(run / "checkpoint-1", weights=False)  # never complete: the follower only waits
    argv = [sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models", str(run),
            "--tasks", "x", "--output_dir", str(tmp_path / "runs"), "--follow", "--follow_interval", "1"]
    for how in ("ctrl-c", "cancel"):
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = p.stdout.readline() + p.stdout.readline()
        assert "look 1" in first and "checkpoint-1: no weights file yet" in first, first + p.stderr.read()
        if how == "ctrl-c":
            p.send_signal(signal.SIGINT)
        else:
            follower = first.split()[1]
            assert oellm("cancel", follower).returncode == 0
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0 and "Traceback" not in err, err
        assert ("stopped by Ctrl-C" if how == "ctrl-c" else "follow: cancelled") in out


@pytest.mark.fast
def test_follower_job_script_is_a_small_cpu_job_of_the_cluster(tmp_path):
    from oellm.clusters import load_clusters
    from oellm.follow.loop import render_job
    from oellm.follow.state import Follower

    leonardo = load_clusters()["leonardo"]
    assert leonardo.gpus_per_task and leonardo.partition
    text = render_job(Follower(tmp_path / "follow-x"), leonardo)
    flags = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    assert f"--partition={leonardo.partition}" in flags and "--cpus-per-task=1" in flags and "--mem=2G" in flags
    assert "--time=01:00:00" in flags and not any("gres" in f or "gpu" in f for f in flags)
    assert "--no-requeue" in flags and f"--output={tmp_path}/follow-x/logs/%j.out" in flags
    assert "export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false " \
           "PYTHONSAFEPATH=1" in text  # the workers' preamble (templates/_preamble.j2), outside a container
    assert f"cd {tmp_path}/follow-x  #" in text and f"export PYTHONPATH={tmp_path}/follow-x/oellm_code" in text
    assert text.rstrip().endswith(f"-m oellm.follow {tmp_path}/follow-x")


@pytest.mark.fast
def test_follower_job_runs_from_a_dir_holding_another_oellm_package(tmp_path):
    """REVIEW finding 9: the follower job, run (as SLURM runs it) from a checkout of oellm-eval, whose
    `oellm/__init__.py` would shadow oellm, runs its look with the oellm shipped into the follower's dir."""
    from oellm.clusters import load_clusters
    from oellm.follow.loop import render_job
    from oellm.follow.state import Follower, FollowState

    follower = Follower.create(tmp_path / "runs", FollowState(request={}, cluster="local", executor="local",
                                                              interval_s=60, until={}, created=0.0, ended="done"))
    follower.script.write_text(render_job(follower, load_clusters()["local"]))
    checkout = tmp_path / "oellm-eval"
    (checkout / "oellm").mkdir(parents=True)
    (checkout / "oellm" / "__init__.py").write_text("raise SystemExit('the checkout oellm was imported')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run(["bash", str(follower.script)], cwd=checkout, capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0 and "checkout oellm" not in p.stderr, p.stderr
    assert (follower.path / "oellm_code" / "oellm" / "__init__.py").is_file()
    assert (follower.path / "oellm_code" / "oellm" / "_data" / "templates" / "follow.sbatch.j2").is_file()


@pytest.mark.fast
def test_follow_interval_has_a_floor_on_slurm(tmp_path):
    """REVIEW code remark: `--follow_interval 1s` on SLURM would queue a job per second."""
    run = tmp_path / "run"
    make_model(run / "checkpoint-1")
    p = oellm("schedule-eval", "--cluster", "leonardo", "--models", str(run), "--tasks", "x", "--follow",
              "--follow_interval", "10s", "--output_dir", str(tmp_path / "runs"),
              env={k: v for k, v in os.environ.items() if k != "OELLM_FOLLOW_MIN_INTERVAL_S"})
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "--follow_interval 10s: on SLURM each look is a job of its own; give at least 60s" in p.stderr


@pytest.mark.fast
def test_sharded_checkpoint_without_its_index_is_still_being_written(tmp_path):
    """REVIEW finding 4: save_pretrained writes the shards first and the index last; a checkpoint with shard 1
    of 2 and no index waits (follower and planner alike) and is scheduled once, when complete."""
    from oellm.follow.look import look
    from oellm.plan.request import Request

    run = tmp_path / "run"
    make_model(run / "checkpoint-100")
    ck200 = make_model(run / "checkpoint-200", weights=False)
    (ck200 / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 8)
    assert ck.incomplete(ck200) == ("model.safetensors.index.json not written yet "
                                    "(1 of 2 shard(s) of model on disk)")
    assert steps(plan.expand_model(ModelRef(str(run)))) == [100]  # the planner too
    req, state, sched = Request(models=str(run)), follower_state(run), Scheduler(tmp_path)
    look(req, state, False, tmp_path, sched, print)
    assert sched.calls == [["checkpoint-100"]]
    assert "index.json not written yet" in state.waiting[str(ck200)]["why"]
    (ck200 / "model-00002-of-00002.safetensors").write_bytes(b"\0" * 8)
    assert ck.incomplete(ck200) == "model.safetensors.index.json not written yet (2 of 2 shard(s) of model on disk)"
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (ck200 / "model.safetensors.index.json").write_text(json.dumps(index))
    look(req, state, False, tmp_path, sched, print)  # complete: listed again shortly, then scheduled
    assert sched.calls == [["checkpoint-100"], ["checkpoint-200"]] and not state.waiting
    # all of an index's shards but not all N of the shard names: still being written
    ck300 = make_model(run / "checkpoint-300", weights=False)
    (ck300 / "pytorch_model-00001-of-00003.bin").write_bytes(b"x")
    (ck300 / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"a": "pytorch_model-00001-of-00003.bin"}}))
    assert ck.incomplete(ck300) == "1 of 3 shard(s) of pytorch_model on disk"


@pytest.mark.fast
def test_stride_grid_hangs_on_steps_when_the_trainer_deletes_old_checkpoints(tmp_path):
    """REVIEW finding 12: stride 2 over 100/200/300 keeps 100 and 300; the trainer then writes 400 and deletes
    100 (save_total_limit): 200 and 400 stay off the grid, 500 is on it."""
    from oellm.follow.look import look
    from oellm.plan.request import Request

    run = tmp_path / "run"
    for step in (100, 200, 300):
        make_model(run / f"checkpoint-{step}")
    req, state, sched = Request(models=str(run), checkpoint_stride=2), follower_state(run), Scheduler(tmp_path)
    look(req, state, False, tmp_path, sched, print)
    make_model(run / "checkpoint-400")
    shutil.rmtree(run / "checkpoint-100")
    look(req, state, False, tmp_path, sched, print)
    make_model(run / "checkpoint-500")
    shutil.rmtree(run / "checkpoint-200")
    look(req, state, False, tmp_path, sched, print)
    assert sched.calls == [["checkpoint-100", "checkpoint-300"], ["checkpoint-500"]]


@pytest.mark.fast
def test_a_submission_refused_at_the_last_look_is_retried_not_dropped(tmp_path, monkeypatch):
    """REVIEW finding 5: the look at --follow_until whose scheduling fails (a QOS submit limit) does not end
    the follower: the checkpoint is tried again, the progress line says so (never "nothing new"), and it is
    given up with its reason after MAX_FAILURES tries."""
    from oellm.follow import loop
    from oellm.follow.look import MAX_FAILURES
    from oellm.follow.state import Follower, FollowState

    run = tmp_path / "run"
    make_model(run / "checkpoint-200")
    root = tmp_path / "runs"
    state = FollowState(request={"models": str(run), "output_dir": str(root)}, cluster="local", executor="local",
                        interval_s=0.02, until={"at": time.time() - 1, "text": "25s"}, created=0.0)
    follower = Follower.create(root, state)
    failing, lines = Scheduler(root, fail=True), []
    monkeypatch.setattr(loop, "schedule", failing)
    s = loop.step(follower, lines.append)
    assert not s.ended and s.next_look and list(s.failures) == [str(run / "checkpoint-200")]
    assert "scheduling 1 failed, tried again next look (checkpoint-200)" in lines[-1] and "nothing new" not in lines[-1]
    monkeypatch.setattr(loop, "schedule", Scheduler(root))
    s = loop.step(follower, lines.append)
    assert s.ended == "reached --follow_until 25s" and list(s.scheduled) == [str(run / "checkpoint-200")]

    make_model(run / "checkpoint-300")
    monkeypatch.setattr(loop, "schedule", failing)
    for _ in range(MAX_FAILURES):
        with follower.changing() as st:
            st.ended = None
        s = loop.step(follower, lines.append)
    assert s.ended and "scheduling failed 3 times: preflight" in s.given_up[str(run / "checkpoint-300")]
    assert "gave up on 1" in lines[-1] and not s.failures


@pytest.mark.fast
def test_named_checkpoints_under_hf_are_evaluated(tmp_path):
    """REVIEW D11: `run/hf/latest` beside `iter_*` is planned (not dropped), a `run/hf` with only `final/` and
    `best/` plans those two, and a `latest` that links to a listed checkpoint is that checkpoint."""
    run = tmp_path / "run"
    make_model(run / "hf" / "final")
    make_model(run / "hf" / "best")
    (run / "hf" / "notes").mkdir()
    got = plan.expand_model(ModelRef(str(run)))
    assert [Path(r.name).name for r in got] == ["best", "final"] and steps(got) == [None, None]
    other = tmp_path / "other"
    for step in (100, 200):
        make_model(other / "hf" / f"iter_{step:07d}")
    make_model(other / "hf" / "latest")
    (other / "hf" / "current").symlink_to(other / "hf" / "iter_0000200")
    got = plan.expand_model(ModelRef(str(other)), last_n=1)
    assert [Path(r.name).name for r in got] == ["latest", "iter_0000200"]


# ---------------------------------------------------------------- a follower, for real


def oellm(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oellm", *args], capture_output=True, text=True, timeout=timeout,
                          **kw)


def sharded_copy(tiny_model: Path, dest: Path) -> Path:
    """The tiny model saved in two shards with an index, as large checkpoints are."""
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tiny_model).save_pretrained(dest, max_shard_size="60KB")
    for f in tiny_model.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, dest / f.name)
    assert len(list(dest.glob("model-*.safetensors"))) >= 2, list(dest.iterdir())
    return dest


def results_by_model(root: Path) -> dict[str, list[dict]]:
    """Every result under the output root, by the model it evaluated, with when its row started."""
    out: dict[str, list[dict]] = {}
    for res in root.glob("*/results/*.json"):
        state = json.loads((res.parent.parent / "state" / res.name).read_text())
        out.setdefault(Path(json.loads(res.read_text())["config"]["model_args"].split("pretrained=")[1]
                            .split(",")[0]).name, []).append(state)
    return out


@pytest.mark.e2e
def test_follow_evaluates_each_checkpoint_once_when_complete(tmp_path, tiny_model, tiny_tasks):
    """A fake training run writes checkpoints while --follow runs: a sharded one whose last shard lands late,
    and one whose ready-marker comes last; each is evaluated once, none before it is complete, and the
    follower ends by itself at --follow_until."""
    run, staging = tmp_path / "run", tmp_path / "staging"
    shutil.copytree(tiny_model, run / "checkpoint-100")
    (run / "checkpoint-100" / "DONE").touch()
    sharded = sharded_copy(tiny_model, staging / "checkpoint-200")
    last_shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    seen: dict[str, float] = {}
    ck200 = run / "checkpoint-200"
    ck200.mkdir()
    for f in sorted(sharded.iterdir()):
        if f != last_shard:
            shutil.copy(f, ck200 / f.name)
    (ck200 / "DONE").touch()  # a marker written too early: the index still names a missing shard
    shutil.copytree(tiny_model, run / "checkpoint-300")  # everything but the marker
    runs = tmp_path / "runs"

    def looks() -> int:
        try:
            return json.loads(next(runs.glob("follow-*/follow.state")).read_text())["looks"]
        except (StopIteration, OSError, ValueError):
            return 0

    def trainer() -> None:  # finishes each checkpoint only after the follower saw it incomplete twice
        while looks() < 3 and time.time() - start < 200:
            time.sleep(0.2)
        seen["200 complete"] = time.time()
        shutil.copy(last_shard, ck200 / last_shard.name)
        while looks() < 6 and time.time() - start < 200:
            time.sleep(0.2)
        seen["300 complete"] = time.time()
        (run / "checkpoint-300" / "DONE").touch()

    t = threading.Thread(target=trainer)
    start = time.time()
    t.start()
    p = oellm("schedule-eval", "--cluster", "local", "--models", str(run), "--tasks", "tiny_mc_a", "--n_shot", "0",
              "--limit", "4", "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(runs),
              "--follow", "--follow_interval", "1s", "--follow_until", "80s", "--checkpoint_ready_file", "DONE",
              timeout=400)
    t.join()
    assert p.returncode == 0, p.stderr[-3000:]
    print(p.stdout)
    assert time.time() - start < 300
    assert "not complete yet (checkpoint-200: model.safetensors.index.json names 1 file(s)" in p.stdout
    assert "not complete yet (checkpoint-300: no DONE yet)" in p.stdout
    assert "ended: reached --follow_until 80s" in p.stdout
    got = results_by_model(tmp_path / "runs")
    assert sorted(got) == ["checkpoint-100", "checkpoint-200", "checkpoint-300"]
    assert all(len(v) == 1 for v in got.values()), got  # each evaluated exactly once
    for step in ("200", "300"):
        started = got[f"checkpoint-{step}"][0]["started"]
        assert _epoch(started) >= seen[f"{step} complete"] - 1, (step, started, seen)  # none before complete
    (follower,) = (tmp_path / "runs").glob("follow-*")
    status = oellm("status", str(follower))
    assert status.returncode == 0 and "scheduled 3" in status.stdout and "ended (reached" in status.stdout
    listing = oellm("status", "--output_dir", str(tmp_path / "runs"))
    assert follower.name in listing.stdout
    collected = oellm("collect-results", str(tmp_path / "runs"))  # the learning curve, nothing of the follower
    assert collected.returncode == 0 and "skipped" not in collected.stderr, collected.stderr
    assert all(f"run@step{step}" in collected.stdout for step in (100, 200, 300)), collected.stdout


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


@pytest.mark.slurm
def test_follower_job_resubmits_itself_stops_with_training_and_cancel(slurm_cluster, tmp_path, tiny_model,
                                                                      tiny_tasks):
    """The follower job pattern on the real local cluster: a `sleep` job stands in for the training; the
    follower resubmits itself each interval, ends once that job has ended and its last checkpoint is
    scheduled; a second follower is stopped by `oellm cancel`."""
    from oellm import slurm
    from tests.fixtures_slurm import wait_for_jobs
    from tests.test_schedule_slurm import clusters_file

    conf = clusters_file(tmp_path, slurm_cluster.partition, container=None)
    run = tmp_path / "run"
    shutil.copytree(tiny_model, run / "checkpoint-100")
    script = tmp_path / "train.sbatch"
    script.write_text("#!/bin/bash\nsleep 25\n")
    training = slurm.run(["sbatch", "--parsable", f"--partition={slurm_cluster.partition}", "--output=/dev/null",
                          str(script)]).strip()
    common = ["--cluster", "testslurm", "--clusters_file", str(conf), "--models", str(run), "--tasks", "tiny_mc_a",
              "--n_shot", "0", "--limit", "2", "--lm_eval_include_path", str(tiny_tasks),
              "--output_dir", str(tmp_path / "runs"), "--no_preflight",
              "--follow", "--follow_interval", "5s"]
    fast = {**os.environ, "OELLM_FOLLOW_MIN_INTERVAL_S": "1"}  # looks every 5 s: below the SLURM floor of 60 s
    p = oellm("schedule-eval", *common, "--follow_until", f"job:{training}", "--no_precache", env=fast)
    assert p.returncode == 0, p.stderr
    assert "scheduled 1 new (checkpoint-100)" in p.stdout and "next look" in p.stdout
    (follower,) = (tmp_path / "runs").glob("follow-*")
    time.sleep(6)
    shutil.copytree(tiny_model, run / "checkpoint-200")  # written while the training runs
    deadline = time.time() + 150
    state = {}
    while time.time() < deadline:
        state = json.loads((follower / "follow.state").read_text())
        if state.get("ended"):
            break
        time.sleep(2)
    assert state.get("ended", "").startswith(f"job {training} ended"), state
    assert len(state["jobs"]) >= 2  # it resubmitted itself
    assert {Path(k).name for k in state["scheduled"]} == {"checkpoint-100", "checkpoint-200"}
    runs = [r for r in (tmp_path / "runs").iterdir() if (r / "run.json").exists()]
    wait_for_jobs([s["job_id"] for r in runs for s in json.loads((r / "run.json").read_text())["submissions"]],
                  timeout=300)

    p = oellm("schedule-eval", *common, "--no_precache", env=fast)
    assert p.returncode == 0, p.stderr
    second = sorted((tmp_path / "runs").glob("follow-*"))[-1]
    job = json.loads((second / "follow.state").read_text())["job_id"]
    assert job and slurm.queue_states([job])
    c = oellm("cancel", str(second))
    assert c.returncode == 0 and "cancelled follower" in c.stdout, c.stderr
    time.sleep(3)
    assert not slurm.queue_states([job])
    assert "cancelled" in oellm("status", str(second)).stdout


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.usefixtures("no_job_left_behind")
def test_a_checkpoint_whose_evaluation_fails_is_resubmitted_then_given_up_with_its_reason(slurm_cluster, tiny_model,
                                                                                         tmp_path):
    """Issue: a follower retries a checkpoint that failed on the node by resubmit's rules, and after
    MAX_RESUBMITS shows it given up with the reason; a run whose retry succeeds is finished, not given up."""
    from oellm.follow.retry import MAX_RESUBMITS, retry_failed
    from oellm.follow.state import FollowState
    from oellm.rundir import RunDir
    from tests.fixtures_models import build_tiny_tasks
    from tests.fixtures_slurm import wait_for_jobs
    from tests.test_schedule_slurm import clusters_file

    tasks = build_tiny_tasks(tmp_path / "tasks")  # our own copy: "fixed" below
    cfile = clusters_file(tmp_path, slurm_cluster.partition, container=None, max_running=4)
    runs = []
    for name in ("fixed", "broken"):
        r = subprocess.run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "testslurm", "--clusters_file",
                            str(cfile), "--models", str(tiny_model), "--tasks", "tiny_raises", "--limit", "2",
                            "--lm_eval_include_path", str(tasks), "--output_dir", str(tmp_path / name), "--no_preflight"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        (run,) = [p for p in (tmp_path / name).iterdir() if (p / "run.json").is_file()]
        runs.append(RunDir(run))
    jobs = lambda run: [s["job_id"] for s in run.read_manifest()["submissions"]]  # noqa: E731
    wait_for_jobs([j for run in runs for j in jobs(run)], timeout=300)
    state = FollowState(request={}, cluster="testslurm", executor="slurm", interval_s=60, until={}, created=0,
                        runs=[str(r.path) for r in runs],
                        scheduled={str(tiny_model): {"run": str(runs[0].path)}, f"{tiny_model},x=1": {"run": "elsewhere"}})
    state.resubmits[str(runs[1].path)] = MAX_RESUBMITS  # the broken one has had its tries
    lines: list[str] = []
    resubmitted, gave_up = retry_failed(state, lines.append)
    assert resubmitted == [str(runs[0].path)] and gave_up == []  # the broken run's checkpoint is keyed to runs[0]
    assert state.resubmits[str(runs[0].path)] == 1 and len(jobs(runs[0])) == 2
    assert str(runs[1].path) in state.finished
    (tasks / "utils.py").write_text((tasks / "utils.py").read_text().replace(
        'raise ValueError("tiny_raises: deliberate failure")', "return dataset"))
    wait_for_jobs(jobs(runs[0]), timeout=300)
    assert retry_failed(state, lines.append) == ([], []) and str(runs[0].path) in state.finished
    assert runs[0].done_ids() and not state.given_up
    # a follower whose checkpoint keeps failing gives it up, with the rows' reason, once its tries are spent
    state = FollowState(request={}, cluster="testslurm", executor="slurm", interval_s=60, until={}, created=0,
                        runs=[str(runs[1].path)], scheduled={str(tiny_model): {"run": str(runs[1].path)}},
                        resubmits={str(runs[1].path): MAX_RESUBMITS})
    assert retry_failed(state, lines.append) == ([], [str(tiny_model)])
    assert "tiny_raises: deliberate failure" in state.given_up[str(tiny_model)]
