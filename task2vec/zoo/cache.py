"""The per-user cache: files task2vec writes for a zoo that belong in no repository.

Fine-tuning a zoo entry appends a transfer record and embeds the task with the zoo's probe;
writing either into the zoo folder would dirty the checkout the zoo came with. They go to

    <cache>/records/<zoo key>/records.csv      the zoo's transfer records (MODEL2VEC's input)
    <cache>/records/<zoo key>/tasks/*.t2v.npz  the task embeddings the records name

where ``<cache>`` is ``$TASK2VEC_CACHE`` if set, else ``$XDG_CACHE_HOME/task2vec``, else
``~/.cache/task2vec``, and ``<zoo key>`` is the zoo folder's name and a hash of its resolved
path, probe, method and embedding settings: a zoo moved elsewhere, or re-made with another
probe, starts with no records (the old task embeddings would not fit it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OutputPathError

if TYPE_CHECKING:  # for the type hints only: the zoo module loads torch
    from .zoo import Zoo


def user_cache_dir() -> Path:
    """``$TASK2VEC_CACHE``, else ``$XDG_CACHE_HOME/task2vec`` (absolute values only, as XDG says),
    else ``~/.cache/task2vec``; not created."""
    own = os.environ.get("TASK2VEC_CACHE")
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "task2vec"
    return Path.home() / ".cache" / "task2vec"


def zoo_key(zoo: Zoo) -> str:
    """``<folder name>-<12 hex digits>``: the hash of the zoo's resolved path, probe, method and settings."""
    where = zoo.path.resolve()
    ident = json.dumps([str(where), zoo.probe, zoo.method, zoo.manifest.get("embedding_settings", {})], sort_keys=True)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", where.name).strip("._") or "zoo"
    return f"{name}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def zoo_cache_dir(zoo: Zoo, *, create: bool = False) -> Path:
    """The zoo's folder in the per-user cache (``create``: made if missing, or an OutputPathError)."""
    path = user_cache_dir() / "records" / zoo_key(zoo)
    if create:
        try:
            (path / "tasks").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputPathError(f"cannot create the cache folder {str(path)!r} ({exc.strerror}); "
                                  "set TASK2VEC_CACHE to a writable folder") from None
    return path


def zoo_records(zoo: Zoo, *, create: bool = False) -> Path:
    """The zoo's default transfer-records CSV (its folder made when ``create``)."""
    return zoo_cache_dir(zoo, create=create) / "records.csv"
