"""Reading tasks: folders, splits, CSVs, image modes, sampling, fingerprints, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from task2vec import DatasetError
from task2vec.data import (TorchTask, balanced_indices, from_csv, half_split, load_rgb, load_task)


def png(path, color=(200, 10, 10), mode="RGB", size=(12, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    for c, color in (("cat", (255, 0, 0)), ("dog", (0, 255, 0))):
        for i in range(3):
            png(tmp_path / "ds" / c / f"{i}.png", color)
    (tmp_path / "ds" / "classes.csv").write_text("loose file at the root is ignored")
    return tmp_path / "ds"


def test_image_folder(folder):
    t = load_task(folder)
    assert t.classes == ["cat", "dog"] and len(t) == 6 and list(t.labels) == [0, 0, 0, 1, 1, 1]
    image, label = t[4]
    assert image.mode == "RGB" and label == 1


def test_split_layout_is_merged_and_unlabelled_split_skipped(tmp_path):
    for split in ("train", "val"):
        for c in ("a", "b"):
            png(tmp_path / split / c / f"{split}.png")
    png(tmp_path / "test" / "loose.png")  # unlabelled photos
    t = load_task(tmp_path)
    assert t.classes == ["a", "b"] and len(t) == 4


def test_csv_with_label_column_choice(tmp_path):
    for i in range(4):
        png(tmp_path / "img" / f"{i}.png")
    (tmp_path / "t.csv").write_text("path,alphabet,drawer\n" + "".join(
        f"img/{i}.png,{'xy'[i % 2]},{'pqr'[i % 3]}\n" for i in range(4)))
    assert load_task(tmp_path / "t.csv", label_column="alphabet").classes == ["x", "y"]
    assert load_task(tmp_path / "t.csv", label_column="drawer").classes == ["p", "q", "r"]
    with pytest.raises(DatasetError, match="several label columns"):
        load_task(tmp_path / "t.csv")
    with pytest.raises(DatasetError, match="no label column 'nope'"):
        load_task(tmp_path / "t.csv", label_column="nope")


@pytest.mark.parametrize("rows, message", [
    ("file_name,label\nimg/0.png,a\n", "no path column"),
    ("path,label\nimg/0.png,a\nimg/9.png,b\n", "missing file"),
    ("path,label\nimg/0.png,a\n../outside.png,b\n", "escapes the CSV's folder"),
    ("path,label\nimg/0.png,a\n/etc/hostname,b\n", "escapes the CSV's folder"),
    ("path,label\n", "no rows"),
    ("", "is empty"),
    ("path,label\nimg/0.png,a\nimg/1.png,a\n", "at least 2 classes"),
])
def test_bad_csv(tmp_path, rows, message):
    for i in range(2):
        png(tmp_path / "img" / f"{i}.png")
    png(tmp_path.parent / "outside.png")
    (tmp_path / "t.csv").write_text(rows)
    with pytest.raises(DatasetError, match=message):
        from_csv(tmp_path / "t.csv")


def test_bad_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_task(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_task(tmp_path / "empty")
    png(tmp_path / "one" / "only" / "a.png")
    with pytest.raises(DatasetError, match="at least 2 classes"):
        load_task(tmp_path / "one")
    png(tmp_path / "hole" / "a" / "a.png")
    (tmp_path / "hole" / "b").mkdir()
    with pytest.raises(DatasetError, match="class 'b' .* has no image files"):
        load_task(tmp_path / "hole")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetError, match="neither a folder nor a .csv"):
        load_task(tmp_path / "x.txt")


@pytest.mark.parametrize("mode, color, expected", [
    ("L", 128, (128, 128, 128)),
    ("1", 1, (255, 255, 255)),
    ("RGBA", (10, 20, 30, 0), (255, 255, 255)),  # transparent -> white
    ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
    ("LA", (0, 255), (0, 0, 0)),
    ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
])
def test_modes_become_rgb(tmp_path, mode, color, expected):
    path = tmp_path / ("x.png" if mode != "CMYK" else "x.jpg")
    Image.new(mode, (4, 4), color).save(path)
    im = load_rgb(path)
    assert im.mode == "RGB"
    assert np.abs(np.asarray(im)[0, 0].astype(int) - expected).max() <= 2


def test_palette_and_16_bit(tmp_path):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 255] + [0] * 765)
    p.save(tmp_path / "p.png")
    assert tuple(np.asarray(load_rgb(tmp_path / "p.png"))[0, 0]) == (0, 0, 255)
    arr = np.array([[0, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "i16.png")
    assert np.asarray(load_rgb(tmp_path / "i16.png"))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_truncated_image_is_reported_as_unreadable(folder):
    bad = folder / "cat" / "0.png"
    bad.write_bytes(bad.read_bytes()[:30])
    t = load_task(folder)
    assert t[0][0] is None and t[1][0] is not None


def test_balanced_sampling():
    labels = np.array([0] * 100 + [1] * 100 + [2] * 5)
    idx = balanced_indices(labels, 45, seed=0)
    counts = np.bincount(labels[idx])
    assert len(idx) == 45 and counts.tolist() == [20, 20, 5]  # the small class is taken whole
    assert np.array_equal(idx, balanced_indices(labels, 45, seed=0))
    assert not np.array_equal(idx, balanced_indices(labels, 45, seed=1))
    assert len(balanced_indices(labels, 10_000, seed=0)) == len(labels)
    halves = half_split(labels[idx])
    assert all(abs(np.sum(halves[labels[idx] == c] == 0) - np.sum(halves[labels[idx] == c] == 1)) <= 1 for c in range(3))


def test_fingerprint(folder, tmp_path):
    a, b = load_task(folder), load_task(folder)
    assert a.fingerprint() == b.fingerprint()
    (folder / "cat" / "0.png").rename(folder / "dog" / "moved.png")
    assert load_task(folder).fingerprint() != a.fingerprint()


def test_torch_dataset_adapter():
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3, 8, 8), ["x", "y"][i % 2]

    t = TorchTask(Plain())
    assert t.classes == ["x", "y"] and t.labels.tolist() == [0, 1, 0, 1]

    class WithTargets(Plain):
        targets = [0, 1, 1, 0]
        classes = ["u", "v"]

    t = TorchTask(WithTargets())
    assert t.classes == ["u", "v"] and t.labels.tolist() == [0, 1, 1, 0]

    class OneClass(Plain):
        targets = [0, 0, 0, 0]

    with pytest.raises(DatasetError, match="at least 2 classes"):
        TorchTask(OneClass())
