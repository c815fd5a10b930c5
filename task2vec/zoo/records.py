"""Transfer records: which model reached which error on which task, the evidence MODEL2VEC learns from.

A records CSV has one row per (task, model) pair, with the columns of :data:`KEY_COLUMNS` and one
of :data:`VALUE_COLUMNS`; other columns (settings, dates) are kept by writers and ignored here.
``task2vec finetune`` appends a row per fine-tune (:func:`append_transfer_record`);
:func:`read_records` reads a file into the arrays :class:`task2vec.zoo.model2vec.Model2Vec` fits on.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..embedding.embedding import Embedding, check_compatible
from ..errors import EmbeddingFileError, IncompatibleEmbeddingsError, RecordsError
from ..io import atomic_open

if TYPE_CHECKING:  # for the type hints only: the fine-tuner loads torch
    from ..finetune.trainer import FitResult

KEY_COLUMNS = ("task", "model")  # the task's embedding file (or a name) and the model's id
VALUE_COLUMNS = ("error", "accuracy")  # exactly one: a fraction or a percentage
SCALES = ("auto", "fraction", "percent")


@dataclass
class Records:
    """Transfer records read from a CSV: ``error[k]`` of model ``models[model_idx[k]]`` on task ``tasks[task_idx[k]]``."""

    tasks: list[str]
    models: list[str]
    task_idx: np.ndarray
    model_idx: np.ndarray
    error: np.ndarray
    embeddings: list[Embedding] = field(repr=False, default_factory=list)

    @property
    def task_vectors(self) -> np.ndarray:
        return np.stack([emb.vector for emb in self.embeddings])

    @property
    def layer_sizes(self) -> list[int] | None:
        """Filters per layer, from the task embeddings' metadata (None if they do not say)."""
        layers = self.embeddings[0].meta.get("layers") if self.embeddings else None
        return [int(layer["filters"]) for layer in layers] if layers else None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.task_idx, self.model_idx, self.error

    def __len__(self) -> int:
        return len(self.error)


