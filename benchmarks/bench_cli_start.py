"""Wall time of the command line's light commands against the interpreter's start and torch's import.

    python benchmarks/bench_cli_start.py [--repeats 7] [--embeddings A.npz B.npz C.npz]

Each command runs in a fresh interpreter (``python -m task2vec ...``, this checkout first on
``PYTHONPATH``; the installed ``task2vec`` script adds only its launcher), ``--repeats`` times,
alternating with the references measured in the same run: ``python -c "pass"`` (the
interpreter's start) and ``python -c "import torch"`` (what every command cost when the CLI
imported everything up front). Reported: the median and the fastest run of each, and the
median's ratio to each reference. ``distance`` and ``map`` read three embedding files: given
with ``--embeddings``, or made first (untimed) with the real MobileNetV2 probe at 112 px from 16
images each of three real sets in ``$TASK2VEC_SHARED/data`` (default ``../shared``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = ("hymenoptera", "flowers5", "pneumoniamnist")


def make_embeddings(out: Path) -> list[str]:
    """Three embedding files of tiny real tasks, made with the real probe (torch is loaded here, untimed)."""
    from task2vec import Probe, Task2Vec

    shared = Path(os.environ.get("TASK2VEC_SHARED", ROOT.parent / "shared"))
    probe = Probe.create("mobilenet_v2", weights=shared / "weights" / "mobilenet_v2_imagenet.safetensors",
                         image_size=112, device="cpu")
    return [str(Task2Vec(probe, max_samples=16, progress=False).embed(shared / "data" / name).save(out / f"{name}.t2v.npz"))
            for name in SETS]


def wall(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds from start to exit of ``cmd``; a failing command stops the benchmark."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="runs of each command; the median is reported (default 7)")
    ap.add_argument("--embeddings", nargs=3, metavar="EMB.npz", help="three embedding files (default: made first)")
    a = ap.parse_args()
    if a.repeats < 5:
        ap.error("--repeats must be at least 5")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = a.embeddings or make_embeddings(work)
        commands = {
            'python -c "pass"': [py, "-c", "pass"],
            'python -c "import torch"': [py, "-c", "import torch"],
            "task2vec --help": [py, "-m", "task2vec", "--help"],
            "task2vec distance a b": [py, "-m", "task2vec", "distance", *files[:2]],
            "task2vec map a b c": [py, "-m", "task2vec", "map", *files, "-o", str(work / "map.png"), "--force"],  # run repeatedly
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(a.repeats):  # interleaved, so a change in the machine's load touches every row alike
            for name, cmd in commands.items():
                times[name].append(wall(cmd, work, env))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base, torch_ = med['python -c "pass"'], med['python -c "import torch"']
    print(f"{a.repeats} runs each, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print("| command | median s | fastest s | / python start | / import torch |")
    print("|---|---:|---:|---:|---:|")
    for name, ts in times.items():
        print(f"| `{name}` | {med[name]:.3f} | {min(ts):.3f} | {med[name] / base:.1f} | {med[name] / torch_:.2f} |")


if __name__ == "__main__":
    main()
