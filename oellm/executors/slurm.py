"""SLURM executor: one `sbatch` per chunk of the run's array, recorded in run.json as it goes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from oellm import slurm
from oellm.arrays import SubmitPlan
from oellm.errors import OellmError
from oellm.rundir import RunDir, utc_now


def submit_chunks(run: RunDir, plan: SubmitPlan, log: Callable[[str], None] = print,
                  options: Sequence[str] = ()) -> list[dict]:
    """Submit every chunk; a failure after some chunks went in keeps what was submitted on record.

    `options` are extra sbatch flags (resubmit's `--time=`), kept in each submission's record."""
    submitted: list[dict] = []
    try:
        for chunk in plan.chunks:
            job_id = slurm.submit(run.script, array=chunk.array, args=[str(chunk.offset)], options=options)
            submitted.append({"job_id": job_id, "offset": chunk.offset, "size": chunk.size, "array": chunk.array,
                              "submitted": utc_now(), **({"options": list(options)} if options else {})})
            log(f"submitted array job {job_id}: tasks {chunk.offset}-{chunk.offset + chunk.size - 1} "
                f"(--array={chunk.array})")
    except OellmError as e:
        if submitted:
            _record(run, submitted)
            done = sum(s["size"] for s in submitted)
            raise OellmError(f"{e} -- {len(submitted)} of {len(plan.chunks)} chunk(s) ({done} tasks) were submitted "
                             f"and recorded in {run.manifest}; submit the rest later") from None
        raise
    _record(run, submitted)
    return submitted


def _record(run: RunDir, submitted: list[dict]) -> None:
    manifest = run.read_manifest()
    run.update_manifest(submissions=[*manifest.get("submissions", []), *submitted])
