"""Atomic file writing: a result is either complete on disk or absent; and the rule for existing outputs.

The library's ``save`` methods replace an existing file; the command line refuses one (before any
work) unless given ``--force`` (:func:`add_force_flag`), the same rule for every command.

:func:`atomic_open` writes beside the target, into ``.{name}.{pid}-{host}.XXXXXXXX.tmp``, and
renames that over the target only on success. A write killed on the way (``kill -9``, power
loss) leaves its temp file behind; the next successful write into the same folder removes such
leftovers: those whose process is gone from this host, and those of another host (a shared
filesystem) or of an older task2vec (no pid in the name) untouched for :data:`STALE_AFTER_S`.
The temp file of a write still in progress in a live process on this host is never removed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

from .errors import OutputPathError

STALE_AFTER_S = 3600.0  # a temp file whose writer cannot be asked (another host, no pid) is a leftover after this
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # pids mean something on this host only
_RANDOM = r"[a-z0-9_]{8}"  # what tempfile.mkstemp puts between prefix and suffix
_TEMP = re.compile(rf"^\..+\.(\d+)-([0-9a-f]{{8}})\.{_RANDOM}\.tmp$")
_OLD_TEMP = re.compile(rf"^\..+\.{_RANDOM}\.tmp$")  # written before the pid was in the name


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
    """Open a temporary file beside ``path``; rename it over ``path`` only on success, then remove
    the temp files that killed writes left in that folder."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{_HOST}.", suffix=".tmp", dir=path.parent)
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
    _remove_leftovers(path.parent)


def write_rows_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    """``rows`` (dicts with the same keys) as a CSV table under the first row's keys, written atomically."""
    with atomic_open(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return Path(path)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's process counts)."""
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, the pid is only looked up
    except (ProcessLookupError, OverflowError):  # OverflowError: no process has such a pid
        return False
    except PermissionError:
        return True
    return True


def _is_leftover(entry: os.DirEntry, now: float) -> bool:
    """Whether ``entry`` is the temp file of an atomic write that will never finish."""
    match = _TEMP.match(entry.name)
    if match is None and not _OLD_TEMP.match(entry.name):
        return False
    if not entry.is_file(follow_symlinks=False):
        return False
    if match is not None and match.group(2) == _HOST:
        return not _alive(int(match.group(1)))
    return now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S


def _remove_leftovers(folder: Path) -> None:
    """Remove the temp files of killed atomic writes in ``folder`` (best effort: a file another
    cleaner removed first, or one this user may not remove, is passed over)."""
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.name.endswith(".tmp") and _is_leftover(entry, now):
                    os.unlink(entry.path)
