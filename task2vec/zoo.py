"""A zoo of candidate models: what each was trained on, and the ranking for a new task.

A zoo is a folder:

- ``zoo.json``: the manifest (format, probe, settings, one record per entry: id, model
  name, how to get its weights, its source task, metadata such as parameters and ImageNet
  top-1), naming the arrays file that goes with it and that file's SHA-256. Its paths
  (checkpoints, source data sets) are read and recorded by the rule of :mod:`task2vec.paths`:
  ``${VAR}`` from the environment, other relative paths against the zoo folder;
- ``arrays-<hash>.npz``: ``ids``, ``source`` (N, D) source-task embeddings F_i, ``bias``
  (N, D) MODEL2VEC biases b_i, and ``t0`` (D,) the probe's trivial task.

Every change writes a new arrays file and then atomically replaces the manifest, so an
interrupted change leaves the zoo exactly as it was (a stray ``arrays-*.npz`` at worst,
removed by the next change).

Ranking (lower is better), for a target task t and model embedding m_i = F_i + b_i:

    score_i = d_asym(m_i -> t) - quality_weight * z_i
            = d_sym(m_i, t) - alpha * d_sym(m_i + t0, t0) - quality_weight * z_i

where z_i is the entry's ImageNet top-1 standardised over the zoo's entries that have one
(0 for those without).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .defaults import EMBEDDING_SETTINGS, LABEL_METHODS as FISHER_METHODS, QUALITY_WEIGHT
from .distance import ALPHA, asymmetric_scores
from .embed import Task2Vec
from .embedding import FORMAT as EMBEDDING_FORMAT, Embedding, method_family
from .errors import IncompatibleEmbeddingsError, ZooError
from .index import AsymmetricIndex
from .io import atomic_open
from .model2vec import scaled
from .paths import portable_path, resolve_path
from .probe import Probe, find_local_weights
from .validate import integer, number

FORMAT = "task2vec.zoo/1"
MANIFEST = "zoo.json"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass
class ZooEntry:
    """One candidate model."""

    id: str
    model: str  # timm or torchvision architecture name
    pretrained: bool = False  # weights from timm/torchvision's own download
    checkpoint: str | None = None  # a local file or URI with the fine-tuned weights
    source: dict[str, Any] = field(default_factory=dict)  # the source task: name, classes, images, dataset
    metadata: dict[str, Any] = field(default_factory=dict)  # params_m, input_size, imagenet_top1, license, notes

    @classmethod
    def from_json(cls, d: Any, where: str) -> "ZooEntry":
        if not isinstance(d, dict):
            raise ZooError(f"{where}: an entry must be an object, got {type(d).__name__}")
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ZooError(f"{where}: unknown entry field(s) {sorted(unknown)}")
        for key, kind in (("id", str), ("model", str)):
            if not isinstance(d.get(key), kind) or not d[key]:
                raise ZooError(f"{where}: entry field {key!r} must be a non-empty string")
        if not isinstance(d.get("pretrained", False), bool):
            raise ZooError(f"{where}: entry {d['id']!r}: 'pretrained' must be true or false")
        if d.get("checkpoint") is not None and not isinstance(d["checkpoint"], str):
            raise ZooError(f"{where}: entry {d['id']!r}: 'checkpoint' must be a string")
        for key in ("source", "metadata"):
            if not isinstance(d.get(key, {}), dict):
                raise ZooError(f"{where}: entry {d['id']!r}: {key!r} must be an object")
        return cls(**d)


class EntryWeights(NamedTuple):
    """Where an entry's weights come from: ``path`` (a local file or URI; None for a library download or
    no weights) and ``status``: ``local`` (a file here), ``missing`` (a file that is not here),
    ``downloadable`` (a URI, or ``pretrained`` without a local copy) or ``none``."""

    path: str | None
    status: str

    @property
    def available(self) -> bool:
        return self.status == "local"


def _plain(x: float | None) -> float | None:
    """A float for JSON: no negative zero."""
    return None if x is None else float(x) + 0.0


@dataclass
class Candidate:
    """One ranked zoo entry, with what went into its score."""

    rank: int
    id: str
    model: str
    score: float  # what the ranking sorts by, lower is better: distance + quality
    distance: float  # d_asym(m_i -> task) of the model embedding m_i = F_i + b_i (MODEL2VEC bias included)
    bias: float  # what the bias changed: distance minus the same distance from F_i alone
    quality: float  # -quality_weight * z(ImageNet top-1)
    source: str  # the source task's name
    params_m: float | None
    input_size: int | None
    imagenet_top1: float | None
    weights: EntryWeights
    evidence: float | None = None  # LogME of the model's features on the task, when the check scored it
    stable: bool | None = None  # in the top k under both half-split embeddings of the task (None: not known)
    tied: bool = False  # its score is within the task's noise of the best score

    def why(self) -> str:
        """The quantity that placed it, in words."""
        if self.evidence is not None:
            return f"trained on {self.source}; checked on the task: LogME {self.evidence:.3f}"
        bias = f" (MODEL2VEC bias {self.bias:+.3f} included)" if abs(self.bias) >= 5e-5 else ""
        return f"trained on {self.source}; d_asym {self.distance:.3f} to the task{bias}"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (no status strings inside paths, no negative zeros)."""
        return {"rank": self.rank, "id": self.id, "model": self.model, "score": _plain(self.score),
                "d_asym": _plain(self.distance), "bias": _plain(self.bias), "quality": _plain(self.quality),
                "logme": _plain(self.evidence), "source": self.source, "params_m": _plain(self.params_m),
                "input_size": self.input_size, "imagenet_top1": _plain(self.imagenet_top1),
                "weights": self.weights.path, "weights_status": self.weights.status,
                "weights_available": self.weights.available, "stable": self.stable, "tied": self.tied,
                "why": self.why()}


