"""Atomic writes: the temp files of killed writes are removed by the next write to their folder,
never the temp file of a write still in progress in another live process."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from task2vec.io import atomic_open, write_rows_csv

ROOT = Path(__file__).resolve().parents[1]
# A child that starts an atomic write, says so, and finishes it only when told (a line on stdin).
WRITER = """
import sys
from task2vec.io import atomic_open, write_rows_csv
with atomic_open(sys.argv[1]) as f:
    f.write(b"first half, ")
    f.flush()
    print("writing", flush=True)
    sys.stdin.readline()
    f.write(b"second half")
"""


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def start_writer(target: Path) -> subprocess.Popen:
    """A live process in the middle of an atomic write to ``target``."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline() == "writing\n"
    return proc


def write(path: Path, text: str = "x") -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def test_a_killed_write_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    writer = start_writer(tmp_path / "last.pt")
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    stale = temp_files(tmp_path)
    assert len(stale) == 1 and stale[0].startswith(".last.pt.") and not (tmp_path / "last.pt").exists()
    write(tmp_path / "other.json")  # another file of the same folder
    assert temp_files(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["other.json"]


def test_the_temp_file_of_a_live_writer_is_kept(tmp_path):
    writer = start_writer(tmp_path / "arrays.npz")
    try:
        live = temp_files(tmp_path)
        write(tmp_path / "zoo.json")
        assert temp_files(tmp_path) == live and len(live) == 1
        writer.communicate("go on\n", timeout=60)
    finally:
        writer.kill()
    assert writer.returncode == 0 and (tmp_path / "arrays.npz").read_bytes() == b"first half, second half"
    assert temp_files(tmp_path) == []


def test_only_atomic_writes_temp_files_go_those_of_other_hosts_and_older_versions_after_an_hour(tmp_path):
    with atomic_open(tmp_path / "seen.txt", "w") as f:  # the name this host's writes give their temp files
        f.write("x")
        mine = temp_files(tmp_path)[0]
    tag = re.fullmatch(r"\.seen\.txt\.(\d+)-([0-9a-f]{8})\.[a-z0-9_]{8}\.tmp", mine)
    assert tag and int(tag.group(1)) == os.getpid()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a process that has ended: its pid names no one
    dead.wait()
    host = tag.group(2)
    other = "0" * 8 if host != "0" * 8 else "1" * 8
    hour = 3600
    files = {  # name: (age in seconds, removed?)
        f".last.pt.{dead.pid}-{host}.abcd1234.tmp": (0, True),  # killed here a moment ago
        f".last.pt.{os.getpid()}-{host}.abcd1234.tmp": (2 * hour, False),  # a live process, however old
        f".zoo.json.{dead.pid}-{other}.k2j_x9aa.tmp": (60, False),  # another host's: its pids are not ours to test
        f".zoo.json.{dead.pid}-{other}.k2j_x9ab.tmp": (2 * hour, True),
        ".arrays-0123456789abcdef.npz.q0w9e8r7.tmp": (2 * hour, True),  # an older version's name, no pid
        ".arrays-0123456789abcdef.npz.q0w9e8r8.tmp": (60, False),
        ".notes.tmp": (2 * hour, False),  # not atomic_open's names
        "last.pt.abcd1234.tmp": (2 * hour, False),
        ".last.pt.ABCD1234.tmp": (2 * hour, False),
        ".last.pt.abcd1234.tmp.bak": (2 * hour, False),
        ".last.pt.abcd123.tmp": (2 * hour, False),
    }
    now = time.time()
    for name, (age, _) in files.items():
        (tmp_path / name).write_text("partial")
        os.utime(tmp_path / name, (now - age, now - age))
    (tmp_path / ".run.abcd1234.tmp").mkdir()  # a folder, however named, is left alone
    os.utime(tmp_path / ".run.abcd1234.tmp", (now - 2 * hour, now - 2 * hour))

    with pytest.raises(RuntimeError):  # a failed write removes nothing but its own temp file
        with atomic_open(tmp_path / "failed.txt", "w"):
            raise RuntimeError("disk on fire")
    assert {p.name for p in tmp_path.iterdir()} == {*files, ".run.abcd1234.tmp", "seen.txt"}

    write(tmp_path / "seen.txt")
    kept = {name for name, (_, removed) in files.items() if not removed}
    assert {p.name for p in tmp_path.iterdir()} == {*kept, ".run.abcd1234.tmp", "seen.txt"}


def test_write_rows_csv_writes_the_table_atomically(tmp_path):
    import csv

    rows = [{"target": "a", "seconds": 1.5}, {"target": "b", "seconds": 2.0}]
    path = write_rows_csv(tmp_path / "t.csv", rows)
    assert list(csv.DictReader(open(path))) == [{"target": "a", "seconds": "1.5"}, {"target": "b", "seconds": "2.0"}]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temp file left beside it
