"""The one error type users see: caught in `oellm.cli.main`, printed as one line, exit code 2."""

from __future__ import annotations

import re
import shlex


class OellmError(Exception):
    """A problem with the user's input or environment: say what, which value, and what would be valid."""


class SlurmError(OellmError):
    """A SLURM command failed; carries the whole command, its exit code and output."""

    def __init__(self, argv: list[str], returncode: int | None, stdout: str, stderr: str, note: str = ""):
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr
        what = "timed out" if returncode is None else f"exited with code {returncode}"
        detail = (stderr or stdout).strip().replace("\n", " | ")
        super().__init__(f"`{shlex.join(argv)}` {what}{note}: {detail or '(no output)'}")


# Names of values that must never be written to jobs.csv, run.json, a script or a result's provenance.
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD", re.IGNORECASE)


def refuse_secret(name: str, what: str, written_to: str) -> None:
    """Refuse a value whose name looks like a credential: oellm writes every setting down for provenance."""
    if SECRET_NAME.search(name):
        raise OellmError(f"{what} looks like a secret and would be written to {written_to}; export HF_TOKEN "
                         "(or your service's variable) on the login node instead, where the pre-cache uses it")
