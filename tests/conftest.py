"""Shared test set-up. Fixtures live in plugin modules, one per real part:

- tests/fixtures_models.py: a tiny causal LM + tokenizer and tiny lm-eval tasks, built on the spot.
- tests/fixtures_hub.py:    a local server speaking the Hugging Face Hub HTTP API (HF_ENDPOINT) for pre-cache tests.
- tests/fixtures_slurm.py:  the real local SLURM cluster (tests/slurm/local-cluster.sh) and the
                            container shim (tests/shim/singularity) on PATH.
"""

import os
import sys

import pytest

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_slurm", "tests.fixtures_hub", "tests.fixtures_suites"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_part(what: str) -> None:
    """Skip loudly outside CI; in CI a missing real part fails the run (never a silent skip)."""
    msg = f"REAL PART MISSING: {what}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: tiers may not be skipped)", pytrace=False)
    print(f"\n*** {msg}: skipping ***", file=sys.stderr)
    pytest.skip(msg)
