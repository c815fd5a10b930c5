"""The real probe on real data from ../shared: noise, semantics, determinism, inputs."""

import numpy as np
import pytest

from task2vec import Embedding, Probe, Task2Vec, symmetric
from task2vec.data import ImageTask, load_task, subset
from task2vec.space.distance import complexity, domain
from task2vec.space.trivial import trivial_embedding

TASKS = {"mnist": ("mnist_test", 0), "mnist_seed1": ("mnist_test", 1), "notmnist": ("notmnist_test", 0),
         "cifar": ("cifar10_test", 0), "flowers": ("flowers5", 0)}


# The default run's settings: 300 drawn images (the head), the Fisher of 3 label directions on 150 of them, a
# third of the full settings' cost with the same ordering of the tasks (`-m slow` runs the full settings).
QUICK = {"max_rank": 3, "fisher_images": 150}


def embed_all(probe, shared, n=300, **settings):
    return {k: Task2Vec(probe, max_samples=n, seed=s, progress=False, **settings).embed(shared / "data" / d)
            for k, (d, s) in TASKS.items()}


def check_task_space(e):
    d = lambda a, b: symmetric(e[a], e[b])  # noqa: E731
    # The same task twice (different images, different seed) is much closer than a different task.
    assert d("mnist", "mnist_seed1") < 0.5 * d("mnist", "notmnist")
    # Related tasks are closer than unrelated ones.
    assert d("mnist", "notmnist") < d("mnist", "cifar")
    assert d("cifar", "flowers") < d("cifar", "mnist")
    assert d("cifar", "flowers") < d("cifar", "notmnist")
    # The reported noise estimate is of the order of the seed-to-seed distance, not of task distances.
    assert e["mnist"].meta["noise_half_split"] < d("mnist", "notmnist")


@pytest.fixture(scope="module")
def embeddings(probe112, shared):
    return embed_all(probe112, shared, **QUICK)


def test_task_space_on_real_data(embeddings):
    check_task_space(embeddings)


def test_metadata_describes_the_run(embeddings):
    m = embeddings["mnist"].meta
    assert m["n_images"] == 300 and m["n_classes"] == 10 and m["classes"][:2] == ["0", "1"]
    assert m["probe"]["name"] == "mobilenet_v2" and len(m["probe"]["weights_hash"]) == 16
    assert sum(layer["filters"] for layer in m["layers"]) == len(embeddings["mnist"].vector)
    assert m["layers"][0]["name"] == "features.0.0" and m["layers"][-1]["name"] == "features.18.0"
    assert m["method"]["name"] == "exact" and 0.5 < m["fisher_mass_captured"] <= 1.0 and m["fisher_images"] == 150
    assert m["dataset"]["fingerprint"] != embeddings["notmnist"].meta["dataset"]["fingerprint"]


def test_same_seed_is_bit_identical(probe112, shared, tmp_path):
    a = Task2Vec(probe112, max_samples=40, seed=3, progress=False).embed(shared / "data" / "hymenoptera")
    b = Task2Vec(probe112, max_samples=40, seed=3, progress=False).embed(shared / "data" / "hymenoptera")
    assert np.array_equal(a.vector, b.vector)
    a.save(tmp_path / "a.npz")
    assert np.array_equal(Embedding.load(tmp_path / "a.npz").vector, a.vector)


def test_many_classes_get_at_least_min_images_per_class(shared):
    """Tiny-ImageNet classes with a small max_samples: 10 images per class, not about one."""
    from conftest import WEIGHTS
    from task2vec.errors import ProbeError

    probe = Probe.create("mobilenet_v2", weights=WEIGHTS, image_size=32, device="cpu")
    task = load_task(shared / "data" / "tiny_imagenet_val")
    many = subset(task, classes=task.classes[:16])
    t2v = Task2Vec(probe, max_samples=20, max_rank=1, progress=False)  # rank 1: one backward pass per image
    e = t2v.embed(many)
    assert e.meta["n_images"] == 160 and e.meta["n_classes"] == 16 and np.bincount(t2v.labels_).tolist() == [10] * 16
    assert e.meta["method"]["min_images_per_class"] == 10 and e.meta["method"]["max_samples"] == 20
    few = subset(task, classes=task.classes[:2], half="source")  # about 25 images per class
    f = Task2Vec(probe, max_samples=20, min_images_per_class=40, max_rank=1, progress=False).embed(few)
    assert f.meta["n_images"] == len(few) < 80 and f.meta["method"]["min_images_per_class"] == 40
    with pytest.raises(ProbeError, match="min_images_per_class must be an integer >= 1"):
        Task2Vec(probe, min_images_per_class=0)


