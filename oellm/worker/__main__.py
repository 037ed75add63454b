"""`python -m oellm worker` / `python -m oellm.worker`: what each array task runs, with argparse only.

The workers may run in an image that has torch and lm-eval but not oellm's login-node stack (jsonargparse and
its friends): oellm itself is shipped into the run (`oellm.shipping`), so this path imports nothing beyond
the standard library, oellm's worker modules and what the suite needs. `oellm worker` (the CLI) takes the
same flags and calls `main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_task(run_dir: Path, index: int | None = None, index_offset: int = 0) -> None:
    """Evaluate one array task's rows; exit 1 when a row failed, 2 on a user error (one line)."""
    from oellm.errors import OellmError
    from oellm.worker.task import run

    try:
        failed = run(run_dir, index=index, index_offset=index_offset)
    except OellmError as e:
        print(f"oellm worker: error: {e}", file=sys.stderr)
        sys.exit(2)
    if failed:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="oellm worker", description="Evaluate the rows of one array task of a run.")
    p.add_argument("--run_dir", type=Path, required=True, help="The run directory (holds jobs.csv and run.json).")
    p.add_argument("--index", type=int, default=None, help="Array task index; defaults to $SLURM_ARRAY_TASK_ID.")
    p.add_argument("--index_offset", type=int, default=0,
                   help="Added to the index; a run split into several SLURM arrays passes each chunk's start.")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    run_task(args.run_dir, args.index, args.index_offset)


if __name__ == "__main__":
    main()
