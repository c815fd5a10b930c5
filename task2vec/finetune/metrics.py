"""Classification evaluation for fine-tuned models: accuracy, top-k, per-class recall, loss, confusion matrix.

Everything works on plain arrays (logits and integer labels) so the fine-tuner, the CLI and tests share
one definition of each number; ``Report.as_dict`` is what goes into JSON reports and ``summarize_repeats``
turns R such dicts (one per seed, ``--repeats R``) into mean and standard deviation.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import FinetuneError
from ..io import atomic_open

ANNOTATE_MAX_CLASSES = 20  # above this, cell counts are unreadable and are left out of the heatmap
LABEL_MAX_CHARS = 24  # longer class names are shortened on the heatmap axes (not in the CSV)


def _as_numpy(a: np.ndarray | torch.Tensor | Sequence) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        return (a.float() if a.is_floating_point() else a).numpy()
    return np.asarray(a)


def _int_labels(a: np.ndarray | torch.Tensor | Sequence, what: str, n_classes: int) -> np.ndarray:
    """1-D int64 labels in [0, n_classes), or a FinetuneError naming the first bad value."""
    arr = _as_numpy(a)
    if arr.ndim != 1:
        raise FinetuneError(f"{what} must be 1-D, got shape {tuple(arr.shape)}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise FinetuneError(f"{what} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n_classes)
    if bad.any():
        raise FinetuneError(f"{what} value {arr[bad][0]} is outside [0, {n_classes})")
    return arr


def _check_classes(classes: Sequence[str], n_classes: int) -> list[str]:
    names = [str(c) for c in classes]
    if len(names) != n_classes:
        raise FinetuneError(f"got {len(names)} class names for {n_classes} classes")
    if len(set(names)) != len(names):
        dup = next(c for c in names if names.count(c) > 1)
        raise FinetuneError(f"class name {dup!r} appears more than once")
    return names


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 [n_classes, n_classes] counts (sklearn's): rows are true classes, columns predicted classes."""
    from sklearn import metrics as sk_metrics

    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise FinetuneError(f"n_classes must be a positive integer, got {n_classes!r}")
    t = _int_labels(y_true, "y_true", n_classes)
    p = _int_labels(y_pred, "y_pred", n_classes)
    if len(t) != len(p):
        raise FinetuneError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    if not len(t):  # sklearn refuses empty input
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    return sk_metrics.confusion_matrix(t, p, labels=np.arange(n_classes)).astype(np.int64)


