"""What a user asked for, as typed values: the flags of `schedule-eval` (and of `check-cache`, which
takes the row selection alone), then the rows they mean.

The dataclasses ARE the command line: `oellm.cli` builds each subcommand's flags, help and config-file
keys from their fields and docstrings, so an option is declared once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oellm.clusters import ClusterConfig, expand
from oellm.container import venv_python
from oellm.errors import OellmError
from oellm.plan import expand as ex
from oellm.plan.evaloptions import EvalOptions, as_applied
from oellm.plan.overrides import SlurmOverrides
from oellm.rows import EvalRow, ModelRef


@dataclass
class Selection(EvalOptions):
    """Which evaluations: models x tasks x shots, or the rows of an eval CSV, on which cluster.

    Args:
        models: Comma-separated models: Hugging Face ids (org/name), local model dirs, or training-run dirs
            whose checkpoints (checkpoint-N, step_N, iter_N, also under hf/) are all evaluated, or a dir
            whose subdirs are models or runs. Model args follow their model: "org/m,revision=step1000,dtype=float16".
        tasks: Comma-separated task names of --suite: lm-eval tasks, groups or tags (default), lighteval
            tasks (arc:challenge, or a superset such as mmlu), or bigcodebench splits (complete, instruct,
            complete-hard, instruct-hard).
        suite: The framework that evaluates --tasks: lm_eval (also spelled lm-eval-harness), lighteval or
            bigcodebench (default: the task registry's suite for a task it lists, else lm_eval). An eval CSV
            names it per row (eval_suite column); task groups per group or task (suite key).
        n_shot: Few-shot counts, e.g. 0 or "0,5"; "default" (or no --n_shot) is each task's own count, as
            lm-eval's (gsm8k_cot 8, leaderboard_* 3-5, most tasks 0).
        eval_csv_path: A CSV with columns model_path,task_path,n_shot instead of --models/--tasks/--n_shot.
        limit: Evaluate only this many samples per task (or this fraction if below 1); for smoke tests.
        lm_eval_include_path: Dirs with custom lm-eval task YAMLs (comma-separated).
        lighteval_custom_tasks: A Python file of custom lighteval tasks (its TASKS_TABLE), as lighteval's own
            --custom-tasks.
        cluster: Cluster name from clusters.json (default: detected from the hostname, or $OELLM_CLUSTER;
            "local" runs on this machine).
        clusters_file: Your own clusters JSON, merged over the shipped one, or oellm-eval's clusters.yaml
            (its sites replace the shipped ones; the login environment wins over it) (default:
            $OELLM_CLUSTERS_FILE).
        checkpoint_stride: Evaluate every Nth checkpoint of a training-run dir (the newest always).
        last_n_checkpoints: Evaluate only the newest N checkpoints of a training-run dir.
        task_groups: Comma-separated task groups or super groups (each task with its own shot counts),
            e.g. open-llm-leaderboard-v1; with or instead of --tasks. NAME[deu_Latn|fra_Latn] keeps the
            tasks in those languages; `all` is every group.
        task_groups_file: Task groups YAML in oellm-eval's format (default: $OELLM_TASK_GROUPS_FILE,
            else the shipped oellm/task-groups.yaml).
        checkpoint_ready_file: A file your trainer writes last into each checkpoint dir (e.g. DONE): a
            checkpoint without it is not complete and is not evaluated (nor followed) yet.
    """

    models: str | list[str] | None = None
    tasks: str | list[str] | None = None
    suite: str | None = None
    n_shot: int | str | list[int] | None = None
    eval_csv_path: Path | None = None
    limit: float | None = None
    lm_eval_include_path: str | list[str] | None = None
    lighteval_custom_tasks: Path | None = None
    cluster: str | None = None
    clusters_file: Path | None = None
    checkpoint_stride: int = 1
    last_n_checkpoints: int | None = None
    task_groups: str | list[str] | None = None
    task_groups_file: Path | None = None
    checkpoint_ready_file: str | None = None

    def plan(self, includes: Sequence[str]) -> tuple[list[EvalRow], int]:
        """The rows this selection means (a command with other rows, such as `bench`, overrides it)."""
        return plan_rows(self, includes)

    def model_refs(self) -> list[ModelRef]:
        """The models of --models (a follower's look gives the checkpoints it found complete instead)."""
        return ex.parse_models(self.models)


@dataclass
class Request(SlurmOverrides, Selection):
    """A selection of rows plus how to run them: output dir, packing, batch size, what to do.

    Args:
        output_dir: Where run dirs go (default: $EVAL_OUTPUT_DIR, as oellm-eval; else, with oellm-eval's
            --local, ./oellm-output; else the cluster's output_root).
        evals_per_task: Rows of one model per array task (default: fill half the time limit: a given one, else
            the cluster's max_time).
        batch_size: lm-eval batch size: a number, "auto", or "auto:N" (re-probe N times) (default: the
            cluster's batch_size, "auto").
        max_batch_size: lm-eval's --max_batch_size: the largest batch "auto" may pick (default 64).
        bootstrap_iters: lm-eval's --bootstrap_iters for stderr estimates (default 100000; 0 skips them).
        workers: Local executor: parallel workers (default: one per visible GPU, else 1).
        log_samples: Keep lm-eval's per-sample outputs next to each result.
        force: Re-run evaluations that already have results under the output dir.
        dry_run: Write the run dir and print the plan, but submit or run nothing.
        download_only: Only pre-cache models and task datasets for the offline compute nodes (no run dir).
        precache: Pre-cache and check offline, before submitting, every model and dataset the run needs;
            --no_precache skips both when your cache is managed another way.
        preflight: Before submitting, load every model, checkpoint and dataset offline through the workers'
            own container (same image, binds and environment) and check the image's oellm and lm-eval
            versions; proofs are remembered, so a repeated sweep pays nothing. --no_preflight skips it.
        num_shards: Split each evaluation over this many array tasks (each runs every Kth document; the
            last to finish merges them into exactly the unsharded result); "auto": the advisor's choice.
            A dry run prints the predicted wall time and GPU-hours for 1, 2, 4, 8, ... shards.
        deadline: With --num_shards auto, the smallest shard count whose predicted wall time is within this
            (HH:MM:SS); without it, the knee of the curve.
        follow: Keep watching the run dirs of --models; evaluate each new checkpoint once, when complete (its
            index's files present, sizes stable, --checkpoint_ready_file there). On SLURM a CPU job that
            resubmits itself; see docs/follow.md.
        follow_interval: Time between two looks of --follow: seconds, or 30s, 5m, 1h.
        follow_until: When --follow ends (exit 0): a duration (2h, 3d), a date-time (2026-12-24T00:00), or
            job:JOBID, once that SLURM job (the training) has ended and its last checkpoint is scheduled.
            Default: until Ctrl-C or `oellm cancel`.
        venv_path: A virtual environment (with lm-eval and torch) whose Python runs the workers, locally and on
            SLURM, without a container: for sites that have none (the cluster's container is not used).
    """

    output_dir: Path | None = None
    evals_per_task: int | None = None
    batch_size: str | None = None
    max_batch_size: int | None = None
    bootstrap_iters: int | None = None
    workers: int | None = None
    log_samples: bool = False
    force: bool = False
    dry_run: bool = False
    download_only: bool = False
    precache: bool = True
    preflight: bool = True
    num_shards: int | str | None = None
    deadline: str | None = None
    follow: bool = False
    follow_interval: str = "5m"
    follow_until: str | None = None
    venv_path: Path | None = None
    command_line: list[str] = field(default_factory=lambda: list(sys.argv))  # recorded in run.json; not a flag
    # how an option was given when not by its own flag ({"time_limit": "--slurm_template_var TIME"}): the
    # command line's edge (oellm.cli.upstream_flags) translates other spellings; messages name what was typed
    spelled: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        venv_python(self.venv_path)  # checked before anything is planned or written

    def cluster_fields(self) -> dict[str, Any]:
        return {**SlurmOverrides.cluster_fields(self), **({"container": None} if self.venv_path else {})}

    def worker_python(self) -> str:
        """The interpreter the workers run: --venv_path's, else this one."""
        return venv_python(self.venv_path) or sys.executable

    def plan(self, includes: Sequence[str]) -> tuple[list[EvalRow], int]:
        """Rows, each split into --num_shards shards (`auto`: whole rows, the advisor splits them)."""
        from oellm.options import check_batch_size

        check_batch_size(self.batch_size, "--batch_size")
        for name in ("max_batch_size", "bootstrap_iters"):
            value = getattr(self, name)
            if value is not None and (value < (1 if name == "max_batch_size" else 0)):
                raise OellmError(f"--{name}: must be {'>= 1' if name == 'max_batch_size' else '>= 0'}, got {value}")
        rows, dropped = plan_rows(self, includes)
        k = self.shard_count()
        return ([s for r in rows for s in r.shards(k)] if k and k > 1 else rows), dropped

    def shard_count(self) -> int | None:
        """--num_shards as a number; None for `auto` (the advisor decides)."""
        if self.num_shards is None:
            return 1
        if str(self.num_shards).strip().lower() == "auto":
            return None
        if not str(self.num_shards).strip().isdigit() or int(self.num_shards) < 1:
            raise OellmError(f"--num_shards: must be >= 1 or auto, got {self.num_shards!r}")
        return int(self.num_shards)


NOT_FLAGS = frozenset({"command_line", "spelled"})


def output_root(output_dir: Path | None, cluster: ClusterConfig | None) -> Path:
    """--output_dir, else $EVAL_OUTPUT_DIR (run dirs right under it, as oellm-eval writes them: its
    clusters.yaml already puts {USER} into it), else the cluster's default."""
    if output_dir:
        return Path(output_dir).expanduser().resolve()
    if os.environ.get("EVAL_OUTPUT_DIR"):
        return Path(os.environ["EVAL_OUTPUT_DIR"]).expanduser().resolve()
    if cluster is None or not cluster.output_root:
        what = "no cluster" if cluster is None else f"cluster {cluster.name} has no output_root"
        raise OellmError(f"{what}: pass --output_dir or set EVAL_OUTPUT_DIR")
    return Path(expand(cluster.output_root, f"cluster {cluster.name}.output_root")).resolve()


def include_paths(sel: Selection, cluster: ClusterConfig | None = None) -> list[str]:
    """The run's task sources, absolute: lm-eval YAML dirs (--lm_eval_include_path, else a clusters.yaml
    site's $LM_EVAL_INCLUDE_PATH, as oellm-eval reads it), then the lighteval task file (each suite takes
    its own kind; the container binds them all)."""
    given, what = sel.lm_eval_include_path, "--lm_eval_include_path"
    if not given and cluster and cluster.from_environment.get("LM_EVAL_INCLUDE_PATH"):
        given, what = cluster.from_environment["LM_EVAL_INCLUDE_PATH"], "$LM_EVAL_INCLUDE_PATH"
    paths = [Path(p).expanduser().resolve() for p in ex.split_list(given)]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise OellmError(f"{what}: no such directory: {', '.join(missing)}")
    custom = Path(sel.lighteval_custom_tasks).expanduser().resolve() if sel.lighteval_custom_tasks else None
    if custom and (not custom.is_file() or custom.suffix != ".py"):
        raise OellmError(f"--lighteval_custom_tasks: {custom} is not a Python file")
    return [str(p) for p in paths] + ([str(custom)] if custom else [])


# Flags an eval CSV cannot honour: its rows name their own models, tasks, suite and shots.
CSV_REFUSES = ("models", "tasks", "task_groups", "suite", "n_shot")


def plan_rows(sel: Selection, includes: Sequence[str]) -> tuple[list[EvalRow], int]:
    """Rows from flags or from an eval CSV (not both), with every task name validated by its suite;
    returns (rows, duplicates dropped)."""
    limit = ex.check_limit(sel.limit)
    if sel.eval_csv_path:
        given = [f"--{f}" for f in CSV_REFUSES if getattr(sel, f) not in (None, "", [])]
        if given:
            raise OellmError(f"--eval_csv_path: {', '.join(given)} cannot be combined with it (its columns "
                             "model_path, task_path, n_shot and eval_suite name them per row)")
        rows, dropped = ex.rows_from_csv(Path(sel.eval_csv_path), limit, sel.row_options, sel.checkpoint_stride,
                                         sel.last_n_checkpoints), 0
    else:
        if not sel.models or not (sel.tasks or sel.task_groups):
            raise OellmError("nothing to evaluate: pass --models and --tasks (and --n_shot) or --task_groups, "
                             "or --eval_csv_path FILE")
        models = sel.trusting(sel.model_refs())
        options = sel.row_options()
        built = [ex.build_rows(models, tasks, shots, limit, sel.checkpoint_stride, sel.last_n_checkpoints, suite,
                               options, sel.checkpoint_ready_file) for tasks, shots, suite in _task_sets(sel)]
        rows, dropped = (built[0][0], 0) if len(built) == 1 else ex.dedupe(r for group, _ in built for r in group)
        dropped += sum(n for _, n in built)  # within a group (a model named twice), then across groups
    if sel.eval_csv_path:
        rows = [sel.trusting_row(r) for r in rows]
    from oellm.suites.lm_eval_include_only import check_custom

    check_custom(rows, includes)  # oellm-eval's own tasks come from its include dir, never lm-eval's twins
    validate_rows(rows, includes, sel.confirm_run_unsafe_code)
    return as_applied(rows, includes), dropped


def _task_sets(sel: Selection) -> list[tuple[list[str], list[int | None], str]]:
    """(tasks, shots, suite) products: --tasks x --n_shot, and each task group's tasks by their shot counts."""
    out = []
    if sel.tasks:
        shots = ex.parse_shots(sel.n_shot)
        if not shots:
            raise OellmError("--n_shot: give at least one shot count, e.g. --n_shot 0,5 (or default)")
        tasks = ex.parse_tasks(sel.tasks)
        if sel.suite:
            from oellm.task_groups import parse_suite

            out.append((tasks, shots, parse_suite(sel.suite)))
        else:  # as oellm-eval: a task's suite is the task registry's, else lm-eval's
            from oellm.task_groups import load_task_groups

            out += [(names, shots, suite) for suite, names in
                    load_task_groups(sel.task_groups_file).suites_of(tasks).items()]
    if sel.task_groups:
        from oellm.task_groups import load_task_groups, split_groups

        by_shots: dict[tuple[tuple[int, ...], str], list[str]] = {}
        for t in load_task_groups(sel.task_groups_file).expand(split_groups(sel.task_groups)):
            by_shots.setdefault((t.n_shots, t.suite), []).append(t.task)
        out += [(tasks, list(shots), suite) for (shots, suite), tasks in by_shots.items()]
    return out


def validate_rows(rows: Sequence[EvalRow], includes: Sequence[str], confirm_unsafe: bool = False) -> None:
    """Each suite checks the task names of its rows (one error naming every unknown one); lm-eval's
    options belong to lm-eval rows, and tasks that run model-written code need --confirm_run_unsafe_code."""
    from oellm.suites import WHOLE_LIMITS, by_suite, get_suite

    for name, group in by_suite(rows).items():
        names = sorted({r.task for r in group})
        get_suite(name).validate(names, list(includes))
        if name in WHOLE_LIMITS and any(r.limit is not None and r.limit < 1 for r in group):
            raise OellmError(f"--limit: {name} takes a number of samples per task, not a fraction; "
                             f"give a whole number for its rows")
        if name != "lm_eval" and any(r.options for r in group):
            raise OellmError(f"--apply_chat_template, --system_instruction, --gen_kwargs, --seed, --predict_only and "
                             f"--metadata are lm-eval's options; {name} rows ({names[0]}, ...) cannot take them")
        if name == "lm_eval" and not confirm_unsafe:
            from oellm.suites import lm_eval_needs
            from oellm.suites.lm_eval import yaml_dirs

            unsafe = lm_eval_needs.unsafe_tasks(names, yaml_dirs(includes))
            if unsafe:
                raise OellmError(f"task(s) {', '.join(unsafe)} run code the model writes; pass "
                                 "--confirm_run_unsafe_code to evaluate them (as lm-eval asks)")
