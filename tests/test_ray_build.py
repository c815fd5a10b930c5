"""``task2vec zoo build SPEC --ray``: the trainings and embeddings as tasks on a real local Ray
(``ray.init(num_cpus=2)``, started once for the module), the driver alone writing the zoo."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from task2vec.cli import main
from task2vec.zoo import Zoo

from conftest import WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
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
