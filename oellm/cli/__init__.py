"""`oellm` command line: jsonargparse over the typed functions of `oellm.cli.commands`.

Only light modules are imported here, so `oellm --help` stays fast; each command imports its heavy
parts inside the function. Boolean flags work bare (`--dry_run`) and with a value (`--dry_run false`),
which jsonargparse's plain `bool` does not allow, hence `_parser` below.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

from oellm.cli.commands import ALIASES, COMMANDS, OPTIONS


def _options_class(fn: Callable[..., None]) -> type | None:
    """The dataclass a command takes as its one parameter (its fields are the flags), else None; its
    module is imported here, for the one command being run."""
    params = list(inspect.signature(fn).parameters.values())
    hint = params[0].annotation if len(params) == 1 else None
    if not isinstance(hint, str) or hint not in OPTIONS:
        return None
    return getattr(importlib.import_module(OPTIONS[hint]), hint)


def _parser(command: str | None = None, prog: str = "oellm"):
    """The parser of every command (None), or only of `command` ("": none), the others listing just their
    one-line help: `oellm --help` and a command's start-up import no other command's modules."""
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

    # exit_on_error=False: a bad flag is one line and exit 2, like every other user error (see `main`)
    parser = ArgumentParser(prog=prog, description="Schedule LLM evaluations on HPC clusters or this machine.",
                            exit_on_error=False)
    subcommands = parser.add_subcommands(dest="command")
    for name, fn in COMMANDS.items():
        doc = inspect.getdoc(fn) or ""
        if name in ALIASES:
            doc = f"{ALIASES[name]}, by its oellm-eval name: {doc}"
        if command is not None and name != command:
            subcommands.add_subcommand(name, ArgumentParser(description=doc, exit_on_error=False),
                                       help=doc.split("\n")[0])
            continue
        from oellm.plan.request import NOT_FLAGS

        source = _options_class(fn) or fn
        params = inspect.signature(source).parameters
        hidden = getattr(source, "HIDDEN", frozenset())  # a base's fields that mean nothing to this command
        flags = [p for p, v in params.items() if v.annotation in (bool, "bool", "bool | None") and p not in hidden]
        sub = ArgumentParser(description=doc.split("\n\nArgs:")[0], exit_on_error=False)
        sub.add_argument("--config", action=ActionConfigFile, help="A YAML/JSON file with any of these options.")
        if source is fn:
            sub.add_function_arguments(fn, skip=set(flags), as_positional=False)
        else:
            sub.add_class_arguments(source, skip=set(flags) | NOT_FLAGS | hidden, as_group=False)
        helps = _arg_docs(source)
        for flag in flags:
            sub.add_argument(f"--{flag}", action=ActionYesNo(yes_prefix="", no_prefix="no_"), nargs="?",
                             default=params[flag].default, help=helps.get(flag, ""))
        subcommands.add_subcommand(name, sub, help=doc.split("\n")[0])
    return parser


def _arg_docs(source: Any) -> dict[str, str]:
    """`Args:` of a function's docstring, or of a dataclass's and its bases' docstrings."""
    from docstring_parser import parse

    docs: dict[str, str] = {}
    for obj in reversed(getattr(source, "__mro__", (source,))):
        docs.update({p.arg_name: p.description or "" for p in parse(inspect.getdoc(obj) or "").params})
    return docs


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


APPENDED = ("--sbatch_option",)  # list flags users repeat: each use adds one item
BARE = {"--apply_chat_template": "true"}  # flags that take a value or stand alone, as in lm-eval's CLI


def _appended(argv: list[str]) -> list[str]:
    """`--sbatch_option a=1 --sbatch_option b=2` -> jsonargparse's list-append spelling `--sbatch_option+`."""
    out = []
    for i, a in enumerate(argv):
        flag, eq, value = a.partition("=")
        out.append(f"{flag}+{eq}{value}" if flag in APPENDED else a)
        if a in BARE and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            out.append(BARE[a])
    return out


def main(argv: list[str] | None = None, prog: str = "oellm") -> None:
    from jsonargparse import ArgumentError

    from oellm.errors import OellmError

    args = _appended(_positional(list(sys.argv[1:] if argv is None else argv)))
    command = next((a for a in args if not a.startswith("-")), None)
    parser = _parser(command if command in COMMANDS else "", prog)
    try:
        cfg = parser.parse_args(args)
    except ArgumentError as e:
        where = f"{prog} {command} --help" if command in COMMANDS else f"{prog} --help"
        print(f"{prog}: error: {' '.join(str(e).split())} ({where} lists the options)", file=sys.stderr)
        sys.exit(2)
    name = cfg.command
    kwargs = {k: v for k, v in cfg[name].as_dict().items() if k != "config" and not k.startswith("__")}
    fn = COMMANDS[name]
    options = _options_class(fn)
    if kwargs.get("verbose"):
        import logging

        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        fn(options(**kwargs)) if options else fn(**kwargs)
    except OellmError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)


def main_eval(argv: list[str] | None = None) -> None:
    """The `oellm-eval` entry point (oellm-eval's name): the same commands, both spellings."""
    main(argv, prog="oellm-eval")
