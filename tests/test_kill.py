"""``kill -9`` at random points: the real command line in a subprocess, killed mid-run, must leave
what it writes loadable, its rerun must succeed with the result of an uninterrupted run, and no
temp file may be left after the rerun.

Each command is run once uninterrupted (its result is the reference, its duration spreads the kill
points), then killed at seeded points in each slice of its run time (:func:`kill_times`) on fresh
copies of the same material. The material is real and tiny: a random-init ResNet-18 probe at 32
px, eight real images per source task (:func:`material`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import pytest
from PIL import Image

from task2vec import Probe, Task2Vec, Zoo
from task2vec.cli import main
from task2vec.trivial import trivial_embedding
from task2vec.zoo import ZooEntry

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"flowers": ("flowers5", ("daisy", "rose")), "digits": ("mnist_test", ("0", "1")),
           "letters": ("notmnist_test", ("A", "B")), "cifar": ("cifar10_test", ("cat", "ship")),
           "oracle": ("oracle_mnist_test", ("arrow", "big"))}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- helpers (for every kill trial)
def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout's package, one thread, the test session's cache."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_timed(argv: Sequence[object], env: dict[str, str]) -> float:
    """Run ``python -m task2vec ARGV`` to its end (it must succeed); its wall time in seconds."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "task2vec", *map(str, argv)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - start


def kill_at(argv: Sequence[object], seconds: float, env: dict[str, str]) -> int:
    """Start ``python -m task2vec ARGV``, SIGKILL it ``seconds`` later unless it has ended, and reap it;
    returns its exit status (``-signal.SIGKILL`` when it was killed)."""
    proc = subprocess.Popen([sys.executable, "-m", "task2vec", *map(str, argv)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        return proc.wait()  # reaped: its pid names no live process, as after a real kill


def kill_times(seconds: float, n: int, seed: int) -> list[float]:
    """``n`` seeded kill points spread over a run of ``seconds``: one in each of ``n`` equal slices of
    its last 85% (the first 15% is the interpreter starting)."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(0.15, 1.0, n + 1)
    return [float(seconds * rng.uniform(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:])]


def leftovers(folder: Path) -> list[str]:
    """Temp files of atomic writes anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


# ----------------------------------------------------------------------------- the material
@pytest.fixture(scope="module")
def material(tmp_path_factory, shared, one_torch_thread) -> SimpleNamespace:
    """Five tiny real source tasks embedded by a random-init ResNet-18 at 32 px, a zoo of the first
    four, and transfer records of the last three tasks on the four models."""
    root = tmp_path_factory.mktemp("kill")
    probe = Probe.create("resnet18", random_init=True, image_size=32, device="cpu")
    embedder = Task2Vec(probe, max_samples=8, min_images_per_class=4, progress=False)
    embeddings, files = {}, {}
    for name, (folder, classes) in SOURCES.items():
        for cls in classes:
            (root / "data" / name / cls).mkdir(parents=True)
            for i, p in enumerate(sorted((shared / "data" / folder / cls).iterdir())[:4]):
                Image.open(p).convert("RGB").resize((32, 32)).save(root / "data" / name / cls / f"{i}.png")
        embeddings[name] = embedder.embed(root / "data" / name, name=name)
        files[name] = embeddings[name].save(root / f"{name}.t2v.npz")
    zoo = Zoo.create(root / "zoo", probe.describe(), embedding_settings={"max_samples": 8, "min_images_per_class": 4})
    models = list(SOURCES)[:4]
    for i, name in enumerate(models):
        first = trivial_embedding(embeddings[name], probe) if i == 0 else None
        zoo.add(ZooEntry(name, "resnet18"), embeddings[name], first)
    tasks = list(SOURCES)[2:]  # three targets: MODEL2VEC's leave-one-task-out fits stay few
    rows = ["task,model,error"] + [f"{task}.t2v.npz,{model},{0.1 + 0.05 * ((i + t) % 4):.2f}"
                                   for t, task in enumerate(tasks) for i, model in enumerate(models)]
    (root / "records.csv").write_text("\n".join(rows) + "\n")
    return SimpleNamespace(root=root, zoo=root / "zoo", ids=models, files=files, records=root / "records.csv")


def zoo_trials(material: SimpleNamespace, tmp_path: Path, argv: Callable[[Path], list[object]], n: int,
               seed: int) -> tuple[Path, list[tuple[Path, list[object], int]]]:
    """The reference zoo (the command ``argv(zoo)`` run to its end on a copy of the material's zoo),
    and for each of ``n`` kill points: (a fresh copy, the command killed in it, its exit status)."""
    reference = tmp_path / "reference"
    shutil.copytree(material.zoo, reference)
    seconds = run_timed(argv(reference), cli_env())
    killed = []
    for trial, at in enumerate(kill_times(seconds, n, seed)):
        zoo = tmp_path / f"trial{trial}"
        shutil.copytree(material.zoo, zoo)
        killed.append((zoo, argv(zoo), kill_at(argv(zoo), at, cli_env())))
    return reference, killed


# ----------------------------------------------------------------------------- the trials
def test_zoo_add_killed_anywhere_leaves_a_zoo_and_its_rerun_adds_the_entry(material, tmp_path, capsys):
    def argv(zoo: Path) -> list[object]:
        return ["zoo", "add", zoo, "--id", "oracle", "--model", "resnet18", "--source-embedding",
                material.files["oracle"]]

    reference, killed = zoo_trials(material, tmp_path, argv, n=3, seed=20)
    want = Zoo.load(reference)
    assert want.ids == [*material.ids, "oracle"]
    for zoo, args, status in killed:
        after_kill = Zoo.load(zoo).ids  # loadable: as it was, or with the entry
        assert after_kill in (material.ids, want.ids), (zoo, status)
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        if after_kill == want.ids:  # it had finished: the rerun refuses a second entry of the id
            assert code == 2 and "already has an entry 'oracle'" in err, err
        else:
            assert code == 0, err
            assert len(list(zoo.glob("arrays-*.npz"))) == 1  # the killed run's stray arrays file went too
        got = Zoo.load(zoo)
        assert got.manifest["entries"] == want.manifest["entries"] and np.array_equal(got.source, want.source)
        assert leftovers(zoo) == [], (status, leftovers(zoo))
    assert any(status == -signal.SIGKILL for _, _, status in killed)


def test_fit_model2vec_killed_anywhere_leaves_a_zoo_and_its_rerun_fits_the_same_biases(material, tmp_path, capsys):
    def argv(zoo: Path) -> list[object]:
        return ["zoo", "fit-model2vec", zoo, "--records", material.records]

    reference, killed = zoo_trials(material, tmp_path, argv, n=3, seed=21)
    want = Zoo.load(reference)
    assert want.manifest["model2vec"]["n_records"] == 12 and want.bias.any()
    for zoo, args, status in killed:
        fitted = Zoo.load(zoo).manifest["model2vec"]  # loadable: without biases, or with all of them
        assert fitted in (None, want.manifest["model2vec"]), (zoo, status)
        assert main([str(a) for a in args]) == 0, capsys.readouterr().err
        got = Zoo.load(zoo)
        assert got.manifest["model2vec"] == want.manifest["model2vec"]
        np.testing.assert_allclose(got.bias, want.bias, rtol=1e-9, atol=1e-12)
        assert leftovers(zoo) == [] and len(list(zoo.glob("arrays-*.npz"))) == 1, (status, leftovers(zoo))
    assert any(status == -signal.SIGKILL for _, _, status in killed)
