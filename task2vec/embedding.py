"""The task embedding: a vector plus the metadata that says how it was made.

Stored as ``.npz`` (no pickle): ``format``, ``vector`` and ``meta`` (a JSON string).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EmbeddingFileError, IncompatibleEmbeddingsError
from .io import atomic_open

FORMAT = "task2vec.embedding/1"


def method_family(method: str) -> str:
    """Fisher embeddings (exact/montecarlo/empirical) compare with each other; variational ones only among themselves."""
    return "variational" if method == "variational" else "fisher"


@dataclass
class Embedding:
    """One task's embedding.

    ``vector``: per-filter Fisher (or inverse variance); ``meta``: how it was made;
    ``domain_mean`` / ``domain_var``: mean and variance of the probe's penultimate features
    over the task's images (the label-blind *domain embedding* baseline); ``halves`` (2, D):
    the embeddings of the two class-balanced halves of the images, whose distance is the
    embedding's own noise estimate (``meta["noise_half_split"]``) and which tell whether a
    ranking made from the embedding holds under either half.
    """

    vector: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    domain_mean: np.ndarray | None = None
    domain_var: np.ndarray | None = None
    halves: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vector = np.asarray(self.vector, dtype=np.float64)
        for name in ("domain_mean", "domain_var", "halves"):
            if getattr(self, name) is not None:
                setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if self.vector.ndim != 1 or not len(self.vector):
            raise EmbeddingFileError(f"an embedding vector must be 1-D and non-empty, got shape {self.vector.shape}")
        if not np.isfinite(self.vector).all() or (self.vector < 0).any():
            raise EmbeddingFileError("an embedding vector must be finite and non-negative")
        if self.halves is not None and (self.halves.shape != (2, len(self.vector)) or not np.isfinite(self.halves).all()
                                        or (self.halves < 0).any()):
            raise EmbeddingFileError(f"an embedding's halves must be two finite, non-negative rows like its vector, "
                                     f"got shape {self.halves.shape}")

    def half(self, i: int) -> "Embedding":
        """The embedding of half ``i`` (0 or 1) of the images, with the same metadata."""
        if self.halves is None:
            raise EmbeddingFileError(f"{self!r} has no half-split embeddings")
        return Embedding(self.halves[i], self.meta, self.domain_mean, self.domain_var)

    @property
    def probe(self) -> str:
        return self.meta.get("probe", {}).get("name", "?")

    @property
    def method(self) -> str:
        return self.meta.get("method", {}).get("name", "?")

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.meta.get("dataset", {}).get("source", "task")

    def space(self) -> tuple:
        """What must agree for two embeddings to be comparable: probe, weights, resolution, method family."""
        probe = self.meta.get("probe", {})
        return (probe.get("name"), probe.get("weights_hash"), probe.get("input_size"), method_family(self.method),
                len(self.vector))

    def layer_slices(self) -> dict[str, slice]:
        """Where each layer's filters sit in ``vector``."""
        out, start = {}, 0
        for layer in self.meta.get("layers", []):
            out[layer["name"]] = slice(start, start + layer["filters"])
            start += layer["filters"]
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path`` (a ``.npz``); returns the path."""
        path = Path(path)
        with atomic_open(path) as f:
            extra = {k: v for k, v in (("domain_mean", self.domain_mean), ("domain_var", self.domain_var),
                                       ("halves", self.halves)) if v is not None}
            np.savez(f, format=np.array(FORMAT), vector=self.vector,
                     meta=np.array(json.dumps(self.meta, sort_keys=True)), **extra)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Embedding":
        """Read an embedding file; anything else is an :class:`EmbeddingFileError`."""
        path = Path(path)
        if not path.is_file():
            raise EmbeddingFileError(f"embedding file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" not in z.files or str(z["format"]) != FORMAT:
                    raise EmbeddingFileError(f"{str(path)!r} is not a task2vec embedding file")
                vector, meta = z["vector"], json.loads(str(z["meta"]))
                domain = {k: z[k] for k in ("domain_mean", "domain_var", "halves") if k in z.files}
        except EmbeddingFileError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise EmbeddingFileError(f"{str(path)!r} is not a readable task2vec embedding file ({type(exc).__name__})") from exc
        emb = cls(vector, meta, **domain)
        expected = sum(layer["filters"] for layer in meta.get("layers", []))
        if expected and expected != len(emb.vector):
            raise EmbeddingFileError(f"{str(path)!r}: vector has {len(emb.vector)} values but its layers hold {expected}")
        return emb

    def __repr__(self) -> str:
        return f"Embedding({self.name!r}, probe={self.probe!r}, method={self.method!r}, dim={len(self.vector)})"


def check_compatible(*embeddings: Embedding) -> None:
    """Raise if the embeddings come from different probes, weights, resolutions or methods."""
    fields = ("probe", "probe weights", "input size", "method", "dimension")
    first = embeddings[0].space()
    for e in embeddings[1:]:
        if e.space() != first:
            what = next(f for f, x, y in zip(fields, first, e.space()) if x != y)
            raise IncompatibleEmbeddingsError(
                f"cannot compare embeddings from different probes or methods ({what} differs): "
                f"{embeddings[0]!r} vs {e!r}")
