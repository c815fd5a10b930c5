"""kill -9 at random moments of `finetune` and `zoo build`, then the same command again (with
``--resume`` for finetune): it finishes, the result loads, and no temp file is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from task2vec.finetune import FinetunedModel, load_checkpoint
from task2vec.zoo import Zoo

from conftest import WEIGHTS

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRIALS = 3


def run_cli(argv: list[str], kill_after: float | None = None, watch: Path | None = None) -> tuple[int | None, str, float]:
    """Run ``task2vec ARGV`` in a new process: (exit code or None when killed, stderr, when ``watch`` appeared).

    With ``kill_after`` it is SIGKILLed that many seconds after its start; ``watch``, a path the
    command creates, is polled to time when its real work begins (after imports and set-up).
    """
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "task2vec", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    seen = None
    while proc.poll() is None:
        now = time.perf_counter() - start
        if seen is None and watch is not None and watch.exists():
            seen = now
        if kill_after is not None and now >= kill_after:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return None, "", seen if seen is not None else now
        time.sleep(0.01)
    return proc.returncode, proc.stderr.read(), seen if seen is not None else time.perf_counter() - start


def kill_points(begin: float, end: float, seed: int) -> list[float]:
    """``TRIALS`` seeded moments between ``begin`` (the work starts) and ``end``, one in each equal slice."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(begin, end, TRIALS + 1)
    return [float(rng.uniform(a, b)) for a, b in zip(edges[:-1], edges[1:])]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared) -> Path:
    """12 real photos of each of two classes (hymenoptera), 48 px: a fine-tune of a few seconds."""
    root = tmp_path_factory.mktemp("tiny")
    for cls in ("ants", "bees"):
        (root / cls).mkdir()
        for p in sorted((shared / "data" / "hymenoptera" / "train" / cls).iterdir())[:12]:
            Image.open(p).convert("RGB").resize((48, 48)).save(root / cls / f"{p.stem}.png")
    return root


def test_finetune_killed_anywhere_resumes_to_the_uninterrupted_result(tiny, tmp_path):
    argv = [str(tiny), "--model", "mobilenet_v2", "--weights", str(WEIGHTS), "--image-size", "32", "--epochs", "4",
            "--batch-size", "8", "--no-records", "--quiet", "--device", "cpu"]
    start = time.perf_counter()
    code, err, begin = run_cli(["finetune", *argv, "-o", str(tmp_path / "straight")], watch=tmp_path / "straight")
    assert code == 0, err
    reference = load_checkpoint(tmp_path / "straight" / "last.pt")["model_state"]
    for i, t in enumerate(kill_points(begin - 0.3, time.perf_counter() - start, seed=1)):
        run = tmp_path / f"killed-{i}"
        run_cli(["finetune", *argv, "-o", str(run)], kill_after=t)
        code, err, _ = run_cli(["finetune", *argv, "-o", str(run), "--resume"])
        assert code == 0, (t, err)
        state = load_checkpoint(run / "last.pt")
        assert state["epoch"] == 4 and state["stopped"] == "finished"
        assert all((state["model_state"][k] == reference[k]).all() for k in reference), t  # bit-identical
        FinetunedModel.load(run / "best.pt", device="cpu")
        assert not temp_files(run)


def test_zoo_build_killed_anywhere_finishes_on_the_rerun(tiny, tmp_path):
    spec = {"zoo": "z", "probe": "mobilenet_v2", "weights": str(WEIGHTS), "image_size": 32,
            "embedding": {"method": "exact", "max_samples": 12, "min_images_per_class": 2},
            "finetune": {"from": str(WEIGHTS), "image_size": 32, "epochs": 2, "batch_size": 8},
            "entries": [{"id": "insects", "model": "mobilenet_v2", "checkpoint": "experts/insects.safetensors",
                         "source_dataset": str(tiny)},
                        {"id": "generalist", "model": "mobilenet_v2", "checkpoint": str(WEIGHTS),
                         "source_dataset": str(tiny)}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, "zoo": "straight"}))
    start = time.perf_counter()
    code, err, begin = run_cli(["zoo", "build", str(path), "--quiet"], watch=tmp_path / "straight")
    assert code == 0, err
    reference = Zoo.load(tmp_path / "straight")
    for i, t in enumerate(kill_points(begin - 0.3, time.perf_counter() - start, seed=2)):
        path.write_text(yaml.safe_dump({**spec, "zoo": f"killed-{i}"}))
        run_cli(["zoo", "build", str(path), "--quiet"], kill_after=t)
        code, err, _ = run_cli(["zoo", "build", str(path), "--quiet"])
        assert code == 0, (t, err)
        zoo = Zoo.load(tmp_path / f"killed-{i}")
        assert zoo.ids == reference.ids and (tmp_path / f"killed-{i}" / "experts" / "insects.safetensors").is_file()
        np.testing.assert_array_equal(zoo.model_embeddings(), reference.model_embeddings())
        assert not temp_files(tmp_path / f"killed-{i}")
