"""A fine-tuning run folder: when it holds a run, and one process at a time in it.

A folder is a run once its first checkpoint (``last.pt``) exists. Whatever a start that died
before that left behind (``config.json``, ``split.csv``) is cleared by the next start, so a kill
at any moment leaves a folder that a rerun or ``--resume`` picks up. While a fine-tune works in
a folder it holds an exclusive lock on ``RUN_DIR/.lock`` (released by the OS when the process
dies, so a killed run never leaves a stale lock); a second fine-tune into the same folder is
refused at once instead of both writing and one result being lost.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from ..errors import FinetuneError, RunBusyError

LOCK_FILE = ".lock"
CHECKPOINT = "last.pt"
# every file a run writes (a run with repeats also writes seed-<s>/ folders and summary.*)
RUN_FILES = ("config.json", "split.csv", CHECKPOINT, "best.pt", "metrics.csv", "metrics.json", "report.json",
             "confusion.csv", "confusion.png", "confusion_test.csv", "confusion_test.png")
# the settings a resumed run must share with the saved one
RESUME_KEYS = ("arch", "model_id", "weights", "dataset_fingerprint", "params")


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a run: its first checkpoint was written."""
    return (Path(run_dir) / CHECKPOINT).is_file()


def check_start(run_dir: str | os.PathLike, config: dict[str, Any], *, resume: bool, overwrite: bool) -> bool:
    """Check that a fine-tune may start in ``run_dir``; return whether it continues the saved checkpoint.

    A plain start refuses a folder holding a run unless ``overwrite``; ``resume`` continues one
    (same settings required), and starts from nothing where there is no checkpoint yet (a start
    killed before its first one), so the same command with ``resume`` finishes a run from any kill
    point. Called before the expensive set-up and again under the lock.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise FinetuneError("resume and overwrite exclude each other: continue the run or replace it")
    if run_dir.exists() and not run_dir.is_dir():
        raise FinetuneError(f"run folder {str(run_dir)!r} is a file")
    parent = next((d for d in run_dir.absolute().parents if d.exists()), None)
    if not run_dir.exists() and (parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
        raise FinetuneError(f"cannot create run folder {str(run_dir)!r}: {str(parent)!r} is not a writable folder")
    if overwrite:
        return False
    if resume:
        if has_checkpoint(run_dir):
            _check_same_settings(run_dir, config)
            return True
        return False  # killed before its first checkpoint (or before it began): start from nothing
    if has_checkpoint(run_dir):
        raise FinetuneError(f"run folder {str(run_dir)!r} already holds a run: use --resume to continue it, "
                            "--force to replace it, or another -o")
    return False


def _check_same_settings(run_dir: Path, config: dict[str, Any]) -> None:
    try:
        old = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FinetuneError(f"cannot resume {str(run_dir)!r}: its config.json is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FinetuneError(f"cannot resume {str(run_dir)!r}: its config.json is not JSON "
                            f"({type(exc).__name__})") from None
    if not isinstance(old, dict) or not isinstance(old.get("params"), dict):
        raise FinetuneError(f"cannot resume {str(run_dir)!r}: its config.json is not a task2vec run's "
                            "(no 'params' mapping)")
    for key in RESUME_KEYS:
        now = json.loads(json.dumps(config[key]))
        if old.get(key) != now:
            diff = key
            if key == "params":
                diff = next(k for k in sorted(set(now) | set(old["params"])) if old["params"].get(k) != now.get(k))
            raise FinetuneError(f"cannot resume {str(run_dir)!r}: setting {diff!r} differs from the saved run")


def clear(run_dir: str | os.PathLike) -> None:
    """Remove the files of an earlier run (only those: the folder may hold the user's own files)."""
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (Path(run_dir) / name).unlink()


@contextlib.contextmanager
def claim(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Create ``run_dir`` and hold its lock for the block; a folder another fine-tune holds is refused."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FinetuneError(f"cannot create run folder {str(run_dir)!r}: {exc.strerror}") from None
    lock = FileLock(run_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunBusyError(f"run folder {str(run_dir)!r} is in use by another fine-tune: wait for it or "
                            "use another -o") from None
    try:
        yield run_dir
    finally:
        lock.release()
