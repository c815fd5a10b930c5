"""The Fisher over a class-balanced prefix of the drawn images (Task2Vec(fisher_images=N)) on real images."""

import numpy as np
import pytest

from task2vec import Probe, Task2Vec
from task2vec.embedding.embedding import Embedding
from task2vec.errors import ProbeError


@pytest.fixture(scope="module")
def probe32():
    return Probe.create("resnet18", random_init=True, image_size=32, device="cpu", seed=0)


def embed(probe, shared, **kwargs):
    """20 of flowers5's images (4 per class)."""
    kwargs = {"max_samples": 20, "min_images_per_class": 2, "batch_size": 10, "progress": False, **kwargs}
    return Task2Vec(probe, **kwargs).embed(shared / "data" / "flowers5")


@pytest.fixture(scope="module")
def plain(probe32, shared):
    return embed(probe32, shared)


def test_fisher_on_a_prefix_while_the_head_sees_every_image(probe32, shared, plain):
    emb = embed(probe32, shared, fisher_images=10)
    assert emb.meta["n_images"] == 20 and emb.meta["fisher_images"] == 10
    assert emb.meta["method"]["fisher_images"] == 10
    assert emb.meta["noise_half_split"] is not None  # both halves of the 10 images hold every class
    assert "fisher_images" not in plain.meta["method"] and plain.meta["fisher_images"] == 20
    assert not np.allclose(emb.vector, plain.vector, rtol=1e-3)  # 10 images are not 20
    # the prefix is cut inside a batch: batches of 4 (cut at 2 of the third) give the same Fisher
    cut = embed(probe32, shared, fisher_images=10, batch_size=4)
    assert cut.meta["fisher_images"] == 10
    np.testing.assert_allclose(cut.vector, emb.vector, rtol=1e-5, atol=1e-12)


def test_a_cap_above_the_sample_equals_the_plain_run(probe32, shared, plain, tmp_path):
    capped = embed(probe32, shared, fisher_images=500)
    assert capped.meta["fisher_images"] == 20
    np.testing.assert_allclose(capped.vector, plain.vector, rtol=1e-5, atol=1e-12)  # same images, other order
    assert Embedding.load(capped.save(tmp_path / "c.t2v.npz")).meta["method"]["fisher_images"] == 500


@pytest.mark.parametrize("kwargs, match", [({"fisher_images": 1}, "fisher_images"),
                                           ({"fisher_images": 2.5}, "fisher_images"),
                                           ({"fisher_images": 10, "method": "variational"}, "variational")])
def test_bad_fisher_images_are_refused(probe32, kwargs, match):
    with pytest.raises(ProbeError, match=match):
        Task2Vec(probe32, **kwargs)


def test_cli_flag(shared, tmp_path, capsys):
    from task2vec.cli.main import main

    common = [str(shared / "data" / "flowers5"), "--probe", "resnet18", "--random-init", "--image-size", "32",
              "--max-samples", "20", "--min-images-per-class", "2", "--batch-size", "10", "--quiet"]
    assert main(["embed", *common, "-o", str(tmp_path / "bad.npz"), "--fisher-images", "1"]) == 2
    err = capsys.readouterr().err
    assert "--fisher-images" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.npz").exists()
    out = tmp_path / "a.t2v.npz"
    assert main(["embed", *common, "-o", str(out), "--fisher-images", "10"]) == 0
    assert Embedding.load(out).meta["fisher_images"] == 10