@dataclass
class Report:
    """Evaluation of one model on one labelled set (see ``evaluate``)."""

    classes: list[str]
    accuracy: float
    topk: dict[int, float]  # k -> top-k accuracy, only for k <= number of classes
    per_class: dict[str, float | None]  # recall of each class; None for a class without samples
    balanced_accuracy: float  # mean recall over the classes that have samples
    loss: float  # mean cross-entropy of the logits
    confusion: np.ndarray  # int64 [C, C], rows true, columns predicted

    @property
    def n_samples(self) -> int:
        return int(self.confusion.sum())

    def most_confused(self, n: int = 5) -> list[tuple[str, str, int, float]]:
        """The n largest off-diagonal cells: (true class, predicted class, count, fraction of the true class)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise FinetuneError(f"most_confused needs a non-negative integer n, got {n!r}")
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        rows, cols = np.nonzero(off)
        order = sorted(zip(rows.tolist(), cols.tolist()), key=lambda rc: (-off[rc], rc))[:n]
        totals = self.confusion.sum(1)
        return [(self.classes[r], self.classes[c], int(off[r, c]), float(off[r, c] / totals[r])) for r, c in order]

    def as_dict(self) -> dict:
        """JSON-ready plain Python values (top-k keys become strings, as JSON would make them)."""
        return {
            "n_samples": self.n_samples,
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "loss": self.loss,
            "topk": {str(k): v for k, v in self.topk.items()},
            "per_class": dict(self.per_class),
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
            "most_confused": [list(t) for t in self.most_confused()],
        }


def evaluate(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, classes: Sequence[str],
             topk: Sequence[int] = (1, 5)) -> Report:
    """Score logits [N, C] against integer labels [N]; ties in the logits go to the lower class index."""
    z = _as_numpy(logits)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise FinetuneError(f"logits must have shape [N, C] with N, C >= 1, got {tuple(z.shape)}")
    if not np.issubdtype(z.dtype, np.floating):
        raise FinetuneError(f"logits must be floating point, got dtype {z.dtype}")
    z = z.astype(np.float64)
    if not np.isfinite(z).all():
        raise FinetuneError(f"logits contain {np.count_nonzero(~np.isfinite(z))} NaN or infinite values")
    n, c = z.shape
    names = _check_classes(classes, c)
    y = _int_labels(labels, "labels", c)
    if len(y) != n:
        raise FinetuneError(f"got {len(y)} labels for {n} rows of logits")
    for k in topk:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise FinetuneError(f"top-k values must be positive integers, got {k!r}")

    true_logit = z[np.arange(n), y][:, None]
    # top-k kept over sklearn's top_k_accuracy_score, which breaks ties for the higher class index (argmax: the lower)
    # rank of the true class: classes scored higher, plus equal-scored classes with a lower index (as argmax breaks ties)
    rank = (z > true_logit).sum(1) + ((z == true_logit) & (np.arange(c) < y[:, None])).sum(1)
    pred = z.argmax(1)
    cm = confusion_matrix(y, pred, c)
    support = cm.sum(1)
    recall = [float(cm[i, i] / support[i]) if support[i] else None for i in range(c)]
    present = [r for r in recall if r is not None]
    zmax = z.max(1, keepdims=True)
    log_norm = zmax[:, 0] + np.log(np.exp(z - zmax).sum(1))
    return Report(
        classes=names,
        accuracy=float((pred == y).mean()),
        topk={int(k): float((rank < k).mean()) for k in sorted(set(topk)) if k <= c},
        per_class=dict(zip(names, recall)),
        balanced_accuracy=float(np.mean(present)),  # = sklearn's balanced_accuracy_score, from the recalls above
        loss=float((log_norm - true_logit[:, 0]).mean()),
        confusion=cm,
    )


def _matrix_and_classes(report_or_matrix: Report | np.ndarray, classes: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    if isinstance(report_or_matrix, Report):
        m, classes = report_or_matrix.confusion, classes if classes is not None else report_or_matrix.classes
    else:
        m = _as_numpy(report_or_matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise FinetuneError(f"a confusion matrix must be square and non-empty, got shape {tuple(m.shape)}")
    if not np.issubdtype(m.dtype, np.integer) or (m < 0).any():
        raise FinetuneError(f"a confusion matrix must hold non-negative integer counts, got dtype {m.dtype}")
    if classes is None:
        raise FinetuneError("class names are required with a bare confusion matrix")
    return m.astype(np.int64), _check_classes(classes, m.shape[0])


def write_confusion_csv(report_or_matrix: Report | np.ndarray, classes: Sequence[str] | None, path: str | Path) -> Path:
    """CSV of the confusion counts: header ``true\\predicted,<classes>``, then one row per true class."""
    m, names = _matrix_and_classes(report_or_matrix, classes)
    with atomic_open(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["true\\predicted", *names])
        w.writerows([name, *row] for name, row in zip(names, m.tolist()))
    return Path(path)


def _short(name: str) -> str:
    return name if len(name) <= LABEL_MAX_CHARS else name[:LABEL_MAX_CHARS - 1] + "…"


def plot_confusion(matrix: Report | np.ndarray, classes: Sequence[str] | None, path: str | Path, normalize: bool = True,
                   title: str | None = None) -> Path:
    """PNG heatmap of the confusion matrix, coloured by row fraction (``normalize``) or by count.

    Cells carry their counts when there are at most ANNOTATE_MAX_CLASSES classes; the figure grows with
    the number of classes so labels stay legible. Drawn on a bare Agg figure (no pyplot state, no display).
    """
    from matplotlib.figure import Figure

    m, names = _matrix_and_classes(matrix, classes)
    c = len(names)
    rows = m.sum(1, keepdims=True)
    values = np.divide(m, rows, out=np.zeros(m.shape), where=rows > 0) if normalize else m.astype(np.float64)
    vmax = 1.0 if normalize else max(1.0, float(m.max()))
    cell = 0.55 if c <= ANNOTATE_MAX_CLASSES else 0.3
    side = min(40.0, 3.0 + cell * c)
    fontsize = max(5.0, min(10.0, 300.0 / c))
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    labels = [_short(n) for n in names]
    ax.set_xticks(range(c))
    ax.set_xticklabels(labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=fontsize)
    ax.set_yticks(range(c))
    ax.set_yticklabels(labels, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"confusion matrix ({m.sum()} samples)")
    if c <= ANNOTATE_MAX_CLASSES:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=fontsize,
                        color="white" if values[i, j] > 0.5 * vmax else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    with atomic_open(path) as f:
        f.write(buf.getvalue())
    return Path(path)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of repeated measurements; std is 0.0 for a single value."""
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise FinetuneError(f"mean_std needs numbers, got {values!r:.80}") from None
    if v.ndim != 1 or v.size == 0:
        raise FinetuneError(f"mean_std needs a non-empty list of numbers, got shape {tuple(v.shape)}")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def _is_number(v: object) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _summarize(dicts: list[dict]) -> tuple[dict, dict]:
    mean, std = {}, {}
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    for key in keys:
        vals = [d.get(key) for d in dicts]
        if all(isinstance(v, dict) for v in vals):
            m, s = _summarize(vals)
            if m:
                mean[key], std[key] = m, s
        elif all(_is_number(v) for v in vals):
            mean[key], std[key] = mean_std([float(v) for v in vals])
    return mean, std


def summarize_repeats(reports: Sequence[dict]) -> dict:
    """Mean and std over R runs (seeds) of every numeric scalar field, nested dicts included.

    ``reports`` are ``Report.as_dict()`` outputs (or any dicts); returns ``{"repeats": R, "mean": {...},
    "std": {...}}`` where mean/std mirror the report's nesting (e.g. ``["mean"]["topk"]["5"]``). A field
    is summarised only when it is a number in every report: lists (the confusion matrix), strings and
    None (a class without samples) are left out.
    """
    reports = list(reports)
    if not reports:
        raise FinetuneError("summarize_repeats needs at least one report")
    for r in reports:
        if not isinstance(r, dict):
            raise FinetuneError(f"summarize_repeats needs dicts (Report.as_dict()), got {type(r).__name__}")
    mean, std = _summarize(reports)
    return {"repeats": len(reports), "mean": mean, "std": std}

