"""Per-run SLURM settings (`--partition`, `--account`, `--mem`, ...) over the cluster's, shared by
`schedule-eval` and `resubmit`: a run can go ahead when a budget is exhausted or a partition is full,
without a clusters file of its own."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from oellm.clusters import ClusterConfig, build_cluster, merge_entry
from oellm.clusters_yaml import FROM_ENV
from oellm.errors import OellmError


@dataclass
class SlurmOverrides:
    """SLURM settings of one run, over the cluster's (an exhausted budget, a full partition).

    Args:
        partition: Partition for this run's array tasks, instead of the cluster's.
        account: Account (budget) to charge, instead of the cluster's.
        qos: Quality of service, instead of the cluster's.
        time_limit: Time limit of every array task (HH:MM:SS, D-HH:MM:SS, ...), at most the cluster's
            max_time; by default it is estimated from the rows each task evaluates.
        gpus_per_task: GPUs per array task (`--gres=gpu:N`, on one node).
        gpu_mode: With several GPUs per task: "workers" runs one worker per GPU, each taking the task's rows
            in turn (every GPU busy; the model loaded once per worker); "spread" loads one model over all of
            them (lm-eval's parallelize=True: for a model that does not fit one GPU). Default: the cluster's
            gpu_mode (workers); recorded in run.json, and a resubmit keeps the run's unless given.
        mem: Memory per array task, e.g. 64G.
        sbatch_option: More sbatch options as key=value (a bare switch: key=), repeatable:
            --sbatch_option constraint=a100 --sbatch_option exclusive=
        max_running: At most this many array tasks of the run at once (the `%N` of --array), instead of the
            cluster's max_running.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: str | None = None
    gpus_per_task: int | None = None
    gpu_mode: str | None = None
    mem: str | None = None
    sbatch_option: list[str] | None = None
    max_running: int | None = None

    def cluster_fields(self) -> dict[str, Any]:
        """The overrides as clusters.json fields (time_limit is the run's, not the cluster's)."""
        if self.max_running is not None and self.max_running < 1:
            raise OellmError(f"--max_running: must be >= 1, got {self.max_running}")
        out: dict[str, Any] = {k: getattr(self, k) for k in ("partition", "account", "qos", "gpus_per_task", "gpu_mode", "mem",
                                                             "max_running") if getattr(self, k) is not None}
        if self.sbatch_option:
            pairs = [o.partition("=") for o in self.sbatch_option]
            bad = [o for o, (_, eq, _) in zip(self.sbatch_option, pairs, strict=True) if not eq]
            if bad:
                raise OellmError(f"--sbatch_option {bad[0]!r}: expected key=value (key= for a bare switch)")
            out["sbatch_options"] = {k.strip().lstrip("-"): v.strip() for k, _, v in pairs}
        return out


def with_overrides(cluster: ClusterConfig, overrides: SlurmOverrides) -> ClusterConfig:
    """The cluster with a run's overrides, validated like a clusters file (the message names the flag's field).
    A flag wins over a value of the login environment (oellm-eval's), which is then no longer named as such."""
    changes = overrides.cluster_fields()
    flagged = {*changes, *(f for f in ("batch_size", "lm_eval_include_path") if getattr(overrides, f, None))}
    kept = {k: v for k, v in cluster.from_environment.items() if FROM_ENV.get(k) not in flagged}
    if kept != cluster.from_environment:
        cluster = dataclasses.replace(cluster, from_environment=kept)
    if not changes:
        return cluster
    data = {k: v for k, v in dataclasses.asdict(cluster).items() if k != "name"}
    data = json.loads(json.dumps(data))  # tuples -> lists, as a clusters file holds them
    return build_cluster(cluster.name, merge_entry(data, changes), "command line")
