"""Unit tests of task2vec/data.py on tiny images generated in tmp_path (no network, no big data)."""

from __future__ import annotations

import csv
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from task2vec.data import (
    ImageTask,
    TorchTask,
    as_task,
    balanced_indices,
    from_csv,
    from_folder,
    half_split,
    image_half,
    load_rgb,
    load_task,
    report_bad,
    subset,
)
from task2vec.errors import DatasetError, ImageError, Task2VecError

COLOURS = {"cat": (200, 30, 30), "dog": (30, 30, 200), "eel": (30, 200, 30)}


# ----------------------------------------------------------------------------- helpers
def png(path: Path, colour=(128, 128, 128), size=(8, 8), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    for cls, n in counts.items():
        for i in range(n):
            png(root / cls / f"{cls}{i}.png", COLOURS.get(cls, (i, i, i)))
    return root


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def names(task: ImageTask) -> list[tuple[str, str]]:
    """(relative path, class name) pairs of a task, sorted."""
    return sorted((p, task.classes[y]) for p, y in zip(task.relative_paths(), task.labels))


# ----------------------------------------------------------------------------- ImageFolder
def test_folder_reads_classes_paths_and_labels(tmp_path):
    root = make_folder(tmp_path / "ds", {"dog": 2, "cat": 3})
    task = from_folder(root)
    assert isinstance(task, ImageTask)
    assert task.classes == ["cat", "dog"]  # sorted class names, label = index
    assert len(task) == 5
    assert names(task) == [("cat/cat0.png", "cat"), ("cat/cat1.png", "cat"), ("cat/cat2.png", "cat"),
                           ("dog/dog0.png", "dog"), ("dog/dog1.png", "dog")]
    assert task.labels.dtype == np.int64
    image, label = task[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert image.getpixel((0, 0)) == COLOURS[task.classes[label]]


def test_folder_ignores_loose_files_hidden_entries_and_non_images(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 2, "dog": 2})
    (root / "classes.csv").write_text("path,label\ncat/cat0.png,cat\n")
    png(root / "loose.png")  # a loose image at the root is not a class
    (root / "README.txt").write_text("hello")
    (root / "cat" / "notes.txt").write_text("not an image")
    png(root / "cat" / ".hidden.png")
    png(root / ".cache" / "x.png")  # hidden folder is not a class
    task = load_task(root)
    assert task.classes == ["cat", "dog"]
    assert sorted(task.relative_paths()) == ["cat/cat0.png", "cat/cat1.png", "dog/dog0.png", "dog/dog1.png"]


def test_folder_images_in_nested_subfolders_belong_to_their_class(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 1, "dog": 1})
    png(root / "cat" / "more" / "deep.jpg")
    task = from_folder(root)
    assert ("cat/more/deep.jpg", "cat") in names(task)
    assert len(task) == 3


def test_folder_accepts_upper_case_extensions(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 1, "dog": 1})
    Image.new("RGB", (4, 4)).save(root / "dog" / "BIG.PNG", format="PNG")
    assert ("dog/BIG.PNG", "dog") in names(from_folder(root))


def test_split_layout_is_merged_and_unlabelled_split_skipped(tmp_path):
    root = tmp_path / "ds"
    make_folder(root / "train", {"cat": 2, "dog": 2})
    make_folder(root / "val", {"cat": 1, "dog": 1})
    png(root / "test" / "unlabelled0.png")  # loose, unlabelled test photos: skipped
    png(root / "test" / "unlabelled1.png")
    (root / "classes.csv").write_text("x\n")  # loose file at the root: ignored
    task = load_task(root)
    assert task.classes == ["cat", "dog"]  # not ["test", "train", "val"]
    assert len(task) == 6
    assert names(task) == [
        ("train/cat/cat0.png", "cat"), ("train/cat/cat1.png", "cat"),
        ("train/dog/dog0.png", "dog"), ("train/dog/dog1.png", "dog"),
        ("val/cat/cat0.png", "cat"), ("val/dog/dog0.png", "dog"),
    ]
    assert not any("test/" in p for p in task.relative_paths())


