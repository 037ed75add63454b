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


# Names of values that must never be written to jobs.csv, run.json, a script or a result's provenance,
# decided by the name's words, not substrings: `tokenizer=`, `add_bos_token=`, `prefix_token_id=` and
# TOKENIZERS_PARALLELISM are ordinary settings (a substring rule refused them, and with them every
# checkpoint whose tokenizer lives elsewhere).
SECRET_WORDS = frozenset({"password", "passwd", "secret", "credentials"})
SECRET_ENDINGS = ("api_key", "apikey", "access_key", "private_key", "secret_key")
# `<what>_token` is a credential unless <what> is one of a tokenizer's special tokens
SPECIAL_TOKENS = frozenset({"bos", "eos", "pad", "unk", "sep", "cls", "mask", "prefix", "special", "start", "end",
                            "stop", "eot", "image", "audio", "max", "new", "num"})


def is_secret_name(name: str) -> bool:
    """`token`, `hf_token`, `*_token` (but a tokenizer's `add_bos_token`, `pad_token`), `*api_key`,
    `*password`, `*secret`: the names of credentials."""
    low = name.strip().lower().replace("-", "_")
    words = [w for w in low.split("_") if w]
    if not words:
        return False
    if SECRET_WORDS & set(words) or low.endswith(SECRET_ENDINGS):
        return True
    return words[-1] == "token" and (len(words) == 1 or words[-2] not in SPECIAL_TOKENS)


def refuse_secret(name: str, what: str, written_to: str) -> None:
    """Refuse a value whose name looks like a credential: oellm writes every setting down for provenance."""
    if is_secret_name(name):
        raise OellmError(f"{what} looks like a secret and would be written to {written_to}; export HF_TOKEN "
                         "(or your service's variable) on the login node instead, where the pre-cache uses it")
