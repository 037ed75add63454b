"""BigCodeBench (bigcodebench 0.2.5) as a suite: the worker generates code with the model it loaded once
(lm-eval's HF wrapper, prompts built as bigcodebench builds them), and bigcodebench's own
`evaluate(..., execution="local")` scores it in another process, since generated code must never run
in the worker: `python` of `bigcodebench_python` / $OELLM_BIGCODEBENCH_PYTHON (a command, e.g. an
`apptainer exec` line), else this interpreter.

Tasks are bigcodebench's splits, `complete` and `instruct`, with `-hard` for its hard subset. Compute
nodes are offline, so the problems come from a jsonl file (`bigcodebench_data`, else
$BIGCODEBENCH_OVERRIDE_PATH, else bigcodebench's own cache dir): a file, or a folder holding
bigcodebench's cache names `BigCodeBench-v0.1.4.jsonl` / `BigCodeBench-Hard-v0.1.4.jsonl`. Make them
where the Hub is reachable, as bigcodebench itself does: `datasets.load_dataset("bigcode/bigcodebench"
[-hard], split="v0.1.4").to_json(path)`.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.formats import from_pass_at_k
from oellm.rows import EvalRow, ModelRef
from oellm.suites.base import RowFailure

log = logging.getLogger("oellm.worker")

TASKS = ("complete", "complete-hard", "instruct", "instruct-hard")
DATA_VERSION = "v0.1.4"  # bigcodebench 0.2.5's BIGCODEBENCH_VERSION
MAX_NEW_TOKENS = 1280  # run_codegen's default
SCORE_TIMEOUT_S = 3 * 3600.0
# bigcodebench.provider.utility and run_codegen's defaults, copied so the worker needs no bigcodebench
EOS = ["<|endoftext|>", "<|endofmask|>", "</s>", "\nif __name__", "\ndef main(", "\nprint("]
DIRECT_EOS = ["\ndef ", "\nclass ", "\nimport ", "\nfrom ", "\nassert "]  # base models (no chat template)
INSTRUCTION_PREFIX = ("Please provide a self-contained Python script that solves the following problem in a "
                      "markdown code block:")
RESPONSE_PREFIX = ("Below is a Python script with a self-contained function that solves the problem and "
                   "passes corresponding tests:")
_SPLITTER = "-[[]]-this-is-really-our-highest-priority-[[]]-"


def split_subset(task: str) -> tuple[str, str]:
    """`instruct-hard` -> ("instruct", "hard"): bigcodebench's split and subset."""
    split, _, subset = task.partition("-")
    return split, subset or "full"


def data_file(task: str, data: str | None = None) -> Path:
    """The problems jsonl of `task` (see the module docstring), or RowFailure("missing_data")."""
    given = data or os.environ.get("BIGCODEBENCH_OVERRIDE_PATH")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bigcodebench"  # as appdirs
    base = Path(given).expanduser() if given else cache
    name = f"BigCodeBench{'-Hard' if split_subset(task)[1] == 'hard' else ''}-{DATA_VERSION}.jsonl"
    path = base / name if base.is_dir() else base
    if not path.is_file():
        raise RowFailure("missing_data", f"bigcodebench problems for {task} not found at {path}; compute "
                         "nodes are offline: set `bigcodebench_data` (or BIGCODEBENCH_OVERRIDE_PATH) to the "
                         f"jsonl file, or a folder with {name}")
    return path


def read_problems(path: Path, limit: float | None = None) -> list[dict[str, Any]]:
    """Problems in file order (bigcodebench's order); `limit` as lm-eval reads it (< 1: a fraction)."""
    with open(path, encoding="utf-8") as fh:
        problems = [json.loads(line) for line in fh if line.strip()]
    if limit is not None:
        problems = problems[:int(limit) if limit >= 1 else math.ceil(len(problems) * limit)]
    return problems


def build_prompt(problem: dict[str, Any], split: str, tokenizer: Any) -> str:
    """bigcodebench's `make_raw_chat_prompt` with prefill (its vLLM backend): a model with a chat template
    continues its own answer right after "```python"; a base model continues the raw prompt."""
    text = problem[f"{split}_prompt"]
    if getattr(tokenizer, "chat_template", None) is None:
        return text
    body = f"```\n{text.strip()}\n```\n" if split == "complete" else f"{text.strip()}\n"
    chat = [{"role": "user", "content": f"{INSTRUCTION_PREFIX}\n{body}"},
            {"role": "assistant", "content": f"{RESPONSE_PREFIX}\n```python\n{_SPLITTER}\n```\n"}]
    return tokenizer.apply_chat_template(chat, tokenize=False).split(_SPLITTER)[0]


