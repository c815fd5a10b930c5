"""Extra training signals for fine-tuning: auxiliary labels, superclass groups, their heads and losses.

Everything here is used only while training. :class:`MultiTaskModel` returns the main logits from
``forward``, so inference, export and prediction never see an auxiliary head.

Auxiliary-label CSV (:func:`load_aux_labels`)
---------------------------------------------
UTF-8 (a BOM is fine), one header row of non-empty, unique names; cells are trimmed. The table is
keyed one of two ways:

* **per image**: it has a path column (the first of ``path, filepath, file, filename, image``
  present). A path names a task image when, after ``posixpath.normpath`` (``./a.png`` = ``a.png``),
  it equals the image's path relative to the task root (``task.relative_paths()``); failing that,
  when the path taken relative to the CSV's own folder (or an absolute path) resolves, symlinks
  followed, to the image's file. The first rule wins. So ``mnist_test/morphometrics.csv``
  (``7/img_00000.png``) and ``omniglot_small/labels.csv`` (``images/...``) both work, as does a CSV
  kept elsewhere that writes ``../mnist_test/7/img_00000.png``.
* **per class**: no path column, and a column ``class`` (else ``label``) whose values are the task's
  class names, exactly; every image of the class gets that row.

Every task image (per image) or class (per class) needs exactly one row: a key naming nothing in
the task and a task image or class without a row are errors, and so is a repeated key, unless its
rows agree on every label cell (an exact duplicate row, as ``omniglot_small/labels.csv`` has, is
read once). A file the task lists twice gets its row twice. An empty cell means "no label here":
that image is masked out of that column's loss.

By default every column except the key and the main-label columns ``class`` / ``label`` (they
repeat the task's own label, as in ``morphometrics.csv``) is a target; ``columns`` picks others.

Kinds (``kinds`` sets them per column; otherwise auto-detected)
---------------------------------------------------------------
* ``bce``: a soft score in [0, 1] (``ear_erect 0.8``). One sigmoid output per column, trained with
  binary cross-entropy on the soft target, ``-[t log s(x) + (1-t) log(1-s(x))]``.
* ``ce``: categorical. The distinct strings, sorted, are the categories (at least 2); softmax and
  cross-entropy.
* ``reg``: numeric, standardised with the mean and population std of the labelled images (a
  per-class row counts once per image), trained with smooth L1 (Huber, beta 1) on the standardised
  value: squared error within one std, linear beyond, so a few odd images (very slanted or thick
  strokes) cannot dominate the gradient.

Auto-detection: every value a finite number: ``bce`` if all lie in [0, 1], else ``reg``; no value a
number: ``ce``. A column mixing numbers and text is an error (usually ``n/a`` typed into a numeric
column): set its kind. ``nan`` / ``inf`` are not numbers; leave a missing cell empty.

Each column gets its own Linear head on the shared penultimate features (width 1 for bce / reg,
one output per category for ce). A column's loss is the mean over the batch's labelled rows, and
the auxiliary loss is the weighted sum of the column losses.

Superclass groups (:func:`load_groups`)
---------------------------------------
A JSON object ``{"natural": ["bird", "cat", ...], "artificial": ["airplane", ...]}``: at least two
non-empty groups of known class names, each class in at most one group. Classes in no group are
allowed; their images are left out of the group loss. :func:`superclass_loss` is the negative log of
the probability of the true class's group, the softmax summed over the group's classes (the soft
version, not the group of the arg-max), computed as logsumexp(member logits) - logsumexp(all logits).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import PATH_COLUMNS, ImageTask
from ..errors import FinetuneError

KINDS = ("bce", "ce", "reg")
CLASS_COLUMNS = ("class", "label")


# ----------------------------------------------------------------------------- auxiliary labels
@dataclass
class AuxColumn:
    """One auxiliary target, aligned with the task's images (0 in ``target`` where ``mask`` is False)."""

    name: str
    kind: str
    target: Tensor  # float32 for bce and (standardised) reg, int64 for ce
    mask: Tensor  # bool: the image has a value
    categories: list[str] = field(default_factory=list)  # ce: category names, index = target
    mean: float | None = None  # reg: raw value = target * std + mean
    std: float | None = None

    @property
    def width(self) -> int:
        """Outputs its head needs: the number of categories for ce, else 1."""
        return len(self.categories) if self.kind == "ce" else 1

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind, "labelled": int(self.mask.sum())}
        if self.kind == "ce":
            info["categories"] = list(self.categories)
        if self.kind == "reg":
            info["mean"], info["std"] = self.mean, self.std
        return info


