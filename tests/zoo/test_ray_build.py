"""``task2vec zoo build SPEC --ray``: the trainings and embeddings as tasks on a real local Ray
(``ray.init(num_cpus=2)``, started once for the module), the driver alone writing the zoo."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from task2vec.cli.main import main
from task2vec.zoo.zoo import Zoo

from conftest import WEIGHTS

ROOT = Path(__file__).resolve().parents[2]
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module (its start-up is slow), shut down at the end."""
    import os

    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield
    ray.shutdown()


def spec_of(shared: Path, zoo: str, entries: list[dict]) -> dict:
    return {"zoo": zoo, "probe": "mobilenet_v2", "weights": str(WEIGHTS), "image_size": 64,
            "embedding": {"method": "exact", "max_samples": 16},
            "finetune": {"from": str(WEIGHTS), "image_size": 64, "epochs": 1, "max_train_images": 12, "batch_size": 6},
            "entries": entries}


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ray_build_trains_and_embeds_as_tasks_and_a_failed_entry_lets_the_others_finish(
        local_ray, shared, tmp_path, capsys):
    data = shared / "data"
    experts = [{"id": "bees", "model": "mobilenet_v2", "checkpoint": "experts/bees.safetensors",
                "source_dataset": str(data / "hymenoptera" / "train")},
               {"id": "flowers", "model": "mobilenet_v2", "checkpoint": "experts/flowers.safetensors",
                "source_dataset": str(data / "flowers5"), "classes": ["daisy", "rose"]}]
    broken = {"id": "broken", "model": "mobilenet_v2", "pretrained": True,
              "source_dataset": str(tmp_path / "no-such-dataset")}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_of(shared, "z", [*experts, broken])))
    code, out, err = run(capsys, "zoo", "build", path, "--ray", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "1 entry failed: broken" in err, err
    assert "broken: embed failed (DatasetError" in out
    zoo = Zoo.load(tmp_path / "z")
    assert sorted(zoo.ids) == ["bees", "flowers"]  # the others went on and were added by the driver
    for e in experts:
        assert (tmp_path / "z" / e["checkpoint"]).is_file() and (tmp_path / "z" / "runs" / e["id"] / "report.json").is_file()
    assert "expert val accuracy" in out  # the training tasks' logs reach the driver

    # the same sources embedded in this process give the same vectors
    path.write_text(yaml.safe_dump(spec_of(shared, "serial", experts)))
    assert main(["zoo", "build", str(path), "--quiet", "--no-train"]) == 0
    serial = Zoo.load(tmp_path / "serial")
    for entry_id in ("bees", "flowers"):
        a, b = zoo.ids.index(entry_id), serial.ids.index(entry_id)
        np.testing.assert_allclose(zoo.source[a], serial.source[b], rtol=1e-6)
    capsys.readouterr()

    # a rerun with the entry fixed runs only its task; nothing is trained again
    fixed = {**broken, "source_dataset": str(data / "hymenoptera" / "val")}
    path.write_text(yaml.safe_dump(spec_of(shared, "z", [*experts, fixed])))
    code, out, err = run(capsys, "zoo", "build", path, "--ray", "--quiet")
    assert code == 0, err
    assert "training" not in out and out.count("already in the zoo") == 2 and "broken: added" in out
    assert Zoo.load(tmp_path / "z").ids[-1] == "broken"


def test_ray_flag_without_ray_installed_is_one_line(shared, tmp_path, capsys, monkeypatch):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_of(shared, "z", [
        {"id": "bees", "model": "mobilenet_v2", "pretrained": True,
         "source_dataset": str(shared / "data" / "hymenoptera")}])))
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    code, out, err = run(capsys, "zoo", "build", path, "--ray")
    assert code == 2 and err == "task2vec: error: building on Ray needs Ray: pip install 'task2vec[distributed]'\n"
    assert not (tmp_path / "z").exists()


@pytest.mark.slow
def test_a_killed_ray_driver_loses_only_unfinished_entries_and_a_rerun_resumes(local_ray, shared, tmp_path):
    """The driver (a ``zoo build --ray ADDRESS`` process joined to the module's Ray) is killed with SIGKILL once
    the zoo holds its first entry; the zoo it leaves loads, and the same command adds only the rest."""
    import json
    import os
    import signal
    import subprocess
    import time

    data = shared / "data"
    sources = [data / "hymenoptera" / "train", data / "hymenoptera" / "val", data / "flowers5", data / "oracle_mnist_test",
               data / "notmnist_test"]
    entries = [{"id": f"e{i}", "model": "mobilenet_v2", "pretrained": True, "source_dataset": str(s)}
               for i, s in enumerate(sources)]
    path = tmp_path / "spec.yaml"
    spec = spec_of(shared, "z", entries)
    del spec["finetune"]
    path.write_text(yaml.safe_dump(spec))
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "task2vec", "zoo", "build", str(path), "--ray", address, "--quiet"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "z" / "zoo.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        if manifest.is_file() and json.loads(manifest.read_text())["entries"]:
            break
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    kept = Zoo.load(tmp_path / "z").ids  # whatever the kill left is a whole zoo
    assert 1 <= len(kept) < len(entries)  # killed at the first entry: the later ones' tasks were still running
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("already in the zoo") == len(kept)
    assert rerun.stdout.count(": added") == len(entries) - len(kept)
    assert sorted(Zoo.load(tmp_path / "z").ids) == [e["id"] for e in entries]
