"""Tasks as labelled image lists: ImageFolder trees, CSV tables and torch Datasets.

A *task* is a set of images with one class label each. Everything is validated
here, once, so later stages can trust what they get.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile

from .defaults import MAX_IMAGE_ASPECT, MAX_IMAGE_PIXELS
from .errors import DatasetError, ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
SPLIT_NAMES = ("train", "val", "valid", "validation", "test")
PATH_COLUMNS = ("path", "filepath", "file", "filename", "image")

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a half image
IMAGE_ERRORS = (OSError, ValueError, SyntaxError)  # what reading a bad image file raises (ImageError included)


def check_image_size(width: int, height: int) -> None:
    """Refuse (:class:`ImageError`) an image size that no pipeline may decode or resize.

    Before resizing: at most ``MAX_IMAGE_PIXELS`` pixels (PIL's default bomb limit). After
    resizing: every pipeline (embed, finetune, predict, cam) resizes the shorter side to some
    S pixels, so a long side at most ``MAX_IMAGE_ASPECT`` times the short one bounds the resized
    image to ``MAX_IMAGE_ASPECT * S**2`` pixels whatever the aspect ratio (a 60000 x 1 PNG of a few
    hundred bytes would otherwise become 256 x 15.4M pixels, 11.8 GB).
    """
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{width} x {height} pixels, more than the limit of {MAX_IMAGE_PIXELS:,}")
    if max(width, height) > MAX_IMAGE_ASPECT * min(width, height):
        raise ImageError(f"{width} x {height} pixels, its long side more than {MAX_IMAGE_ASPECT} times its short one")


def image_problem(exc: BaseException) -> str:
    """A few words on why an image could not be read: an :class:`ImageError`'s own, else the exception's type."""
    return str(exc) if isinstance(exc, ImageError) else type(exc).__name__


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image fully and convert any mode (L, P, 1, RGBA, CMYK, I;16...) to RGB.

    Transparent pixels are composited on white, so a logo on a transparent background
    looks as it does in a viewer. The size in the file's header is checked before anything is
    decoded (:func:`check_image_size`); PIL's decompression-bomb error is an :class:`ImageError` too.
    """
    try:
        with warnings.catch_warnings():  # PIL's bomb warning: such an image is refused below anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageError(str(exc)) from None
    with im:
        check_image_size(*im.size)
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L"):  # 16-bit greyscale: full range maps to 0..255
            arr = np.asarray(im, dtype=np.float64) / 65535.0 * 255.0
            return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
        if im.mode in ("I", "F"):  # no fixed range: stretch what is there
            arr = np.asarray(im, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
            return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
        if "transparency" in im.info and im.mode in ("P", "L", "RGB"):
            im = im.convert("RGBA")
        if im.mode == "RGB":
            return im.copy()
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return im.convert("RGB")


@dataclass
class ImageTask(torch.utils.data.Dataset):
    """A labelled list of image files. ``task[i]`` is ``(image, label)``.

    ``image`` is ``transform(pil_rgb_image)`` (the PIL image when no transform is set),
    or ``None`` when the file cannot be decoded or is over the pixel limits (:func:`check_image_size`);
    :class:`SkipBadCollate` drops those.
    """

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    root: Path
    transform: Callable[[Image.Image], Any] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        label = int(self.labels[index])
        try:
            image = load_rgb(self.paths[index])
        except IMAGE_ERRORS:
            return None, label
        return (self.transform(image) if self.transform else image), label

    def relative_paths(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.paths]

    def fingerprint(self) -> str:
        """SHA-256 over the sorted (relative path, class name) pairs: same files + labels, same hash."""
        rows = sorted(f"{p}\t{self.classes[y]}" for p, y in zip(self.relative_paths(), self.labels))
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def from_folder(root: str | os.PathLike) -> ImageTask:
    """Read an ImageFolder tree ``root/<class>/<image>``.

    A tree split into ``train/``, ``val/`` (and ``test/``) folders is read as the union
    of its labelled splits; a split without class folders (unlabelled test photos) is skipped.
    """
    root = Path(root)
    classes_dirs = _subdirs(root)
    if not classes_dirs:
        raise DatasetError(f"dataset folder {str(root)!r} has no class sub-folders")
    splits = [root]
    if all(d.name.lower() in SPLIT_NAMES for d in classes_dirs):
        splits = [d for d in classes_dirs if _subdirs(d)]
        if not splits:
            raise DatasetError(f"dataset folder {str(root)!r} has split folders but no class sub-folders in them")
    by_class: dict[str, list[Path]] = {}
    for split in splits:
        for d in _subdirs(split):
            by_class.setdefault(d.name, []).extend(sorted(p for p in d.rglob("*") if _is_image(p)))
    empty = [name for name, files in by_class.items() if not files]
    if empty:
        raise DatasetError(f"class {empty[0]!r} in {str(root)!r} has no image files")
    return _make_task(by_class, root, source=str(root))


def _make_task(by_class: dict[str, list[Path]], root: Path, source: str) -> ImageTask:
    classes = sorted(by_class)
    if len(classes) < 2:
        only = classes[0] if classes else "none"
        raise DatasetError(f"a task needs at least 2 classes; {source!r} has one ({only})")
    paths: list[Path] = []
    labels: list[int] = []
    for i, name in enumerate(classes):
        paths.extend(by_class[name])
        labels.extend([i] * len(by_class[name]))
    return ImageTask(paths, np.asarray(labels, dtype=np.int64), classes, root, source=source)


def from_csv(
    csv_path: str | os.PathLike, label_column: str | None = None, path_column: str | None = None
) -> ImageTask:
    """Read a CSV with one image path column and one label column.

    Paths are relative to the CSV's folder and may not escape it. ``label_column``
    picks one of several label columns (e.g. ``alphabet`` or ``drawer``).
    """
    csv_path = Path(csv_path)
    root = csv_path.parent.resolve()
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"CSV {str(csv_path)!r} is not UTF-8 text (byte {exc.start})") from exc
    except csv.Error as exc:
        raise DatasetError(f"CSV {str(csv_path)!r} is malformed: {exc}") from exc
    if not columns:
        raise DatasetError(f"CSV {str(csv_path)!r} is empty")
    if path_column is None:
        path_column = next((c for c in PATH_COLUMNS if c in columns), None)
        if path_column is None:
            raise DatasetError(f"CSV {str(csv_path)!r} has no path column (one of {', '.join(PATH_COLUMNS)})")
    elif path_column not in columns:
        raise DatasetError(f"CSV {str(csv_path)!r} has no column {path_column!r} (columns: {', '.join(columns)})")
    others = [c for c in columns if c != path_column]
    if label_column is None:
        if "label" in others:
            label_column = "label"
        elif len(others) == 1:
            label_column = others[0]
        elif not others:
            raise DatasetError(f"CSV {str(csv_path)!r} has no label column")
        else:
            raise DatasetError(
                f"CSV {str(csv_path)!r} has several label columns ({', '.join(others)}): choose one with --label-column"
            )
    elif label_column not in others:
        raise DatasetError(f"CSV {str(csv_path)!r} has no label column {label_column!r} (columns: {', '.join(columns)})")
    if not rows:
        raise DatasetError(f"CSV {str(csv_path)!r} has no rows")
    by_class: dict[str, list[Path]] = {}
    missing: list[str] = []
    seen: dict[Path, tuple[int, str]] = {}  # an image listed twice is one image; with two labels it is an error
    for line, row in enumerate(rows, start=2):
        rel, label = (row.get(path_column) or "").strip(), (row.get(label_column) or "").strip()
        if not rel or not label:
            raise DatasetError(f"CSV {str(csv_path)!r} line {line}: empty {path_column if not rel else label_column!r}")
        if "\0" in rel:  # no file system takes it: os calls would raise ValueError
            raise DatasetError(f"CSV {str(csv_path)!r} line {line}: path {rel!r} holds a NUL byte")
        full = (root / rel).resolve()
        if not full.is_relative_to(root):
            raise DatasetError(f"CSV {str(csv_path)!r} line {line}: path {rel!r} escapes the CSV's folder")
        if not full.is_file():
            missing.append(rel)
            continue
        if full in seen:
            first, first_label = seen[full]
            if first_label != label:
                raise DatasetError(f"CSV {str(csv_path)!r} lines {first} and {line}: {rel!r} has two labels "
                                   f"({first_label!r}, {label!r})")
            continue
        seen[full] = (line, label)
        by_class.setdefault(label, []).append(full)
    if missing:
        raise DatasetError(
            f"CSV {str(csv_path)!r} names {len(missing)} missing file(s), first: {missing[0]!r}"
        )
    return _make_task(by_class, root, source=f"{csv_path}:{label_column}")


def load_task(source: str | os.PathLike, label_column: str | None = None) -> ImageTask:
    """Open a task from an ImageFolder directory or a CSV of path,label."""
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"dataset path {str(path)!r} does not exist")
    if path.is_dir():
        if label_column is not None:
            raise DatasetError("--label-column applies to CSV datasets, not to folders")
        return from_folder(path)
    if path.suffix.lower() == ".csv":
        return from_csv(path, label_column=label_column)
    raise DatasetError(f"dataset path {str(path)!r} is neither a folder nor a .csv file")