def test_split_names_are_case_insensitive(tmp_path):
    root = tmp_path / "ds"
    make_folder(root / "Train", {"cat": 1, "dog": 1})
    make_folder(root / "Validation", {"cat": 1, "dog": 1})
    task = from_folder(root)
    assert task.classes == ["cat", "dog"] and len(task) == 4


def test_split_layout_with_no_class_folders_is_an_error(tmp_path):
    root = tmp_path / "ds"
    png(root / "train" / "a.png")
    png(root / "test" / "b.png")
    with pytest.raises(DatasetError, match="split folders but no class sub-folders"):
        from_folder(root)


def test_a_class_folder_in_one_split_only_is_kept(tmp_path):
    root = tmp_path / "ds"
    make_folder(root / "train", {"cat": 1, "dog": 1})
    make_folder(root / "val", {"eel": 2})
    task = from_folder(root)
    assert task.classes == ["cat", "dog", "eel"]
    assert np.bincount(task.labels).tolist() == [1, 1, 2]


# ----------------------------------------------------------------------------- bad folders
def test_nonexistent_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as info:
        load_task(tmp_path / "nope")
    assert "nope" in str(info.value)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="has no class sub-folders"):
        load_task(tmp_path / "empty")


def test_folder_with_only_loose_images(tmp_path):
    png(tmp_path / "ds" / "a.png")
    with pytest.raises(DatasetError, match="has no class sub-folders"):
        load_task(tmp_path / "ds")


def test_single_class(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 3})
    with pytest.raises(DatasetError, match="at least 2 classes") as info:
        load_task(root)
    assert "cat" in str(info.value)


def test_class_folder_without_images(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 2, "dog": 2})
    (root / "eel").mkdir()
    (root / "eel" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="class 'eel' .* has no image files"):
        load_task(root)


def test_non_csv_file(tmp_path):
    f = tmp_path / "data.json"
    f.write_text("{}")
    with pytest.raises(DatasetError, match="neither a folder nor a .csv file"):
        load_task(f)


def test_label_column_on_a_folder_is_an_error(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 1, "dog": 1})
    with pytest.raises(DatasetError, match="--label-column applies to CSV"):
        load_task(root, label_column="label")


def test_errors_are_typed_value_errors(tmp_path):
    with pytest.raises(Task2VecError):
        load_task(tmp_path / "nope")
    assert issubclass(DatasetError, ValueError)


# ----------------------------------------------------------------------------- CSV
@pytest.fixture
def csv_images(tmp_path) -> Path:
    """tmp/data/img/{0..5}.png and tmp/outside.png."""
    for i in range(6):
        png(tmp_path / "data" / "img" / f"{i}.png", (i * 40, 0, 0))
    png(tmp_path / "outside.png")
    return tmp_path / "data"


def test_csv_path_and_label(csv_images):
    f = write_csv(csv_images / "t.csv", ["path", "label"],
                  [[f"img/{i}.png", "even" if i % 2 == 0 else "odd"] for i in range(6)])
    task = load_task(f)
    assert task.classes == ["even", "odd"]
    assert task.root == csv_images.resolve()
    assert names(task) == sorted((f"img/{i}.png", "even" if i % 2 == 0 else "odd") for i in range(6))
    assert all(p.is_absolute() and p.is_file() for p in task.paths)
    image, label = task[task.relative_paths().index("img/3.png")]
    assert task.classes[label] == "odd" and image.getpixel((0, 0)) == (120, 0, 0)
    assert task.source.endswith(":label")


def test_csv_paths_relative_to_csv_folder_not_cwd(csv_images, tmp_path, monkeypatch):
    write_csv(csv_images / "t.csv", ["filename", "cls"], [["img/0.png", "a"], ["./img/1.png", "b"]])
    monkeypatch.chdir(tmp_path)  # cwd is not the CSV's folder
    task = load_task(Path("data") / "t.csv")
    assert names(task) == [("img/0.png", "a"), ("img/1.png", "b")]


