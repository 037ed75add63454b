"""collect-results: every metric of real result files in one tidy table, leaderboard, plots, --check.

What a user notices: each value in the table is the one in the JSON (tasks, groups, every metric and
filter), lm-eval's own output dirs are read too, a re-run evaluation replaces the older one and is
reported, a corrupt file is named and skipped, and the missing list feeds `schedule-eval` again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from oellm.errors import OellmError
from oellm.plan.expand import rows_from_csv
from oellm.results import gather as gather_mod
from oellm.results.collect import Collect, missing_rows, write_missing
from oellm.results.collect import collect_results as _collect_results
from oellm.results.gather import collect
from oellm.results.tables import Board, board, leaderboard, pick_metric, to_markdown
from oellm.rows import EvalRow
from oellm.rundir import write_jobs, write_json
from tests.fixtures_models import make_run_dir


def collect_results(run_dirs, **options):
    return _collect_results(Collect(run_dirs, **options))


REPO = Path(__file__).resolve().parents[1]
LIMIT = 4


def metric_keys(result: dict) -> list[tuple[str, str, float, float | None]]:
    """(task, "metric,filter", value, stderr) of every numeric metric, straight from the JSON."""
    out = []
    for task, metrics in result["results"].items():
        for key, value in metrics.items():
            if "," in key and "_stderr" not in key and isinstance(value, (int, float)):
                name, filt = key.split(",", 1)
                out.append((task, key, value, metrics.get(f"{name}_stderr,{filt}")))
    return out


# ---------------------------------------------------------------- e2e: real worker + real lm-eval CLI


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_tasks: Path) -> dict:
    """A run of 2 checkpoints x (tiny_mc_a, tiny_group) x shots (0, 2) by the real worker, one planned
    row left unrun (array task 1), and an lm-eval CLI output dir that re-evaluates one of the rows."""
    tmp = tmp_path_factory.mktemp("collect")
    train = tmp / "train"
    ckpts = {}
    for step in (100, 200):
        d = train / f"checkpoint-{step}"
        d.mkdir(parents=True)
        for f in tiny_model.iterdir():
            (d / f.name).symlink_to(f)
        ckpts[step] = str(d.resolve())
    rows = [EvalRow(ckpts[s], t, n, limit=LIMIT, step=s) for s in (100, 200) for t in ("tiny_mc_a", "tiny_group")
            for n in (0, 2)]
    unrun = EvalRow(ckpts[200], "tiny_mc_b", 0, limit=LIMIT, step=200, task_index=1)
    run = make_run_dir(tmp, [*rows, unrun], include_paths=[tiny_tasks])
    proc = subprocess.run([sys.executable, "-m", "oellm", "worker", "--run_dir", str(run.path), "--index", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lm_out = tmp / "lm_eval_out"
    cli = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={ckpts[100]}",
           "--tasks", "tiny_mc_a", "--num_fewshot", "0", "--limit", str(LIMIT), "--include_path", str(tiny_tasks),
           "--output_path", str(lm_out), "--device", "cpu", "--batch_size", "1"]
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (lm_file,) = lm_out.rglob("results_*.json")
    return {"run": run, "rows": rows, "unrun": unrun, "ckpts": ckpts, "lm_file": lm_file, "lm_out": lm_out, "tmp": tmp}


@pytest.mark.e2e
def test_every_value_of_every_result_file_is_in_the_table(evaluated: dict) -> None:
    run, rows = evaluated["run"], evaluated["rows"]
    got = collect([run.path])
    df = got.table
    assert got.problems == [] and got.superseded == [] and got.n_files == len(rows)
    direct = {(r.model, r.task, r.n_shot) for r in rows}
    expected = 0
    for row in rows:
        result = json.loads(run.result_path(row.row_id).read_text())
        for task, key, value, stderr in metric_keys(result):
            name, filt = key.split(",", 1)
            hit = df[(df.row_id == row.row_id) & (df.task == task) & (df.metric == name) & (df["filter"] == filt)]
            if task != row.task and (row.model, task, row.n_shot) in direct:
                assert hit.empty, (row, task, key)  # the task's own evaluation wins over the group's copy
                continue
            assert len(hit) == 1, (row, task, key)
            assert hit.iloc[0].evaluated == row.task
            h = hit.iloc[0]
            assert h.value == value and h.stderr == stderr and h.n_shot == row.n_shot and h.step == row.step
            assert (h.model, h.model_args, h.limit) == (row.model, "", LIMIT)
            assert (h.run, h.cluster, h.lm_eval_version) == (run.path.name, "local", result["oellm"]["lm_eval_version"])
            assert h.date == result["oellm"]["ended"] and h.source == str(run.result_path(row.row_id))
            assert h.kind == ("group" if task == "tiny_group" else "task")
            expected += 1
    assert len(df) == expected
    assert {"acc", "acc_norm"} <= set(df.metric) and set(df.task) == {"tiny_mc_a", "tiny_mc_b", "tiny_group"}
    assert set(df[df.kind == "group"].task) == {"tiny_group"} and set(df.step) == {100, 200}
    assert set(df[df.task == "tiny_mc_b"].evaluated) == {"tiny_group"} and len(df[df.task == "tiny_mc_b"]) == 2 * 2 * 2


@pytest.mark.e2e
def test_lm_eval_output_dir_is_read_and_the_newest_evaluation_wins(evaluated: dict) -> None:
    run, ckpts, lm_file = evaluated["run"], evaluated["ckpts"], evaluated["lm_file"]
    got = collect([run.path, evaluated["lm_out"]])
    df = got.table
    old = EvalRow(ckpts[100], "tiny_mc_a", 0, limit=LIMIT)
    assert got.superseded == [str(run.result_path(old.row_id))]  # the worker's older file lost every value
    lm = json.loads(lm_file.read_text())
    mine = df[df.source == str(lm_file)]
    assert len(mine) == len(metric_keys(lm)) >= 2
    for task, key, value, stderr in metric_keys(lm):
        h = mine[(mine.task == task) & (mine.metric == key.split(",")[0])].iloc[0]
        assert (h.value, h.stderr, h.model, h.step, h.n_shot, h.limit) == (value, stderr, ckpts[100], 100, 0, LIMIT)
        assert h.row_id == old.row_id  # same identity as oellm's row: the two kinds deduplicate
    assert not ((df.model == ckpts[100]) & (df.task == "tiny_mc_a") & (df.n_shot == 0)
                & (df.source != str(lm_file))).any()


@pytest.mark.e2e
def test_check_writes_a_csv_that_schedule_eval_reads_back(evaluated: dict, capsys: pytest.CaptureFixture) -> None:
    run, unrun = evaluated["run"], evaluated["unrun"]
    collect_results(str(run.path), format="none", check=True)
    out = capsys.readouterr().out
    assert unrun.row_id in out and "--eval_csv_path" in out and f"--limit {LIMIT}" in out
    back = rows_from_csv(run.path / "missing.csv", limit=LIMIT)
    assert [r.row_id for r in back] == [unrun.row_id]


@pytest.mark.e2e
def test_outputs_leaderboard_and_plots(evaluated: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    run = evaluated["run"]
    collect_results(f"{run.path},{evaluated['lm_out']}", output_csv=tmp_path / "t.parquet", plot=tmp_path / "plots",
                    format="markdown")
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| model | tiny_group acc_norm 0-shot") and "| train@step100 limit=4 |" in out
    collect_results(str(run.path), output_csv=tmp_path / "t.csv", format="table")
    assert "tiny_mc_a acc_norm 2-shot" in capsys.readouterr().out
    pq, csv = pd.read_parquet(tmp_path / "t.parquet"), pd.read_csv(tmp_path / "t.csv")
    assert len(csv) == len(pq) and set(pq.columns) == set(csv.columns) and pq.step.dtype == "Int64"
    assert (pq.source == str(evaluated["lm_file"])).sum() == 2 and not (csv.source == str(evaluated["lm_file"])).any()
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    # one model (its checkpoints' parent dir) with 2 steps; evaluated with --limit, which its name says
    assert pngs == ["curves_train_limit_4.png", "heatmap.png"]
    assert all((tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


@pytest.mark.e2e
def test_corrupt_result_is_reported_skipped_and_listed_as_missing(
        evaluated: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = evaluated["run"]
    copy = tmp_path / src.path.name
    shutil.copytree(src.path, copy, symlinks=True)
    victim = copy / "results" / f"{evaluated['rows'][0].row_id}.json"
    victim.write_text(victim.read_text()[:300])  # truncated mid-write by a full disk, say
    collect_results(str(copy), format="none", check=True)
    captured = capsys.readouterr()
    assert f"skipped {victim}: unreadable" in captured.err
    assert evaluated["rows"][0].row_id in captured.out  # and --check offers it again
    assert {r.row_id for r in rows_from_csv(copy / "missing.csv", limit=LIMIT)} == {
        evaluated["rows"][0].row_id, evaluated["unrun"].row_id}


# ---------------------------------------------------------------- fast: synthetic result files


def fake(row: EvalRow, ended: str, acc: float = 0.5, task: str | None = None, **extra_metrics: float) -> dict:
    """The parts of a worker result that collect-results reads."""
    task = task or row.task
    return {"results": {task: {"alias": task, "acc,none": acc, "acc_stderr,none": 0.1, "acc_norm,none": acc + 0.1,
                               "acc_norm_stderr,none": "N/A", **extra_metrics}},
            "n-shot": {task: row.n_shot}, "date": 1.7e9,
            "oellm": {"row": {"row_id": row.row_id, "model": row.model, "model_args": row.model_args, "task": row.task,
                              "n_shot": row.n_shot, "limit": row.limit, "step": row.step},
                      "ended": ended, "lm_eval_version": "0.4.13", "model_revision": "abc"}}


def folder(path: Path, results: dict[str, dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, data in results.items():
        write_json(path / name, data)
    return path


A = EvalRow("org/a", "t1", 0, model_args="revision=x")
B = EvalRow("org/b", "t1", 5)


@pytest.mark.fast
def test_newest_wins_whatever_the_input_order(tmp_path: Path) -> None:
    new = folder(tmp_path / "lumi", {"1.json": fake(A, "2025-02-01T00:00:00+00:00", acc=0.7)})
    old = folder(tmp_path / "leo", {"1.json": fake(A, "2025-01-01T00:00:00+00:00", acc=0.3),
                                    "2.json": fake(B, "2025-01-01T00:00:00+00:00", **{"f1,strict": 0.2})})
    for order in ([new, old], [old, new]):
        got = collect(order)
        a = got.table[got.table.model == "org/a"]
        assert sorted(a.value) == pytest.approx([0.7, 0.8]) and set(a.run) == {"lumi"}
        assert got.superseded == [str(old / "1.json")]
        assert set(got.table[got.table.model == "org/b"].metric) == {"acc", "acc_norm", "f1"}
    row = got.table[(got.table.model == "org/b") & (got.table.metric == "acc_norm")].iloc[0]
    assert row.stderr != row.stderr and row.model_revision == "abc"  # "N/A" stderr -> NaN, not a crash


@pytest.mark.fast
def test_corrupt_and_foreign_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    nan_stderr = fake(A, "2025-01-01T00:00:00+00:00", **{"acc_stderr,none": float("nan")})  # lm-eval writes NaN
    d = folder(tmp_path / "copied", {"ok.json": nan_stderr, "other.json": {"x": 1}})
    (d / "broken.json").write_text('{"results": {"t1": {"acc,none": 0.')
    whole = json.dumps(fake(B, "2025-01-01"), indent=1)  # the worker's layout, cut after a nested "}"
    (d / "cut.json").write_text(whole[:whole.rindex("\n  }") + 4])
    collect_results(str(d), format="none")
    err = capsys.readouterr().err
    for name, why in (("broken", "unreadable"), ("cut", "unreadable"), ("other", "not an lm-eval")):
        assert f"skipped {d / name}.json: {why}" in err
    assert "ok.json" not in err and "collected 2 values from 4 file(s)" in err


@pytest.mark.fast
def test_empty_inputs_and_bad_values_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run_dir(tmp_path, [A])
    with pytest.raises(OellmError, match="no results found"):
        collect_results(str(run.path))
    assert "has no results yet" in capsys.readouterr().err
    collect_results(str(run.path), check=True)  # an empty run still lists what it planned
    assert [r.row_id for r in rows_from_csv(run.path / "missing.csv")] == [A.row_id]
    with pytest.raises(OellmError, match="does not exist"):
        collect_results(str(tmp_path / "nope"))
    with pytest.raises(OellmError, match="--format"):
        collect_results(str(run.path), format="html")
    folder(run.results, {f"{A.row_id}.json": fake(A, "2025-01-01T00:00:00+00:00")})
    with pytest.raises(OellmError, match="--metric 'bleu'.*available metrics: acc, acc_norm"):
        collect_results(str(run.path), metric="bleu")
    with pytest.raises(OellmError, match="--check needs"):
        collect_results(str(run.results), check=True)


@pytest.mark.fast
def test_leaderboard_prefers_acc_norm_and_honours_metric(tmp_path: Path) -> None:
    c = EvalRow("/runs/m/checkpoint-50", "t2", 0, step=50)
    d = folder(tmp_path / "r", {"a.json": fake(A, "2025-01-01", acc=0.5), "b.json": fake(B, "2025-01-01", acc=0.25),
                                "c.json": fake(c, "2025-01-01", acc=0.125, **{"f1,none": 0.9})})
    df = collect([d]).table
    board = leaderboard(df)
    assert list(board.columns) == ["t1 acc_norm 0-shot", "t1 acc_norm 5-shot", "t2 acc_norm", "average"]
    assert board.loc["org/a [revision=x]", "t1 acc_norm 0-shot"] == pytest.approx(0.6)
    assert board.loc["m@step50", "t2 acc_norm"] == pytest.approx(0.225)
    assert list(leaderboard(df, "f1").columns) == ["t2 f1"]
    md = to_markdown(leaderboard(df, "acc")).splitlines()
    assert md[0] == "| model | t1 acc 0-shot | t1 acc 5-shot | t2 acc | average |" and len(md) == 2 + 3
    assert md[2] == "| m@step50 |  |  | 0.1250 |  |"  # an average only over every task


@pytest.mark.fast
def test_missing_csv_round_trips_model_args_and_limits(tmp_path: Path) -> None:
    planned = [A, B, replace(B, task="t2", limit=10.0), EvalRow("org/c", "t3", 2, model_args="revision=main,dtype=float16")]
    run = make_run_dir(tmp_path, planned)
    folder(run.results, {f"{B.row_id}.json": fake(B, "2025-01-01")})
    todo = missing_rows(collect([run.path]))[run.path]
    assert [r.row_id for r in todo] == [planned[0].row_id, planned[2].row_id, planned[3].row_id]
    path = tmp_path / "m.csv"
    write_missing(path, [todo[0], todo[2]])
    assert path.read_text().splitlines()[1] == '"org/a,revision=x",t1,0,lm_eval,1'
    assert [r.row_id for r in rows_from_csv(path)] == [todo[0].row_id, todo[2].row_id]
    collect_results(str(run.path), format="none", check=True)  # two limits: one file each
    assert [r.row_id for r in rows_from_csv(run.path / "missing-limit-10.csv", limit=10)] == [planned[2].row_id]
    assert len(rows_from_csv(run.path / "missing-limit-none.csv")) == 2


@pytest.mark.fast
def test_run_dirs_nested_in_a_folder_and_the_process_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [EvalRow(f"org/m{i}", "t1", i % 3) for i in range(30)]
    run = make_run_dir(tmp_path, rows, cluster="lumi")
    folder(run.results, {f"{r.row_id}.json": fake(r, "2025-01-01") for r in rows})
    write_jobs(run.jobs, rows)
    serial = collect([tmp_path / "runs"], workers=1).table
    monkeypatch.setattr(gather_mod, "PARALLEL_FROM", 2)
    monkeypatch.setattr(gather_mod, "_CHUNK", 7)
    pooled = collect([tmp_path / "runs"], workers=2).table
    monkeypatch.setattr(gather_mod, "_json_loads", json.loads)  # the stdlib path, where orjson is missing
    stdlib = collect([tmp_path / "runs"], workers=1).table
    assert len(serial) == 60 and set(serial.cluster) == {"lumi"} and serial.equals(pooled) and serial.equals(stdlib)


@pytest.mark.fast
@pytest.mark.parametrize("flag", [["--check"], ["--check", "true"]])
def test_cli_signature_parses_lists_and_bare_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture, flag: list[str]) -> None:
    from oellm import cli

    run = make_run_dir(tmp_path, [A, B])
    other = folder(tmp_path / "copied", {"b.json": fake(B, "2025-01-01")})
    cli.main(["collect-results", "--run_dirs", f"{run.path},{other}", "--format", "markdown", *flag])
    out = capsys.readouterr().out
    assert out.startswith("| model | t1 acc_norm |\n") and "1 planned evaluation(s) without a result" in out
    assert [r.row_id for r in rows_from_csv(run.path / "missing.csv")] == [A.row_id]


# ---------------------------------------------------------------- fast: the leaderboard never hides a value


def board_of(*folders: Path, **options) -> Board:
    return board(collect(list(folders)).table, **options)


@pytest.mark.fast
def test_models_sharing_a_base_name_get_labels_that_tell_them_apart(tmp_path: Path) -> None:
    rows = [EvalRow("/s/runA/model", "t1", 0), EvalRow("/s/runB/model", "t1", 0),
            EvalRow("/a/run7/checkpoint-1000", "t1", 0, step=1000), EvalRow("/b/run7/checkpoint-1000", "t1", 0, step=1000),
            EvalRow("/b/run7/checkpoint-2000", "t1", 0, step=2000), EvalRow("org/model", "t1", 0)]
    d = folder(tmp_path / "r", {f"{i}.json": fake(r, "2025-01-01", acc=i / 10) for i, r in enumerate(rows)})
    table = board_of(d).table
    assert list(table.index) == ["a/run7@step1000", "b/run7@step1000", "b/run7@step2000", "org/model",
                                 "runA/model", "runB/model"]
    assert sorted(table["t1 acc_norm"]) == pytest.approx([0.1 + i / 10 for i in range(6)])  # every value shown


@pytest.mark.fast
def test_a_limited_run_is_a_row_of_its_own_whatever_the_order(tmp_path: Path) -> None:
    full = folder(tmp_path / "local1", {"1.json": fake(A, "2025-01-01", acc=0.1667)})
    limited = folder(tmp_path / "limrun", {"1.json": fake(replace(A, limit=5.0), "2025-02-01", acc=0.4)})
    for order in ([full, limited], [limited, full]):
        col = board_of(*order).table["t1 acc_norm"]
        assert col.to_dict() == pytest.approx({"org/a [revision=x]": 0.2667, "org/a [revision=x] limit=5": 0.5})


@pytest.mark.fast
def test_a_cell_with_two_values_shows_the_newest_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ours = folder(tmp_path / "ours", {"1.json": fake(B, "2025-01-01T00:00:00+00:00", acc=0.3)})
    plain = fake(B, "", acc=0.6)  # the same model through the lm_eval CLI: no oellm provenance, no n-shot
    plain.update(config={"model_args": f"pretrained={B.model}"}, date=1.75e9)  # 2025-06-15
    del plain["oellm"], plain["n-shot"]
    theirs = folder(tmp_path / "theirs", {"results_x.json": plain})
    for order in ([ours, theirs], [theirs, ours]):
        b = board_of(*order)
        assert b.table.loc["org/b", "t1 acc_norm"] == pytest.approx(0.7)
        [note] = b.notes
        assert "org/b / t1 acc_norm: 2 values; showing the newest 0.7000" in note and str(ours / "1.json") in note
    collect_results(f"{ours},{theirs}", format="none")
    assert "oellm: note: org/b / t1 acc_norm: 2 values" in capsys.readouterr().err


@pytest.mark.fast
def test_a_chat_evaluation_is_a_row_of_its_own_beside_the_plain_one(tmp_path: Path) -> None:
    """lm-eval options change the numbers: a chat-template run of the same model, task and shots never
    shares (or replaces) the plain run's cell, in oellm's results and in the lm_eval CLI's alike."""
    from oellm.options import row_options

    chat = EvalRow(B.model, B.task, B.n_shot, options=row_options(apply_chat_template=True))
    ours_chat = fake(chat, "2025-02-01T00:00:00+00:00", acc=0.2)
    ours_chat["oellm"]["row"]["options"] = chat.options
    cli_chat = fake(B, "", acc=0.4)  # the lm_eval CLI with --apply_chat_template --system_instruction
    cli_chat.update(config={"model_args": f"pretrained={B.model}"}, date=1.75e9, chat_template="{{x}}",
                    fewshot_as_multiturn=True, system_instruction="Be brief.")
    del cli_chat["oellm"]
    d = folder(tmp_path / "runs", {"plain.json": fake(B, "2025-01-01T00:00:00+00:00", acc=0.3),
                                   "chat.json": ours_chat, "results_cli.json": cli_chat})
    b = board_of(d)
    assert not b.notes, b.notes
    assert b.table.loc["org/b", "t1 acc_norm"] == pytest.approx(0.4)
    assert b.table.loc["org/b (chat)", "t1 acc_norm"] == pytest.approx(0.3)
    assert b.table.loc['org/b (chat sys="Be brief.")', "t1 acc_norm"] == pytest.approx(0.5)


