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
from task2vec.cli.main import main
from task2vec.space.trivial import trivial_embedding
from task2vec.zoo.zoo import ZooEntry

from conftest import WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"flowers": ("flowers5", ("daisy", "rose")), "digits": ("mnist_test", ("0", "1")),
           "letters": ("notmnist_test", ("A", "B")), "cifar": ("cifar10_test", ("cat", "ship")),
           "oracle": ("oracle_mnist_test", ("arrow", "big"))}

pytestmark = pytest.mark.usefixtures("one_torch_thread")
KILLS = 2  # kill points per command, one in each half of its run: each costs a killed run and its rerun


# ----------------------------------------------------------------------------- helpers (for every kill trial)
def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout's package, one thread, the test session's cache."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_timed(argv: Sequence[object], env: dict[str, str], watch: Path | None = None) -> tuple[float, float]:
    """Run ``python -m task2vec ARGV`` to its end (it must succeed): its wall time in seconds, and when
    ``watch`` (a path the command creates: its real work begins, after imports and set-up) appeared."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "task2vec", *map(str, argv)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = None
    while proc.poll() is None:
        if seen is None and watch is not None and watch.exists():
            seen = time.monotonic() - start
        time.sleep(0.01)
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.returncode == 0, err
    seconds = time.monotonic() - start
    return seconds, seen if seen is not None else 0.15 * seconds


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


def kill_times(seconds: float, n: int, seed: int, begin: float | None = None) -> list[float]:
    """``n`` seeded kill points spread over a run of ``seconds``: one in each of ``n`` equal slices from
    ``begin`` (default: 15% in, the interpreter starting) to its end."""
    rng = np.random.default_rng(seed)
    edges = np.linspace(0.15 * seconds if begin is None else begin, seconds, n + 1)
    return [float(rng.uniform(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:])]


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
    seconds, _ = run_timed(argv(reference), cli_env())
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

    reference, killed = zoo_trials(material, tmp_path, argv, n=KILLS, seed=20)
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


@pytest.mark.slow  # the zoo add and finetune trials cover the atomic writes in the default run
def test_fit_model2vec_killed_anywhere_leaves_a_zoo_and_its_rerun_fits_the_same_biases(material, tmp_path, capsys):
    def argv(zoo: Path) -> list[object]:
        return ["zoo", "fit-model2vec", zoo, "--records", material.records]

    reference, killed = zoo_trials(material, tmp_path, argv, n=KILLS, seed=21)
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


# ----------------------------------------------------------------------------- finetune and zoo build
@pytest.fixture(scope="module")
def photos(tmp_path_factory, shared) -> Path:
    """12 real photos of each of two classes (hymenoptera) at 48 px: a fine-tune of a few seconds."""
    root = tmp_path_factory.mktemp("photos")
    for cls in ("ants", "bees"):
        (root / cls).mkdir()
        for p in sorted((shared / "data" / "hymenoptera" / "train" / cls).iterdir())[:12]:
            Image.open(p).convert("RGB").resize((48, 48)).save(root / cls / f"{p.stem}.png")
    return root


def test_finetune_killed_anywhere_resumes_to_the_uninterrupted_result(photos, tmp_path):
    """From any kill point (before the run folder, before the first checkpoint, mid-epoch, in the final
    report) `finetune --resume` finishes the run bit-identical to an uninterrupted one."""
    from task2vec.finetune.inference import FinetunedModel
    from task2vec.finetune.checkpoint import load_checkpoint

    argv = ["finetune", photos, "--model", "mobilenet_v2", "--weights", WEIGHTS, "--image-size", "32", "--epochs", "4",
            "--batch-size", "8", "--no-records", "--quiet", "--device", "cpu"]
    seconds, begin = run_timed([*argv, "-o", tmp_path / "straight"], cli_env(), watch=tmp_path / "straight")
    reference = load_checkpoint(tmp_path / "straight" / "last.pt")["model_state"]
    for i, at in enumerate(kill_times(seconds, KILLS, seed=1, begin=begin - 0.3)):
        run = tmp_path / f"killed-{i}"
        kill_at([*argv, "-o", run], at, cli_env())
        assert main([str(a) for a in [*argv, "-o", run, "--resume"]]) == 0, at
        state = load_checkpoint(run / "last.pt")
        assert state["epoch"] == 4 and state["stopped"] == "finished"
        assert all((state["model_state"][k] == reference[k]).all() for k in reference), at
        FinetunedModel.load(run / "best.pt", device="cpu")
        assert not leftovers(run), at


@pytest.mark.slow  # the zoo add and finetune trials cover the atomic writes in the default run
def test_zoo_build_killed_anywhere_finishes_on_the_rerun(photos, tmp_path):
    """A build killed while embedding, training its expert or writing the zoo finishes on the plain rerun."""
    import yaml

    spec = {"zoo": "z", "probe": "mobilenet_v2", "weights": str(WEIGHTS), "image_size": 32,
            "embedding": {"method": "exact", "max_samples": 12, "min_images_per_class": 2},
            "finetune": {"from": str(WEIGHTS), "image_size": 32, "epochs": 2, "batch_size": 8},
            "entries": [{"id": "insects", "model": "mobilenet_v2", "checkpoint": "experts/insects.safetensors",
                         "source_dataset": str(photos)},
                        {"id": "generalist", "model": "mobilenet_v2", "checkpoint": "${TASK2VEC_WEIGHTS}/"
                         + Path(WEIGHTS).name, "source_dataset": str(photos)}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, "zoo": "straight"}))
    env = {**cli_env(), "TASK2VEC_WEIGHTS": str(Path(WEIGHTS).parent)}
    seconds, begin = run_timed(["zoo", "build", path, "--quiet"], env, watch=tmp_path / "straight")
    reference = Zoo.load(tmp_path / "straight")
    for i, at in enumerate(kill_times(seconds, KILLS, seed=2, begin=begin - 0.3)):
        path.write_text(yaml.safe_dump({**spec, "zoo": f"killed-{i}"}))
        kill_at(["zoo", "build", path, "--quiet"], at, env)
        run_timed(["zoo", "build", path, "--quiet"], env)
        zoo = Zoo.load(tmp_path / f"killed-{i}")
        assert zoo.ids == reference.ids and (tmp_path / f"killed-{i}" / "experts" / "insects.safetensors").is_file()
        np.testing.assert_array_equal(zoo.model_embeddings(), reference.model_embeddings())
        assert not leftovers(tmp_path / f"killed-{i}"), at