def sandbox_python(settings: dict[str, Any]) -> list[str]:
    """The command that runs generated code: a Python with bigcodebench (and the problems' libraries)."""
    given = settings.get("bigcodebench_python") or os.environ.get("OELLM_BIGCODEBENCH_PYTHON")
    return shlex.split(given) if given else [sys.executable]


def score(samples: Iterable[dict[str, Any]], task: str, problems: str | Path,
          python: Sequence[str] | str | None = None, *, workdir: str | Path | None = None,
          parallel: int | None = None, timeout_s: float = SCORE_TIMEOUT_S) -> dict[str, Any]:
    """bigcodebench's pass@k of `samples` ({"task_id", and "solution" (whole program), "completion" (appended
    to the prompt) or "raw_solution" (sanitised there, as its codegen does)}) over the problems file, run
    by `python` in a new process group. `workdir` must be fresh (bigcodebench asks before overwriting);
    its `*_eval_results.json` holds every sample's status."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="oellm-bigcodebench-") as tmp:
            return score(samples, task, problems, python, workdir=tmp, parallel=parallel, timeout_s=timeout_s)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    split, subset = split_subset(task)
    path = work / f"oellm--bigcodebench-{task}.jsonl"  # bigcodebench names the model by the part before "--"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    (work / "oellm_score.py").write_text(_SCORER, encoding="utf-8")
    command = [python] if isinstance(python, str) else list(python or [sys.executable])
    argv = [*command, str(work / "oellm_score.py"), str(path), split, subset,
            str(parallel or max(1, _cpus() // 2))]
    # no GPU for generated code: TensorFlow in a problem would take the memory the model holds
    env = {**os.environ, "BIGCODEBENCH_OVERRIDE_PATH": str(Path(problems).resolve()),
           "CUDA_VISIBLE_DEVICES": ""}
    output = work / "score.log"
    with open(output, "wb") as out:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # input(): EOF; one group
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RowFailure("timeout", f"bigcodebench scoring of {task} ran over {timeout_s:.0f} s") \
                from None
        finally:
            _kill_group(proc)
    result = path.with_name(path.name.replace(".jsonl", "_pass_at_k.json"))
    tail = output.read_text(errors="replace")[-2000:].strip().replace("\n", " | ")
    if proc.returncode or not result.is_file():
        raise RowFailure("no_metrics", f"bigcodebench scoring of {task} (`{shlex.join(command)}`) exited "
                         f"with {proc.returncode} and wrote no pass@k: {tail or '(no output)'}")
    data = json.loads(result.read_text())
    if data.get("gt_pass_rate") == 0:  # the canonical solutions fail too: every sample would "fail"
        raise RowFailure("sandbox", f"bigcodebench's own solutions of {task} fail in "
                         f"`{shlex.join(command)}`: it lacks bigcodebench's evaluation requirements "
                         f"(matplotlib at least): {tail}")
    if isinstance(data.get("gt_pass_rate"), float) and data["gt_pass_rate"] < 0.99:
        log.warning("bigcodebench %s: only %.3f of its own solutions pass in this sandbox (failed: %s)", task,
                    data["gt_pass_rate"], ", ".join(data.get("failed_tasks") or [])[:500])
    return data


def _kill_group(proc: subprocess.Popen) -> None:
    """The scorer's pool and test processes outlive it when it is killed or times out."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _cpus() -> int:
    """CPUs this process may use (SLURM's cgroup, not the node's count bigcodebench would take)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class BigCodeBenchSuite:
    name = "bigcodebench"

    def __init__(self) -> None:
        from oellm.suites.lm_eval import LmEvalSuite

        self._lm_eval = LmEvalSuite()  # its load and unload: the same model object, info and counters

    def validate(self, names: Sequence[str], include_paths: Sequence[str]) -> None:
        unknown = [n for n in names if n not in TASKS]
        if unknown:
            close = {n: difflib.get_close_matches(n, TASKS, n=1) for n in unknown}
            hints = [f"{n!r} (did you mean {c[0]!r}?)" if c else repr(n) for n, c in close.items()]
            raise OellmError(f"unknown bigcodebench task(s): {', '.join(hints)}; valid: {', '.join(TASKS)}")

    def datasets(self, names: Sequence[str],
                 include_paths: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return dict.fromkeys(names)  # a jsonl named by settings, not a Hub dataset the pre-cache can fetch

    def load(self, ref: ModelRef, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """lm-eval's HF wrapper, loaded once per model (RowFailure("missing_model") when not on disk)."""
        return self._lm_eval.load(ref, settings)

    def evaluate(self, model: Any, info: dict[str, Any], row: EvalRow, rows: Sequence[EvalRow],
                 settings: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """Generate greedily in this process, score in the sandbox; the samples carry each status."""
        from oellm.suites.lm_eval import has_metrics

        split, _ = split_subset(row.task)
        problems = read_problems(data_file(row.task, settings.get("bigcodebench_data")), row.limit)
        if not problems:
            raise RowFailure("no_metrics", f"bigcodebench {row.task}: no problems to evaluate")
        direct = getattr(model.tokenizer, "chat_template", None) is None
        if direct and split == "instruct":  # bigcodebench's own rule
            raise RowFailure("unsupported", f"bigcodebench {row.task} needs a chat template; {row.model} has "
                             "none (a base model can run `complete`)")
        max_new = int(settings.get("bigcodebench_max_new_tokens") or MAX_NEW_TOKENS)
        if max_new >= model.max_length:  # lm-eval needs room for the prompt
            max_new = model.max_length // 2
        prompts = [build_prompt(p, split, model.tokenizer) for p in problems]
        texts = generate(model, prompts, EOS + DIRECT_EOS if direct else EOS, max_new)
        samples = [{"task_id": p["task_id"], "raw_solution": prompt + text if direct else text}
                   for p, prompt, text in zip(problems, prompts, texts, strict=True)]
        with tempfile.TemporaryDirectory(prefix="oellm-bigcodebench-") as tmp:
            subset_file = Path(tmp) / "problems.jsonl"  # `limit`: bigcodebench scores all of its file
            subset_file.write_text("".join(json.dumps(p) + "\n" for p in problems), encoding="utf-8")
            data = score(samples, row.task, subset_file, sandbox_python(settings), workdir=tmp,
                         parallel=settings.get("bigcodebench_parallel"),
                         timeout_s=float(settings.get("bigcodebench_timeout_s") or SCORE_TIMEOUT_S))
            records = _records(Path(tmp), samples)
        out = from_pass_at_k(data, task=row.task)
        del out["config"]  # a foreign file's model; the worker's provenance has the row's
        out["configs"][row.task].update(max_new_tokens=max_new, greedy=True, chat_template=not direct,
                                        limit=row.limit, n_problems=len(problems), data_version=DATA_VERSION)
        out["n-samples"] = {row.task: {"original": len(problems), "effective": len(samples)}}
        if not has_metrics(out):
            raise RowFailure("no_metrics", f"bigcodebench scored {row.task} but reported no pass@k: {data}")
        return out, {row.task: records}

    def unload(self) -> None:
        self._lm_eval.unload()


def generate(lm: Any, prompts: Sequence[str], until: list[str], max_new_tokens: int) -> list[str]:
    """Greedy completions through lm-eval's `generate_until` (its batching, truncation and stop strings),
    tabs as bigcodebench's providers write them."""
    from lm_eval.api.instance import Instance

    kwargs = {"until": list(until), "max_gen_toks": max_new_tokens, "do_sample": False}
    requests = [Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(prompts)]
    return [t.replace("\t", "    ") for t in lm.generate_until(requests)]


def _records(work: Path, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per sample: bigcodebench's status and failing tests beside the raw generation."""
    found = next(work.glob("*_eval_results.json"), None)
    evals = json.loads(found.read_text()).get("eval", {}) if found else {}
    raw = {s["task_id"]: s.get("raw_solution") for s in samples}
    return [{"doc_id": i, "task_id": tid, "raw_solution": raw.get(tid), **r}
            for i, tid in enumerate(raw) for r in evals.get(tid, [])]


# Runs in the sandbox Python with only the standard library and bigcodebench. bigcodebench.evaluate
# imports its remote backends (gradio_client, e2b, httpx), the Hub download (datasets) and tokenizers
# (transformers) at module level although `execution="local"` with BIGCODEBENCH_OVERRIDE_PATH calls none:
# a placeholder stands in for each that is not installed and fails loudly if ever called.
_SCORER = r'''
import importlib.util, multiprocessing, sys, types

def placeholder(name):
    def missing(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        def call(*args, **kwargs):
            raise RuntimeError(f"{name}.{attr} is not installed in this sandbox (oellm scores locally)")
        return call
    module = types.ModuleType(name)
    module.__getattr__ = missing
    return module

for name in ("gradio_client", "e2b", "httpx", "datasets", "transformers"):
    if importlib.util.find_spec(name) is None:
        sys.modules[name] = placeholder(name)
multiprocessing.set_start_method("fork", force=True)  # bigcodebench's pools rely on it (3.14: forkserver)

from bigcodebench.data import get_bigcodebench, write_jsonl
from bigcodebench.data.utils import stream_jsonl
from bigcodebench.evaluate import evaluate
from bigcodebench.sanitize import sanitize

path, split, subset, parallel = sys.argv[1:5]
problems = get_bigcodebench(subset=subset)
samples = list(stream_jsonl(path))
for s in samples:
    if "solution" not in s and "completion" not in s:
        s["solution"] = sanitize(s["raw_solution"], problems[s["task_id"]]["entry_point"])
write_jsonl(path, samples)
evaluate(split=split, subset=subset, samples=path, execution="local", parallel=int(parallel))
'''