def gsm8k_like(row: EvalRow, order: tuple[str, str]) -> dict:
    result = fake(row, "2025-01-01")
    values = {"strict-match": 0.25, "flexible-extract": 0.75}
    result["results"] = {row.task: {f"exact_match,{f}": values[f] for f in order} |
                         {f"exact_match_stderr,{f}": 0.01 for f in order}}
    return result


@pytest.mark.fast
def test_generation_tasks_show_their_primary_filter_named_in_the_column(tmp_path: Path) -> None:
    g = EvalRow("org/a", "gsm8k", 5)
    assert pick_metric(["exact_match,flexible-extract", "exact_match,strict-match"], "exact_match") == \
        "exact_match,strict-match"
    for order in (("strict-match", "flexible-extract"), ("flexible-extract", "strict-match")):
        d = folder(tmp_path / "-".join(order), {"g.json": gsm8k_like(g, order)})
        for options in ({}, {"task_metrics": {"gsm8k": "exact_match"}}):
            table = board_of(d, **options).table
            assert table.to_dict() == {"gsm8k exact_match (strict-match)": {"org/a": 0.25}}
        assert list(board_of(d, metric="exact_match,flexible-extract").table.columns) == [
            "gsm8k exact_match (flexible-extract)"]  # asked for by name: shown, and named