def test_csv_with_bom_and_label_column_picked_automatically(csv_images):
    f = csv_images / "t.csv"
    f.write_text("\ufeffimage,label,extra\nimg/0.png,a,x\nimg/1.png,b,y\n", encoding="utf-8")
    task = load_task(f)  # 'label' wins over 'extra'
    assert names(task) == [("img/0.png", "a"), ("img/1.png", "b")]


def test_csv_label_column_chooses_among_several(csv_images):
    rows = [[f"img/{i}.png", "latin" if i < 3 else "greek", f"d{i % 2}"] for i in range(6)]
    f = write_csv(csv_images / "omni.csv", ["path", "alphabet", "drawer"], rows)
    by_alphabet = load_task(f, label_column="alphabet")
    by_drawer = load_task(f, label_column="drawer")
    assert by_alphabet.classes == ["greek", "latin"]
    assert by_drawer.classes == ["d0", "d1"]
    assert dict(names(by_alphabet))["img/4.png"] == "greek"
    assert dict(names(by_drawer))["img/4.png"] == "d0"
    assert by_alphabet.fingerprint() != by_drawer.fingerprint()


def test_csv_several_label_columns_and_none_chosen(csv_images):
    f = write_csv(csv_images / "omni.csv", ["path", "alphabet", "drawer"], [["img/0.png", "a", "b"]])
    with pytest.raises(DatasetError, match="several label columns.*--label-column") as info:
        load_task(f)
    assert "alphabet" in str(info.value) and "drawer" in str(info.value)


def test_csv_unknown_label_column(csv_images):
    f = write_csv(csv_images / "t.csv", ["path", "label"], [["img/0.png", "a"], ["img/1.png", "b"]])
    with pytest.raises(DatasetError, match="no label column 'colour'"):
        load_task(f, label_column="colour")


def test_csv_without_path_column(csv_images):
    f = write_csv(csv_images / "t.csv", ["picture", "label"], [["img/0.png", "a"]])
    with pytest.raises(DatasetError, match="has no path column"):
        load_task(f)


def test_csv_without_label_column(csv_images):
    f = write_csv(csv_images / "t.csv", ["path"], [["img/0.png"]])
    with pytest.raises(DatasetError, match="has no label column"):
        load_task(f)


def test_csv_explicit_path_column_missing(csv_images):
    f = write_csv(csv_images / "t.csv", ["path", "label"], [["img/0.png", "a"]])
    with pytest.raises(DatasetError, match="has no column 'file'"):
        from_csv(f, path_column="file")


def test_csv_empty_cell(csv_images):
    f = write_csv(csv_images / "t.csv", ["path", "label"], [["img/0.png", "a"], ["img/1.png", ""]])
    with pytest.raises(DatasetError, match="line 3: empty 'label'"):
        load_task(f)


def test_csv_missing_files(csv_images):
    f = write_csv(csv_images / "t.csv", ["path", "label"],
                  [["img/0.png", "a"], ["img/gone.png", "b"], ["img/1.png", "b"], ["img/lost.png", "a"]])
    with pytest.raises(DatasetError, match=r"names 2 missing file\(s\), first: 'img/gone.png'"):
        load_task(f)


def test_csv_relative_path_escaping_its_folder(csv_images):
    f = write_csv(csv_images / "t.csv", ["path", "label"], [["img/0.png", "a"], ["../outside.png", "b"]])
    assert (csv_images / "../outside.png").is_file()  # the file exists: only the escape is wrong
    with pytest.raises(DatasetError, match="'../outside.png' escapes the CSV's folder"):
        load_task(f)


def test_csv_absolute_path_outside_its_folder(csv_images, tmp_path):
    outside = str((tmp_path / "outside.png").resolve())
    f = write_csv(csv_images / "t.csv", ["path", "label"], [["img/0.png", "a"], [outside, "b"]])
    with pytest.raises(DatasetError, match="escapes the CSV's folder"):
        load_task(f)


