"""Evaluation fidelity: lm-eval's options with lm-eval's meanings, its numbers and its result fields.

The reference is the real `lm_eval run` CLI on the same tiny model and tasks: a row that oellm evaluates
with `--apply_chat_template`, `--system_instruction`, `--gen_kwargs`, `--seed`, or with no `--n_shot`
(the task's own count) must hold what lm-eval itself writes for the same flags.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oellm.errors import OellmError, is_secret_name
from oellm.plan import expand as ex
from oellm.plan.request import Request
from oellm.rows import EvalRow
from oellm.rundir import RunDir, read_jobs, write_jobs
from tests.fixtures_models import A_RESULT, make_run_dir, mc_task_yaml

REPO = Path(__file__).resolve().parents[1]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant {% endif %}")
# fields the lm_eval CLI writes at the top of its results file besides simple_evaluate's output
CLI_FIELDS = ("model_name", "model_name_sanitized", "system_instruction", "system_instruction_sha", "chat_template",
              "chat_template_sha", "fewshot_as_multiturn", "task_hashes")
GEN_TASK = """\
task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
output_type: generate_until
training_split: train
fewshot_split: train
test_split: test
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{choices[label]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
num_fewshot: 2
metadata:
  version: 1.0
"""


def oellm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oellm", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def lm_eval_cli(out: Path, model_args: str, task: str, include: Path, *extra: str) -> dict:
    """The real `lm_eval run` CLI; returns the results file it wrote."""
    argv = [shutil.which("lm_eval") or str(Path(sys.executable).with_name("lm_eval")), "run", "--model", "hf",
            "--model_args", model_args, "--tasks", task, "--include_path", str(include), "--device", "cpu",
            "--batch_size", "1", "--output_path", str(out), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.rglob("results_*.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def fidelity_tasks(tiny_tasks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_fixed3 (multiple choice, `num_fewshot: 3` in its YAML), tiny_gen (generation, its own 2 shots),
    tiny_unsafe (marked `unsafe_code: true`), over the tiny tasks' data."""
    d = tmp_path_factory.mktemp("fidelity_tasks")
    data = tiny_tasks / "data"
    src = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: {data / 'tiny_mc_a_train.jsonl'}\n" \
          f"    test: {data / 'tiny_mc_a_test.jsonl'}\n"
    (d / "tiny_fixed3.yaml").write_text(mc_task_yaml("tiny_fixed3", src, "num_fewshot: 3\n"))
    (d / "tiny_unsafe.yaml").write_text(mc_task_yaml("tiny_unsafe", src, "unsafe_code: true\n"))
    (d / "tiny_gen.yaml").write_text(GEN_TASK.format(train=data / "tiny_mc_a_train.jsonl",
                                                     test=data / "tiny_mc_a_test.jsonl"))
    return d


@pytest.fixture(scope="module")
def chat_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a chat template in its tokenizer config."""
    d = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(tiny_model, d)
    cfg = d / "tokenizer_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "chat_template": CHAT_TEMPLATE}))
    return d


def only_result(runs: Path) -> dict:
    (path,) = [p for p in runs.glob("*/results/*.json")]
    return json.loads(path.read_text())


# ---------------------------------------------------------------- against the lm_eval CLI (e2e)


@pytest.mark.e2e
def test_no_n_shot_runs_the_tasks_own_count_as_lm_eval_does(tmp_path, tiny_model, fidelity_tasks):
    """W1: a task whose YAML says num_fewshot: 3 runs 3-shot without --n_shot, not 0-shot."""
    ref = lm_eval_cli(tmp_path / "ref", f"pretrained={tiny_model}", "tiny_fixed3", fidelity_tasks)
    p = oellm("schedule-eval", "--cluster", "local", "--models", str(tiny_model), "--tasks", "tiny_fixed3",
              "--lm_eval_include_path", str(fidelity_tasks), "--output_dir", str(tmp_path / "runs"),
              "--batch_size", "1", "--no_preflight")
    assert p.returncode == 0, p.stderr
    assert "shots default" in p.stdout
    ours = only_result(tmp_path / "runs")
    assert ours["n-shot"] == ref["n-shot"] == {"tiny_fixed3": 3}
    assert ours["results"]["tiny_fixed3"] == ref["results"]["tiny_fixed3"]
    assert ours["oellm"]["n_shot_used"] == 3
    # `--n_shot default` is the same evaluation: nothing left to do
    again = oellm("schedule-eval", "--cluster", "local", "--models", str(tiny_model), "--tasks", "tiny_fixed3",
                  "--n_shot", "default", "--lm_eval_include_path", str(fidelity_tasks),
                  "--output_dir", str(tmp_path / "runs"), "--no_preflight")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr


@pytest.mark.e2e
def test_chat_template_system_instruction_seed_and_gen_kwargs_equal_lm_eval(tmp_path, chat_model, fidelity_tasks):
    """W3: the options reach lm-eval with its meanings; numbers, samples' prompts and lm-eval's own
    top-level result fields equal the CLI's for the same flags."""
    flags = ["--apply_chat_template", "--system_instruction", "Answer with one word.", "--seed", "7",
             "--gen_kwargs", "max_gen_toks=3", "--log_samples"]
    ref = lm_eval_cli(tmp_path / "ref", f"pretrained={chat_model}", "tiny_gen", fidelity_tasks, *flags)
    p = oellm("schedule-eval", "--cluster", "local", "--models", str(chat_model), "--tasks", "tiny_gen",
              "--lm_eval_include_path", str(fidelity_tasks), "--output_dir", str(tmp_path / "runs"),
              "--batch_size", "1", "--no_preflight", *flags)
    assert p.returncode == 0, p.stderr
    ours = only_result(tmp_path / "runs")
    assert ours["results"]["tiny_gen"] == ref["results"]["tiny_gen"]
    assert ours["n-shot"] == ref["n-shot"] == {"tiny_gen": 2}
    for field in CLI_FIELDS:
        assert field in ours, field
        if field not in ("model_name", "model_name_sanitized"):  # the CLI knows the model by its args only
            assert ours[field] == ref[field], field
    assert ours["chat_template"] == CHAT_TEMPLATE and ours["fewshot_as_multiturn"] is True
    assert ours["config"]["gen_kwargs"] == ref["config"]["gen_kwargs"]
    assert ours["config"]["random_seed"] == ref["config"]["random_seed"] == 7
    # the row's identity holds the options: a plain run of the same task is another evaluation
    plain = oellm("schedule-eval", "--cluster", "local", "--models", str(chat_model), "--tasks", "tiny_gen",
                  "--lm_eval_include_path", str(fidelity_tasks), "--output_dir", str(tmp_path / "runs"),
                  "--no_preflight", "--dry_run")
    assert plain.returncode == 0 and "nothing to do" not in plain.stdout, plain.stderr


@pytest.mark.e2e
def test_predict_only_keeps_samples_and_counts_as_done(tmp_path, tiny_model, fidelity_tasks):
    p = oellm("schedule-eval", "--cluster", "local", "--models", str(tiny_model), "--tasks", "tiny_gen",
              "--n_shot", "0", "--limit", "3", "--lm_eval_include_path", str(fidelity_tasks),
              "--output_dir", str(tmp_path / "runs"), "--predict_only", "--no_preflight")
    assert p.returncode == 0, p.stderr + p.stdout
    (run,) = (tmp_path / "runs").iterdir()
    assert RunDir(run).done_ids(), "a predict-only row is done"
    assert list((run / "results").glob("*samples*")) or only_result(tmp_path / "runs").get("results") is not None


# ---------------------------------------------------------------- planning (fast)


@pytest.mark.fast
def test_options_are_part_of_the_row_identity_and_survive_jobs_csv(tmp_path):
    base = dict(models="org/m", tasks="hellaswag", n_shot="0")
    plain = EvalRow("org/m", "hellaswag", 0)
    chat = EvalRow("org/m", "hellaswag", 0, options=Request(**base, apply_chat_template="true").row_options())
    assert chat.options == '{"apply_chat_template":true,"fewshot_as_multiturn":true}'
    assert chat.row_id != plain.row_id
    assert Request(**base, seed="0,1234,1234,1234").row_options() == ""  # lm-eval's defaults: the plain row
    assert Request(**base, seed="42").row_options() == '{"seed":[42,42,42,42]}'
    single = Request(**base, apply_chat_template="chatml", fewshot_as_multiturn=False).row_options()
    assert json.loads(single) == {"apply_chat_template": "chatml", "fewshot_as_multiturn": False}
    write_jobs(tmp_path / "jobs.csv", [chat, EvalRow("org/m", "hellaswag", None)])
    back = read_jobs(tmp_path / "jobs.csv")
    assert [r.options for r in back] == [chat.options, ""] and back[1].n_shot is None
    assert chat.shards(4) == [chat], "a chat row stays whole: the shard merge replays requests without a tokenizer"


@pytest.mark.fast
@pytest.mark.parametrize("flags, words", [
    (dict(fewshot_as_multiturn=True), "needs --apply_chat_template"),
    (dict(gen_kwargs="temperature"), "--gen_kwargs"),
    (dict(seed="1,2"), "--seed: give one value or four"),
    (dict(seed="x"), "--seed: 'x' is not an integer"),
    (dict(metadata="[1]"), "--metadata: expected a JSON object"),
])
def test_bad_options_are_one_line_naming_the_flag(flags, words):
    with pytest.raises(OellmError, match=words):
        Request(models="org/m", tasks="hellaswag", **flags).row_options()


@pytest.mark.fast
@pytest.mark.parametrize("value, ok", [("16", True), ("auto", True), ("auto:4", True), ("sixteen", False),
                                       ("-4", False), ("0", False), ("auto:0", False), ("auto:", False)])
def test_batch_sizes_are_checked_when_planning(tmp_path, value, ok):
    """C4: a batch size lm-eval cannot take fails at plan time, not in every row on the node."""
    p = oellm("schedule-eval", "--cluster", "local", "--models", "org/m", "--tasks", "hellaswag", "--n_shot", "0",
              "--batch_size", value, "--dry_run", "--no_precache", "--output_dir", str(tmp_path / "runs"))
    if ok:
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--batch_size" in p.stderr, p.stderr
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.fast
def test_secrets_are_names_of_credentials_not_substrings():
    """C1: tokenizer=, add_bos_token=, prefix_token_id=, TOKENIZERS_PARALLELISM are ordinary settings."""
    for ordinary in ("tokenizer", "add_bos_token", "prefix_token_id", "use_fast_tokenizer", "TOKENIZERS_PARALLELISM",
                     "max_gen_toks", "max_tokens", "pad_token"):
        assert not is_secret_name(ordinary), ordinary
    for secret in ("token", "hf_token", "HF_TOKEN", "use_auth_token", "WANDB_API_KEY", "db_password",
                   "AWS_SECRET_ACCESS_KEY", "client_secret"):
        assert is_secret_name(secret), secret
    (m,) = ex.parse_models("org/ckpt,tokenizer=org/tok,add_bos_token=True,prefix_token_id=1")
    assert m.arg_dict == {"tokenizer": "org/tok", "add_bos_token": "True", "prefix_token_id": "1"}
    with pytest.raises(OellmError, match="looks like a secret"):
        ex.parse_models("org/m,token=hf_abc")


@pytest.mark.fast
def test_unsafe_tasks_need_confirm_run_unsafe_code(tmp_path, fidelity_tasks):
    """C3: a task that runs model-written code is refused when planning, naming the flag."""
    with pytest.raises(OellmError, match="tiny_unsafe.*--confirm_run_unsafe_code"):
        Request(models="org/m", tasks="tiny_unsafe,tiny_fixed3", n_shot="0").plan([str(fidelity_tasks)])
    rows, _ = Request(models="org/m", tasks="tiny_unsafe", n_shot="0",
                      confirm_run_unsafe_code=True).plan([str(fidelity_tasks)])
    assert [r.task for r in rows] == ["tiny_unsafe"]


@pytest.mark.fast
def test_eval_csv_with_bom_crlf_and_option_columns(tmp_path):
    """U4: Excel's BOM and CRLF are read; per-row option cells override the flags; blank n_shot is default."""
    csv = tmp_path / "evals.csv"
    csv.write_bytes("\ufeffmodel_path,task_path,n_shot,apply_chat_template,system_instruction\r\n"
                    "org/base,hellaswag,0,,\r\norg/chat,hellaswag,,true,Be brief.\r\n".encode())
    rows = ex.rows_from_csv(csv, None, Request(seed="3").row_options)
    assert [(r.model, r.n_shot) for r in rows] == [("org/base", 0), ("org/chat", None)]
    assert json.loads(rows[0].options) == {"seed": [3, 3, 3, 3]}
    assert json.loads(rows[1].options) == {"apply_chat_template": True, "fewshot_as_multiturn": True,
                                           "system_instruction": "Be brief.", "seed": [3, 3, 3, 3]}


@pytest.mark.fast
def test_eval_csv_refuses_flags_it_cannot_honour_and_never_shards_twice(tmp_path, tiny_model):
    """W5, C8: --n_shot/--suite beside a CSV are refused; its num_shards column and --num_shards never
    double the rows; --last_n_checkpoints applies to a training run named in the CSV."""
    csv = tmp_path / "evals.csv"
    csv.write_text("model_path,task_path,n_shot,num_shards\norg/m,hellaswag,0,2\norg/m,arc_easy,0,\n")
    for flags in (dict(n_shot="5"), dict(suite="lighteval")):
        with pytest.raises(OellmError, match="cannot be combined"):
            Request(eval_csv_path=csv, **flags).plan([])
    rows = ex.rows_from_csv(csv)
    shards = [s for r in rows for s in r.shards(3)]
    assert sorted((r.task, r.shard, r.num_shards) for r in shards) == [
        ("arc_easy", 0, 3), ("arc_easy", 1, 3), ("arc_easy", 2, 3), ("hellaswag", 0, 2), ("hellaswag", 1, 2)]
    run = tmp_path / "train"
    for step in (100, 200, 300):
        shutil.copytree(tiny_model, run / f"checkpoint-{step}")
    csv.write_text(f"model_path,task_path,n_shot\n{run},hellaswag,0\n")
    rows = ex.rows_from_csv(csv, last_n=2)
    assert [r.step for r in rows] == [200, 300]


@pytest.mark.fast
def test_one_definition_of_done(tmp_path):
    """D1: a truncated result is not done for status, the skip on re-run and the worker alike."""
    rows = [EvalRow("org/m", t, 0) for t in ("a", "b", "c")]
    run = make_run_dir(tmp_path, rows)
    run.result_path(rows[0].row_id).write_text(A_RESULT)
    run.result_path(rows[1].row_id).write_text(A_RESULT[: len(A_RESULT) // 2 + 10])  # truncated, > 32 bytes
    run.result_path(rows[2].row_id).write_text('{"error": "' + "x" * 40 + '"}')  # parses, no results
    assert run.done_ids() == {rows[0].row_id}
    assert [run.has_result(r.row_id) for r in rows] == [True, False, False]
    assert run.done_ids() == {rows[0].row_id}  # the second look answers from results/.done
    run.result_path(rows[1].row_id).write_text(A_RESULT)  # redone
    assert run.done_ids() == {rows[0].row_id, rows[1].row_id}
    from oellm.rundir import existing_results

    assert existing_results(tmp_path / "runs") == {rows[0].row_id, rows[1].row_id}


# ---------------------------------------------------------------- pre-cache and preflight (hub server, e2e)


@pytest.mark.e2e
def test_mistral_style_repo_downloads_its_sharded_weights_once(hub, tiny_model):
    """A repo with `consolidated.safetensors` beside the index and its shards: only the shards come."""
    from oellm.cache.precache import precache
    from oellm.clusters import load_clusters

    weights = (tiny_model / "model.safetensors").read_bytes()
    files = {p.name: p.read_bytes() for p in tiny_model.iterdir() if p.is_file() and p.suffix != ".safetensors"}
    files["model-00001-of-00001.safetensors"] = weights
    files["consolidated.safetensors"] = weights
    from safetensors import safe_open

    with safe_open(str(tiny_model / "model.safetensors"), "np") as f:
        names = list(f.keys())
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": len(weights)}, "weight_map": dict.fromkeys(names, "model-00001-of-00001.safetensors")}
    ).encode()
    hub.add_repo("org/mistralish", files)
    precache([EvalRow("org/mistralish", "x", 0)], load_clusters()["local"], [])
    assert hub.count("GET", "consolidated") == 0
    assert hub.count("GET", "model-00001-of-00001.safetensors") == 1


@pytest.mark.e2e
def test_preflight_loads_each_model_with_its_rows_args(tmp_path, tiny_model, tiny_tasks):
    """C2: a model whose config needs trust_remote_code passes the preflight when its rows say so (and
    --trust_remote_code adds it), and is refused, naming the load error, when they do not."""
    from oellm.cache.preflight import prove
    from oellm.clusters import load_clusters

    model = tmp_path / "custom"
    shutil.copytree(tiny_model, model)
    (model / "configuration_tiny.py").write_text(
        "from transformers import GPT2Config\n\n\nclass TinyConfig(GPT2Config):\n    model_type = 'tiny_custom'\n")
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(model_type="tiny_custom", auto_map={"AutoConfig": "configuration_tiny.TinyConfig"})
    (model / "config.json").write_text(json.dumps(cfg))
    local = load_clusters()["local"]
    plain = prove([EvalRow(str(model), "x", 0)], local, remember=False).missing
    assert len(plain) == 1 and "does not load offline" in plain[0], plain
    rows, _ = Request(models=str(model), tasks="tiny_mc_a", n_shot="0", trust_remote_code=True).plan([str(tiny_tasks)])
    assert [r.model_args for r in rows] == ["trust_remote_code=True"]
    assert prove(rows, local, [str(tiny_tasks)], remember=False).missing == []


@pytest.mark.e2e
def test_checkpoint_without_tokenizer_borrows_a_hub_tokenizer(hub, hub_model_files, tmp_path):
    """C1 + C11: `tokenizer=org/tok` is an ordinary model arg; the pre-cache fetches that tokenizer, the
    preflight loads the model with it, and the offline worker evaluates the row."""
    from tests.fixtures_hub import write_hub_task

    tok_files = {k: v for k, v in hub_model_files.items() if k.startswith(("tokenizer", "special_tokens"))}
    assert tok_files
    hub.add_repo("org/tok", {**hub_model_files, "config.json": hub_model_files["config.json"]})  # a base model
    hub.add_repo("org/notok", {k: v for k, v in hub_model_files.items() if k not in tok_files})
    tasks = write_hub_task(tmp_path / "tasks", "hub_mc", "org/tinyds")
    p = oellm("schedule-eval", "--cluster", "local", "--models", "org/notok,tokenizer=org/tok", "--tasks", "hub_mc",
              "--n_shot", "0", "--limit", "4", "--lm_eval_include_path", str(tasks),
              "--output_dir", str(tmp_path / "runs"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    fetched = [path for method, path in hub.server.requests if method == "GET" and "org/tok/resolve" in path]
    assert any("tokenizer.json" in f for f in fetched) and not any(".safetensors" in f for f in fetched), fetched
    res = only_result(tmp_path / "runs")
    assert "acc,none" in res["results"]["hub_mc"] and res["oellm"]["row"]["model_args"] == "tokenizer=org/tok"


@pytest.mark.e2e
def test_more_shots_than_the_few_shot_split_holds_is_refused_before_submitting(hub, tmp_path):
    """A 10-shot row of a task whose few-shot split has 8 examples would fail on the node: the pre-cache
    says so, naming the task, the split and its size, and nothing is submitted."""
    from tests.fixtures_hub import write_hub_task

    tasks = write_hub_task(tmp_path / "tasks", "hub_mc", "org/tinyds")  # train: 8 docs
    args = ["schedule-eval", "--cluster", "local", "--models", "org/tiny", "--tasks", "hub_mc", "--limit", "2",
            "--lm_eval_include_path", str(tasks), "--output_dir", str(tmp_path / "runs")]
    p = oellm(*args, "--n_shot", "10")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "task hub_mc: 10-shot needs 10 examples from its few-shot split 'train', which has 8" in p.stderr
    assert not (tmp_path / "runs").exists() or not [d for d in (tmp_path / "runs").iterdir() if not d.name.startswith(".")]
    ok = oellm(*args, "--n_shot", "8")
    assert ok.returncode == 0, ok.stderr[-2000:]


@pytest.mark.fast
def test_missing_csv_round_trip_keeps_options_shots_and_task_sources(tmp_path, tiny_tasks):
    """U5: `collect-results --check` writes rows that plan back to the same row ids (options, default
    shots), and its rerun hint names the run's --lm_eval_include_path."""
    chat = Request(apply_chat_template="true", system_instruction="Be brief, please.", seed="5",
                   gen_kwargs="temperature=0,max_gen_toks=8").row_options()
    rows = [EvalRow("org/m", "tiny_mc_a", None), EvalRow("org/m", "tiny_mc_b", 2, options=chat)]
    run = make_run_dir(tmp_path, rows, include_paths=[tiny_tasks])
    p = oellm("collect-results", str(run.path), "--check")
    assert p.returncode == 0, p.stderr
    assert f"--lm_eval_include_path {tiny_tasks}" in p.stdout
    back = ex.rows_from_csv(run.path / "missing.csv", None, Request().row_options)
    assert sorted(r.row_id for r in back) == sorted(r.row_id for r in rows)


NLTK_UTILS = '''\
import nltk


def _ensure():  # as lm-eval's ifeval does at import
    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        nltk.download("punkt_tab")


_ensure()


def uses_punkt(doc, results):
    nltk.data.find("tokenizers/punkt_tab/english/collocations.tab")  # a LookupError fails the row
    return {"acc": 1.0}
'''


@pytest.fixture
def nltk_mirror(tmp_path: Path) -> Path:
    """A site's NLTK mirror as nltk's downloader reads it: file:// URLs in a folder named in NLTK_DATA (nltk
    refuses non-public hosts, loopback included, and files outside its roots)."""
    from tests.fixtures_suites import punkt_tab_mirror

    return punkt_tab_mirror(tmp_path / "mirror")


@pytest.mark.e2e
def test_nltk_data_a_task_downloads_is_pre_cached_and_found_offline(tmp_path, tiny_model, tiny_tasks, nltk_mirror):
    """ifeval-style tasks download NLTK data when imported; the nodes are offline, so the pre-cache fetches
    it (from NLTK_DOWNLOAD_URL, nltk's own mirror variable), the preflight proves it, and the worker finds it."""
    d = tmp_path / "tasks"
    d.mkdir()
    data = tiny_tasks / "data"
    src = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: {data / 'tiny_mc_a_train.jsonl'}\n" \
          f"    test: {data / 'tiny_mc_a_test.jsonl'}\n"
    (d / "tiny_nltk.yaml").write_text(mc_task_yaml("tiny_nltk", src, "process_results: !function utils.uses_punkt\n"))
    (d / "utils.py").write_text(NLTK_UTILS)
    target = tmp_path / "cache" / "nltk_data"
    env = {**os.environ, "NLTK_DATA": f"{target}{os.pathsep}{nltk_mirror}",
           "NLTK_DOWNLOAD_URL": f"file://{nltk_mirror}/index.xml"}
    args = [sys.executable, "-m", "oellm", "schedule-eval", "--cluster", "local", "--models", str(tiny_model),
            "--tasks", "tiny_nltk", "--n_shot", "0", "--limit", "2", "--lm_eval_include_path", str(d)]
    down = subprocess.run([*args, "--output_dir", str(tmp_path / "none")], capture_output=True, text=True,
                          env={**env, "NLTK_DOWNLOAD_URL": f"file://{nltk_mirror}/no-index.xml"}, timeout=600, cwd=REPO)
    assert down.returncode == 2 and "nltk punkt_tab (tasks tiny_nltk): not fetched" in down.stderr, down.stderr
    p = subprocess.run([*args, "--output_dir", str(tmp_path / "runs")], capture_output=True, text=True, env=env,
                       timeout=600, cwd=REPO)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "nltk punkt_tab" in p.stdout and (target / "tokenizers" / "punkt_tab").is_dir()
    assert only_result(tmp_path / "runs")["results"]["tiny_nltk"]["acc,none"] == 1.0