@pytest.mark.fast
def test_averages_per_task_group_and_overall_only_over_complete_rows(tmp_path: Path, capsys) -> None:
    from oellm.task_groups import GroupTask

    rows = [EvalRow("org/a", "t1", 0), EvalRow("org/a", "t2", 0), EvalRow("org/a", "t3", 5), EvalRow("org/b", "t1", 0)]
    d = folder(tmp_path / "r", {f"{i}.json": fake(r, "2025-01-01", acc=0.1 * (i + 1)) for i, r in enumerate(rows)})
    groups = {"g": [GroupTask("t1", (0,), "lm_eval"), GroupTask("t2", (0,), "lm_eval")],
              "uncovered": [GroupTask("t1", (0,), "lm_eval"), GroupTask("t9", (0,), "lm_eval")]}
    b = board_of(d, groups=groups)
    assert list(b.table.columns) == ["t1 acc_norm", "t2 acc_norm", "t3 acc_norm", "avg g", "average"]
    assert b.averages == {"avg g": ["t1 acc_norm", "t2 acc_norm"], "average": ["t1 acc_norm", "t2 acc_norm", "t3 acc_norm"]}
    assert b.table.loc["org/a", "avg g"] == pytest.approx(0.25) and b.table.loc["org/a", "average"] == pytest.approx(0.3)
    assert b.table.loc["org/b"].isna().tolist() == [False, True, True, True, True]  # b lacks t2, t3: no average
    f = tmp_path / "groups.yaml"
    f.write_text("task_groups:\n  g:\n    n_shots: [0]\n    tasks:\n      - task: t1\n      - task: t2\n")
    collect_results(str(d), format="markdown", task_groups_file=f)
    assert capsys.readouterr().out.splitlines()[0] == "| model | t1 acc_norm | t2 acc_norm | t3 acc_norm | avg g | average |"


@pytest.mark.e2e
def test_the_html_report_carries_the_real_workers_provenance(evaluated: dict, tmp_path: Path) -> None:
    import oellm
    from tests.test_report import embedded

    run, page = evaluated["run"], tmp_path / "report.html"
    collect_results(str(run.path), format="none", html=page)
    data = embedded(page)
    assert {r["label"] for r in data["rows"]} == {"train@step100 limit=4", "train@step200 limit=4"}
    result = json.loads(run.result_path(evaluated["rows"][0].row_id).read_text())["oellm"]
    [prov] = {json.dumps(p, sort_keys=True) for p in data["prov"] if p["n_shot"] == 0}
    prov = json.loads(prov)
    assert (prov["host"], prov["oellm_version"], prov["lm_eval_version"]) == (
        result["host"], oellm.__version__, result["lm_eval_version"])
    assert prov["cluster"] == "local" and prov["limit"] == LIMIT and prov["dir"] == str(run.results)
    [missing] = data["missing"]
    assert [r["row_id"] for r in missing["rows"]] == [evaluated["unrun"].row_id]
    assert missing["commands"][-1] == f"oellm schedule-eval --eval_csv_path {run.path}/missing.csv --limit {LIMIT}"
