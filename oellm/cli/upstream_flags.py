"""oellm-eval's `schedule` flags, with oellm-eval's meaning, translated at the command line's edge into oellm's
own options: `schedule-eval` (and oellm-eval's `schedule`) takes an `UpstreamRequest`, and the CLI hands on
`to_request()`'s plain `Request`, so a command line written for oellm-eval runs unchanged under either entry
point and nothing past the command line knows which spelling was used (only messages do: `Request.spelled`)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oellm.errors import OellmError
from oellm.plan.request import Request

# --slurm_template_var keys -> oellm's field (NODES becomes an sbatch option)
TEMPLATE_VARS = {"PARTITION": "partition", "ACCOUNT": "account", "GPUS_PER_NODE": "gpus_per_task",
                 "SLURM_MEM": "mem", "TIME": "time_limit", "NODES": "nodes"}
LOCAL_OUTPUT = "oellm-output"  # where oellm-eval's --local writes its run dirs (in the working dir)


@dataclass
class UpstreamFlags:
    """oellm-eval's spellings of options oellm has under other names.

    Args:
        slurm_template_var: oellm-eval's JSON of SLURM settings for this run, e.g.
            '{"PARTITION": "gpu", "ACCOUNT": "p1", "GPUS_PER_NODE": 2, "SLURM_MEM": "64G", "NODES": 1,
            "TIME": "04:00:00"}': the same as --partition, --account, --gpus_per_task, --mem,
            --sbatch_option nodes=N and --time_limit (which win when both are given).
        max_array_len: oellm-eval's array throttle: at most this many array tasks of the run at once (the
            `%N` of --array), as --max_running.
        nodelist: Run only on these nodes (`#SBATCH --nodelist`), as --sbatch_option nodelist=...
        local: Run on this machine instead of submitting to SLURM (as --cluster local); run dirs go to
            ./oellm-output as oellm-eval's do (unless --output_dir or $EVAL_OUTPUT_DIR says otherwise).
        skip_checks: Skip the pre-cache of models and datasets and the preflight (as --no_precache
            --no_preflight), when the cache is known to be complete.
        verbose: Log what each step does.
    """

    slurm_template_var: str | None = None
    max_array_len: int | None = None
    nodelist: str | None = None
    local: bool = False
    skip_checks: bool = False
    verbose: bool = False

    def ours(self, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """oellm's fields these flags mean, not overriding `given` (oellm's own flags as set), and how each
        was spelled (for messages)."""
        out: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        options: list[str] = []
        for key, value in template_vars(self.slurm_template_var).items():
            if TEMPLATE_VARS[key] == "nodes":
                options.append(f"nodes={value}")
            elif given.get(TEMPLATE_VARS[key]) is None:
                out[TEMPLATE_VARS[key]] = value
                spelled[TEMPLATE_VARS[key]] = f"--slurm_template_var {key}"
        if self.nodelist:
            options.append(f"nodelist={self.nodelist}")
        mine = list(given.get("sbatch_option") or [])
        if new := [o for o in options if o not in mine]:
            out["sbatch_option"] = new + mine
        if self.local:
            if given.get("cluster") not in (None, "local"):
                raise OellmError(f"--local runs on this machine; it cannot be combined with --cluster {given['cluster']}")
            out["cluster"] = "local"
            if given.get("output_dir") is None and not os.environ.get("EVAL_OUTPUT_DIR"):
                out["output_dir"] = Path(LOCAL_OUTPUT).absolute()  # oellm-eval's README: ./oellm-output/<ts>
        if self.skip_checks:
            out.update(precache=False, preflight=False)
        if self.max_array_len is not None:
            if self.max_array_len < 1:
                raise OellmError(f"--max_array_len: must be >= 1, got {self.max_array_len}")
            if given.get("max_running") is None:
                out["max_running"] = self.max_array_len
                spelled["max_running"] = "--max_array_len"
        return out, spelled


@dataclass
class UpstreamRequest(UpstreamFlags, Request):
    """`schedule-eval`'s flags: oellm's own (`Request`) and oellm-eval's spellings of them."""

    def to_request(self) -> Request:
        """The plain `Request` these flags mean; oellm-eval's spellings are gone past this point."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(Request)}
        out, spelled = self.ours(given)
        return Request(**{**given, **out, "spelled": {**given.get("spelled", {}), **spelled}})


def template_vars(text: str | dict | None) -> dict[str, Any]:
    """--slurm_template_var's JSON, checked: known keys, values of the right kind."""
    if not text:
        return {}
    try:
        data = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as e:
        raise OellmError(f"--slurm_template_var: not JSON ({e.msg}); e.g. '{{\"PARTITION\": \"gpu\"}}'") from None
    if not isinstance(data, dict):
        raise OellmError(f"--slurm_template_var: expected a JSON object, got {text!r}")
    unknown = sorted(set(data) - set(TEMPLATE_VARS))
    if unknown:
        raise OellmError(f"--slurm_template_var: unknown key(s) {', '.join(unknown)}; known: {', '.join(TEMPLATE_VARS)}")
    out = {}
    for key, value in data.items():
        if key in ("GPUS_PER_NODE", "NODES"):
            if isinstance(value, bool) or not str(value).strip().isdigit():
                raise OellmError(f"--slurm_template_var: {key} must be a whole number, got {value!r}")
            out[key] = int(value)
        elif isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            out[key] = str(value).strip()
        else:
            raise OellmError(f"--slurm_template_var: {key} must be a non-empty string, got {value!r}")
    return out
