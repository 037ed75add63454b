"""One evaluation, one identity, one ledger (REVIEW.md Part 1: findings 1, 2, 6, 7, 8, 13, 16, 17, 18).

The identity oellm gives a planned row is the one it reads from any result file, whoever wrote it: the
real `lm_eval run` CLI is the reference for files other tools write. "Done" is the ledger's answer, the same
for schedule-eval's skip, collect-results --check and oellm-eval's collect --check.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.identity import cli_options
from oellm.ledger import Ledger
from oellm.options import label, row_options
from oellm.results.gather import collect
from oellm.results.report import missing_cells, missing_list
from oellm.results.tables import board, with_labels
from oellm.rows import EvalRow
from oellm.rundir import read_jobs, write_json
from tests.fixtures_models import make_run_dir
from tests.test_lm_eval_options import CHAT_TEMPLATE, lm_eval_cli

REPO = Path(__file__).resolve().parents[1]


def oellm(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oellm", *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def result(row: EvalRow, acc: float, ended: str = "2026-01-01T00:00:00+00:00", n_shot_used: int | None = None) -> dict:
    """A result as oellm's worker writes it (the parts collect reads), its row's options included."""
    shots = row.n_shot if n_shot_used is None else n_shot_used
    return {"results": {row.task: {"alias": row.task, "acc,none": acc, "acc_stderr,none": 0.1}},
            "n-shot": {row.task: shots}, "date": 1.7e9,
            "oellm": {"row": row.record(), "ended": ended, "lm_eval_version": "0.4.13"}}


def only_run(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if (p / "jobs.csv").is_file()]
    return run


# ---------------------------------------------------------------- identity of options (fast)


@pytest.mark.fast
def test_gen_kwargs_spellings_of_one_value_are_one_evaluation():
    """Finding 16: temperature=0 and temperature=0.0 are one evaluation (and keep the id of `=0`)."""
    assert row_options(gen_kwargs="temperature=0") == row_options(gen_kwargs="temperature=0.0") \
        == row_options(gen_kwargs='{"temperature": 0.0}') == '{"gen_kwargs":{"temperature":0}}'
    assert row_options(gen_kwargs="temperature=0.5") != row_options(gen_kwargs="temperature=0")


@pytest.mark.fast
def test_gen_kwargs_on_a_loglikelihood_task_do_not_split_the_evaluation(tmp_path, tiny_tasks):
    """Finding 16: lm-eval ignores gen_kwargs for multiple-choice tasks, so planning does too."""
    ids = []
    for extra in ([], ["--gen_kwargs", "temperature=0"], ["--gen_kwargs", "temperature=0.0,max_gen_toks=9"]):
        out = tmp_path / f"runs{len(ids)}"
        p = oellm("schedule-eval", "--cluster", "local", "--models", "org/m", "--tasks", "tiny_mc_a", "--n_shot", "0",
                  "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(out), "--dry_run", *extra)
        assert p.returncode == 0, p.stderr
        ids.append([r.row_id for r in read_jobs(only_run(out) / "jobs.csv")])
    assert ids[0] == ids[1] == ids[2]


@pytest.mark.fast
@pytest.mark.parametrize("flag, value", [("--metadata", '{"hf_token": "hf_SECRETSECRET"}'),
                                         ("--metadata", '{"cfg": {"api_key": "sk-SECRET"}}'),
                                         ("--gen_kwargs", "temperature=0,access_token=abc")])
def test_secrets_in_metadata_and_gen_kwargs_are_refused_before_anything_is_written(tmp_path, tiny_tasks, flag, value):
    """Finding 17: the rule that refuses `model,hf_token=...` refuses the same names inside these options."""
    p = oellm("schedule-eval", "--cluster", "local", "--models", "org/m", "--tasks", "tiny_mc_a", "--n_shot", "0",
              "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / "runs"), "--dry_run",
              flag, value)
    assert p.returncode == 2 and "looks like a secret" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.fast
def test_system_instruction_survives_missing_csv_exactly(tmp_path, tiny_tasks):
    """Finding 7: a YAML block scalar's closing newline is part of the instruction; missing.csv keeps it."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"models: org/m\ntasks: tiny_mc_a\nn_shot: '0'\nlm_eval_include_path: {tiny_tasks}\n"
                     f"output_dir: {tmp_path / 'runs'}\ndry_run: true\ncluster: local\n"
                     "system_instruction: |\n  Answer with one word.\n")
    p = oellm("schedule-eval", "--config", str(sweep))
    assert p.returncode == 0, p.stderr
    run = only_run(tmp_path / "runs")
    (planned,) = read_jobs(run / "jobs.csv")
    assert json.loads(planned.options)["system_instruction"] == "Answer with one word.\n"
    p = oellm("collect-results", str(run), "--check")
    assert p.returncode == 0 and (run / "missing.csv").is_file(), p.stderr
    again = tmp_path / "again"
    p = oellm("schedule-eval", "--eval_csv_path", str(run / "missing.csv"), "--cluster", "local", "--dry_run",
              "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(again))
    assert p.returncode == 0, p.stderr
    (replanned,) = read_jobs(only_run(again) / "jobs.csv")
    assert replanned.row_id == planned.row_id


# ---------------------------------------------------------------- the ledger (fast)


@pytest.mark.fast
def test_adding_num_shards_to_a_finished_sweep_runs_nothing(tmp_path, tiny_tasks):
    """Finding 13: shards of an evaluation that is done whole are done."""
    row = EvalRow("org/m", "tiny_mc_a", 0)
    run = make_run_dir(tmp_path, [row])
    write_json(run.result_path(row.row_id), result(row, 0.5))
    p = oellm("schedule-eval", "--cluster", "local", "--models", "org/m", "--tasks", "tiny_mc_a", "--n_shot", "0",
              "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / "runs"), "--dry_run",
              "--num_shards", "2")
    assert p.returncode == 0, p.stderr
    assert "nothing to do" in p.stdout + p.stderr
    assert Ledger.of([row.row_id]).todo(row.shards(2)) == []
    assert Ledger.of([row.shards(2)[0].row_id]).todo(row.shards(2)) == [row.shards(2)[1]]


@pytest.mark.fast
def test_oellm_eval_collect_check_matches_exact_models_and_default_shots(tmp_path):
    """Finding 8: checkpoint-100 does not cover checkpoint-1000; a default-shot row done as run is done."""
    ck100 = EvalRow("/scratch/run/checkpoint-100", "tiny_mc_a", 0, step=100)
    ck1000 = EvalRow("/scratch/run/checkpoint-1000", "tiny_mc_a", 0, step=1000)
    default = EvalRow("/scratch/run/checkpoint-100", "tiny_mc_b", None, step=100)
    run = make_run_dir(tmp_path, [ck100, ck1000, default])
    write_json(run.result_path(ck100.row_id), result(ck100, 0.5))
    write_json(run.result_path(default.row_id), result(default, 0.25, n_shot_used=2))
    out = tmp_path / "collected.csv"
    p = subprocess.run([sys.executable, "-c", "from oellm.cli import main_eval; main_eval()", "collect",
                        "--results_dir", str(tmp_path / "runs"), "--output_csv", str(out), "--check"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert "2 of 3 scheduled evaluation(s) have a result; 1 missing" in p.stdout
    with open(out.with_name("collected_missing.csv"), newline="") as fh:
        missing = list(csv.DictReader(fh))
    assert [(m["model_path"], m["task_path"]) for m in missing] == [(ck1000.model, "tiny_mc_a")]


@pytest.mark.fast
def test_a_cli_file_whose_identity_cannot_be_read_completes_nothing():
    """A foreign file with a seed that is no integer is its own evaluation, never a planned row's."""
    base = {"results": {"t": {"acc,none": 0.5}}, "config": {"model_args": "pretrained=org/m"}}
    assert cli_options(base, "t") == ""
    odd = {**base, "config": {**base["config"], "fewshot_seed": "two"}}
    assert "unread" in cli_options(odd, "t")
    seeded = {**base, "config": {**base["config"], "random_seed": 0, "numpy_seed": 1234, "torch_seed": 1234,
                                 "fewshot_seed": 2}}
    assert cli_options(seeded, "t") == row_options(seed="0,1234,1234,2")


# ---------------------------------------------------------------- values people read (fast)


@pytest.mark.fast
def test_two_system_instructions_are_two_leaderboard_rows(tmp_path):
    """Finding 2: no label is shared by two evaluations (R2: acc 0.25 and 0.375)."""
    rows = [EvalRow("org/tiny", "tiny_mc_a", 0, options=row_options(system_instruction=s))
            for s in ("honey honey honey", "the owl hears rice")]
    run = make_run_dir(tmp_path, rows)
    for r, acc in zip(rows, (0.25, 0.375), strict=True):
        write_json(run.result_path(r.row_id), result(r, acc))
    got = collect([run.path])
    assert not got.superseded
    table = board(got.table, metric="acc").table
    assert sorted(table["tiny_mc_a acc"].tolist()) == [0.25, 0.375]
    assert len(set(table.index)) == 2 and all("honey" in x or "owl" in x for x in table.index)
    # long instructions that start alike still get labels of their own
    long = [row_options(system_instruction="You are a careful assistant. " + s) for s in ("Be brief.", "Be long.")]
    assert label(long[0]) != label(long[1])


@pytest.mark.fast
def test_labels_are_unique_even_when_their_texts_collide():
    import pandas as pd

    df = pd.DataFrame({"model": ["org/m", "org/m"], "model_args": ["", ""], "step": [None, None],
                       "limit": [None, None], "options": ['{"unread":"aaaa"}', '{"unread":"bbbb"}']})
    labels = with_labels(df)["label"].tolist()
    assert len(set(labels)) == 2


@pytest.mark.fast
def test_a_missing_cell_shows_its_state_on_its_own_row_plain_and_chat(tmp_path):
    """Finding 18: a model's plain and chat rows never collide in the report's missing cells."""
    chat = row_options(apply_chat_template=True)
    plain_a, plain_b = EvalRow("org/tiny", "t_a", 0), EvalRow("org/tiny", "t_b", 0)
    chat_a, chat_b = (EvalRow("org/tiny", t, 0, options=chat) for t in ("t_a", "t_b"))
    run = make_run_dir(tmp_path, [plain_a, plain_b, chat_a, chat_b])
    for r in (plain_a, chat_a, chat_b):
        write_json(run.result_path(r.row_id), result(r, 0.5))
    got = collect([run.path])
    b = board(got.table, metric="acc")
    from oellm.results.collect import missing_rows
    from oellm.results.report import cell_data, column_list

    rows, _, _ = cell_data(b)
    columns = column_list(b, {})
    missing = missing_list(missing_rows(got), {})
    cells = missing_cells(b, missing, rows, columns)
    marked = {(rows[r]["label"], columns[c]["name"]) for r, c in zip(cells["r"], cells["c"], strict=True)}
    plain_label = next(r["label"] for r in rows if not r["options"])
    assert marked == {(plain_label, "t_b acc")}


# ---------------------------------------------------------------- against the lm_eval CLI (e2e)


@pytest.mark.e2e
def test_a_cli_result_with_another_seed_is_another_evaluation(tmp_path, tiny_model, tiny_tasks):
    """Finding 1 (R1): oellm's plain 3-shot row and `lm_eval run --seed 0,1234,1234,2` are two rows."""
    p = oellm("schedule-eval", "--cluster", "local", "--models", str(tiny_model), "--tasks", "tiny_mc_a",
              "--n_shot", "3", "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / "runs"),
              "--batch_size", "1", "--no_preflight")
    assert p.returncode == 0, p.stderr
    run = only_run(tmp_path / "runs")
    ours = json.loads(next((run / "results").glob("*.json")).read_text())["results"]["tiny_mc_a"]["acc,none"]
    lm_eval_cli(tmp_path / "cli", f"pretrained={tiny_model}", "tiny_mc_a", tiny_tasks, "--num_fewshot", "3",
                "--seed", "0,1234,1234,2")
    got = collect([run, tmp_path / "cli"])
    assert not got.superseded
    table = board(got.table, metric="acc").table
    assert len(table) == 2
    plain = [lab for lab in table.index if "seed" not in lab]
    assert len(plain) == 1 and table.loc[plain[0], "tiny_mc_a acc"] == ours


@pytest.mark.e2e
def test_cli_files_complete_exactly_the_rows_planned_with_the_same_flags(tmp_path, tiny_model, tiny_tasks):
    """Findings 1 and 6 (R6): a chat-template CLI file does not complete a plain row; a CLI file run with
    the same flags as a planned row (chat template, system instruction, seed, gen_kwargs) completes it."""
    import shutil

    chat_model = tmp_path / "tiny-chat"
    shutil.copytree(tiny_model, chat_model)
    cfg = chat_model / "tokenizer_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "chat_template": CHAT_TEMPLATE}))
    flags = ["--apply_chat_template", "--system_instruction", "Answer with one word.", "--seed", "7"]
    for name, extra in (("plain", []), ("chat", flags)):
        p = oellm("schedule-eval", "--cluster", "local", "--models", str(chat_model), "--tasks", "tiny_mc_a",
                  "--n_shot", "0", "--lm_eval_include_path", str(tiny_tasks), "--output_dir", str(tmp_path / name),
                  "--dry_run", *extra)
        assert p.returncode == 0, p.stderr
    lm_eval_cli(tmp_path / "cli", f"pretrained={chat_model}", "tiny_mc_a", tiny_tasks, "--num_fewshot", "0", *flags)
    plain, chat = only_run(tmp_path / "plain"), only_run(tmp_path / "chat")
    p = oellm("collect-results", str(plain), str(tmp_path / "cli"), "--check")
    assert p.returncode == 0, p.stderr
    assert "1 planned evaluation(s) without a result" in p.stdout and (plain / "missing.csv").is_file()
    p = oellm("collect-results", str(chat), str(tmp_path / "cli"), "--check")
    assert p.returncode == 0, p.stderr
    assert "every planned evaluation has a result" in p.stdout and not (chat / "missing.csv").exists()