@dataclass
class AuxLabels:
    """Auxiliary targets for every image of a task, read from one CSV."""

    source: str
    key: str  # "image" or "class"
    key_column: str
    columns: dict[str, AuxColumn]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())).mask)

    def targets_for(self, indices: Tensor, device: torch.device | str | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """``{column: (target, mask)}`` for a batch, given the images' indices in the task."""
        idx = torch.as_tensor(indices, dtype=torch.long).cpu()
        return {name: (c.target[idx].to(device), c.mask[idx].to(device)) for name, c in self.columns.items()}

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for the run configuration."""
        return {
            "source": self.source,
            "key": self.key,
            "key_column": self.key_column,
            "columns": {name: c.describe() for name, c in self.columns.items()},
        }


def _read_text(path: str | os.PathLike, what: str) -> str:
    """The file's text (UTF-8, BOM dropped); a missing or unreadable file is a one-line error."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FinetuneError(f"{what} {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise FinetuneError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise FinetuneError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None


def _read_table(csv_path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, trimmed rows padded to the header's width, and each row's line number."""
    src = str(csv_path)
    text = _read_text(csv_path, "aux CSV")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip() for h in next(reader, [])]
        rows, lines = [], []
        for raw in reader:
            cells = [c.strip() for c in raw]
            if not any(cells):
                continue
            if len(cells) > len(header) and any(cells[len(header):]):
                raise FinetuneError(f"aux CSV {src!r} line {reader.line_num} has more cells than its header")
            rows.append((cells + [""] * len(header))[: len(header)])
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise FinetuneError(f"aux CSV {src!r} is malformed: {exc}") from exc
    if not header or not any(header):
        raise FinetuneError(f"aux CSV {src!r} is empty")
    if "" in header:
        raise FinetuneError(f"aux CSV {src!r} has an unnamed column (column {header.index('') + 1})")
    dup = next((h for i, h in enumerate(header) if h in header[:i]), None)
    if dup is not None:
        raise FinetuneError(f"aux CSV {src!r} has two columns named {dup!r}")
    if not rows:
        raise FinetuneError(f"aux CSV {src!r} has no rows")
    return header, rows, lines


def _examples(values: Sequence[str], n: int = 3) -> str:
    return ", ".join(repr(v) for v in values[:n]) + (", ..." if len(values) > n else "")


def _match_keys(src: str, k: int, header: list[str], rows: list[list[str]], lines: list[int],
                names: dict[str, int], what: str, by_file: Callable[[str], int | None] | None = None) -> Tensor:
    """The CSV row of every task item (unique image file or class): exactly one per item.

    Paths are compared after ``posixpath.normpath``, then through ``by_file``. A repeated key is
    an error unless the rows agree on every label cell (then the first row is used).
    """
    row_of_item = torch.full((len(names),), -1, dtype=torch.long)
    unknown: list[str] = []
    for r, (row, line) in enumerate(zip(rows, lines)):
        key = row[k]
        if not key:
            raise FinetuneError(f"aux CSV {src!r} line {line}: empty {header[k]!r}")
        i = names.get(posixpath.normpath(key) if by_file else key)
        if i is None and by_file is not None:
            i = by_file(key)
        if i is None:
            unknown.append(key)
            continue
        first = int(row_of_item[i])
        if first < 0:
            row_of_item[i] = r
        elif rows[first][:k] + rows[first][k + 1:] != row[:k] + row[k + 1:]:
            raise FinetuneError(f"aux CSV {src!r} lines {lines[first]} and {line} give different labels for {what} {key!r}")
    if unknown:
        raise FinetuneError(f"aux CSV {src!r}: {len(unknown)} {header[k]!r} value(s) match no task {what}: {_examples(unknown)}")
    if bool((row_of_item < 0).any()):
        missing = [name for name, i in names.items() if row_of_item[i] < 0]
        raise FinetuneError(
            f"aux CSV {src!r} has no row for {len(missing)} of {len(names)} task {what}{'es' if what == 'class' else 's'}, "
            f"e.g. {missing[0]!r}"
        )
    return row_of_item


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _build_column(src: str, name: str, kind: str | None, cells: list[str], lines: list[int],
                  row_of_image: Tensor) -> AuxColumn:
    """Parse one column's cells (one per CSV row) into targets aligned with the task's images."""
    present = [(c, line) for c, line in zip(cells, lines) if c]
    if not present:
        raise FinetuneError(f"aux CSV {src!r}: column {name!r} has no values")
    if kind is None:
        text = [(c, line) for c, line in present if _number(c) is None]
        if len(text) == len(present):
            kind = "ce"
        elif text:
            c, line = text[0]
            raise FinetuneError(
                f"aux CSV {src!r}: column {name!r} mixes numbers and text (line {line}: {c!r}); set its kind to bce, ce or reg"
            )
        else:
            kind = "bce" if all(0.0 <= _number(c) <= 1.0 for c, _ in present) else "reg"
    row_mask = torch.tensor([bool(c) for c in cells])
    categories: list[str] = []
    if kind == "ce":
        categories = sorted({c for c, _ in present})
        if len(categories) < 2:
            raise FinetuneError(f"aux CSV {src!r}: ce column {name!r} has fewer than 2 categories ({categories[0]!r})")
        index = {c: i for i, c in enumerate(categories)}
        row_target = torch.tensor([index.get(c, 0) for c in cells], dtype=torch.long)
    else:
        values = []
        for c, line in zip(cells, lines):
            value = _number(c) if c else 0.0
            if value is None:
                raise FinetuneError(f"aux CSV {src!r}: {kind} column {name!r} has a non-numeric cell {c!r} on line {line}")
            if kind == "bce" and not 0.0 <= value <= 1.0:
                raise FinetuneError(f"aux CSV {src!r}: bce column {name!r} has {c!r} outside [0, 1] on line {line}")
            values.append(value)
        row_target = torch.tensor(values, dtype=torch.float64)
    target, mask = row_target[row_of_image], row_mask[row_of_image]
    if kind == "ce":
        return AuxColumn(name, kind, target, mask, categories=categories)
    if kind == "bce":
        return AuxColumn(name, kind, target.float(), mask)
    labelled = target[mask]
    if len(torch.unique(labelled)) < 2:
        raise FinetuneError(f"aux CSV {src!r}: reg column {name!r} has zero variance (every value {present[0][0]!r})")
    mean, std = labelled.mean(), labelled.std(correction=0)
    standard = torch.where(mask, (target - mean) / std, torch.zeros_like(target))
    return AuxColumn(name, kind, standard.float(), mask, mean=float(mean), std=float(std))


def load_aux_labels(csv_path: str | os.PathLike, task: ImageTask, columns: Sequence[str] | None = None,
                    kinds: Mapping[str, str] | None = None) -> AuxLabels:
    """Read auxiliary targets for ``task`` from a per-image or per-class CSV (see the module docstring)."""
    csv_path = Path(csv_path)
    src = str(csv_path)
    header, rows, lines = _read_table(csv_path)
    key_column = next((c for c in PATH_COLUMNS if c in header), None)
    key = "image"
    if key_column is None:
        key_column = next((c for c in CLASS_COLUMNS if c in header), None)
        key = "class"
    if key_column is None:
        raise FinetuneError(
            f"aux CSV {src!r} has no key column (a path column: {', '.join(PATH_COLUMNS)}; or a class column: class, label)"
        )
    k = header.index(key_column)
    if key == "image":
        if not hasattr(task, "relative_paths"):
            raise FinetuneError(f"aux CSV {src!r} is keyed by image path, but the task is not a list of image files")
        names: dict[str, int] = {}  # unique relative path -> item; a task may list one file twice
        item_of_image = torch.tensor([names.setdefault(p, len(names)) for p in task.relative_paths()], dtype=torch.long)
        resolved: dict[Path, int] = {}

        def by_file(value: str) -> int | None:
            if not resolved:
                resolved.update({p.resolve(): int(i) for p, i in zip(task.paths, item_of_image)})
            return resolved.get((csv_path.parent / value).resolve())

        row_of_image = _match_keys(src, k, header, rows, lines, names, "image", by_file)[item_of_image]
    else:
        names = {c: i for i, c in enumerate(task.classes)}
        row_of_class = _match_keys(src, k, header, rows, lines, names, "class")
        row_of_image = row_of_class[torch.as_tensor(task.labels, dtype=torch.long)]

    if columns is None:
        chosen = [c for c in header if c != key_column and c not in CLASS_COLUMNS]
        if not chosen:
            raise FinetuneError(f"aux CSV {src!r} has no auxiliary label columns besides {key_column!r}")
    else:
        chosen = list(columns)
        if not chosen:
            raise FinetuneError(f"no auxiliary columns chosen from aux CSV {src!r}")
        for c in chosen:
            if c not in header:
                raise FinetuneError(f"aux CSV {src!r} has no column {c!r} (columns: {', '.join(header)})")
            if c == key_column:
                raise FinetuneError(f"aux CSV {src!r}: column {c!r} is the key column, not a label")
        dup = next((c for i, c in enumerate(chosen) if c in chosen[:i]), None)
        if dup is not None:
            raise FinetuneError(f"auxiliary column {dup!r} is chosen twice")
    kinds = dict(kinds or {})
    for c, kind in kinds.items():
        if c not in chosen:
            raise FinetuneError(f"a kind is set for column {c!r}, which is not among the auxiliary columns of {src!r}")
        if kind not in KINDS:
            raise FinetuneError(f"unknown kind {kind!r} for auxiliary column {c!r} (choose bce, ce or reg)")
    built = {}
    for c in chosen:
        j = header.index(c)
        built[c] = _build_column(src, c, kinds.get(c), [row[j] for row in rows], lines, row_of_image)
    return AuxLabels(src, key, key_column, built)


def column_loss(kind: str, output: Tensor, target: Tensor) -> Tensor:
    """Mean loss of one column over the given (labelled) rows: BCE on soft targets, CE, or smooth L1."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(output, target.to(output.dtype))
    if kind == "ce":
        return F.cross_entropy(output, target.long())
    if kind == "reg":
        return F.smooth_l1_loss(output, target.to(output.dtype), beta=1.0)
    raise FinetuneError(f"unknown kind {kind!r} (choose bce, ce or reg)")


class AuxHeads(nn.Module):
    """One Linear head per auxiliary column on the shared penultimate features."""

    def __init__(self, in_features: int, aux: AuxLabels):
        super().__init__()
        if in_features < 1:
            raise FinetuneError(f"auxiliary heads need at least 1 input feature, got {in_features}")
        if not aux.columns:
            raise FinetuneError(f"aux labels from {aux.source!r} have no columns")
        self.names = list(aux.columns)
        self.kinds = [aux.columns[n].kind for n in self.names]
        self.heads = nn.ModuleList(nn.Linear(in_features, aux.columns[n].width) for n in self.names)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        """``{column: output}``: N logits (bce), N values (reg) or N x categories logits (ce)."""
        outputs = {}
        for name, kind, head in zip(self.names, self.kinds, self.heads):
            y = head(features)
            outputs[name] = y if kind == "ce" else y.squeeze(-1)
        return outputs

    def _weights(self, weights: Mapping[str, float] | float) -> dict[str, float]:
        if isinstance(weights, Mapping):
            unknown = [n for n in weights if n not in self.names]
            if unknown:
                raise FinetuneError(f"auxiliary weight given for unknown column {unknown[0]!r}")
            missing = [n for n in self.names if n not in weights]
            if missing:
                raise FinetuneError(f"no auxiliary weight for column {missing[0]!r}")
            lam = {n: float(weights[n]) for n in self.names}
        else:
            lam = dict.fromkeys(self.names, float(weights))
        bad = next((n for n, w in lam.items() if not (math.isfinite(w) and w >= 0)), None)
        if bad is not None:
            raise FinetuneError(f"auxiliary weight {lam[bad]!r} for column {bad!r} must be finite and >= 0")
        return lam

    def loss(self, outputs: Mapping[str, Tensor], targets_and_masks: Mapping[str, tuple[Tensor, Tensor]],
             weights: Mapping[str, float] | float) -> tuple[Tensor, dict[str, float]]:
        """Weighted sum of the column losses, and each column's loss for logging.

        Only labelled rows count; a column with no labelled row in the batch adds 0 (still connected
        to the graph) and is left out of the logged values.
        """
        lam = self._weights(weights)
        total: Tensor | None = None
        logged: dict[str, float] = {}
        for name, kind in zip(self.names, self.kinds):
            if name not in outputs or name not in targets_and_masks:
                raise FinetuneError(f"no output or target for auxiliary column {name!r}")
            out = outputs[name]
            target, mask = targets_and_masks[name]
            target, mask = target.to(out.device), mask.to(out.device, torch.bool)
            if bool(mask.any()):
                value = column_loss(kind, out[mask], target[mask])
                logged[name] = float(value.detach())
            else:
                value = out.sum() * 0.0
            term = lam[name] * value
            total = term if total is None else total + term
        return total, logged


# ----------------------------------------------------------------------------- superclass groups
@dataclass
class Groups:
    """Superclass groups over a task's classes."""

    names: list[str]
    classes: list[str]
    matrix: Tensor  # float C x G, 1 where class c is in group g
    group_of: Tensor  # long C, the group of each class, -1 when ungrouped

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for the run configuration."""
        members = {g: [c for c, j in zip(self.classes, self.group_of.tolist()) if j == i] for i, g in enumerate(self.names)}
        return {"groups": members, "ungrouped": [c for c, j in zip(self.classes, self.group_of.tolist()) if j < 0]}


def make_groups(mapping: Any, classes: Sequence[str], source: str = "groups") -> Groups:
    """Check a ``{group: [class, ...]}`` mapping against the task's classes and build :class:`Groups`."""
    if not isinstance(mapping, dict):
        raise FinetuneError(f"{source!r} must be a JSON object of group name -> list of class names")
    if len(mapping) < 2:
        raise FinetuneError(f"{source!r} has {len(mapping)} group(s); the superclass loss needs at least 2")
    index = {c: i for i, c in enumerate(classes)}
    group_of = torch.full((len(classes),), -1, dtype=torch.long)
    unknown: list[str] = []
    for g, (name, members) in enumerate(mapping.items()):
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise FinetuneError(f"{source!r}: group {name!r} must be a list of class names (strings)")
        if not members:
            raise FinetuneError(f"{source!r}: group {name!r} is empty")
        for m in members:
            i = index.get(m)
            if i is None:
                unknown.append(m)
            elif group_of[i] >= 0:
                other = list(mapping)[int(group_of[i])]
                where = f"twice in group {name!r}" if other == name else f"in groups {other!r} and {name!r}"
                raise FinetuneError(f"{source!r}: class {m!r} is {where}")
            else:
                group_of[i] = g
    if unknown:
        raise FinetuneError(f"{source!r} names {len(unknown)} class(es) not in the task: {_examples(unknown)}")
    matrix = torch.zeros(len(classes), len(mapping))
    grouped = group_of >= 0
    matrix[grouped.nonzero().squeeze(1), group_of[grouped]] = 1.0
    return Groups(list(mapping), list(classes), matrix, group_of)


def load_groups(json_path: str | os.PathLike, classes: Sequence[str]) -> Groups:
    """Read superclass groups from a JSON file (see the module docstring)."""
    src = str(json_path)
    try:
        mapping = json.loads(_read_text(json_path, "groups file"))
    except json.JSONDecodeError as exc:
        raise FinetuneError(f"groups file {src!r} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    return make_groups(mapping, classes, source=src)


def superclass_loss(logits: Tensor, labels: Tensor, groups: Groups) -> Tensor:
    """Mean over grouped samples of -log P(group of the true class), P = softmax(logits) summed over the group.

    Computed as logsumexp(logits of the group's classes) - logsumexp(all logits), stable for huge
    logits. Samples of ungrouped classes are left out; a batch with none grouped gives 0 (with grad).
    """
    if logits.dim() != 2 or logits.shape[1] != len(groups.classes):
        raise FinetuneError(f"superclass loss needs N x {len(groups.classes)} logits, got {tuple(logits.shape)}")
    group = groups.group_of.to(logits.device)[labels.to(logits.device)]
    keep = group >= 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    kept, group = logits[keep], group[keep]
    member = groups.matrix.to(logits.device).T[group] > 0
    log_p = torch.logsumexp(kept.masked_fill(~member, float("-inf")), dim=1) - torch.logsumexp(kept, dim=1)
    return -log_p.mean()


# ----------------------------------------------------------------------------- model
class MultiTaskModel(nn.Module):
    """``classifier(body(x))`` plus optional auxiliary heads on the same features, for training only."""

    def __init__(self, body: nn.Module, classifier: nn.Module, aux_heads: AuxHeads | None = None):
        super().__init__()
        self.body = body
        self.classifier = classifier
        self.aux_heads = aux_heads

    def forward(self, x: Tensor) -> Tensor:
        """Main logits only: what inference, export and prediction use."""
        return self.classifier(self.body(x))

    def forward_train(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Main logits and the auxiliary outputs (empty without aux heads), from one pass of the body."""
        features = self.body(x)
        aux = self.aux_heads(features) if self.aux_heads is not None else {}
        return self.classifier(features), aux
