"""The embed methods, the distance and map commands, end to end on tiny data (random-init probe)."""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from task2vec import Embedding, Probe, WeightsError
from task2vec.cli.main import main
from task2vec.space.distance import complexity
from task2vec.space.taskmap import group_colors
from task2vec.space.trivial import trivial_embedding

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = ["--random-init", "--probe", "resnet18", "--image-size", "32", "--max-samples", "8",
        "--batch-size", "4", "--quiet"]


def make_folder(root, n=4, classes=("red", "blue")):
    for c, color in zip(classes, ((220, 30, 30), (30, 30, 220))):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (40, 40), tuple(max(0, v - 20 * i) for v in color)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("method", ["montecarlo", "empirical", "variational"])
def test_every_method_runs(tmp_path, method):
    data = make_folder(tmp_path / "ds")
    assert main(["embed", str(data), "-o", str(tmp_path / "e.npz"), "--method", method, *FAST]) == 0
    assert Embedding.load(tmp_path / "e.npz").method == method


def test_weights_that_do_not_fit_the_probe(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18_test.pth")
    with pytest.raises(WeightsError, match="does not fit 'resnet34'"):
        Probe.create("resnet34", weights=tmp_path / "resnet18_test.pth")


def test_distance_and_map_commands(tmp_path, capsys):
    files = []
    for i, n in enumerate((3, 4, 5, 6, 4, 5)):
        data = make_folder(tmp_path / f"d{i}", n=n)
        files.append(str(tmp_path / f"task{i}.t2v.npz"))
        assert main(["embed", str(data), "-o", files[-1], *FAST]) == 0
    capsys.readouterr()
    assert main(["distance", *files[:3], "--csv", str(tmp_path / "d.csv")]) == 0
    printed = capsys.readouterr().out
    assert "task0" in printed and "0.0000" in printed
    rows = (tmp_path / "d.csv").read_text().splitlines()
    assert rows[0] == "task,task0,task1,task2" and len(rows) == 4
    # asym: t0 from the prior the embeddings record (no probe needed), row i loses alpha * complexity(i)
    assert main(["distance", *files[:3], "--kind", "asym", "--alpha", "0.5", "--csv", str(tmp_path / "a.csv")]) == 0
    sym = np.loadtxt(tmp_path / "d.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3))
    asym = np.loadtxt(tmp_path / "a.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3))
    embs = [Embedding.load(f) for f in files[:3]]
    t0 = trivial_embedding(embs[0])
    assert t0.meta["trivial_scale"]["n_images"] == embs[0].meta["n_images"]
    c = np.array([complexity(e, t0) for e in embs])
    assert (c > 0).all()
    np.testing.assert_allclose(asym, sym - 0.5 * c[:, None], atol=1e-4)
    (tmp_path / "labels.csv").write_text("file,name,group\n" + "".join(
        f"task{i}.t2v.npz,T{i},{'ab'[i % 2]}\n" for i in range(6)))
    out = tmp_path / "map.png"
    assert main(["map", *files, "-o", str(out), "--labels", str(tmp_path / "labels.csv"), "--color-by", "group",
                 "--layout", "pca"]) == 0  # UMAP compiles for 25 s: test_umap_layout, marked slow
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "map.csv").read_text().splitlines()[1].startswith("T0,")
    page = (tmp_path / "map.html").read_text()
    assert "<title>T0" in page
    colours = group_colors(["a", "b"])  # --color-by group: T0, T2, T4 are 'a', the others 'b', in the PNG's colours
    assert colours["a"] != colours["b"] and page.count(f'fill="{colours["a"]}"') == 3
    assert page.count(f'fill="{colours["b"]}"') == 3 and "class='legend'" in page
    png = np.asarray(Image.open(out).convert("RGB"))
    for colour in colours.values():  # both groups' colours are drawn in the PNG
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(png.astype(int) - rgb).sum(-1) < 6).sum() > 20
    assert main(["map", *files[:3], "-o", str(tmp_path / "small.png")]) == 0
    assert "used classical MDS" in capsys.readouterr().err
    bogus = tmp_path / "bogus.npz"
    np.savez(bogus, a=np.zeros(2))
    assert main(["distance", files[0], str(bogus)]) == 2
    assert capsys.readouterr().err.startswith("task2vec: error: ")


def test_trivial_task_of_an_embedding_without_recorded_prior(tmp_path):
    """Older embeddings lack meta["prior_inverse_variance"]: t0 then comes from the probe's weights,
    the same t0, and a probe with other weights is refused."""
    from task2vec import Task2Vec
    from task2vec.errors import IncompatibleEmbeddingsError

    probe = Probe.create("resnet18", random_init=True, image_size=32)
    e = Task2Vec(probe, max_samples=8, batch_size=4, progress=False).embed(make_folder(tmp_path / "ds"))
    t0 = trivial_embedding(e)
    old = Embedding(e.vector, {k: v for k, v in e.meta.items() if k != "prior_inverse_variance"})
    np.testing.assert_allclose(trivial_embedding(old, probe).vector, t0.vector, rtol=1e-12)
    sizes = [layer["filters"] for layer in e.meta["layers"]]
    prior = np.repeat(e.meta["prior_inverse_variance"], sizes)
    np.testing.assert_allclose(t0.vector, prior * 0.01 / e.meta["n_images"], rtol=1e-12)
    with pytest.raises(IncompatibleEmbeddingsError, match="differ from the embedding"):
        trivial_embedding(old, Probe.create("resnet18", random_init=True, seed=1, image_size=32))
    with pytest.raises(IncompatibleEmbeddingsError, match="how many images"):
        trivial_embedding(Embedding(e.vector, {k: v for k, v in e.meta.items() if k != "n_images"}))


def test_torch_dataset_and_worker_processes(tmp_path):
    """A torch Dataset of (tensor image, label) embeds from Python; decoding in 2 worker processes
    gives the same embedding as in-process decoding."""
    from task2vec import Task2Vec

    class Tensors(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.images = torch.rand(8, 3, 20, 20, generator=g)
            self.targets = [0, 1] * 4

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return self.images[i], self.targets[i]

    probe = Probe.create("resnet18", random_init=True, image_size=32)
    e = Task2Vec(probe, batch_size=4, progress=False).embed(Tensors())
    assert e.meta["n_images"] == 8 and e.meta["classes"] == ["0", "1"]
    data = make_folder(tmp_path / "ds")
    inline = Task2Vec(probe, batch_size=4, progress=False).embed(data)
    workers = Task2Vec(probe, batch_size=4, workers=2, progress=False).embed(data)
    assert np.array_equal(inline.vector, workers.vector)


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "tf_mobilenetv3_small_minimal_100"])
def test_timm_probe_embeds(tmp_path, name):
    """Any timm name works as a probe (tf_* models use timm's dynamic-SAME convolutions)."""
    from task2vec import Task2Vec

    probe = Probe.create(name, random_init=True, image_size=48)
    assert probe.config.mean and probe.feature_dim > 0
    e = Task2Vec(probe, batch_size=4, progress=False).embed(make_folder(tmp_path / "ds"))
    assert len(e.vector) == sum(layer["filters"] for layer in e.meta["layers"]) and (e.vector >= 0).all()
    assert e.meta["probe"]["name"] == name


@pytest.mark.slow  # UMAP's numba functions compile for about 25 s on 2 cores, once a process
def test_umap_layout(tmp_path):
    """The map's default layout: UMAP of a precomputed distance matrix, seeded, one point per task."""
    from task2vec.space.taskmap import layout

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.1, (4, 3)), rng.normal(5, 0.1, (4, 3))])
    D = np.linalg.norm(X[:, None] - X[None], axis=-1)
    coords, used, note = layout(D, "umap", seed=0)
    assert used == "umap" and note == "" and coords.shape == (8, 2) and np.isfinite(coords).all()
    again, _, _ = layout(D, "umap", seed=0)
    np.testing.assert_allclose(coords, again)
    near = np.linalg.norm(coords[:4].mean(0) - coords[4:].mean(0))
    assert near > np.linalg.norm(coords[:4] - coords[:4].mean(0), axis=1).max()  # the two clusters stay apart
