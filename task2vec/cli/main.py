"""Command-line interface: the ``task2vec`` parser and ``main``; each command group's flags and
handlers live in its own module (:mod:`task2vec.cli.embed`, :mod:`task2vec.cli.space`,
:mod:`task2vec.cli.zoo`, :mod:`task2vec.cli.finetune`), a thin layer over the public API.

Every bad input ends with one line ``task2vec: error: ...`` on stderr and exit code 2.

Only modules without torch are imported here (:mod:`task2vec.defaults`, :mod:`task2vec.space.distance`,
:mod:`task2vec.space.taskmap`, ...; numba, matplotlib and UMAP load inside the functions that use them);
the commands that need torch import it when they run, so ``--help``, ``distance`` and ``map``
start without it.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from typing import Any, NoReturn, Sequence

from .embed import add_embed_parser
from .finetune import add_finetune_parsers
from .space import add_space_parsers
from .zoo import add_zoo_parsers
from ..errors import Task2VecError, UsageError
from ..memory import keep_freed_memory
from ..version import __version__


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Ends each option's help with ``(default: X)``, unless the help already says its default or
    there is no value to show (None or False: the help says what an unset flag means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or "%(default)" in text or "(default:" in text
                or action.default is None or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class Parser(argparse.ArgumentParser):
    """An argument parser (and, through ``add_subparsers``, sub-parsers of the same class) that shows
    defaults in help and reports a malformed command line as one :class:`UsageError` line, not
    argparse's usage block."""

    def __init__(self, *args: Any, formatter_class: type[argparse.HelpFormatter] = DefaultsHelpFormatter,
                 **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Raise ``message`` as a :class:`UsageError` (``main`` prints it as ``task2vec: error: ...``, exit 2).

        A flag type's own complaint (:mod:`task2vec.validate`) reads ``--alpha must be a finite
        number, got nan``; argparse's others (unknown flag, missing argument) point to the help.
        """
        own = re.fullmatch(r"argument ([^:]+): (must .*)", message, flags=re.S)
        if own:
            raise UsageError(f"{own[1].split('/')[-1]} {own[2]}")
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The ``task2vec`` parser with every command."""
    parser = Parser(
        prog="task2vec",
        description="Embed image-classification tasks (Task2Vec), compare and map them, and recommend the backbone to fine-tune.",
        epilog="Every command that writes an output file (embed, distance --csv, map, recommend --json, predict --json, "
               "cam) refuses to replace an existing one, before any work, unless given --force.")
    parser.add_argument("--version", action="version", version=f"task2vec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_embed_parser(sub)
    add_space_parsers(sub)
    add_zoo_parsers(sub)
    add_finetune_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda msg, cat, *a, **k: f"task2vec: warning: {msg}\n"
    try:
        args = build_parser().parse_args(argv)
        keep_freed_memory()  # tensors of large images: reuse freed memory, no page-fault storm (task2vec.memory)
        return args.func(args)
    except Task2VecError as exc:
        print(f"task2vec: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission changed mid-run: nothing half-written is left
        print(f"task2vec: error: {exc.strerror or exc} ({exc.filename or 'output'})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("task2vec: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