def test_csv_absolute_path_inside_its_folder_is_fine(csv_images):
    inside = str((csv_images / "img" / "1.png").resolve())
    f = write_csv(csv_images / "t.csv", ["path", "label"], [["img/0.png", "a"], [inside, "b"]])
    assert names(load_task(f)) == [("img/0.png", "a"), ("img/1.png", "b")]


def test_csv_empty_file(csv_images):
    f = csv_images / "empty.csv"
    f.write_text("")
    with pytest.raises(DatasetError, match="is empty"):
        load_task(f)


def test_csv_header_only(csv_images):
    f = write_csv(csv_images / "t.csv", ["path", "label"], [])
    with pytest.raises(DatasetError, match="has no rows"):
        load_task(f)


def test_csv_single_class(csv_images):
    f = write_csv(csv_images / "t.csv", ["path", "label"], [["img/0.png", "a"], ["img/1.png", "a"]])
    with pytest.raises(DatasetError, match="at least 2 classes"):
        load_task(f)


def test_csv_uppercase_extension_is_accepted(csv_images):
    f = write_csv(csv_images / "T.CSV", ["path", "label"], [["img/0.png", "a"], ["img/1.png", "b"]])
    assert len(load_task(f)) == 2


# ----------------------------------------------------------------------------- load_rgb
def pixels(path) -> np.ndarray:
    im = load_rgb(path)
    assert im.mode == "RGB"
    return np.asarray(im)


def test_load_rgb_rgb_is_unchanged(tmp_path):
    f = png(tmp_path / "rgb.png", (1, 2, 3))
    assert pixels(f)[0, 0].tolist() == [1, 2, 3]


def test_load_rgb_grayscale_L(tmp_path):
    f = png(tmp_path / "l.png", 77, mode="L")
    assert Image.open(f).mode == "L"
    assert (pixels(f) == 77).all()


def test_load_rgb_palette_P(tmp_path):
    p = Image.new("P", (2, 2), 0)
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putpixel((1, 1), 1)
    p.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    a = pixels(tmp_path / "p.png")
    assert a[0, 0].tolist() == [10, 20, 30] and a[1, 1].tolist() == [200, 100, 50]


def test_load_rgb_palette_with_transparency_becomes_white(tmp_path):
    p = Image.new("P", (2, 2), 0)
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putpixel((1, 1), 1)
    p.save(tmp_path / "pt.png", transparency=0)  # palette index 0 is transparent
    im = Image.open(tmp_path / "pt.png")
    assert im.mode == "P" and im.info.get("transparency") == 0
    a = pixels(tmp_path / "pt.png")
    assert a[0, 0].tolist() == [255, 255, 255]  # transparent -> white, not (10, 20, 30)
    assert a[1, 1].tolist() == [200, 100, 50]


def test_load_rgb_bilevel_1(tmp_path):
    b = Image.new("1", (2, 2), 0)
    b.putpixel((0, 0), 1)
    b.save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    a = pixels(tmp_path / "b.png")
    assert a[0, 0].tolist() == [255, 255, 255] and a[1, 1].tolist() == [0, 0, 0]


def test_load_rgb_rgba_composited_on_white(tmp_path):
    im = Image.new("RGBA", (2, 2), (10, 20, 30, 0))  # fully transparent
    im.putpixel((1, 1), (10, 20, 30, 255))  # opaque
    im.putpixel((0, 1), (0, 0, 0, 128))  # half-transparent black
    im.save(tmp_path / "rgba.png")
    a = pixels(tmp_path / "rgba.png")
    assert a[0, 0].tolist() == [255, 255, 255]
    assert a[1, 1].tolist() == [10, 20, 30]
    assert all(abs(v - 127) <= 1 for v in a[1, 0].tolist())  # half black over white = grey


def test_load_rgb_la_composited_on_white(tmp_path):
    im = Image.new("LA", (2, 2), (100, 0))
    im.putpixel((1, 1), (100, 255))
    im.save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    a = pixels(tmp_path / "la.png")
    assert a[0, 0].tolist() == [255, 255, 255] and a[1, 1].tolist() == [100, 100, 100]


