"""`oellm` command line: one typed function per subcommand; their docstrings are the help.

Only light modules are imported here, so `oellm --help` stays fast; each command imports its
heavy parts inside the function. Boolean flags work bare (`--dry_run`) and with a value
(`--dry_run false`), which jsonargparse's plain `bool` does not allow, hence `_parser` below.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path


def schedule_eval(
    models: str | list[str] | None = None,
    tasks: str | list[str] | None = None,
    n_shot: int | str | list[int] = 0,
    eval_csv_path: Path | None = None,
    limit: float | None = None,
    lm_eval_include_path: str | list[str] | None = None,
    cluster: str | None = None,
    clusters_file: Path | None = None,
    output_dir: Path | None = None,
    checkpoint_stride: int = 1,
    last_n_checkpoints: int | None = None,
    evals_per_task: int | None = None,
    batch_size: str | None = None,
    workers: int | None = None,
    log_samples: bool = False,
    force: bool = False,
    dry_run: bool = False,
    download_only: bool = False,
    precache: bool = True,
) -> None:
    """Plan model x task x shot evaluations, write a run dir, and submit SLURM arrays (or run locally).

    Args:
        models: Comma-separated models: Hugging Face ids (org/name), local model dirs, or training-run dirs
            whose checkpoints (checkpoint-N, step_N, iter_N) are all evaluated. Model args follow their
            model: "org/m,revision=step1000,dtype=float16".
        tasks: Comma-separated lm-eval task, group or tag names.
        n_shot: Few-shot counts, e.g. 0 or "0,5".
        eval_csv_path: A CSV with columns model_path,task_path,n_shot instead of --models/--tasks/--n_shot.
        limit: Evaluate only this many samples per task (or this fraction if below 1); for smoke tests.
        lm_eval_include_path: Dirs with custom lm-eval task YAMLs (comma-separated).
        cluster: Cluster name from clusters.json (default: detected from the hostname, or $OELLM_CLUSTER;
            "local" runs on this machine).
        clusters_file: Your own clusters JSON, merged over the shipped one (default: $OELLM_CLUSTERS_FILE).
        output_dir: Where run dirs go (default: $EVAL_OUTPUT_DIR/$USER, else the cluster's output_root).
        checkpoint_stride: Evaluate every Nth checkpoint of a training-run dir (the newest always).
        last_n_checkpoints: Evaluate only the newest N checkpoints of a training-run dir.
        evals_per_task: Rows of one model per array task (default: fill half the cluster's max_time).
        batch_size: lm-eval batch size (default: the cluster's batch_size, "auto").
        workers: Local executor: parallel workers (default: one per visible GPU, else 1).
        log_samples: Keep lm-eval's per-sample outputs next to each result.
        force: Re-run evaluations that already have results under the output dir.
        dry_run: Write the run dir and print the plan, but submit or run nothing.
        download_only: Only pre-cache models and task datasets for the offline compute nodes (no run dir).
        precache: Pre-cache and check offline, before submitting, every model and dataset the run needs;
            --no_precache skips both when your cache is managed another way.
    """
    from oellm.schedule import Request, schedule

    args = {k: v for k, v in locals().items() if k in inspect.signature(schedule_eval).parameters}
    schedule(Request(**args))


def worker(run_dir: Path, index: int | None = None, index_offset: int = 0) -> None:
    """Evaluate the rows of one array task of a run (what each SLURM array task runs).

    Args:
        run_dir: The run directory (holds jobs.csv and run.json).
        index: Array task index; defaults to $SLURM_ARRAY_TASK_ID.
        index_offset: Added to the index; a run split into several SLURM arrays passes each chunk's start.
    """
    from oellm.worker import run

    failed = run(run_dir, index=index, index_offset=index_offset)
    if failed:
        sys.exit(1)


def _commands() -> dict:
    """Subcommand name -> typed function; modules define them with light imports only."""
    from oellm.cache import check_cache_cmd
    from oellm.collect import collect_results
    from oellm.lifecycle import cancel, status
    from oellm.resubmit import resubmit

    return {"schedule-eval": schedule_eval, "check-cache": check_cache_cmd, "status": status, "resubmit": resubmit,
            "cancel": cancel, "collect-results": collect_results, "worker": worker}


COMMANDS = _commands()


def _parser():
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser
    from jsonargparse._optionals import docstring_parser_support

    parser = ArgumentParser(prog="oellm", description="Schedule LLM evaluations on HPC clusters or this machine.")
    subcommands = parser.add_subcommands(dest="command")
    for name, fn in COMMANDS.items():
        doc = inspect.getdoc(fn) or ""
        params = inspect.signature(fn).parameters
        flags = [p for p, v in params.items() if v.annotation in (bool, "bool")]
        sub = ArgumentParser(description=doc.split("\n\nArgs:")[0])
        sub.add_argument("--config", action=ActionConfigFile, help="A YAML/JSON file with any of these options.")
        sub.add_function_arguments(fn, skip=set(flags), as_positional=False)
        helps = _arg_docs(fn) if docstring_parser_support else {}
        for flag in flags:
            sub.add_argument(f"--{flag}", action=ActionYesNo(yes_prefix="", no_prefix="no_"), nargs="?",
                             default=params[flag].default, help=helps.get(flag, ""))
        subcommands.add_subcommand(name, sub, help=doc.split("\n")[0])
    return parser


def _arg_docs(fn) -> dict[str, str]:
    from docstring_parser import parse

    return {p.arg_name: p.description or "" for p in parse(inspect.getdoc(fn) or "").params}


# Run dirs may also be given bare, as users type them: `oellm status RUN`, `oellm collect-results A B`.
POSITIONAL = {"status": "run_dir", "resubmit": "run_dir", "cancel": "run_dir", "collect-results": "run_dirs"}


def _positional(argv: list[str]) -> list[str]:
    """Turn bare words right after these subcommands into their --run_dir(s) flag (jsonargparse cannot
    make an optional parameter positional)."""
    if not argv or argv[0] not in POSITIONAL:
        return argv
    words = []
    for a in argv[1:]:
        if a.startswith("-"):
            break
        words.append(a)
    if not words:
        return argv
    flag = POSITIONAL[argv[0]]
    return [argv[0], f"--{flag}", ",".join(words) if flag == "run_dirs" else words[0], *argv[1 + len(words):]] \
        if flag == "run_dirs" or len(words) == 1 else argv


def main(argv: list[str] | None = None) -> None:
    from oellm.errors import OellmError

    parser = _parser()
    cfg = parser.parse_args(_positional(list(sys.argv[1:] if argv is None else argv)))
    name = cfg.command
    kwargs = {k: v for k, v in cfg[name].as_dict().items() if k != "config" and not k.startswith("__")}
    try:
        COMMANDS[name](**kwargs)
    except OellmError as e:
        print(f"oellm: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("oellm: interrupted", file=sys.stderr)
        sys.exit(130)
