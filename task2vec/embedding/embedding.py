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

from ..errors import EmbeddingFileError, IncompatibleEmbeddingsError
from ..io import atomic_open

FORMAT = "task2vec.embedding/1"


def method_family(method: str) -> str:
    """Fisher embeddings (exact/montecarlo/empirical) compare with each other; variational ones only among themselves."""
    return "variational" if method == "variational" else "fisher"


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
               int: "a number", float: "a number"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _real_array(value: Any, field: str, *, ndim: int | None = None, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as a float64 array of real numbers (not complex, strings, booleans or objects) of
    the given rank or shape; anything else is an :class:`EmbeddingFileError` naming ``field``."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):  # ragged nested lists
        raise EmbeddingFileError(f"{field} must be an array of real numbers") from None
    if arr.dtype.kind not in "iuf":
        raise EmbeddingFileError(f"{field} must hold real numbers, got {arr.dtype} values")
    if shape is not None and arr.shape != shape:
        raise EmbeddingFileError(f"{field} must have shape {shape}, got {arr.shape}")
    if ndim is not None and arr.ndim != ndim:
        raise EmbeddingFileError(f"{field} must be {ndim}-D, got shape {arr.shape}")
    return arr.astype(np.float64)


def _check_values(arr: np.ndarray, field: str, *, negative: bool = False) -> None:
    """Finite (and, unless ``negative``, >= 0) values, else an :class:`EmbeddingFileError` naming ``field``."""
    if not np.isfinite(arr).all():
        raise EmbeddingFileError(f"{field} must be finite, it holds {np.count_nonzero(~np.isfinite(arr))} NaN or inf")
    if not negative and (arr < 0).any():
        raise EmbeddingFileError(f"{field} must be non-negative, it holds {np.count_nonzero(arr < 0)} negative value(s)")


def _count(value: Any, field: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise EmbeddingFileError(f"{field} must be an integer >= {low}, got {value!r}")


def check_meta(meta: Any, dim: int) -> None:
    """The metadata fields the library reads, checked for their type (an embedding of ``dim``
    filters): a hand-edited or foreign file fails here, by field, not deep inside a command."""
    if not isinstance(meta, dict):
        raise EmbeddingFileError(f"meta must be a JSON object, got {_json_type(meta)}")
    for key in ("probe", "method", "dataset", "head", "trivial_scale"):
        if key in meta and not isinstance(meta[key], dict):
            raise EmbeddingFileError(f"meta.{key} must be an object, got {_json_type(meta[key])}")
    probe = meta.get("probe", {})
    for key in ("name", "weights_hash", "weights_source"):
        if probe.get(key) is not None and not isinstance(probe[key], str):
            raise EmbeddingFileError(f"meta.probe.{key} must be a string, got {_json_type(probe[key])}")
    for key in ("input_size", "feature_dim"):
        if probe.get(key) is not None:
            _count(probe[key], f"meta.probe.{key}", 1)
    if meta.get("method", {}).get("name") is not None and not isinstance(meta["method"]["name"], str):
        raise EmbeddingFileError(f"meta.method.name must be a string, got {_json_type(meta['method']['name'])}")
    if meta.get("name") is not None and not isinstance(meta["name"], str):
        raise EmbeddingFileError(f"meta.name must be a string, got {_json_type(meta['name'])}")
    for key in ("n_images", "n_classes", "n_skipped_images"):
        if meta.get(key) is not None:
            _count(meta[key], f"meta.{key}", 0)
    noise = meta.get("noise_half_split")
    if noise is not None and (isinstance(noise, bool) or not isinstance(noise, (int, float)) or not np.isfinite(noise)
                              or noise < 0):
        raise EmbeddingFileError(f"meta.noise_half_split must be a finite number >= 0 or null, got {noise!r}")
    layers = meta.get("layers", [])
    if not isinstance(layers, list):
        raise EmbeddingFileError(f"meta.layers must be an array, got {_json_type(layers)}")
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise EmbeddingFileError(f"meta.layers[{i}] must be an object, got {_json_type(layer)}")
        if not isinstance(layer.get("name"), str):
            raise EmbeddingFileError(f"meta.layers[{i}].name must be a string, got {_json_type(layer.get('name'))}")
        _count(layer.get("filters"), f"meta.layers[{i}].filters", 1)
    if layers and sum(layer["filters"] for layer in layers) != dim:
        raise EmbeddingFileError(f"vector has {dim} values but meta.layers hold {sum(x['filters'] for x in layers)}")
    prior = meta.get("prior_inverse_variance")
    if prior is not None:
        if not isinstance(prior, list) or (layers and len(prior) != len(layers)) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) and x > 0 for x in prior):
            raise EmbeddingFileError("meta.prior_inverse_variance must be an array of one positive number per layer")


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
        self.vector = _real_array(self.vector, "vector", ndim=1)
        if not len(self.vector):
            raise EmbeddingFileError("vector must be non-empty")
        _check_values(self.vector, "vector")
        check_meta(self.meta, len(self.vector))
        if self.halves is not None:
            self.halves = _real_array(self.halves, "halves", shape=(2, len(self.vector)))
            _check_values(self.halves, "halves")
        if self.domain_mean is not None:
            dim = self.meta.get("probe", {}).get("feature_dim")
            self.domain_mean = _real_array(self.domain_mean, "domain_mean", ndim=1, shape=None if dim is None else (dim,))
            _check_values(self.domain_mean, "domain_mean", negative=True)
        if self.domain_var is not None:
            shape = None if self.domain_mean is None else self.domain_mean.shape
            self.domain_var = _real_array(self.domain_var, "domain_var", ndim=1, shape=shape)
            _check_values(self.domain_var, "domain_var")

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
                missing = [k for k in ("vector", "meta") if k not in z.files]
                if missing:
                    raise EmbeddingFileError(f"embedding file {str(path)!r} has no {missing[0]!r} array")
                vector = z["vector"]
                try:
                    meta = json.loads(str(z["meta"]))
                except json.JSONDecodeError:
                    raise EmbeddingFileError(f"embedding file {str(path)!r}: meta is not JSON text") from None
                domain = {k: z[k] for k in ("domain_mean", "domain_var", "halves") if k in z.files}
        except EmbeddingFileError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise EmbeddingFileError(f"{str(path)!r} is not a readable task2vec embedding file ({type(exc).__name__})") from exc
        try:
            return cls(vector, meta, **domain)
        except EmbeddingFileError as exc:
            raise EmbeddingFileError(f"embedding file {str(path)!r}: {exc}") from None

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