def test_load_rgb_cmyk(tmp_path):
    Image.new("CMYK", (2, 2), (0, 255, 0, 0)).save(tmp_path / "m.tif")  # pure magenta ink
    Image.new("CMYK", (2, 2), (0, 0, 0, 255)).save(tmp_path / "k.jpg", quality=100)  # pure black ink
    assert Image.open(tmp_path / "m.tif").mode == "CMYK" and Image.open(tmp_path / "k.jpg").mode == "CMYK"
    assert pixels(tmp_path / "m.tif")[0, 0].tolist() == [255, 0, 255]
    assert (pixels(tmp_path / "k.jpg") <= 3).all()


def test_load_rgb_16_bit_grayscale_is_rescaled(tmp_path):
    a16 = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode == "I;16"
    a = pixels(tmp_path / "i16.png")
    expected = (a16.astype(np.float64) / 65535 * 255).astype(np.uint8)
    assert (a[..., 0] == expected).all() and (a[..., 0] == a[..., 2]).all()
    assert a[0, 0, 0] == 0 and a[1, 1, 0] == 255  # full range, not clipped to 255 of 65535


def test_load_rgb_truncated_and_corrupt_files_raise(tmp_path):
    good = png(tmp_path / "good.png", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"this is not an image" * 10)
    with pytest.raises(OSError):
        load_rgb(tmp_path / "trunc.png")
    with pytest.raises(OSError):
        load_rgb(tmp_path / "junk.png")


def test_load_rgb_refuses_oversized_images_from_the_header(oversized_images, monkeypatch):
    """Refused before a pixel is decoded (decoding fails the test), at once, with no PIL warning, and
    PIL's global limit left as it was."""
    def no_decoding(self):
        raise AssertionError("decoded")

    limit = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for name, fragment in (("wide", "60000 x 1 pixels, its long side more than 32 times its short one"),
                           ("big", "10000 x 9000 pixels, more than the limit of 89,478,485"),
                           ("bomb", "Image size (900000000 pixels) exceeds limit")):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ImageError, match=re.escape(fragment)):
                load_rgb(oversized_images[name])
        assert time.perf_counter() - start < 1.0, name
    assert Image.MAX_IMAGE_PIXELS == limit
    assert issubclass(ImageError, DatasetError) and issubclass(ImageError, ValueError)


def test_load_rgb_aspect_limit_is_inclusive(tmp_path):
    assert load_rgb(png(tmp_path / "ok.png", size=(32, 1))).size == (32, 1)
    assert load_rgb(png(tmp_path / "tall.png", size=(2, 64))).size == (2, 64)
    with pytest.raises(ImageError, match="33 x 1 pixels"):
        load_rgb(png(tmp_path / "long.png", size=(33, 1)))


def test_oversized_image_is_skipped_and_counted_like_a_corrupt_one(tmp_path, oversized_images):
    root = make_folder(tmp_path / "ds", {"cat": 2, "dog": 2})
    (root / "dog" / "wide.png").write_bytes(oversized_images["wide"].read_bytes())
    task = from_folder(root)
    i = task.relative_paths().index("dog/wide.png")
    image, label = task[i]
    assert image is None and task.classes[label] == "dog"
    why = "wide.png' (60000 x 1 pixels, its long side more than 32 times its short one)"
    with pytest.warns(UserWarning, match="skipped 1 of 5 unreadable images, first: ") as record:
        report_bad(task, [i], len(task), 0.25)
    assert why in str(record[0].message)
    with pytest.raises(DatasetError, match=r"1 of 5 images could not be read \(limit 5%\)") as info:
        report_bad(task, [i], len(task), 0.05)
    assert why in str(info.value)
    with pytest.warns(UserWarning, match=r"0.png' \(readable when read again\)"):  # a file mended meanwhile
        report_bad(task, [0], len(task), 0.25)


