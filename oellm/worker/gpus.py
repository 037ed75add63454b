"""Several GPUs in one array task (`--gpus_per_task N`, `--gpu_mode workers`): one worker process per GPU, each
taking every Nth row of the task's rows LEFT TO DO, so every GPU the task books evaluates rows, on a resubmit
too; the model is loaded once per worker. The parent decides the split once and hands each worker its row ids
(a worker deciding for itself would see rows its siblings finished meanwhile, and the shares would drift).
In `spread` mode (run.json `parallelize`) the one worker spreads a model over all of them instead.

The processes are this worker's own children, started inside the same container with the same command,
each seeing one GPU through the variable the node set (CUDA_VISIBLE_DEVICES on NVIDIA, ROCR_VISIBLE_DEVICES
on AMD), as the local executor pins one GPU per slot.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from oellm.worker.support import Interrupted, signals_raise

log = logging.getLogger("oellm.worker")

PART_ENV = "OELLM_WORKER_PART"  # "k/n": this process is worker k of n of its array task
ROWS_ENV = "OELLM_WORKER_ROWS"  # the ids of the rows worker k evaluates, comma-separated (its parent's split)
GPU_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
STOP_GRACE_S = 30
T = TypeVar("T")


def task_gpus(environ: Mapping[str, str] = os.environ) -> tuple[str, list[str]]:
    """The variable naming this task's GPUs and their ids (empty: none, or SLURM's `NoDevFiles`)."""
    for var in GPU_VARS:
        value = environ.get(var)
        if value is not None:
            ids = [g.strip() for g in value.split(",") if g.strip() and g.strip() not in ("-1", "NoDevFiles")]
            return var, ids
    return GPU_VARS[0], []


def part(environ: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """(k, n) when this process is worker k of n of its task, else None."""
    value = environ.get(PART_ENV)
    if not value:
        return None
    k, n = value.split("/")
    return int(k), int(n)


def share(rows: Sequence[T], k: int, n: int) -> list[T]:
    """Worker k's rows: every nth of the rows left to do, in jobs.csv order."""
    return list(rows[k::n])


def assigned(environ: Mapping[str, str] = os.environ) -> set[str] | None:
    """The row ids this process's parent gave it, or None when it is not one of several workers."""
    if part(environ) is None:
        return None
    return set(filter(None, environ.get(ROWS_ENV, "").split(",")))


def fan_out(run_dir: Path, index: int, index_offset: int, todo: Sequence[str],
            settings: Mapping[str, object]) -> int | None:
    """Run the task as one worker per GPU when it has several GPUs, rows left (`todo`: their ids) for more than
    one, and its model is not spread over them; returns how many workers failed, or None when this process
    evaluates the rows."""
    var, gpus = task_gpus()
    if part() is not None or len(gpus) < 2 or len(todo) < 2 or settings.get("parallelize"):
        return None
    n = min(len(gpus), len(todo))
    log.info("array task %d: %d workers, one per GPU (%s=%s)", index_offset + index, n, var, ",".join(gpus[:n]))
    argv = [sys.executable, "-m", "oellm", "worker", "--run_dir", str(run_dir), "--index", str(index),
            "--index_offset", str(index_offset)]
    procs = [subprocess.Popen(argv, env={**os.environ, var: gpu, PART_ENV: f"{k}/{n}",
                                         ROWS_ENV: ",".join(share(todo, k, n))})
             for k, gpu in enumerate(gpus[:n])]
    try:
        with signals_raise():
            codes = [p.wait() for p in procs]
    except Interrupted as e:  # scancel, a time limit, Ctrl-C: each worker records its row as interrupted
        _stop(procs)
        log.error("%s; exiting", e)
        raise SystemExit(128 + e.signum) from None
    return sum(c != 0 for c in codes)


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
