"""Paths in zoo specs and zoo manifests: one rule to read them, one to record them.

Reading (:func:`resolve_path`), for every path a spec or a zoo manifest holds:

1. A URI (text with ``://``) is left alone.
2. ``${VAR}`` is replaced by the environment variable's value. A path that starts with
   ``${VAR}`` whose value is relative is relative to the working directory: the user set the
   variable where they stand (``export TASK2VEC_SHARED=../shared`` in the repository root).
   An unset variable is a :class:`~task2vec.errors.ZooError` naming it and the file.
3. A path still relative after that is relative to the folder of the file that holds it: the
   spec's folder for spec paths, the zoo folder for manifest paths
   (``checkpoint: experts/x.safetensors``).

Recording (:func:`portable_path`), for paths a manifest keeps: a path under
``$TASK2VEC_SHARED`` is written ``${TASK2VEC_SHARED}/...``; else one under the zoo folder is
written relative to it; else a relative path stays relative (rewritten against the zoo folder,
so that rule 3 reads it back), and an absolute path the user gave is kept as given. The build
machine's absolute paths never enter a manifest for what lies under either folder.

Weights (an entry's ``checkpoint``) are what a zoo loads, so a manifest names them more strictly
(:func:`weights_path_problem`): a URI, ``${VAR}/...``, or a path relative to the zoo folder that
stays inside it; never an absolute path, never ``..``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from .errors import ZooError

SHARED_ENV = "TASK2VEC_SHARED"
_VAR = re.compile(r"\$\{(\w+)\}")


def resolve_path(text: str, base: str | os.PathLike, where: str) -> str:
    """``text`` from a spec or manifest as a usable path (or URI); ``base`` is the folder of the
    file that holds it, ``where`` names that file in errors."""
    if "://" in text:
        return text
    missing = [name for name in _VAR.findall(text) if name not in os.environ]
    if missing:
        raise ZooError(f"{where}: environment variable {missing[0]} is not set (used in {text!r})")
    lead = _VAR.match(text)
    expanded = _VAR.sub(lambda m: os.environ[m.group(1)], text)
    if Path(expanded).is_absolute():
        return str(Path(expanded))
    if lead:  # a relative ${VAR} value: where the user stands
        return os.path.abspath(expanded)
    return str(Path(base) / expanded)


def portable_path(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` (absolute, or relative to the working directory) as a manifest in ``base`` records it."""
    text = str(path)
    if "://" in text:
        return text
    full = Path(text).resolve()
    home = Path(base).resolve()
    shared = os.environ.get(SHARED_ENV)
    if shared and full.is_relative_to(Path(shared).resolve()):
        rel = full.relative_to(Path(shared).resolve()).as_posix()
        return f"${{{SHARED_ENV}}}" + ("" if rel == "." else f"/{rel}")
    if full.is_relative_to(home) or not Path(text).is_absolute():
        return Path(os.path.relpath(full, home)).as_posix()
    return text


def weights_path_problem(text: str) -> str | None:
    """What makes ``text`` unfit as a manifest's weights path, in words (None: nothing).

    Allowed: a URI, ``${VAR}/...`` (the user's environment says where) and a path relative to
    the zoo folder that stays inside it. A manifest from elsewhere must not make the zoo read
    ``/etc/passwd`` or ``../../secret`` as weights."""
    if "\0" in text:
        return "holds a NUL byte"
    if "://" in text:
        return None
    if Path(text).is_absolute():
        return ("is an absolute path: a manifest names weights relative to the zoo folder, as ${VAR}/... "
                "or by URI")
    if ".." in PurePosixPath(text).parts:
        return "leaves the zoo folder ('..')"
    return None