def test_task_returns_none_for_unreadable_image(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 1, "dog": 1})
    (root / "dog" / "bad.png").write_bytes(b"\x89PNG corrupt")
    task = from_folder(root)
    i = task.relative_paths().index("dog/bad.png")
    image, label = task[i]
    assert image is None and task.classes[label] == "dog"


def test_task_applies_transform(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 1, "dog": 1})
    task = from_folder(root)
    task.transform = lambda im: np.asarray(im).shape
    assert task[0][0] == (8, 8, 3)


# ----------------------------------------------------------------------------- balanced_indices / half_split
def test_balanced_indices_equal_per_class():
    labels = np.repeat([0, 1, 2], [50, 30, 40])
    idx = balanced_indices(labels, 30, seed=0)
    assert len(idx) == 30 and len(set(idx.tolist())) == 30
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10]
    # sorted by class
    assert (np.diff(labels[idx]) >= 0).all()


def test_balanced_indices_seeded():
    labels = np.repeat([0, 1], [100, 100])
    a = balanced_indices(labels, 20, seed=7)
    b = balanced_indices(labels, 20, seed=7)
    c = balanced_indices(labels, 20, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(labels[c]).tolist() == [10, 10]


def test_balanced_indices_small_class_taken_whole_quota_to_larger():
    labels = np.repeat([0, 1, 2], [2, 10, 10])
    idx = balanced_indices(labels, 12, seed=0)
    counts = np.bincount(labels[idx], minlength=3).tolist()
    assert counts == [2, 5, 5]
    assert sorted(idx[labels[idx] == 0].tolist()) == [0, 1]


def test_balanced_indices_uneven_quota_and_interleaved_labels():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat([3, 5, 9], [1, 4, 20]))  # non-contiguous class ids, shuffled
    idx = balanced_indices(labels, 10, seed=1)
    got = {c: int((labels[idx] == c).sum()) for c in (3, 5, 9)}
    assert got == {3: 1, 5: 4, 9: 5}
    assert len(set(idx.tolist())) == 10


@pytest.mark.parametrize("max_samples", [2, 3, 7, 10, 11, 25, 1000])
def test_balanced_indices_never_more_than_max_samples(max_samples):
    labels = np.repeat([0, 1, 2], [3, 7, 15])
    idx = balanced_indices(labels, max_samples, seed=0)
    assert len(idx) == min(max_samples, len(labels))
    assert len(set(idx.tolist())) == len(idx)
    counts = np.bincount(labels[idx], minlength=3)
    # as equal as the data allow: a class below another's count is full
    for a in range(3):
        for b in range(3):
            if counts[a] + 1 < counts[b]:
                assert counts[a] == np.bincount(labels)[a]


def test_balanced_indices_rejects_tiny_max_samples():
    with pytest.raises(DatasetError, match="at least 2"):
        balanced_indices(np.array([0, 1]), 1, seed=0)


def test_half_split_class_balanced():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 2, 2, 2, 2, 0])
    halves = half_split(labels)
    assert set(halves.tolist()) <= {0, 1}
    for c in np.unique(labels):
        h = halves[labels == c]
        assert abs(int((h == 0).sum()) - int((h == 1).sum())) <= 1
    assert abs(int((halves == 0).sum()) - int((halves == 1).sum())) <= len(np.unique(labels))


# ----------------------------------------------------------------------------- fingerprint
def test_fingerprint_same_files_same_labels_same_hash(tmp_path):
    a = from_folder(make_folder(tmp_path / "a", {"cat": 2, "dog": 2}))
    b = from_folder(make_folder(tmp_path / "elsewhere" / "b", {"cat": 2, "dog": 2}))
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 64
    assert from_folder(tmp_path / "a").fingerprint() == a.fingerprint()


def test_fingerprint_changes_when_relabelled(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 2, "dog": 2})
    before = from_folder(root).fingerprint()
    (root / "cat" / "cat1.png").rename(root / "dog" / "cat1.png")  # same file, other class
    assert from_folder(root).fingerprint() != before


def test_fingerprint_changes_when_a_class_is_renamed(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 2, "dog": 2})
    before = from_folder(root).fingerprint()
    (root / "dog").rename(root / "wolf")
    assert from_folder(root).fingerprint() != before