HALVES = ("source", "target")


def image_half(relative_path: str, seed: int = 0) -> str:
    """``"source"`` or ``"target"``: a seeded hash of the image's relative path.

    The half of an image never depends on which other images are listed, so experts
    trained on source halves and target tasks drawn from target halves never share an image.
    """
    return HALVES[hashlib.sha256(f"{seed}\0{relative_path}".encode()).digest()[0] & 1]


def subset(task: ImageTask, *, classes: Sequence[str] | None = None, half: str | None = None,
           seed: int = 0) -> ImageTask:
    """The images of ``task`` in the given ``classes`` (renumbered in that order) and/or ``half``."""
    keep = np.ones(len(task), dtype=bool)
    names = list(task.classes)
    if classes is not None:
        classes = [str(c) for c in classes]
        unknown = [c for c in classes if c not in task.classes]
        if unknown:
            raise DatasetError(f"class {unknown[0]!r} is not in {task.source!r} (classes: {', '.join(task.classes[:8])}"
                               f"{', ...' if len(task.classes) > 8 else ''})")
        if len(set(classes)) < 2:
            raise DatasetError(f"a subset needs at least 2 distinct classes, got {classes}")
        names = list(dict.fromkeys(classes))
        keep &= np.isin(task.labels, [task.classes.index(c) for c in names])
    if half is not None:
        if half not in HALVES:
            raise DatasetError(f"half must be one of {HALVES}, got {half!r}")
        keep &= np.array([image_half(r, seed) == half for r in task.relative_paths()])
    idx = np.flatnonzero(keep)
    remap = {task.classes.index(c): i for i, c in enumerate(names)}
    labels = np.array([remap[int(y)] for y in task.labels[idx]], dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise DatasetError(f"the subset of {task.source!r} has fewer than 2 classes with images")
    parts = [task.source] + ([f"classes={len(names)}"] if classes is not None else []) + (
        [f"half={half}/{seed}"] if half is not None else [])
    return ImageTask([task.paths[i] for i in idx], labels, names, task.root, task.transform, source="|".join(parts))


class TorchTask(torch.utils.data.Dataset):
    """Adapter giving any torch Dataset of ``(image, label)`` the interface of :class:`ImageTask`.

    Labels come from ``dataset.targets`` when present (torchvision datasets), else from one
    pass over the data. Images may be PIL images or CHW tensors.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, classes: Sequence[str] | None = None):
        self.dataset = dataset
        targets = getattr(dataset, "targets", None)
        if targets is None:
            targets = [dataset[i][1] for i in range(len(dataset))]
        raw = [t.item() if isinstance(t, torch.Tensor) else t for t in targets]
        if not raw:
            raise DatasetError("the torch Dataset is empty")
        names = list(classes or getattr(dataset, "classes", None) or [])
        if all(isinstance(t, (int, np.integer)) for t in raw):
            labels = np.asarray(raw, dtype=np.int64)
            if labels.min() < 0:
                raise DatasetError("the torch Dataset has negative labels")
            if names:
                bad = labels[(labels < 0) | (labels >= len(names))]
                if len(bad):
                    raise DatasetError(f"the torch Dataset has label {int(bad[0])} outside its {len(names)} classes")
            else:  # no names: the labels present, in order, are the classes
                present, labels = np.unique(labels, return_inverse=True)
                names = [str(v) for v in present]
        else:
            given = names
            names = sorted({str(t) for t in raw}) if not given else [str(n) for n in given]
            index = {n: i for i, n in enumerate(names)}
            unknown = [t for t in raw if str(t) not in index]
            if unknown:
                raise DatasetError(f"the torch Dataset has label {unknown[0]!r} not among its classes")
            labels = np.asarray([index[str(t)] for t in raw], dtype=np.int64)
        self.labels, self.classes = labels.astype(np.int64), names
        present = np.unique(self.labels)
        if len(present) < 2:
            raise DatasetError(f"a task needs at least 2 classes; the torch Dataset has {len(present)}")
        self.transform: Callable | None = None
        self.source = type(dataset).__name__

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, _ = self.dataset[index]
        label = int(self.labels[index])
        if isinstance(image, Image.Image) and image.mode != "RGB":
            image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), label

    def fingerprint(self) -> str:
        """Hash of the labels (and file list when the Dataset exposes ``samples``)."""
        h = hashlib.sha256(type(self.dataset).__name__.encode())
        samples = getattr(self.dataset, "samples", None)
        if samples is not None:
            h.update("\n".join(sorted(f"{os.path.basename(str(p))}\t{y}" for p, y in samples)).encode())
        h.update(self.labels.tobytes())
        return h.hexdigest()


def as_task(data: Any, label_column: str | None = None) -> ImageTask | TorchTask:
    """Accept a path (folder / CSV), an :class:`ImageTask` or any torch Dataset."""
    if isinstance(data, (ImageTask, TorchTask)):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_task(data, label_column=label_column)
    if isinstance(data, torch.utils.data.Dataset):
        return TorchTask(data)
    raise DatasetError(f"cannot make a task from a {type(data).__name__}; give a folder, a CSV or a torch Dataset")


def balanced_indices(labels: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """Pick at most ``max_samples`` indices, as equal per class as the data allow, seeded.

    Small classes are taken whole and their unused quota goes to the larger ones.
    Returned sorted by class, then by random order within class.
    """
    if max_samples < 2:
        raise DatasetError(f"max_samples must be at least 2, got {max_samples}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.zeros_like(counts)
    remaining = min(max_samples, len(labels))
    open_ = counts > 0
    while remaining > 0 and open_.any():
        share = max(remaining // int(open_.sum()), 1)
        for i in np.flatnonzero(open_):
            take = min(share, counts[i] - quota[i], remaining)
            quota[i] += take
            remaining -= take
            if quota[i] == counts[i]:
                open_[i] = False
            if remaining == 0:
                break
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.concatenate(picked)


def interleave_classes(labels: np.ndarray) -> np.ndarray:
    """The permutation taking one image of each class in turn (keeping the order within a class).

    Every prefix of the result is then as class-balanced as the data allow: what an adaptive
    Fisher pass, stopping after any round, needs.
    """
    labels = np.asarray(labels)
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    return np.lexsort((labels, rank))


def half_split(labels: np.ndarray) -> np.ndarray:
    """0/1 assignment alternating within each class: two class-balanced halves."""
    halves = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        halves[idx] = np.arange(len(idx)) % 2
    return halves


class SkipBadCollate:
    """Collate ``(uint8 image, label, index)`` triples, dropping undecodable images."""

    def __call__(self, batch: list[tuple[Any, int, int]]):
        good = [b for b in batch if b[0] is not None]
        bad = [b[2] for b in batch if b[0] is None]
        if not good:
            return None, None, None, bad
        images = torch.stack([b[0] for b in good])
        labels = torch.tensor([b[1] for b in good], dtype=torch.long)
        index = torch.tensor([b[2] for b in good], dtype=torch.long)
        return images, labels, index, bad


class IndexedSubset(torch.utils.data.Dataset):
    """``subset[i] = (transform(image), label, original index)`` for a list of indices."""

    def __init__(self, task: torch.utils.data.Dataset, indices: np.ndarray,
                 transform: Callable[[Any], Any] | None = None):
        self.task, self.indices, self.transform = task, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        image, label = self.task[j]
        if image is not None and self.transform is not None:
            image = self.transform(image)
        return image, label, j


def _problem_of(path: Path) -> str:
    """Why the image at ``path`` is skipped."""
    try:
        load_rgb(path)
    except IMAGE_ERRORS as exc:
        return image_problem(exc)
    return "readable when read again"


def report_bad(task: Any, bad: list[int], total: int, max_bad_fraction: float) -> None:
    """Warn about skipped images; fail when more than ``max_bad_fraction`` could not be read.

    The message names the first skipped file and why it was skipped (read again for the message).
    """
    if not bad:
        return
    paths = getattr(task, "paths", None)
    where = f", first: {str(paths[bad[0]])!r} ({_problem_of(paths[bad[0]])})" if paths is not None else ""
    if len(bad) > max_bad_fraction * total:
        raise DatasetError(
            f"{len(bad)} of {total} images could not be read (limit {max_bad_fraction:.0%}){where}"
        )
    warnings.warn(f"skipped {len(bad)} of {total} unreadable images{where}", stacklevel=3)
