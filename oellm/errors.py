"""The one error type users see: caught in `oellm.cli.main`, printed as one line, exit code 2."""

from __future__ import annotations

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