def test_fingerprint_csv_relabel(csv_images):
    rows = [[f"img/{i}.png", "a" if i < 3 else "b"] for i in range(6)]
    f1 = write_csv(csv_images / "one.csv", ["path", "label"], rows)
    f2 = write_csv(csv_images / "two.csv", ["path", "label"], list(reversed(rows)))  # order does not matter
    rows[0][1] = "b"
    f3 = write_csv(csv_images / "three.csv", ["path", "label"], rows)
    assert load_task(f1).fingerprint() == load_task(f2).fingerprint()
    assert load_task(f1).fingerprint() != load_task(f3).fingerprint()


# ----------------------------------------------------------------------------- TorchTask
class PlainDataset(torch.utils.data.Dataset):
    """(CHW float tensor, label) pairs; counts __getitem__ calls."""

    def __init__(self, labels):
        self._labels = list(labels)
        self.calls = 0

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, i):
        self.calls += 1
        return torch.full((3, 4, 4), float(i) / 10), self._labels[i]


class TargetsDataset(PlainDataset):
    def __init__(self, labels, classes=None):
        super().__init__(labels)
        self.targets = torch.tensor(labels)
        if classes is not None:
            self.classes = classes


class PilDataset(PlainDataset):
    def __getitem__(self, i):
        self.calls += 1
        return Image.new("L", (4, 4), 10 * i), self._labels[i]


def test_torchtask_without_targets_reads_labels_once():
    ds = PlainDataset([0, 1, 1, 0, 2])
    task = TorchTask(ds)
    assert ds.calls == 5
    assert task.labels.tolist() == [0, 1, 1, 0, 2]
    assert task.classes == ["0", "1", "2"]
    assert len(task) == 5
    image, label = task[3]
    assert label == 0 and torch.allclose(image, torch.full((3, 4, 4), 0.3))
    assert task.source == "PlainDataset"


def test_torchtask_uses_targets_without_iterating():
    ds = TargetsDataset([1, 0, 1, 0], classes=["ant", "bee"])
    task = TorchTask(ds)
    assert ds.calls == 0  # labels from .targets, no pass over the images
    assert task.labels.tolist() == [1, 0, 1, 0]
    assert task.classes == ["ant", "bee"]


def test_torchtask_classes_argument():
    task = TorchTask(TargetsDataset([1, 0, 1]), classes=["no", "yes"])
    assert task.classes == ["no", "yes"]


def test_torchtask_string_labels():
    task = TorchTask(PlainDataset(["zebra", "ant", "zebra", "moth"]))
    assert task.classes == ["ant", "moth", "zebra"]
    assert task.labels.tolist() == [2, 0, 2, 1]
    assert task.labels.dtype == np.int64
    assert task[0][1] == 2


def test_torchtask_converts_pil_to_rgb_and_applies_transform():
    task = TorchTask(PilDataset([0, 1]))
    image, label = task[1]
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (10, 10, 10) and label == 1
    task.transform = lambda im: im.size
    assert task[0] == ((4, 4), 0)


def test_torchtask_bad_datasets():
    with pytest.raises(DatasetError, match="empty"):
        TorchTask(PlainDataset([]))
    with pytest.raises(DatasetError, match="at least 2 classes"):
        TorchTask(PlainDataset([3, 3, 3]))
    with pytest.raises(DatasetError, match="negative labels"):
        TorchTask(PlainDataset([0, -1]))


def test_torchtask_fingerprint():
    a = TorchTask(PlainDataset([0, 1, 0, 1])).fingerprint()
    assert a == TorchTask(PlainDataset([0, 1, 0, 1])).fingerprint()
    assert a != TorchTask(PlainDataset([0, 1, 1, 0])).fingerprint()


