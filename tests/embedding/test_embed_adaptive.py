"""Adaptive stopping of the Fisher pass (Task2Vec(noise_target=...)) on real images."""

import numpy as np
import pytest

from task2vec import Probe, Task2Vec
from task2vec.data import interleave_classes
from task2vec.embedding.embedding import Embedding
from task2vec.errors import ProbeError


@pytest.fixture(scope="module")
def probe32():
    """A small random-init probe: stopping is about the noise estimate, not the weights."""
    return Probe.create("resnet18", random_init=True, image_size=32, device="cpu", seed=0)


def test_interleave_classes_makes_every_prefix_balanced():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 4)
    order = interleave_classes(labels)
    assert sorted(order.tolist()) == list(range(len(labels)))
    assert labels[order].tolist()[:9] == [0, 1, 2] * 3
    for c in range(3):  # the order within a class is kept
        within = [i for i in order if labels[i] == c]
        assert within == sorted(within)


def test_stops_at_the_first_round_below_the_target(probe32, shared):
    t2v = Task2Vec(probe32, max_samples=50, batch_size=10, round_images=10, noise_target=10.0, progress=False)
    emb = t2v.embed(shared / "data" / "flowers5")
    assert emb.meta["n_images"] == 50  # the head saw every drawn image
    assert emb.meta["fisher_images"] == 10 and emb.meta["fisher_stop"] == "noise_target"
    assert emb.meta["method"]["noise_target"] == 10.0 and emb.meta["method"]["round_images"] == 10
    assert 0 < emb.meta["noise_half_split"] < 10.0


def test_unreachable_target_runs_to_the_cap_and_equals_the_fixed_run(probe32, shared, tmp_path):
    fixed = Task2Vec(probe32, max_samples=50, batch_size=10, progress=False).embed(shared / "data" / "flowers5")
    t2v = Task2Vec(probe32, max_samples=50, batch_size=10, round_images=10, noise_target=1e-12, progress=False)
    emb = t2v.embed(shared / "data" / "flowers5")
    assert emb.meta["fisher_images"] == 50 and emb.meta["fisher_stop"] == "cap"
    assert "fisher_stop" not in fixed.meta and fixed.meta["fisher_images"] == 50
    np.testing.assert_allclose(emb.vector, fixed.vector, rtol=1e-5, atol=1e-12)  # same images, other order
    assert emb.meta["noise_half_split"] == pytest.approx(fixed.meta["noise_half_split"], rel=1e-4)
    stages = emb.meta["seconds_by_stage"]
    assert set(stages) == {"decode", "features", "head", "fisher"} and all(v >= 0 for v in stages.values())
    assert sum(stages.values()) <= emb.meta["seconds"]
    assert Embedding.load(emb.save(tmp_path / "e.t2v.npz")).meta["fisher_stop"] == "cap"  # the file keeps it


@pytest.mark.parametrize("kwargs, match", [({"noise_target": 0.0}, "noise_target"),
                                           ({"noise_target": -1.0}, "noise_target"),
                                           ({"round_images": 0}, "round_images"),
                                           ({"noise_target": 0.05, "method": "variational"}, "variational")])
def test_bad_adaptive_settings_are_refused(probe32, kwargs, match):
    with pytest.raises(ProbeError, match=match):
        Task2Vec(probe32, **kwargs)


def test_cli_flags(shared, tmp_path, capsys):
    from task2vec.cli.main import main

    common = [str(shared / "data" / "flowers5"), "--probe", "resnet18", "--random-init", "--image-size", "32",
              "--max-samples", "50", "--batch-size", "10", "--quiet"]
    assert main(["embed", *common, "-o", str(tmp_path / "bad.npz"), "--noise-target", "0"]) == 2
    err = capsys.readouterr().err
    assert "noise_target" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "a.t2v.npz"
    assert main(["embed", *common, "-o", str(out), "--noise-target", "10", "--round-images", "20"]) == 0
    meta = Embedding.load(out).meta
    assert meta["fisher_images"] == 20 and meta["fisher_stop"] == "noise_target"
