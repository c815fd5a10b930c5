"""The target tasks of the model-selection benchmark, drawn from the *target halves* of ../shared/data.

Every image of a data set is in the source half or the target half (``task2vec.data.image_half``
with the demo zoo's ``split_seed``); experts train on source halves, targets below use target
halves only, so no image is ever both. The two sets no expert trains on (``hymenoptera``,
``small_books``) are used whole. Each target keeps ``shots`` training images per class
(what the user has: embeddings, transferability scores and the ground-truth classifier see
only these) and up to ``test`` held-out images per class (ground truth only).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from task2vec.data import ImageTask, image_half, load_rgb, load_task
from task2vec.errors import DatasetError


@dataclass(frozen=True)
class Target:
    """One target task: which images, which labels, how many per class."""

    name: str
    dataset: str                                     # under shared/data: a folder or a CSV
    shots: int                                       # training images per class
    test: int = 30                                   # at most this many test images per class
    family: str = ""                                 # for the report: digits, letters, natural, ...
    column: str | None = None                        # CSV label column
    classes: tuple[str, ...] | None = None           # keep these source classes
    prefix: str | None = None                        # keep classes whose name starts with this
    ways: int | None = None                          # then sample this many of them (seeded)
    groups: tuple[tuple[str, tuple[str, ...]], ...] | None = None   # new class <- source classes
    attribute: tuple[str, str, str] | None = None    # (morphometrics column, low name, high name)
    whole: bool = False                              # no expert trains on this set: use both halves
    shift: str | None = None                         # a domain shift applied to every image (SHIFTS)

    def key(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if not (k == "shift" and v is None)}  # earlier keys kept
        blob = json.dumps(fields, sort_keys=True)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _blur(im: Image.Image) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.04 * min(im.size))))


def _lowres(im: Image.Image) -> Image.Image:
    w, h = im.size
    small = im.resize((max(8, w // 4), max(8, h // 4)), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.BILINEAR)


# Domain shifts of held-back images (issue 18): each maps an RGB image to an RGB image of any size.
SHIFTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "rot90": lambda im: im.rotate(90, expand=True),
    "rot180": lambda im: im.rotate(180),
    "invert": lambda im: ImageOps.invert(im),
    "gray": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "blur": _blur,
    "lowres": _lowres,
}
# Data sets from installed packages that no zoo entry was trained on, written out as ImageFolders.
EXTERNAL = ("sklearn:digits",)  # the UCI optical digits (scikit-learn, 1,797 8x8 images, other writers)


_ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
_VEHICLES = ("airplane", "automobile", "ship", "truck")
_DOGS = ("n02085620", "n02094433", "n02099601", "n02099712", "n02106662", "n02113799")
_FOOD = ("n07579787", "n07583066", "n07614500", "n07695742", "n07711569", "n07747607", "n07753592",
         "n07768694", "n07873807", "n07920052")
_CARS = ("n02814533", "n03100240", "n03670208", "n03796401", "n03977966", "n04285008", "n04465501",
         "n04487081", "n03444034", "n03930313")

TARGETS: tuple[Target, ...] = (
    # handwritten digits
    Target("mnist-10way", "mnist_test", 10, 30, "digits"),
    Target("mnist-3-5-8", "mnist_test", 10, 40, "digits", classes=("3", "5", "8")),
    Target("mnist-4-vs-9", "mnist_test", 10, 40, "digits", classes=("4", "9")),
    Target("mnist-1-vs-7", "mnist_test", 5, 40, "digits", classes=("1", "7")),
    Target("mnist-odd-even", "mnist_test", 20, 60, "digits",
           groups=(("even", ("0", "2", "4", "6", "8")), ("odd", ("1", "3", "5", "7", "9")))),
    Target("mnist-thickness", "mnist_test", 20, 60, "digits", attribute=("thickness", "thin", "thick")),
    Target("mnist-slant", "mnist_test", 20, 60, "digits", attribute=("slant", "left", "right")),
    Target("mnist-size", "mnist_test", 20, 60, "digits", attribute=("area", "small", "large")),
    # printed letters
    Target("notmnist-10way", "notmnist_test", 10, 30, "letters"),
    Target("notmnist-a-e", "notmnist_test", 10, 40, "letters", classes=("A", "B", "C", "D", "E")),
    Target("notmnist-f-j", "notmnist_test", 10, 40, "letters", classes=("F", "G", "H", "I", "J")),
    Target("notmnist-i-vs-j", "notmnist_test", 20, 60, "letters", classes=("I", "J")),
    # oracle-bone characters
    Target("oracle-10way", "oracle_mnist_test", 10, 30, "oracle"),
    Target("oracle-5way-a", "oracle_mnist_test", 10, 40, "oracle", ways=5),
    Target("oracle-3way", "oracle_mnist_test", 5, 40, "oracle", ways=3),
    # Omniglot: alphabets, characters within one alphabet, drawers
    Target("omniglot-alphabets", "omniglot_small/labels.csv", 10, 30, "omniglot", column="alphabet"),
    Target("omniglot-balinese-chars", "omniglot_small/labels.csv", 3, 7, "omniglot", column="character",
           prefix="Balinese/", ways=10),
    Target("omniglot-sanskrit-chars", "omniglot_small/labels.csv", 3, 7, "omniglot", column="character",
           prefix="Sanskrit/", ways=10),
    Target("omniglot-greek-chars", "omniglot_small/labels.csv", 3, 7, "omniglot", column="character",
           prefix="Greek/", ways=10),
    Target("omniglot-korean-chars", "omniglot_small/labels.csv", 3, 7, "omniglot", column="character",
           prefix="Korean/", ways=10),
    Target("omniglot-drawer", "omniglot_small/labels.csv", 20, 40, "omniglot", column="drawer", ways=4),
    # CIFAR-10
    Target("cifar10-10way", "cifar10_test", 10, 30, "natural"),
    Target("cifar10-animal-vehicle", "cifar10_test", 20, 60, "natural",
           groups=(("animal", _ANIMALS), ("vehicle", _VEHICLES))),
    Target("cifar10-cat-vs-dog", "cifar10_test", 20, 60, "natural", classes=("cat", "dog")),
    Target("cifar10-vehicles", "cifar10_test", 10, 40, "natural", classes=_VEHICLES),
    Target("cifar10-animals", "cifar10_test", 10, 40, "natural", classes=_ANIMALS),
    # Tiny-ImageNet (25 target-half images per class)
    Target("tiny-5way-a", "tiny_imagenet_val", 10, 15, "natural", ways=5),
    Target("tiny-5way-b", "tiny_imagenet_val", 10, 15, "natural", ways=5),
    Target("tiny-5way-c", "tiny_imagenet_val", 5, 15, "natural", ways=5),
    Target("tiny-20way", "tiny_imagenet_val", 5, 15, "natural", ways=20),
    Target("tiny-dogs", "tiny_imagenet_val", 10, 15, "natural", classes=_DOGS),
    Target("tiny-food", "tiny_imagenet_val", 10, 15, "natural", classes=_FOOD),
    Target("tiny-vehicles", "tiny_imagenet_val", 10, 15, "natural", classes=_CARS),
    Target("tiny-animal-vs-object", "tiny_imagenet_val", 20, 40, "natural",
           groups=(("animal", _DOGS + ("n01443537", "n01629819", "n02123045", "n02129165")),
                   ("object", _CARS + _FOOD[:4]))),
    # flowers, X-rays, and two sets no expert was trained on
    Target("flowers-5way", "flowers5", 10, 40, "natural"),
    Target("flowers-daisy-dandelion", "flowers5", 10, 40, "natural", classes=("daisy", "dandelion")),
    Target("flowers-rose-tulip", "flowers5", 10, 40, "natural", classes=("rose", "tulip")),
    Target("pneumonia-20shot", "pneumoniamnist", 20, 80, "x-ray"),
    Target("pneumonia-5shot", "pneumoniamnist", 5, 80, "x-ray"),
    Target("hymenoptera", "hymenoptera", 20, 60, "natural", whole=True),
    Target("small-books", "small_books/train", 3, 10, "natural", whole=True),
)

# Fresh targets, written down before the evidence check of the recommender (Task2Vec's first pick
# against the probe, by LogME) was ever scored on them: the 41 above are where that idea came from,
# so these are its independent test (``--holdout``). The same families in about the same
# proportions, none of them a copy of a target above.
HOLDOUT: tuple[Target, ...] = (
    Target("mnist-0-2-6", "mnist_test", 10, 40, "digits", classes=("0", "2", "6")),
    Target("mnist-width", "mnist_test", 20, 60, "digits", attribute=("width", "narrow", "wide")),
    Target("notmnist-c-g-h", "notmnist_test", 10, 40, "letters", classes=("C", "G", "H")),
    Target("oracle-sun-moon", "oracle_mnist_test", 10, 40, "oracle", classes=("sun", "moon")),
    Target("omniglot-latin-chars", "omniglot_small/labels.csv", 3, 7, "omniglot", column="character",
           prefix="Latin/", ways=10),
    Target("omniglot-katakana-chars", "omniglot_small/labels.csv", 3, 7, "omniglot", column="character",
           prefix="Japanese_(katakana)/", ways=10),
    Target("cifar10-ship-truck", "cifar10_test", 20, 60, "natural", classes=("ship", "truck")),
    Target("cifar10-bird-frog-horse", "cifar10_test", 5, 40, "natural", classes=("bird", "frog", "horse")),
    Target("tiny-5way-d", "tiny_imagenet_val", 10, 15, "natural", ways=5),
    Target("tiny-10way", "tiny_imagenet_val", 5, 15, "natural", ways=10),
    Target("flowers-3way", "flowers5", 5, 40, "natural", classes=("dandelion", "sunflower", "tulip")),
    Target("pneumonia-10shot", "pneumoniamnist", 10, 80, "x-ray"),
    # 12 more, added after the first 12 were scored and before these were, to narrow the intervals;
    # the rule of the check (CHECK_TOP = 1) is unchanged
    Target("mnist-2-vs-3", "mnist_test", 5, 40, "digits", classes=("2", "3")),
    Target("mnist-length", "mnist_test", 20, 60, "digits", attribute=("length", "short", "long")),
    Target("notmnist-a-d-g-j", "notmnist_test", 5, 40, "letters", classes=("A", "D", "G", "J")),
    Target("oracle-4way", "oracle_mnist_test", 10, 40, "oracle", ways=4),
    Target("omniglot-tagalog-chars", "omniglot_small/labels.csv", 3, 7, "omniglot", column="character",
           prefix="Tagalog/", ways=10),
    Target("omniglot-aramaic-chars", "omniglot_small/labels.csv", 3, 7, "omniglot", column="character",
           prefix="Early_Aramaic/", ways=10),
    Target("cifar10-deer-horse", "cifar10_test", 10, 60, "natural", classes=("deer", "horse")),
    Target("cifar10-5way", "cifar10_test", 5, 40, "natural", ways=5),
    Target("tiny-5way-e", "tiny_imagenet_val", 10, 15, "natural", ways=5),
    Target("tiny-3way", "tiny_imagenet_val", 10, 15, "natural", ways=3),
    Target("flowers-daisy-sunflower", "flowers5", 10, 40, "natural", classes=("daisy", "sunflower")),
    Target("pneumonia-3shot", "pneumoniamnist", 3, 80, "x-ray"),
)

QUICK = ("mnist-4-vs-9", "cifar10-cat-vs-dog", "mnist-thickness", "flowers-daisy-dandelion")
FINETUNE_CHECK = ("mnist-4-vs-9", "notmnist-a-e", "oracle-5way-a", "omniglot-alphabets", "cifar10-cat-vs-dog",
                  "tiny-dogs", "flowers-5way", "pneumonia-20shot")


# Issue 18's families, written down before anything was scored on them: domain shifts of held-back
# (target-half) images, relabellings, and a data set from a package that no expert saw. They stress the
# failure the issue describes: a shifted target that *looks like* one expert's source while a broad
# expert or the generalist transfers better. ``--families`` scores them; the FAMILIES_HOLDOUT targets
# (the same families, other classes and shifts) are scored once, after the rule was chosen.
_DIGITS = tuple(str(i) for i in range(10))
SHIFTED: tuple[Target, ...] = (
    # rotated
    Target("mnist-rot90-10way", "mnist_test", 10, 30, "rotated", shift="rot90"),
    Target("notmnist-rot180-a-e", "notmnist_test", 10, 40, "rotated", classes=("A", "B", "C", "D", "E"),
           shift="rot180"),
    Target("cifar10-rot90-vehicles", "cifar10_test", 10, 40, "rotated", classes=_VEHICLES, shift="rot90"),
    Target("flowers-rot180-5way", "flowers5", 10, 40, "rotated", shift="rot180"),
    # colour-inverted
    Target("mnist-invert-3-5-8", "mnist_test", 10, 40, "inverted", classes=("3", "5", "8"), shift="invert"),
    Target("notmnist-invert-10way", "notmnist_test", 10, 30, "inverted", shift="invert"),
    Target("omniglot-invert-alphabets", "omniglot_small/labels.csv", 10, 30, "inverted", column="alphabet",
           shift="invert"),
    Target("cifar10-invert-animals", "cifar10_test", 10, 40, "inverted", classes=_ANIMALS, shift="invert"),
    # grayscale
    Target("cifar10-gray-10way", "cifar10_test", 10, 30, "grayscale", shift="gray"),
    Target("tiny-gray-5way", "tiny_imagenet_val", 10, 15, "grayscale", ways=5, shift="gray"),
    Target("flowers-gray-5way", "flowers5", 10, 40, "grayscale", shift="gray"),
    Target("hymenoptera-gray", "hymenoptera", 20, 60, "grayscale", whole=True, shift="gray"),
    # blurred
    Target("cifar10-blur-animal-vehicle", "cifar10_test", 20, 60, "blurred", shift="blur",
           groups=(("animal", _ANIMALS), ("vehicle", _VEHICLES))),
    Target("flowers-blur-rose-tulip", "flowers5", 10, 40, "blurred", classes=("rose", "tulip"), shift="blur"),
    Target("tiny-blur-dogs", "tiny_imagenet_val", 10, 15, "blurred", classes=_DOGS, shift="blur"),
    # a quarter of the resolution
    Target("tiny-lowres-food", "tiny_imagenet_val", 10, 15, "low-res", classes=_FOOD, shift="lowres"),
    Target("flowers-lowres-5way", "flowers5", 10, 40, "low-res", shift="lowres"),
    Target("pneumonia-lowres-20shot", "pneumoniamnist", 20, 80, "low-res", shift="lowres"),
    # relabelled: new classes from unions of the source classes
    Target("mnist-round-vs-straight", "mnist_test", 20, 60, "relabelled",
           groups=(("round", ("0", "6", "8", "9")), ("straight", ("1", "4", "7")))),
    Target("mnist-low-vs-high", "mnist_test", 20, 60, "relabelled", groups=(("low", _DIGITS[:5]), ("high", _DIGITS[5:]))),
    Target("notmnist-vowel-consonant", "notmnist_test", 20, 60, "relabelled",
           groups=(("vowel", ("A", "E", "I")), ("consonant", ("B", "C", "D", "F", "G", "H", "J")))),
    Target("cifar10-pets-vs-wild", "cifar10_test", 20, 60, "relabelled",
           groups=(("pet", ("cat", "dog")), ("wild", ("bird", "deer", "frog")))),
    Target("flowers-yellow-vs-not", "flowers5", 20, 60, "relabelled",
           groups=(("yellow", ("dandelion", "sunflower")), ("other", ("daisy", "rose", "tulip")))),
    # external: other writers' digits, 8x8
    Target("uci-digits-10way", "sklearn:digits", 10, 30, "external", whole=True),
    Target("uci-digits-3-5-8", "sklearn:digits", 10, 40, "external", classes=("3", "5", "8"), whole=True),
    Target("uci-digits-invert-4-vs-9", "sklearn:digits", 10, 40, "external", classes=("4", "9"), whole=True,
           shift="invert"),
)
SHIFTED_HOLDOUT: tuple[Target, ...] = (
    Target("mnist-rot180-0-2-6", "mnist_test", 10, 40, "rotated", classes=("0", "2", "6"), shift="rot180"),
    Target("notmnist-rot90-f-j", "notmnist_test", 10, 40, "rotated", classes=("F", "G", "H", "I", "J"), shift="rot90"),
    Target("oracle-invert-5way", "oracle_mnist_test", 10, 40, "inverted", ways=5, shift="invert"),
    Target("pneumonia-invert-10shot", "pneumoniamnist", 10, 80, "inverted", shift="invert"),
    Target("cifar10-gray-cat-vs-dog", "cifar10_test", 20, 60, "grayscale", classes=("cat", "dog"), shift="gray"),
    Target("tiny-gray-vehicles", "tiny_imagenet_val", 10, 15, "grayscale", classes=_CARS, shift="gray"),
    Target("flowers-blur-daisy-sunflower", "flowers5", 10, 40, "blurred", classes=("daisy", "sunflower"), shift="blur"),
    Target("cifar10-lowres-ship-truck", "cifar10_test", 20, 60, "low-res", classes=("ship", "truck"), shift="lowres"),
    Target("oracle-sky-vs-earth", "oracle_mnist_test", 20, 60, "relabelled",
           groups=(("sky", ("sun", "moon")), ("earth", ("field", "wood", "cattle")))),
    Target("uci-digits-rot90-1-vs-7", "sklearn:digits", 10, 40, "external", classes=("1", "7"), whole=True,
           shift="rot90"),
    Target("uci-digits-0-2-6", "sklearn:digits", 10, 40, "external", classes=("0", "2", "6"), whole=True),
    Target("tiny-invert-5way", "tiny_imagenet_val", 10, 15, "inverted", ways=5, shift="invert"),
)


@dataclass
class TargetData:
    """The images of one target: ``train`` / ``test`` as :class:`ImageTask` with the same classes."""

    target: Target
    train: ImageTask
    test: ImageTask


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))


def _attribute_labels(root: Path, rel: list[str], column: str, names: tuple[str, str]) -> dict[str, str]:
    """Lower vs upper tertile of a morphometrics column over the given images (middle third dropped)."""
    table = root / "morphometrics.csv"
    with open(table, newline="") as f:
        values = {row["path"]: float(row[column]) for row in csv.DictReader(f)}
    here = np.array([values[r] for r in rel if r in values])
    lo, hi = np.quantile(here, [1 / 3, 2 / 3])
    return {r: names[0] if values[r] <= lo else names[1] for r in rel if r in values and not lo < values[r] < hi}


def external_folder(name: str, cache: Path) -> Path:
    """An :data:`EXTERNAL` data set written once as an ImageFolder of PNGs under ``cache``."""
    if name != "sklearn:digits":
        raise DatasetError(f"unknown external data set {name!r}: choose one of {EXTERNAL}")
    root = cache / "external" / "sklearn-digits"
    if not (root / ".complete").is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        for i, (image, label) in enumerate(zip(digits.images, digits.target)):
            (root / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * (255 / 16)).round().astype(np.uint8)).save(root / str(label) / f"{i:04d}.png")
        (root / ".complete").touch()
    return root


def shifted_task(task: ImageTask, shift: str, folder: Path) -> ImageTask:
    """``task`` with :data:`SHIFTS` ``[shift]`` applied to every image, written once as PNGs in ``folder``."""
    fn = SHIFTS[shift]
    paths = []
    for i, (p, y) in enumerate(zip(task.paths, task.labels)):
        out = folder / task.classes[int(y)] / f"{i:05d}.png"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            fn(load_rgb(p)).save(out)
        paths.append(out)
    return ImageTask(paths, task.labels.copy(), task.classes, folder, source=task.source)


def build_target(target: Target, data_root: Path, split_seed: int = 0, cache: Path | None = None) -> TargetData:
    """Draw a target's train/test images from the target half of its data set, seeded by its name.

    A shifted or external target writes its images under ``cache`` (required for those).
    """
    if (target.shift is not None or target.dataset in EXTERNAL) and cache is None:
        raise DatasetError(f"target {target.name!r} writes its images: give a cache folder")
    if target.shift is not None and target.shift not in SHIFTS:
        raise DatasetError(f"target {target.name!r}: unknown shift {target.shift!r}")
    source = external_folder(target.dataset, cache) if target.dataset in EXTERNAL else data_root / target.dataset
    full = load_task(source, label_column=target.column)
    rel = full.relative_paths()
    keep = [i for i, r in enumerate(rel) if target.whole or image_half(r, split_seed) == "target"]
    label_of = {i: full.classes[int(full.labels[i])] for i in keep}
    if target.attribute is not None:
        column, low, high = target.attribute
        by_rel = _attribute_labels(full.root, [rel[i] for i in keep], column, (low, high))
        label_of = {i: by_rel[rel[i]] for i in keep if rel[i] in by_rel}
    elif target.groups is not None:
        member = {c: new for new, olds in target.groups for c in olds}
        label_of = {i: member[c] for i, c in label_of.items() if c in member}
    else:
        names = sorted(set(label_of.values()))
        if target.classes is not None:
            missing = [c for c in target.classes if c not in names]
            if missing:
                raise DatasetError(f"target {target.name!r}: class {missing[0]!r} not in {target.dataset!r}")
            names = list(target.classes)
        if target.prefix is not None:
            names = [c for c in names if c.startswith(target.prefix)]
        if target.ways is not None:  # sample among the classes with enough images
            counts = {c: n for c, n in zip(*np.unique(list(label_of.values()), return_counts=True))}
            names = [c for c in names if counts.get(c, 0) >= target.shots + 2]
            names = sorted(_rng(target.name + "/classes").choice(names, size=target.ways, replace=False).tolist())
        label_of = {i: c for i, c in label_of.items() if c in set(names)}
    classes = sorted(set(label_of.values()))
    rng = _rng(target.name)
    train: list[tuple[Path, int]] = []
    test: list[tuple[Path, int]] = []
    for k, c in enumerate(classes):
        members = rng.permutation(sorted(i for i, lab in label_of.items() if lab == c))
        if len(members) < target.shots + 2:
            raise DatasetError(f"target {target.name!r}: class {c!r} has {len(members)} target-half images, "
                               f"fewer than {target.shots} + 2")
        train += [(full.paths[i], k) for i in members[:target.shots]]
        test += [(full.paths[i], k) for i in members[target.shots:target.shots + target.test]]

    def task(items: list[tuple[Path, int]], part: str) -> ImageTask:
        return ImageTask([p for p, _ in items], np.array([y for _, y in items], dtype=np.int64), classes,
                         full.root, source=f"target:{target.name}:{part}")

    data = TargetData(target, task(train, "train"), task(test, "test"))
    if target.shift is not None:
        folder = cache / "shifted" / target.key()
        data = TargetData(target, shifted_task(data.train, target.shift, folder / "train"),
                          shifted_task(data.test, target.shift, folder / "test"))
    return data