def test_as_task_dispatch(tmp_path):
    root = make_folder(tmp_path / "ds", {"cat": 1, "dog": 1})
    task = as_task(str(root))
    assert isinstance(task, ImageTask) and as_task(task) is task
    assert isinstance(as_task(PlainDataset([0, 1])), TorchTask)
    with pytest.raises(DatasetError, match="cannot make a task from a list"):
        as_task([1, 2, 3])


def test_csv_that_is_not_utf8(tmp_path):
    png(tmp_path / "a" / "0.png")
    png(tmp_path / "b" / "0.png")
    (tmp_path / "x.csv").write_bytes(b"path,label\na/0.png,caf\xe9\nb/0.png,th\xe9\n")
    with pytest.raises(DatasetError, match="not UTF-8"):
        from_csv(tmp_path / "x.csv")


@pytest.mark.parametrize("mode, colour", [("L", 77), ("RGB", (1, 2, 3))])
def test_load_rgb_png_transparency_key_becomes_white(tmp_path, mode, colour):
    im = Image.new(mode, (2, 2), colour)
    im.putpixel((1, 1), 200 if mode == "L" else (200, 100, 50))
    im.save(tmp_path / "t.png", transparency=colour)
    a = np.asarray(load_rgb(tmp_path / "t.png"))
    assert a[0, 0].tolist() == [255, 255, 255]
    assert a[1, 1].tolist() == ([200] * 3 if mode == "L" else [200, 100, 50])


def test_torchtask_labels_must_fit_classes():
    with pytest.raises(DatasetError, match="label 2 outside its 2 classes"):
        TorchTask(TargetsDataset([0, 1, 2]), classes=["a", "b"])
    with pytest.raises(DatasetError, match="not among its classes"):
        TorchTask(PlainDataset(["x", "y", "z"]), classes=["x", "y"])
    gaps = TorchTask(PlainDataset([0, 0, 5, 5]))  # no names: the labels present are the classes
    assert gaps.classes == ["0", "5"] and gaps.labels.tolist() == [0, 0, 1, 1]


def test_csv_rows_repeating_an_image_count_once_and_conflicting_labels_fail(tmp_path):
    from PIL import Image

    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "t.csv").write_text("path,label\na.png,x\nb.png,y\na.png,x\nc.png,y\n")
    task = load_task(tmp_path / "t.csv")
    assert len(task) == 3
    (tmp_path / "u.csv").write_text("path,label\na.png,x\nb.png,y\na.png,y\n")
    with pytest.raises(DatasetError, match="lines 2 and 4: 'a.png' has two labels"):
        load_task(tmp_path / "u.csv")


# ----------------------------------------------------------------------------- subsets and halves
def test_image_half_is_a_seeded_function_of_the_path_alone(tmp_path):
    task = from_folder(make_folder(tmp_path / "d", {"cat": 40, "dog": 40, "eel": 40}))
    halves = {r: image_half(r) for r in task.relative_paths()}
    assert set(halves.values()) == {"source", "target"}
    assert 0.3 < sum(h == "source" for h in halves.values()) / len(halves) < 0.7
    other_seed = [image_half(r, seed=1) for r in task.relative_paths()]
    assert other_seed != list(halves.values())
    # a subset's halves are those of the full set: listing other images changes nothing
    src, tgt = subset(task, half="source"), subset(task, half="target")
    assert set(src.paths).isdisjoint(tgt.paths) and len(src) + len(tgt) == len(task)
    assert all(halves[r] == "source" for r in src.relative_paths())
    small = subset(task, classes=["dog", "cat"], half="target")
    assert small.classes == ["dog", "cat"]
    assert names(small) == sorted(n for n in names(tgt) if n[1] in ("cat", "dog"))


def test_subset_errors_name_the_problem(tmp_path):
    task = from_folder(make_folder(tmp_path / "d", {"cat": 3, "dog": 3}))
    with pytest.raises(DatasetError, match="'cow' is not in"):
        subset(task, classes=["cat", "cow"])
    with pytest.raises(DatasetError, match="at least 2 distinct classes"):
        subset(task, classes=["cat", "cat"])
    with pytest.raises(DatasetError, match="half must be one of"):
        subset(task, half="train")
