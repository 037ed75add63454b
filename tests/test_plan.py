"""Planning: model specs, checkpoint expansion, CSV parsing, validation, dedupe, row ids."""

import json
from pathlib import Path

import pytest

from oellm.errors import OellmError
from oellm.plan import expand as plan
from oellm.rows import EvalRow, ModelRef
from oellm.rundir import read_jobs, write_jobs

pytestmark = pytest.mark.fast


def make_model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return path


def test_models_with_args_attach_to_the_model_before():
    specs = plan.parse_models("org/a,org/b,revision=step100,dtype=float16, gpt2")
    assert specs == [ModelRef("org/a"), ModelRef("org/b", "revision=step100,dtype=float16"),
                     ModelRef("gpt2")]
    assert plan.parse_models(["org/a", "org/b"]) == [ModelRef("org/a"), ModelRef("org/b")]


@pytest.mark.parametrize("bad, words", [
    ("revision=x", "before any model"),
    ("org/m,pretrained=x", "pretrained="),
    ("org/m,dtype=$(rm -rf ~)", "bad model arg"),
])
def test_bad_model_args(bad, words):
    with pytest.raises(OellmError, match=words.replace("$", r"\$").replace("(", r"\(")):
        plan.expand_model(plan.parse_models(bad)[0]) if "=" not in bad.split(",")[0] else plan.parse_models(bad)


def test_shell_metacharacters_in_model_name_are_refused():
    with pytest.raises(OellmError, match="neither an existing local directory nor a Hugging Face id"):
        plan.expand_model(ModelRef("org/m;rm -rf $HOME"))


def test_shots_and_tasks():
    assert plan.parse_shots("0,5,5") == [0, 5]
    assert plan.parse_shots(3) == [3]
    for bad in ("-1", "1.5", "five"):
        with pytest.raises(OellmError, match="not a non-negative integer"):
            plan.parse_shots(bad)
    with pytest.raises(OellmError, match="invalid task name"):
        plan.parse_tasks("hellaswag,mm lu")


def test_checkpoints_expand_sorted_by_step_with_filters(tmp_path):
    run = tmp_path / "run7"
    for name in ("checkpoint-1000", "checkpoint-200", "step_3000", "iter_0004000", "checkpoint-500"):
        make_model(run / name)
    (run / "checkpoint-9999").mkdir()  # no weights: ignored
    (run / "logs").mkdir()
    got = plan.expand_model(ModelRef(str(run)))
    assert [m.step for m in got] == [200, 500, 1000, 3000, 4000]
    assert got[0].name == str(run / "checkpoint-200") and got[0].kind == "checkpoint"
    assert [m.step for m in plan.expand_model(ModelRef(str(run)), stride=2)] == [200, 1000, 4000]
    assert [m.step for m in plan.expand_model(ModelRef(str(run)), last_n=2)] == [3000, 4000]


def test_missing_and_empty_model_dirs(tmp_path):
    with pytest.raises(OellmError, match="does not exist"):
        plan.expand_model(ModelRef(str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(OellmError, match="no config.json and no checkpoint dirs"):
        plan.expand_model(ModelRef(str(tmp_path / "empty")))


def test_build_rows_product_dedupe_and_stable_ids(tmp_path):
    m = make_model(tmp_path / "m")
    rows, dropped = plan.build_rows(plan.parse_models(f"org/a,{m},org/a"), ["t1", "t2"], [0, 5])
    assert len(rows) == 8 and dropped == 4
    again, _ = plan.build_rows(plan.parse_models(f"org/a,{m}"), ["t1", "t2"], [0, 5])
    assert [r.row_id for r in rows] == [r.row_id for r in again]
    assert len({r.row_id for r in rows}) == 8
    assert EvalRow("org/a", "t1", 0).row_id != EvalRow("org/a", "t1", 0, model_args="dtype=float16").row_id


def test_eval_csv_as_in_the_docs(tmp_path):
    m = make_model(tmp_path / "local ckpt")
    csv = tmp_path / "evals.csv"
    csv.write_text('model_path,task_path,n_shot\n"EleutherAI/pythia-160m,revision=step100000,dtype=float16",hellaswag,0\n'
                   f'"{m}",mmlu,5\n')
    rows = plan.rows_from_csv(csv)
    assert [(r.model, r.model_args, r.task, r.n_shot) for r in rows] == [
        ("EleutherAI/pythia-160m", "revision=step100000,dtype=float16", "hellaswag", 0), (str(m), "", "mmlu", 5)]


@pytest.mark.parametrize("body, words", [
    ("model,task\nx,y\n", "missing column"),
    ("model_path,task_path,n_shot\norg/a,hellaswag,0\norg/b,hellaswag,-1\n", "line 3: n_shot"),
    ("model_path,task_path,n_shot\norg/a,hellaswag,0\norg/a,hellaswag\n", "line 3: wrong number of fields"),
    ("model_path,task_path,n_shot\norg/a,hellaswag,0\norg/a,hellaswag,0\n", "line 3 repeats the evaluation of line 2"),
    ("model_path,task_path,n_shot\n", "no rows"),
])
def test_bad_csv_names_the_line(tmp_path, body, words):
    csv = tmp_path / "bad.csv"
    csv.write_text(body)
    with pytest.raises(OellmError, match=words):
        plan.rows_from_csv(csv)


def test_jobs_csv_round_trip(tmp_path):
    rows = [EvalRow("org/a", "hellaswag", 0, model_args="revision=x,dtype=float16", limit=10, step=3, task_index=0),
            EvalRow('/p/with "quotes",and,commas', "mmlu", 5, task_index=1)]
    write_jobs(tmp_path / "jobs.csv", rows)
    assert read_jobs(tmp_path / "jobs.csv") == rows