def read_records(csv_path: str | os.PathLike, *, model_ids: Sequence[str] | None = None,
                 tasks: Mapping[str, str | os.PathLike | Embedding] | None = None, like: Embedding | None = None,
                 scale: str = "auto") -> Records:
    """Read a records CSV with columns ``task``, ``model`` and ``error`` or ``accuracy``.

    ``task``: a task embedding file (relative to the CSV's folder, or absolute), or a name in the
    ``tasks`` mapping (name -> embedding file or :class:`Embedding`); the mapping wins.
    ``model``: a model id; with ``model_ids`` (the zoo's ids) ``model_idx`` indexes that list and
    unknown ids are errors, otherwise the ids in order of first appearance.
    ``error`` / ``accuracy``: ``scale="fraction"`` (in [0, 1]), ``"percent"`` (in [0, 100]) or
    ``"auto"`` (percent if any value exceeds 1); accuracy is stored as error = 1 - accuracy.
    ``like``: an embedding (e.g. the zoo's) that every task embedding must be comparable with.
    Any problem is a one-line :class:`RecordsError`.
    """
    path = Path(csv_path)
    if scale not in SCALES:
        raise RecordsError(f"scale must be {', '.join(SCALES[:-1])} or {SCALES[-1]}, got {scale!r}")
    if not path.is_file():
        raise RecordsError(f"records file {str(path)!r} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = [row for row in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RecordsError(f"records file {str(path)!r} cannot be read as CSV ({type(exc).__name__})") from None
    lines = [(n, row) for n, row in enumerate(table, 1) if any(cell.strip() for cell in row)]
    if not lines:
        raise RecordsError(f"records file {str(path)!r} is empty")
    (_, header), body = lines[0], lines[1:]
    header = [h.strip().lower() for h in header]
    if len(set(header)) != len(header):
        raise RecordsError(f"{path.name}: repeated column names in header {header}")
    missing = [c for c in KEY_COLUMNS if c not in header]
    values = [c for c in VALUE_COLUMNS if c in header]
    if missing or len(values) != 1:
        need = missing + ([] if len(values) == 1 else [f"exactly one of {'/'.join(VALUE_COLUMNS)}"])
        raise RecordsError(f"{path.name}: missing column(s) {', '.join(need)} (header: {','.join(header)})")
    value_col = values[0]
    col = {c: header.index(c) for c in (*KEY_COLUMNS, value_col)}
    if not body:
        raise RecordsError(f"{path.name}: no records below the header")

    model_index: dict[str, int] = {}
    if model_ids is not None:
        for i, m in enumerate(model_ids):
            if str(m) in model_index:
                raise RecordsError(f"model_ids lists {str(m)!r} twice")
            model_index[str(m)] = i
    known = model_ids is not None
    mapping = dict(tasks or {})

    names: list[str] = []
    embeddings: list[Embedding] = []
    identity: dict[Any, int] = {}
    seen: dict[tuple[int, int], int] = {}
    ti, mi, raw = [], [], []
    for line, row in body:
        if len(row) != len(header):
            raise RecordsError(f"{path.name} line {line}: {len(row)} fields, the header has {len(header)}")
        task, model, text = (row[col[c]].strip() for c in (*KEY_COLUMNS, value_col))
        if not task or not model:
            raise RecordsError(f"{path.name} line {line}: empty {'task' if not task else 'model'}")
        try:
            value = float(text)
        except ValueError:
            raise RecordsError(f"{path.name} line {line}: {value_col} {text!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise RecordsError(f"{path.name} line {line}: {value_col} {text!r} is not a non-negative finite number")
        if model not in model_index:
            if known:
                raise RecordsError(f"{path.name} line {line}: unknown model id {model!r} "
                                   f"(not among the zoo's {len(model_index)} models)")
            model_index[model] = len(model_index)
        k = _task_index(task, mapping, path, line, identity, names, embeddings)
        key = (k, model_index[model])
        if key in seen:
            raise RecordsError(f"{path.name} lines {seen[key]} and {line}: duplicate record for task {task!r} "
                               f"on model {model!r}")
        seen[key] = line
        ti.append(k)
        mi.append(model_index[model])
        raw.append((line, text, value))

    v = np.array([r[2] for r in raw])
    percent = scale == "percent" or (scale == "auto" and (v > 1).any())
    top = 100.0 if percent else 1.0
    over = np.flatnonzero(v > top)
    if len(over):
        line, text, _ = raw[over[0]]
        unit = "a percentage" if percent else "a fraction (use scale='percent' for percentages)"
        raise RecordsError(f"{path.name} line {line}: {value_col} {text!r} is out of range for {unit}")
    v = v / top
    error = 1.0 - v if value_col == "accuracy" else v

    try:
        check_compatible(*([like] if like is not None else []), *embeddings)
    except IncompatibleEmbeddingsError as exc:
        raise RecordsError(f"{path.name}: task embeddings are not comparable: {exc}") from exc
    models = list(model_index) if not known else [str(m) for m in model_ids]
    return Records(names, models, np.array(ti, dtype=np.int64), np.array(mi, dtype=np.int64), error, embeddings)


def _task_index(task: str, mapping: dict, csv_path: Path, line: int, identity: dict, names: list,
                embeddings: list) -> int:
    """Index of ``task`` in ``names``/``embeddings``, loading it on first sight (same file = same task)."""
    source = mapping.get(task, None)
    if source is None:
        source = Path(task) if Path(task).is_absolute() else csv_path.parent / task
        if not source.is_file():
            raise RecordsError(f"{csv_path.name} line {line}: task {task!r} is neither an embedding file "
                               f"(looked for {str(source)!r}) nor a name in the task mapping")
    key = id(source) if isinstance(source, Embedding) else ("file", str(Path(source).resolve()))
    if key in identity:
        return identity[key]
    if isinstance(source, Embedding):
        emb = source
    else:
        try:
            emb = Embedding.load(source)
        except EmbeddingFileError as exc:
            raise RecordsError(f"{csv_path.name} line {line}: task {task!r}: {exc}") from exc
    identity[key] = len(names)
    names.append(task)
    embeddings.append(emb)
    return identity[key]


def append_transfer_record(runs: Sequence["FitResult"], *, records: str | os.PathLike | None = None,
                           embedding: str | os.PathLike | None = None) -> Path:
    """Add a fine-tune's (task embedding, model id, validation accuracy, settings) to a records CSV for MODEL2VEC.

    ``runs``: the :class:`task2vec.finetune.trainer.FitResult` of one run or of its repeats.

    ``records`` defaults to the records of the zoo the model came from, in the per-user cache
    (:func:`task2vec.zoo.cache.zoo_records`; never inside the zoo folder). The ``task`` column
    names the embedding file (relative to the CSV when it can); a later record for the same task
    and model replaces the earlier one. Repeats are recorded once, with their mean accuracy.
    """
    from .cache import zoo_records
    from .zoo import Zoo

    config = json.loads((Path(runs[0].run_dir) / "config.json").read_text())
    if records is None:
        if not config.get("zoo"):
            raise RecordsError("no records file: pass --records CSV (or fine-tune a zoo entry to use the zoo's)")
        records = zoo_records(Zoo.load(config["zoo"]), create=True)
    if embedding is None:
        raise RecordsError("a transfer record needs the task's embedding: pass --embedding EMB.npz")
    records, embedding = Path(records), Path(embedding)
    try:
        task = os.path.relpath(embedding.resolve(), records.resolve().parent)
    except ValueError:  # another drive
        task = str(embedding.resolve())
    params = config["params"]
    row = {"task": task, "model": config["model_id"], "accuracy": float(np.mean([r.val_accuracy for r in runs])),
           "arch": config["arch"], "dataset": config["dataset"], "task_fingerprint": config["dataset_fingerprint"],
           "seeds": len(runs), "epochs": params["epochs"], "lr": params["lr"], "freeze": params["freeze"],
           "balance": params["balance"], "run_dir": str(Path(runs[0].run_dir).resolve()),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    old: list[dict[str, str]] = []
    if records.is_file():
        with open(records, newline="", encoding="utf-8") as f:
            old = [r for r in csv.DictReader(f) if (r.get("task"), r.get("model")) != (row["task"], row["model"])]
    keys = list(dict.fromkeys([*row, *(k for r in old for k in r)]))
    with atomic_open(records, "w") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in [*old, row]:
            w.writerow({k: r.get(k, "") for k in keys})
    return records
