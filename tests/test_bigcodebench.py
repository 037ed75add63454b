"""The bigcodebench suite: real bigcodebench 0.2.5 in a sandbox venv built once per session, offline, on
synthetic problems whose tests need only the standard library.

Scoring is checked against bigcodebench's own CLI run on the same samples (canonical solutions pass,
wrong ones fail), generation with the tiny model through the suite (garbage code: pass@1 is 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oellm.errors import OellmError
from oellm.formats import from_pass_at_k
from oellm.rows import EvalRow, ModelRef
from oellm.suites.base import RowFailure
from oellm.suites.bigcodebench import (
    INSTRUCTION_PREFIX,
    RESPONSE_PREFIX,
    BigCodeBenchSuite,
    build_prompt,
    data_file,
    score,
)
from tests.conftest import missing_part

# bigcodebench --no-deps, plus what its local evaluation imports and runs (matplotlib: reliability_guard
# imports it before every test; without it every solution, canonical ones too, "fails")
SANDBOX_PACKAGES = ["appdirs", "fire", "matplotlib", "numpy", "pqdm", "rich", "tempdir", "termcolor", "tqdm",
                    "tree_sitter", "tree-sitter-python", "wget"]


def _problem(i: int, imports: str, sig: str, doc: str, body: str, tests: list[tuple[str, object]]) -> dict:
    """One problem in bigcodebench's schema (the fields `completeness_check` and evaluation read)."""
    code_prompt = f"{imports}\ndef {sig}:\n"
    test = "import unittest\n\n\nclass TestCases(unittest.TestCase):\n" + "".join(
        f"    def test_{k}(self):\n        self.assertEqual({call}, {want!r})\n"
        for k, (call, want) in enumerate(tests))
    libs = [imports.split()[1]]
    doc_struct = {"description": [doc], "notes": [], "params": [], "returns": [], "reqs": libs, "raises": [],
                  "examples": []}
    return {"task_id": f"BigCodeBench/{i}",
            "complete_prompt": f'{imports}\n\ndef {sig}:\n    """\n    {doc}\n    """\n',
            "instruct_prompt": f"{doc}\nWrite self-contained code starting with:\n```\n{code_prompt}```",
            "canonical_solution": body, "code_prompt": code_prompt, "test": test, "entry_point": "task_func",
            "doc_struct": json.dumps(doc_struct), "libs": repr(libs)}


PROBLEMS = [
    _problem(0, "import math", "task_func(a, b)", "Return the sum of a and b.", "    return a + b\n",
             [("task_func(1, 2)", 3), ("task_func(-1, 1)", 0)]),
    _problem(1, "import collections", "task_func(text)", "Count the words of text.",
             "    return dict(collections.Counter(text.split()))\n",
             [("task_func('a b a')", {"a": 2, "b": 1})]),
    _problem(2, "import itertools", "task_func(n)", "Return the first n Fibonacci numbers.",
             "    out, a, b = [], 0, 1\n    for _ in range(n):\n        out.append(a)\n"
             "        a, b = b, a + b\n    return out\n", [("task_func(5)", [0, 1, 1, 2, 3])]),
    _problem(3, "import string", "task_func(s)", "Return s reversed.", "    return s[::-1]\n",
             [("task_func('abc')", "cba")]),
]


def _solution(p: dict, right: bool) -> dict:
    return {"task_id": p["task_id"], "solution": p["complete_prompt"] + (p["canonical_solution"] if right else
                                                                        "    return None\n")}