def same_images(task, n):
    """The first n images of a task (a fixed set, whatever the labels)."""
    order = np.argsort([str(p) for p in task.paths])
    keep = order[:: len(order) // n][:n]  # spread over the whole set
    present, labels = np.unique(task.labels[keep], return_inverse=True)
    return ImageTask([task.paths[i] for i in keep], labels, [task.classes[c] for c in present], task.root)


def test_same_images_different_labels_domain_blind_task2vec_not(probe112, shared):
    """Omniglot by alphabet vs by drawer on the very same 96 images: the domain embedding
    cannot tell them apart, Task2Vec can."""
    csv = shared / "data" / "omniglot_small" / "labels.csv"
    by_alphabet = same_images(load_task(csv, label_column="alphabet"), 96)
    by_drawer = same_images(load_task(csv, label_column="drawer"), 96)
    assert by_alphabet.paths == by_drawer.paths and len(by_alphabet.classes) != len(by_drawer.classes)
    a = Task2Vec(probe112, max_rank=1, progress=False).embed(by_alphabet)  # one direction: 0.16 apart (7: 0.15)
    d = Task2Vec(probe112, max_rank=1, progress=False).embed(by_drawer)
    assert a.meta["n_images"] == d.meta["n_images"] == 96
    assert domain(a, d) < 1e-9
    assert symmetric(a, d) > 0.02


def test_easy_task_is_closer_to_the_trivial_task(embeddings, probe112, shared):
    """MNIST 0 vs 1 (a linear probe errs on 0.3% of it) sits closer to t0 than the ten MNIST
    digits (15%): t0 is the prior, and the ten-way task pins down more of the probe's weights."""
    hard = embeddings["mnist"]
    easy = Task2Vec(probe112, max_samples=300, progress=False, **QUICK).embed(
        subset(load_task(shared / "data" / "mnist_test"), classes=["0", "1"]))
    t0 = trivial_embedding(easy)  # from the prior the embedding records: no probe, no images
    assert t0.meta["trivial"] and np.array_equal(t0.vector, trivial_embedding(hard).vector)  # same size, same t0
    np.testing.assert_allclose(t0.vector, trivial_embedding(Embedding(easy.vector, {
        k: v for k, v in easy.meta.items() if k != "prior_inverse_variance"}), probe112).vector, rtol=1e-12)
    assert complexity(easy, t0) < 0.5 * complexity(hard, t0)
    assert complexity(easy, t0) > 0


def test_variational_fisher_on_real_data(probe112, shared):
    t2v = Task2Vec(probe112, method="variational", max_samples=32, variational_epochs=2, progress=False)
    e = t2v.embed(shared / "data" / "hymenoptera")
    prior = np.repeat(e.meta["prior_inverse_variance"], [layer["filters"] for layer in e.meta["layers"]])
    assert e.vector.shape == prior.shape and (e.vector > 0).all()
    # Filters the task needs get a smaller admissible variance (larger inverse variance) than the prior.
    assert np.mean(e.vector > prior) > 0.5


@pytest.mark.slow
def test_task_space_at_full_resolution(shared):
    """The same checks with every default (224 px, max_rank 16)."""
    from conftest import WEIGHTS

    check_task_space(embed_all(Probe.create("mobilenet_v2", weights=WEIGHTS, device="cpu"), shared))


@pytest.mark.slow
def test_two_class_xray_task_is_simpler_than_tiny_imagenet(probe112, shared):
    """The issue's example, at realistic sizes: all 1,148 pneumonia X-rays (2 classes) sit closer
    to the trivial task than Tiny-ImageNet's 200 classes at 25 images each (15 min on 2 cores)."""
    easy = Task2Vec(probe112, progress=False).embed(shared / "data" / "pneumoniamnist")
    hard = Task2Vec(probe112, max_samples=5000, progress=False).embed(shared / "data" / "tiny_imagenet_val")
    assert easy.meta["n_images"] == 1148 and hard.meta["n_classes"] == 200
    assert complexity(easy, trivial_embedding(easy)) < complexity(hard, trivial_embedding(hard))
