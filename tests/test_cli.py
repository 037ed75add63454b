"""The command line as a user types it: help, flags, one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from oellm import cli

pytestmark = pytest.mark.fast
HEAVY = ("torch", "transformers", "lm_eval", "datasets", "matplotlib", "pandas")


def oellm(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "oellm", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_help_lists_commands_and_reads_well():
    out = oellm("--help").stdout
    assert "schedule-eval" in out and "worker" in out
    sub = oellm("schedule-eval", "--help").stdout
    for flag in ("--models", "--tasks", "--n_shot", "--eval_csv_path", "--lm_eval_include_path", "--download_only",
                 "--dry_run", "--cluster", "--clusters_file", "--output_dir", "--limit", "--force"):
        assert flag in sub, flag
    assert "revision=step1000" in sub  # docstrings are the help


def test_help_imports_no_heavy_module():
    code = f"import sys; from oellm import cli; cli._parser(); print([m for m in {HEAVY!r} if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


@pytest.mark.parametrize("args, expected", [
    ([], False), (["--dry_run"], True), (["--dry_run", "true"], True), (["--dry_run", "false"], False),
    (["--dry_run=no"], False), (["--no_dry_run"], False), (["--dry_run", "--force"], True),
])
def test_boolean_flags_bare_and_with_value(args, expected):
    cfg = cli._parser().parse_args(["schedule-eval", "--models", "m", *args])
    assert cfg["schedule-eval"].dry_run is expected


def test_config_file(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("models: [org/a, org/b]\ntasks: hellaswag\nn_shot: [0, 5]\ndry_run: true\n")
    cfg = cli._parser().parse_args(["schedule-eval", "--config", str(cfg_file)])["schedule-eval"]
    assert (cfg.models, cfg.tasks, cfg.n_shot, cfg.dry_run) == (["org/a", "org/b"], "hellaswag", [0, 5], True)


@pytest.mark.parametrize("args, words", [
    (["--cluster", "nope", "--models", "org/a", "--tasks", "t"], "unknown cluster 'nope'"),
    (["--cluster", "local", "--models", "/does/not/exist", "--tasks", "t"], "model path /does/not/exist does not exist"),
    (["--cluster", "local", "--models", "org/a;touch /tmp/pwned", "--tasks", "t"], "neither an existing local directory"),
    (["--cluster", "local", "--models", "org/a", "--tasks", "t", "--n_shot", "-1"], "not a non-negative integer"),
    (["--cluster", "local"], "nothing to evaluate"),
    (["--cluster", "local", "--models", "org/a,token=hf_s3cr3t", "--tasks", "t"], "token= looks like a secret"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_dir(tmp_path, args, words):
    r = oellm("schedule-eval", "--output_dir", str(tmp_path / "runs"), *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and words in r.stderr and "Traceback" not in r.stderr
    assert "s3cr3t" not in r.stderr  # a secret is not even echoed
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_dry_run_writes_a_readable_run_dir(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text("task: my_task\ndataset_path: json\ndataset_kwargs: {data_files: x.jsonl}\n"
                                  "output_type: loglikelihood\ntest_split: train\ndoc_to_text: q\ndoc_to_target: a\n")
    r = oellm("schedule-eval", "--cluster", "local", "--models", str(model), "--tasks", "my_task", "--n_shot", "0,5",
              "--lm_eval_include_path", str(tasks), "--output_dir", str(tmp_path / "runs"), "--dry_run")
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["jobs.csv", "oellm_code", "results", "run.json", "slurm_logs",
                                                     "state", "submit_evals.sbatch"]
    assert "rows:      2 = 1 model(s) x 1 task(s) x shots 0,5" in r.stdout
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["include_paths"] == [str(tasks)] and manifest["n_rows"] == 2
    assert str(model) not in (run / "submit_evals.sbatch").read_text()


def test_rows_done_in_any_run_are_skipped_unless_forced(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    args = ["schedule-eval", "--cluster", "local", "--models", str(model), "--tasks", "hellaswag,arc_easy",
            "--n_shot", "0", "--output_dir", str(tmp_path / "runs"), "--dry_run"]
    assert oellm(*args).returncode == 0
    (first,) = (tmp_path / "runs").iterdir()
    row_id = (first / "jobs.csv").read_text().splitlines()[1].split(",")[0]
    result = first / "results" / f"{row_id}.json"
    result.write_text("{}")  # an empty result (a full disk, a hand-made file) is no evaluation
    assert "skipping" not in oellm(*args).stdout
    result.write_text(json.dumps({"results": {"hellaswag": {"acc,none": 0.25, "acc_stderr,none": 0.01}}}))
    again = oellm(*args)
    assert again.returncode == 0 and "skipping 1 of 2 row(s) with results already under" in again.stdout
    assert "rows:      1 = 1 model(s) x 1 task(s)" in again.stdout
    forced = oellm(*args, "--force")
    assert "rows:      2 = 1 model(s) x 2 task(s)" in forced.stdout and "skipping" not in forced.stdout


def test_dry_run_on_a_site_warns_about_placeholders(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    r = oellm("schedule-eval", "--cluster", "leonardo", "--models", str(model), "--tasks", "hellaswag",
              "--output_dir", str(tmp_path / "runs"), "--dry_run")
    assert r.returncode == 0, r.stderr
    assert "arrays:    1 sbatch call(s): --array=0-0%1 (offset 0)" in r.stdout
    assert "a real submission would stop here: cluster leonardo: account is still the site placeholder" in r.stdout


@pytest.mark.parametrize("argv, expected", [
    (["status", "runs/x", "--json"], ["status", "--run_dir", "runs/x", "--json"]),
    (["collect-results", "a", "b", "--check"], ["collect-results", "--run_dirs", "a,b", "--check"]),
    (["resubmit", "--run_dir", "r"], ["resubmit", "--run_dir", "r"]),
    (["schedule-eval", "--models", "m"], ["schedule-eval", "--models", "m"]),
])
def test_run_dirs_may_be_given_bare(argv, expected):
    assert cli._positional(argv) == expected


def test_status_of_a_planned_run_as_users_type_it(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert oellm("schedule-eval", "--cluster", "local", "--models", str(model), "--tasks", "hellaswag",
                 "--n_shot", "0,5", "--output_dir", str(tmp_path / "runs"), "--dry_run").returncode == 0
    (run,) = (tmp_path / "runs").iterdir()
    r = oellm("status", str(run), "--json")
    assert r.returncode == 0, r.stderr
    assert sum(json.loads(r.stdout)["counts"].values()) == 2


def test_precache_is_on_by_default_and_can_be_skipped():
    parse = lambda *a: cli._parser().parse_args(["schedule-eval", "--models", "m", *a])["schedule-eval"]  # noqa: E731
    assert parse().precache is True
    assert parse("--no_precache").precache is False and parse("--precache", "false").precache is False


def test_per_run_slurm_overrides_reach_the_script_and_run_json(tmp_path):
    """A full partition or an exhausted budget: this run goes elsewhere without a clusters file of its own."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    r = oellm("schedule-eval", "--cluster", "leonardo", "--models", str(model), "--tasks", "hellaswag",
              "--output_dir", str(tmp_path / "runs"), "--dry_run", "--account", "EUHPC_X", "--partition", "lrd_all",
              "--mem", "32G", "--time_limit", "30:00", "--sbatch_option", "constraint=a100",
              "--sbatch_option", "exclusive=")
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "runs").iterdir()
    script = (run / "submit_evals.sbatch").read_text().splitlines()
    for line in ("#SBATCH --partition=lrd_all", "#SBATCH --account=EUHPC_X", "#SBATCH --mem=32G",
                 "#SBATCH --time=00:30:00", "#SBATCH --constraint=a100", "#SBATCH --exclusive"):
        assert line in script, line
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["slurm_overrides"] == {"partition": "lrd_all", "account": "EUHPC_X", "mem": "32G",
                                           "sbatch_options": {"constraint": "a100", "exclusive": ""},
                                           "time_limit": "30:00"}
    assert "account is still the site placeholder" not in r.stdout