@pytest.fixture()
def problems(tmp_path: Path) -> Path:
    path = tmp_path / "BigCodeBench-v0.1.4.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A venv with bigcodebench and only its evaluation dependencies (no torch); its ground-truth cache
    (appdirs: $XDG_CACHE_HOME/bigcodebench) in a temp dir."""
    venv = tmp_path_factory.mktemp("bigcodebench") / "venv"
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    try:
        for argv in ([sys.executable, "-m", "venv", str(venv)], [*pip, "--no-deps", "bigcodebench==0.2.5"],
                     [*pip, *SANDBOX_PACKAGES]):
            subprocess.run(argv, check=True, capture_output=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        missing_part(f"bigcodebench sandbox venv (pip install failed: {(e.stderr or b'')[-300:]!r})")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield python


def bigcodebench_itself(python: str, samples: list[dict], problems: Path, workdir: Path) -> dict:
    """pass@k as bigcodebench's own CLI computes it (`python -m bigcodebench.evaluate --execution local`);
    empty modules stand in for the remote backends it imports but a local run never calls."""
    stubs = workdir / "stubs"
    stubs.mkdir(parents=True)
    for name, text in {"gradio_client": "Client = handle_file = None", "e2b": "Sandbox = None", "httpx": "",
                       "datasets": "load_dataset = None", "transformers": "AutoTokenizer = None"}.items():
        (stubs / f"{name}.py").write_text(text + "\n")
    path = workdir / "direct--bigcodebench-complete.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    env = {**os.environ, "BIGCODEBENCH_OVERRIDE_PATH": str(problems), "PYTHONPATH": str(stubs)}
    argv = [python, "-m", "bigcodebench.evaluate", "--split", "complete", "--subset", "full", "--samples",
            str(path), "--execution", "local", "--parallel", "2"]
    subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=300)
    return json.loads((workdir / "direct--bigcodebench-complete_pass_at_k.json").read_text())


@pytest.mark.fast
def test_validate_names_the_closest_task():
    suite = BigCodeBenchSuite()
    suite.validate(["complete", "instruct", "complete-hard", "instruct-hard"], [])
    with pytest.raises(OellmError) as e:
        suite.validate(["complete", "instrct", "zzz"], [])
    msg = str(e.value)
    assert "\n" not in msg and "'instrct' (did you mean 'instruct'?)" in msg and "'zzz'" in msg
    assert msg.endswith("valid: complete, complete-hard, instruct, instruct-hard")
    assert suite.datasets(["complete"], []) == {"complete": None}


@pytest.mark.fast
def test_pass_at_k_in_lm_eval_layout_is_collected():
    from oellm.results.records import COLUMNS, records
    from oellm.suites.lm_eval import has_metrics

    raw = {"pass@1": 0.25, "model": "m", "split": "instruct", "subset": "hard", "calibrated": True,
           "gt_pass_rate": 1.0, "failed_tasks": []}
    out = from_pass_at_k(raw, task="instruct-hard")
    assert out["results"] == {"instruct-hard": {"pass@1,none": 0.25, "gt_pass_rate,none": 1.0}}
    assert out["n-shot"] == {"instruct-hard": 0} and out["bigcodebench"] == raw and has_metrics(out)
    assert out["configs"]["instruct-hard"]["subset"] == "hard"
    metric, value = COLUMNS.index("metric"), COLUMNS.index("value")
    got = {r[metric]: r[value] for r in records(out, "f.json", "run", None)}
    assert got == {"pass@1": 0.25, "gt_pass_rate": 1.0}
    assert not has_metrics(from_pass_at_k({"model": "m"}, task="complete"))


@pytest.mark.fast
def test_problems_file_or_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("BIGCODEBENCH_OVERRIDE_PATH", raising=False)
    (tmp_path / "BigCodeBench-Hard-v0.1.4.jsonl").write_text("{}\n")
    assert data_file("instruct-hard", str(tmp_path)).name == "BigCodeBench-Hard-v0.1.4.jsonl"
    with pytest.raises(RowFailure) as e:
        data_file("complete", str(tmp_path))  # the folder lacks the full set
    assert e.value.kind == "missing_data" and "BigCodeBench-v0.1.4.jsonl" in str(e.value)
    monkeypatch.setenv("BIGCODEBENCH_OVERRIDE_PATH", str(tmp_path / "BigCodeBench-Hard-v0.1.4.jsonl"))
    assert data_file("complete").name == "BigCodeBench-Hard-v0.1.4.jsonl"  # a file is taken as given


@pytest.mark.e2e
def test_scores_match_bigcodebench_itself(sandbox: str, problems: Path, tmp_path: Path):
    for pattern, expected in [((1, 1, 1, 1), 1.0), ((0, 0, 0, 0), 0.0), ((1, 0, 1, 0), 0.5)]:
        samples = [_solution(p, bool(r)) for p, r in zip(PROBLEMS, pattern, strict=True)]
        ours = score(samples, "complete", problems, sandbox, workdir=tmp_path / f"ours{pattern}", parallel=2)
        theirs = bigcodebench_itself(sandbox, samples, problems, tmp_path / f"theirs{pattern}")
        assert ours["pass@1"] == theirs["pass@1"] == expected, (pattern, ours, theirs)
        assert ours["gt_pass_rate"] == 1.0
        results = next((tmp_path / f"ours{pattern}").glob("*_eval_results.json"))
        statuses = [json.loads(results.read_text())["eval"][p["task_id"]][0]["status"] for p in PROBLEMS]
        assert statuses == ["pass" if r else "fail" for r in pattern]


@pytest.mark.e2e
def test_generated_code_runs_outside_this_process(sandbox: str, problems: Path, tmp_path: Path):
    marker = tmp_path / "ran_in_pid"
    # exits at import: in this process it would end the test (os._exit works too, but bigcodebench then
    # waits out its 240 s per-sample limit: its Manager process keeps the child's sentinel open)
    evil = (f"import os, sys\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\nsys.exit(3)\n"
            "def task_func(a, b):\n    return a + b\n")
    samples = [{"task_id": "BigCodeBench/0", "solution": evil}] + [_solution(p, True) for p in PROBLEMS[1:]]
    out = score(samples, "complete", problems, sandbox, workdir=tmp_path / "w", parallel=2)
    assert out["pass@1"] == 0.75  # the sample that exits scores as a failure; the test process lives on
    assert marker.is_file() and int(marker.read_text()) != os.getpid()


@pytest.mark.e2e
def test_a_sandbox_where_canonical_solutions_fail_is_a_row_failure(sandbox: str, tmp_path: Path):
    broken = tmp_path / "broken.jsonl"  # as when the sandbox lacks what the problems import
    broken.write_text(json.dumps({**PROBLEMS[0], "canonical_solution": "    return None\n"}) + "\n")
    with pytest.raises(RowFailure) as e:
        score([_solution(PROBLEMS[0], True)], "complete", broken, sandbox, workdir=tmp_path / "w", parallel=1)
    assert e.value.kind == "sandbox" and "Groundtruth pass rate: 0.000" in str(e.value)


@pytest.mark.e2e
def test_a_python_without_bigcodebench_is_a_row_failure(problems: Path, tmp_path: Path):
    with pytest.raises(RowFailure) as e:
        score([_solution(PROBLEMS[0], True)], "complete", problems, sys.executable, workdir=tmp_path)
    assert e.value.kind == "no_metrics" and "No module named 'bigcodebench'" in str(e.value)


@pytest.mark.e2e
def test_tiny_model_generates_and_is_scored(sandbox: str, problems: Path, tiny_model: Path):
    suite = BigCodeBenchSuite()
    settings = {"bigcodebench_python": sandbox, "bigcodebench_data": str(problems), "batch_size": 2,
                "bigcodebench_parallel": 2}
    model, info = suite.load(ModelRef(str(tiny_model)), settings)
    assert {"args", "metadata", "revision", "device", "gpu", "batch_size", "pid", "started", "seconds",
            "loads_in_process"} <= set(info)
    row = EvalRow(model=str(tiny_model), task="complete", n_shot=0, limit=3, suite="bigcodebench")
    out, samples = suite.evaluate(model, info, row, [row], settings)
    assert out["results"]["complete"]["pass@1,none"] == 0.0 and out["n-shot"] == {"complete": 0}
    assert out["results"]["complete"]["gt_pass_rate,none"] == 1.0
    config = out["configs"]["complete"]
    assert config["n_problems"] == 3 and config["chat_template"] is False and config["max_new_tokens"] == 64
    assert [s["task_id"] for s in samples["complete"]] == [p["task_id"] for p in PROBLEMS[:3]]
    for s, p in zip(samples["complete"], PROBLEMS, strict=False):  # a base model continues the raw prompt
        assert s["raw_solution"].startswith(p["complete_prompt"]) and s["status"] != "pass"
    assert "bigcodebench" not in sys.modules  # generated code is scored in the sandbox only
    instruct = EvalRow(model=str(tiny_model), task="instruct", n_shot=0, suite="bigcodebench")
    with pytest.raises(RowFailure) as e:
        suite.evaluate(model, info, instruct, [instruct], settings)
    assert e.value.kind == "unsupported"
    # with a chat template: bigcodebench's prefilled answer, which the model continues after "```python"
    model.tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}> {{ m.content }}{% endfor %}"
    out, samples = suite.evaluate(model, info, instruct, [instruct], settings)
    assert out["results"]["instruct"]["pass@1,none"] == 0.0 and out["configs"]["instruct"]["chat_template"]
    assert len(samples["instruct"]) == len(PROBLEMS)
    prompt = build_prompt(PROBLEMS[0], "instruct", model.tokenizer)
    assert prompt.startswith(f"<user> {INSTRUCTION_PREFIX}\n{PROBLEMS[0]['instruct_prompt'].strip()}\n")
    assert prompt.endswith(f"<assistant> {RESPONSE_PREFIX}\n```python\n")
    suite.unload()


@pytest.mark.e2e
def test_schedule_eval_runs_bigcodebench_rows_and_collect_reads_them(sandbox: str, problems: Path, tiny_model: Path,
                                                                    tmp_path: Path):
    """As a user runs it: the sandbox and the problems named by environment, the local executor."""
    env = {**os.environ, "OELLM_BIGCODEBENCH_PYTHON": sandbox, "BIGCODEBENCH_OVERRIDE_PATH": str(problems)}
    proc = subprocess.run([sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models",
                           str(tiny_model), "--suite", "bigcodebench", "--tasks", "complete", "--limit", "2",
                           "--output_dir", str(tmp_path / "runs")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    [run] = (tmp_path / "runs").iterdir()
    [result] = [json.loads(p.read_text()) for p in (run / "results").glob("*.json")]
    assert result["results"]["complete"] == {"pass@1,none": 0.0, "gt_pass_rate,none": 1.0}
    assert result["oellm"]["row"]["suite"] == "bigcodebench"
    assert len(next((run / "results").glob("*.samples.jsonl")).read_text().splitlines()) == 2
    shown = subprocess.run([sys.executable, "-m", "oellm", "collect-results", str(run)], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "complete [bigcodebench] pass@1" in shown.stdout, shown.stdout + shown.stderr