def _scaled_bias(source: np.ndarray, log_scales: np.ndarray, group: np.ndarray) -> np.ndarray:
    return scaled(source, log_scales, group) - source


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _portable_source(source: str | None, zoo_dir: Path) -> str | None:
    """A task's source label (``DIR`` or ``CSV:column``, then ``|subset`` parts) with its path
    recorded by :func:`task2vec.paths.portable_path`; a label naming no file here is kept."""
    if not source:
        return source
    head, sep, rest = source.partition("|")
    path, colon, column = head, "", ""
    if not Path(head).exists():
        path, colon, column = head.rpartition(":")
        if not (colon and Path(path).is_file()):
            return source
    return portable_path(path, zoo_dir) + colon + column + sep + rest


class Zoo:
    """A zoo folder loaded in memory. Create with :meth:`create`, open with :meth:`load`."""

    def __init__(self, path: Path, manifest: dict[str, Any], entries: list[ZooEntry],
                 source: np.ndarray, bias: np.ndarray, t0: np.ndarray | None,
                 scales: tuple[np.ndarray, np.ndarray] | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self.entries = entries
        self.source = source
        self.bias = bias
        self.t0 = t0
        self.scales = scales  # (log_scales (M, G), group (D,)) when the biases are MODEL2VEC's scales

    # ------------------------------------------------------------------ creation / loading
    @classmethod
    def create(cls, path: str | os.PathLike, probe: dict[str, Any], *, method: str = "exact",
               alpha: float = ALPHA, quality_weight: float = QUALITY_WEIGHT,
               embedding_settings: dict[str, Any] | None = None) -> "Zoo":
        """A new, empty zoo in ``path`` for embeddings of ``probe`` (the folder is created if needed;
        other files there, such as its spec, are left alone).

        ``probe``: ``{"name", "weights_hash", "input_size"}`` (e.g. ``Probe.describe()``).
        """
        path = Path(path)
        if (path / MANIFEST).exists():
            raise ZooError(f"{str(path)!r} already holds a zoo")
        if path.exists() and not path.is_dir():
            raise ZooError(f"{str(path)!r} exists and is not a folder")
        missing = [k for k in ("name", "weights_hash", "input_size") if k not in probe]
        if missing:
            raise ZooError(f"probe description lacks {missing}")
        number(alpha, "alpha", low=0, error=ZooError)
        number(quality_weight, "quality_weight", low=0, error=ZooError)
        if method not in FISHER_METHODS:
            raise ZooError(f"a zoo holds Fisher embeddings ({', '.join(FISHER_METHODS)}), not {method!r}: "
                           "its complexity term adds t0 to each model embedding")
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "probe": {k: probe[k] for k in ("name", "weights_hash", "input_size")},
            "method": method,
            "embedding_settings": embedding_settings or {},
            "alpha": float(alpha),
            "quality_weight": float(quality_weight),
            "dim": None,
            "model2vec": None,
            "entries": [],
        }
        zoo = cls(path, manifest, [], np.zeros((0, 0)), np.zeros((0, 0)), None)
        zoo._write()
        return zoo

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Zoo":
        """Open a zoo folder; any inconsistency is a :class:`ZooError`."""
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise ZooError(f"{str(path)!r} is not a zoo (no {MANIFEST}; create one with 'task2vec zoo init')")
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ZooError(f"{str(mpath)!r} is not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ZooError(f"{str(mpath)!r} is not a {FORMAT} manifest")
        for key, kind in (("probe", dict), ("entries", list), ("method", str)):
            if not isinstance(manifest.get(key), kind):
                raise ZooError(f"{str(mpath)!r}: field {key!r} is missing or has the wrong type")
        for key in ("alpha", "quality_weight"):
            number(manifest.get(key), f"{str(mpath)!r}: field {key!r}", low=0, error=ZooError)
        entries = [ZooEntry.from_json(e, str(mpath)) for e in manifest["entries"]]
        ids = [e.id for e in entries]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ZooError(f"{str(mpath)!r}: duplicate entry id(s) {dup}")
        arrays = manifest.get("arrays")
        if not entries and not arrays:
            return cls(path, manifest, [], np.zeros((0, 0)), np.zeros((0, 0)), None)
        if not isinstance(arrays, dict) or not isinstance(arrays.get("file"), str) or "sha256" not in arrays:
            raise ZooError(f"{str(mpath)!r}: field 'arrays' must name the arrays file and its sha256")
        apath = path / Path(arrays["file"]).name
        try:
            data = apath.read_bytes()
        except OSError as exc:
            raise ZooError(f"zoo arrays file {str(apath)!r} cannot be read ({exc.strerror})") from exc
        if _sha256(data) != arrays["sha256"]:
            raise ZooError(f"zoo arrays file {str(apath)!r} does not match the manifest's checksum (edited or corrupt)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                a_ids = [str(x) for x in z["ids"]]
                source = z["source"].astype(np.float64)
                t0 = z["t0"].astype(np.float64) if "t0" in z.files else None
                scales = (z["log_scales"].astype(np.float64), z["group"].astype(np.int64)) \
                    if "log_scales" in z.files else None
                bias = z["bias"].astype(np.float64) if scales is None else _scaled_bias(source, *scales)
        except (ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
            raise ZooError(f"zoo arrays file {str(apath)!r} is unreadable ({exc})") from exc
        if a_ids != ids:
            raise ZooError(f"{str(mpath)!r}: entry ids do not match the arrays file's ids (hand-edited manifest?)")
        if source.shape != bias.shape or source.shape[0] != len(ids) or (t0 is not None and t0.shape != source.shape[1:]):
            raise ZooError(f"zoo arrays in {str(apath)!r} have inconsistent shapes")
        return cls(path, manifest, entries, source, bias, t0, scales)

    # ------------------------------------------------------------------ properties
    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    @property
    def probe(self) -> dict[str, Any]:
        return dict(self.manifest["probe"])

    @property
    def alpha(self) -> float:
        return float(self.manifest["alpha"])

    @property
    def quality_weight(self) -> float:
        return float(self.manifest["quality_weight"])

    @property
    def method(self) -> str:
        return str(self.manifest["method"])

    def load_probe(self, weights: str | os.PathLike | None = None, *, device: str = "auto") -> Probe:
        """The zoo's probe network (``weights``: its file, default the ``$TASK2VEC_WEIGHTS`` lookup);
        weights whose hash differs from the zoo's are refused."""
        p = self.probe
        probe = Probe.create(p["name"], weights=weights, image_size=p["input_size"], device=device)
        if probe.weights_hash != p["weights_hash"]:
            raise ZooError(f"probe weights {probe.weights_hash} ({probe.weights_source}) are not the zoo's "
                           f"({p['weights_hash']}); pass the zoo's probe weights with --weights")
        return probe

    def embedder(self, probe: Probe, **overrides: Any) -> Task2Vec:
        """A :class:`Task2Vec` on ``probe`` with the settings the zoo's sources were embedded with.

        ``overrides`` replace recorded settings or pass other Task2Vec arguments (``progress``,
        ``workers``, ...). The probe must be the zoo's (same weights hash and resolution).
        """
        want = self.probe
        if probe.weights_hash != want["weights_hash"] or probe.config.input_size != want["input_size"]:
            raise ZooError(f"probe {probe.weights_hash} at {probe.config.input_size} px is not the zoo's "
                           f"({want['weights_hash']} at {want['input_size']} px)")
        saved = self.manifest.get("embedding_settings", {})
        return Task2Vec(probe, **{**{k: v for k, v in saved.items() if k in EMBEDDING_SETTINGS}, **overrides})

    def model_embeddings(self) -> np.ndarray:
        """m_i = F_i + b_i, one row per entry."""
        return self.source + self.bias

    def entry(self, entry_id: str) -> ZooEntry:
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise ZooError(f"no entry {entry_id!r} in zoo {str(self.path)!r} (entries: {', '.join(self.ids) or 'none'})")

    def weights(self, entry: ZooEntry) -> EntryWeights:
        """Where the entry's weights come from, and whether they are here (:class:`EntryWeights`).

        A checkpoint path is resolved by :func:`task2vec.paths.resolve_path` (relative to the zoo
        folder; an unset ``${VAR}`` is a :class:`ZooError`). ``pretrained`` entries use a local copy
        found through ``$TASK2VEC_WEIGHTS`` when there is one.
        """
        if entry.pretrained:
            local = find_local_weights(entry.model)
            return EntryWeights(str(local), "local") if local else EntryWeights(None, "downloadable")
        if not entry.checkpoint:
            return EntryWeights(None, "none")
        location = resolve_path(entry.checkpoint, self.path, f"zoo {str(self.path / MANIFEST)!r}, entry {entry.id!r}")
        if "://" in location:
            return EntryWeights(location, "downloadable")
        return EntryWeights(location, "local" if Path(location).is_file() else "missing")

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"Zoo({str(self.path)!r}, {len(self)} entries, probe={self.probe['name']!r})"

    # ------------------------------------------------------------------ compatibility
    def check_embedding(self, emb: Embedding) -> None:
        """Refuse embeddings from another probe, weights, resolution or method family."""
        p = emb.meta.get("probe", {})
        mine = self.manifest["probe"]
        for key, what in (("name", "probe"), ("weights_hash", "probe weights"), ("input_size", "probe input size")):
            if p.get(key) != mine[key]:
                raise IncompatibleEmbeddingsError(
                    f"{emb!r} was made with {what} {p.get(key)!r}, but zoo {str(self.path)!r} uses {mine[key]!r}")
        if method_family(emb.method) != method_family(self.method):
            raise IncompatibleEmbeddingsError(
                f"{emb!r} uses method {emb.method!r}; zoo {str(self.path)!r} holds {self.method!r} embeddings")
        dim = self.manifest.get("dim")
        if dim is not None and len(emb.vector) != dim:
            raise IncompatibleEmbeddingsError(f"{emb!r} has {len(emb.vector)} values; the zoo's embeddings have {dim}")

    # ------------------------------------------------------------------ changes
    def add(self, entry: ZooEntry, embedding: Embedding, t0: Embedding | None = None) -> ZooEntry:
        """Add ``entry`` whose source task has ``embedding``; ``t0`` is needed for the first entry."""
        if not _ID.match(entry.id):
            raise ZooError(f"invalid entry id {entry.id!r} (letters, digits and ._+- only, at most 128 characters)")
        if entry.id in self.ids:
            raise ZooError(f"zoo {str(self.path)!r} already has an entry {entry.id!r}")
        if not entry.model:
            raise ZooError(f"entry {entry.id!r} needs a model name")
        self.check_embedding(embedding)
        t0_vec = self.t0
        if t0_vec is None:
            if t0 is None:
                raise ZooError("the first entry of a zoo needs the probe's trivial task t0")
            self.check_embedding(t0)
            t0_vec = t0.vector
        source_meta = {
            "name": embedding.name,
            "n_classes": embedding.meta.get("n_classes"),
            "n_images": embedding.meta.get("n_images"),
            "dataset": _portable_source(embedding.meta.get("dataset", {}).get("source"), self.path),
            "fingerprint": embedding.meta.get("dataset", {}).get("fingerprint"),
            "method": embedding.meta.get("method", {}),
        }
        new = ZooEntry(entry.id, entry.model, entry.pretrained, entry.checkpoint,
                       {**source_meta, **entry.source}, dict(entry.metadata))
        row = embedding.vector[None, :]
        source = row if not len(self) else np.vstack([self.source, row])
        bias = np.zeros_like(row) if not len(self) else np.vstack([self.bias, np.zeros_like(row)])
        scales = None if self.scales is None else (np.vstack([self.scales[0], np.zeros((1, self.scales[0].shape[1]))]),
                                                   self.scales[1])
        self._commit(self.entries + [new], source, bias, t0_vec, dim=len(embedding.vector), scales=scales)
        return new

    def remove(self, entry_id: str) -> None:
        """Remove one entry (its bias goes with it)."""
        self.entry(entry_id)
        keep = [i for i, e in enumerate(self.entries) if e.id != entry_id]
        self._commit([self.entries[i] for i in keep], self.source[keep], self.bias[keep], self.t0,
                     dim=self.manifest.get("dim"), scales=None if self.scales is None else
                     (self.scales[0][keep], self.scales[1]))

    def configure(self, *, alpha: float | None = None, quality_weight: float | None = None) -> None:
        """Change the ranking's alpha and quality weight. MODEL2VEC biases were learned at the old
        alpha: changing it drops them, to be refitted."""
        for name, value in (("alpha", alpha), ("quality_weight", quality_weight)):
            if value is not None:
                number(value, name, low=0, error=ZooError)
        if alpha is not None and float(alpha) != self.alpha:
            self.manifest["alpha"] = float(alpha)
            if self.manifest.get("model2vec"):
                self.manifest["model2vec"] = None
                self._commit(self.entries, self.source, np.zeros_like(self.source), self.t0,
                             dim=self.manifest.get("dim"))
                return
        if quality_weight is not None:
            self.manifest["quality_weight"] = float(quality_weight)
        self._commit(self.entries, self.source, self.bias, self.t0, dim=self.manifest.get("dim"), scales=self.scales)

    def set_trivial(self, t0: Embedding) -> None:
        """Replace the zoo's trivial task (:func:`task2vec.trivial.trivial_embedding` of a source).
        The MODEL2VEC biases were learned against the old one: they are dropped, to be refitted."""
        if self.t0 is None:
            raise ZooError(f"zoo {str(self.path)!r} is empty: its first entry brings t0")
        self.check_embedding(t0)
        self.manifest.pop("model2vec", None)
        self._commit(self.entries, self.source, np.zeros_like(self.source), t0.vector.astype(np.float64),
                     dim=self.manifest.get("dim"))

    def set_log_scales(self, log_scales: np.ndarray, group: np.ndarray, info: dict[str, Any]) -> None:
        """Store MODEL2VEC's learned log-scales (``Model2Vec.log_scales_``, ``group_``): biases
        F * (exp(log_scales[:, group]) - 1), kept as the scales (a few numbers per model, not D)."""
        log_scales = np.asarray(log_scales, dtype=np.float64)
        group = np.asarray(group)
        if log_scales.ndim != 2 or log_scales.shape[0] != len(self) or group.shape != self.source.shape[1:] \
                or group.dtype.kind not in "iu" or not len(group) or group.min() < 0 \
                or group.max() >= log_scales.shape[1]:
            raise ZooError(f"log-scales must be ({len(self)}, groups) with a group index per filter, got "
                           f"{log_scales.shape} and {group.shape}")
        if not np.isfinite(log_scales).all():
            raise ZooError("log-scales must be finite")
        self.manifest["model2vec"] = info
        scales = (log_scales, group.astype(np.int64))
        self._commit(self.entries, self.source, _scaled_bias(self.source, *scales), self.t0,
                     dim=self.manifest.get("dim"), scales=scales)

    def _commit(self, entries: list[ZooEntry], source: np.ndarray, bias: np.ndarray, t0: np.ndarray | None,
                dim: int | None, scales: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.manifest = dict(self.manifest, entries=[asdict(e) for e in entries], dim=dim)
        self.entries, self.source, self.bias, self.t0, self.scales = entries, source, bias, t0, scales
        try:
            self._write()
        except BaseException:
            loaded = Zoo.load(self.path)  # the folder is unchanged: return to what it holds
            self.manifest, self.entries, self.source, self.bias, self.t0, self.scales = (
                loaded.manifest, loaded.entries, loaded.source, loaded.bias, loaded.t0, loaded.scales)
            raise

    def _write(self) -> None:
        """Arrays file first (new name), then the manifest atomically; then stray arrays go."""
        if self.entries:
            buf = io.BytesIO()
            np.savez_compressed(buf, format=np.array("task2vec.zoo.arrays/1"), ids=np.array(self.ids),
                                source=self.source, **({"t0": self.t0} if self.t0 is not None else {}),
                                **({"bias": self.bias} if self.scales is None else
                                   {"log_scales": self.scales[0], "group": self.scales[1]}))
            data = buf.getvalue()
            digest = _sha256(data)
            name = f"arrays-{digest[:16]}.npz"
            with atomic_open(self.path / name) as f:
                f.write(data)
            self.manifest["arrays"] = {"file": name, "sha256": digest}
        else:
            self.manifest.pop("arrays", None)
        with atomic_open(self.path / MANIFEST, "w") as f:
            json.dump(self.manifest, f, indent=1, sort_keys=False)
            f.write("\n")
        keep = self.manifest.get("arrays", {}).get("file")
        for stray in self.path.glob("arrays-*.npz"):
            if stray.name != keep:
                stray.unlink()

    # ------------------------------------------------------------------ ranking
    def quality_z(self) -> np.ndarray:
        """Standardised ImageNet top-1 per entry (0 where unknown or when fewer than two are known)."""
        top1 = np.array([e.metadata.get("imagenet_top1") if isinstance(e.metadata.get("imagenet_top1"), (int, float))
                         else np.nan for e in self.entries], dtype=np.float64)
        known = ~np.isnan(top1)
        z = np.zeros(len(top1))
        if known.sum() >= 2 and top1[known].std() > 0:
            z[known] = (top1[known] - top1[known].mean()) / top1[known].std()
        return z

    def rank(self, embedding: Embedding, k: int | None = None, *, alpha: float | None = None,
             quality_weight: float | None = None) -> list[Candidate]:
        """The zoo's entries for the task of ``embedding``, best first (the ``k`` best, or all)."""
        if not len(self):
            raise ZooError(f"zoo {str(self.path)!r} is empty: add models with 'task2vec zoo add'")
        k = len(self) if k is None else integer(k, "k", low=1, error=ZooError)
        self.check_embedding(embedding)
        alpha = number(self.alpha if alpha is None else alpha, "alpha", low=0, error=ZooError)
        qw = number(self.quality_weight if quality_weight is None else quality_weight, "quality_weight", low=0,
                    error=ZooError)
        q = embedding.vector
        quality = -qw * self.quality_z()
        # The index ranks every entry exactly (zoos up to its exhaustive size); the quality term is a
        # per-entry constant added afterwards.
        dist, idx = AsymmetricIndex(self.t0, alpha).fit(self.model_embeddings()).search(q, k=len(self))
        dist, idx = dist[0], idx[0]
        total = dist + quality[idx]
        order = np.lexsort((idx, total))[:k]
        # the same d_asym from the source embeddings alone: an entry without a bias gets exactly 0
        plain = asymmetric_scores(self.source[idx[order]], q, self.t0, alpha)[0]
        out = []
        for rank, (j, unbiased) in enumerate(zip(order, plain), start=1):
            i = int(idx[j])
            e = self.entries[i]
            out.append(Candidate(
                rank, e.id, e.model, float(total[j]), float(dist[j]), float(dist[j] - unbiased), float(quality[i]),
                str(e.source.get("name", "?")), e.metadata.get("params_m"), e.metadata.get("input_size"),
                e.metadata.get("imagenet_top1"), self.weights(e)))
        return out


def is_embedding_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like an embedding file (so a CLI argument is an embedding, not a dataset)."""
    p = Path(path)
    if not (p.is_file() and p.suffix == ".npz"):
        return False
    try:
        with np.load(p, allow_pickle=False) as z:
            return "format" in z.files and str(z["format"]) == EMBEDDING_FORMAT
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