@pytest.mark.parametrize("args, words", [
    (["--mem", "$(id)"], "command line: leonardo.mem: '$(id)' has characters a shell would interpret"),
    (["--time_limit", "2-00:00:00"], "--time_limit 2-00:00:00 exceeds cluster leonardo's max_time"),
    (["--sbatch_option", "constraint"], "--sbatch_option 'constraint': expected key=value"),
])
def test_bad_overrides_are_one_line(tmp_path, args, words):
    r = oellm("schedule-eval", "--cluster", "leonardo", "--models", "org/m", "--tasks", "hellaswag",
              "--output_dir", str(tmp_path / "runs"), "--dry_run", *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()


def oellm_eval(*args, cwd=None):
    """The `oellm-eval` entry point (pyproject.toml's [project.scripts] runs `oellm.cli:main_eval`)."""
    code = "import sys; from oellm.cli import main_eval; main_eval(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_both_entry_points_take_both_spellings():
    for run in (oellm, oellm_eval):
        out = run("--help").stdout
        assert all(name in out for name in ("schedule-eval", "schedule ", "collect-results", "collect ")), out
    assert "usage: oellm-eval" in oellm_eval("--help").stdout
    for run, name in ((oellm, "schedule"), (oellm_eval, "schedule-eval")):
        sub = run(name, "--help").stdout
        for flag in ("--slurm_template_var", "--max_array_len", "--nodelist", "--local", "--skip_checks",
                     "--trust_remote_code", "--verbose", "--task_groups", "--models"):
            assert flag in sub, (name, flag)
    assert "--results_dir" in oellm("collect", "--help").stdout and "--run_dirs" in oellm_eval("collect-results",
                                                                                               "--help").stdout


def test_help_starts_without_any_commands_modules():
    """`oellm --help` builds no command's options: none of the planning or results modules is imported."""
    code = ("import sys; from oellm import cli; cli._parser(''); "
            "print(sorted(m for m in sys.modules if m.startswith(('oellm.plan', 'oellm.results', 'oellm.runs'))))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


@pytest.mark.parametrize("args, expected", [
    (["--local", "true", "--skip_checks"], {"cluster": "local", "precache": False, "preflight": False}),
    (["--local", "false", "--skip_checks", "false"], {"cluster": None, "precache": True, "preflight": True}),
    (["--slurm_template_var", '{"PARTITION": "p", "ACCOUNT": "a", "GPUS_PER_NODE": 4, "SLURM_MEM": "64G", '
                              '"NODES": 1, "TIME": "04:00:00"}', "--nodelist", "n[1-2]"],
     {"partition": "p", "account": "a", "gpus_per_task": 4, "mem": "64G", "time_limit": "04:00:00",
      "sbatch_option": ["nodes=1", "nodelist=n[1-2]"]}),
    (["--slurm_template_var", '{"PARTITION": "p"}', "--partition", "mine"], {"partition": "mine"}),  # ours wins
])
def test_upstream_flags_mean_our_options(args, expected):
    from oellm.cli.upstream_flags import UpstreamRequest

    cfg = cli._parser("schedule").parse_args(["schedule", "--models", "m", *args])
    request = UpstreamRequest(**{k: v for k, v in cfg.schedule.as_dict().items() if k != "config"}).to_request()
    assert {k: getattr(request, k) for k in expected} == expected


@pytest.mark.parametrize("args, words", [
    (["--slurm_template_var", '{"PARTITON": "p"}'], "--slurm_template_var: unknown key(s) PARTITON; known: PARTITION"),
    (["--slurm_template_var", "{PARTITION: p}"], "--slurm_template_var: not JSON"),
    (["--slurm_template_var", '{"NODES": 2}', "--cluster", "leonardo"], "an array task is one worker process on one node"),
    (["--max_array_len", "0"], "--max_array_len: must be >= 1, got 0"),
    (["--local", "--cluster", "leonardo"], "--local runs on this machine; it cannot be combined with --cluster leonardo"),
])
def test_bad_upstream_flags_are_one_line(tmp_path, args, words):
    r = oellm_eval("schedule", "--output_dir", str(tmp_path / "out"), "--models", "org/m", "--tasks", "hellaswag",
                   "--dry_run", *args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert words in r.stderr and r.stderr.startswith("oellm-eval: error:")
    assert not (tmp_path / "out").exists()


def test_upstream_flags_reach_the_script_and_run_json(tmp_path, tiny_model):
    r = oellm_eval("schedule", "--models", str(tiny_model), "--tasks", "hellaswag", "--n_shot", "0", "--cluster",
                   "leonardo", "--skip_checks", "--dry_run", "--output_dir", str(tmp_path), "--max_array_len", "3",
                   "--nodelist", "lrdn[0001-0004]", "--slurm_template_var",
                   '{"PARTITION": "boost_usr_prod", "ACCOUNT": "A1", "SLURM_MEM": "64G", "TIME": "02:00:00"}')
    assert r.returncode == 0, r.stderr
    (run,) = tmp_path.iterdir()
    script = (run / "submit_evals.sbatch").read_text()
    for line in ("#SBATCH --partition=boost_usr_prod", "#SBATCH --account=A1", "#SBATCH --mem=64G",
                 "#SBATCH --time=02:00:00", "#SBATCH --nodelist='lrdn[0001-0004]'"):
        assert line in script, line
    assert json.loads((run / "run.json").read_text())["cluster_config"]["max_running"] == 3
    assert "nodelist lrdn[0001-0004] (4 nodes) but an array task runs on one node" in r.stdout  # SLURM refuses it
    assert "%3" in r.stdout or "%1" in r.stdout  # the throttle (at most the tasks the run has)
