"""Atomic file writing: a result is either complete on disk or absent; and the rule for existing outputs.

The library's ``save`` methods replace an existing file; the command line refuses one (before any
work) unless given ``--force`` (:func:`add_force_flag`), the same rule for every command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import OutputPathError


def add_force_flag(parser: argparse.ArgumentParser) -> None:
    """``--force``, for every command that writes an output file: without it an existing one is refused."""
    parser.add_argument("--force", action="store_true", help="replace existing output files (default: refuse)")


def check_writable(path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Fail early (before any expensive work) if ``path`` cannot be created, or exists and ``overwrite`` is off.

    ``overwrite`` False is the command line's rule, whose ``--force`` turns it on.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputPathError(f"output path {str(path)!r} is a directory")
    if not overwrite and path.exists():
        raise OutputPathError(f"output file {str(path)!r} exists: pass --force to replace it")
    if not parent.is_dir():
        raise OutputPathError(f"output directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"output directory {str(parent)!r} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"output file {str(path)!r} is not writable")
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
