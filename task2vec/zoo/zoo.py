"""A zoo of candidate models: what each was trained on, and the ranking for a new task.

A zoo is a folder:

- ``zoo.json``: the manifest (format, probe, settings, one record per entry: id, model
  name, how to get its weights, its source task, metadata such as parameters and ImageNet
  top-1), naming the arrays file that goes with it and that file's SHA-256, and carrying the
  SHA-256 of its own content (``manifest_sha256``, :func:`manifest_checksum`): a hand edit is
  refused, and every field is checked on load whether or not the manifest has a checksum
  (those written before it do not). Its paths (checkpoints, source data sets) are read and
  recorded by the rule of :mod:`task2vec.paths`: ``${VAR}`` from the environment, other
  relative paths against the zoo folder; checkpoints stay inside it;
- ``arrays-<hash>.npz``: ``ids``, ``source`` (N, D) source-task embeddings F_i, ``bias``
  (N, D) MODEL2VEC biases b_i, and ``t0`` (D,) the probe's trivial task.

Every change writes a new arrays file and then atomically replaces the manifest, so an
interrupted change leaves the zoo exactly as it was (a stray ``arrays-*.npz`` at worst,
removed by the next change).

Ranking (lower is better), for a target task t and model embedding m_i = F_i + b_i:

    score_i = d_asym(m_i -> t) - quality_weight * z_i - size_weight * s_i
            = d_sym(m_i, t) - alpha * d_sym(m_i + t0, t0) - quality_weight * z_i - size_weight * s_i

where z_i is the entry's ImageNet top-1 and s_i its log parameter count, each standardised over
the zoo's entries that have one (0 for those without); ``size_weight`` is 0 unless fitted
(:mod:`task2vec.zoo.qualityprior`, ``task2vec zoo fit-quality``, which records how in ``quality_prior``).
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
from typing import Any, NamedTuple, Sequence

import numpy as np

from ..defaults import EMBEDDING_SETTINGS, LABEL_METHODS as FISHER_METHODS, QUALITY_WEIGHT, SIZE_WEIGHT
from ..space.distance import ALPHA, asymmetric_scores
from ..embedding.embed import Task2Vec
from ..embedding.embedding import FORMAT as EMBEDDING_FORMAT, Embedding, method_family
from ..errors import IncompatibleEmbeddingsError, ZooError
from .index import AsymmetricIndex
from ..io import atomic_open
from .model2vec import scaled
from ..paths import portable_path, resolve_path, weights_path_problem
from ..backbones.probe import Probe, find_local_weights
from ..validate import integer, number

FORMAT = "task2vec.zoo/1"
MANIFEST = "zoo.json"
CHECKSUM = "manifest_sha256"  # the manifest field that holds the checksum of the rest
MANIFEST_FIELDS = {"format", CHECKSUM, "probe", "method", "embedding_settings", "alpha", "quality_weight", "dim",
                   "model2vec", "always_check", "entries", "arrays", "size_weight", "quality_prior"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_ARRAYS_FILE = re.compile(r"^arrays-[0-9a-f]{16}\.npz$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ZooEntry:
    """One candidate model."""

    id: str
    model: str  # timm or torchvision architecture name
    pretrained: bool = False  # weights from timm/torchvision's own download
    checkpoint: str | None = None  # a local file or URI with the fine-tuned weights
    source: dict[str, Any] = field(default_factory=dict)  # the source task: name, classes, images, dataset
    metadata: dict[str, Any] = field(default_factory=dict)  # params_m, input_size, imagenet_top1, license, notes


def _count(value: Any, name: str) -> None:
    """A size or a count: an integer >= 1."""
    integer(value, name, low=1, error=ZooError)


def _weight(value: Any, name: str) -> None:
    """A weight of the score: a finite number >= 0."""
    number(value, name, low=0, error=ZooError)


def _positive(value: Any, name: str) -> None:
    number(value, name, low=0, low_open=True, error=ZooError)


def _percentage(value: Any, name: str) -> None:
    number(value, f"{name} (a percentage)", low=0, high=100, error=ZooError)


# Known fields of an entry's source and metadata, checked when present and not null (others are values a
# spec's metadata adds): a type, or a check that raises ZooError.
_SOURCE_FIELDS: dict[str, Any] = {"name": str, "dataset": str, "fingerprint": str, "method": dict,
                                  "n_classes": _count, "n_images": _count}
_METADATA_FIELDS: dict[str, Any] = {"license": str, "notes": str, "imagenet_top1": _percentage,
                                    "params_m": _positive, "input_size": _count}
_KINDS = {str: "a string", dict: "an object"}
_MISSING = object()  # a required field that is absent


def _field_problem(value: Any, name: str, check: Any) -> str | None:
    """What is wrong with one known field (None: nothing, or null); ``_MISSING``: absent but required."""
    if value is _MISSING:
        return f"{name} is missing"
    if value is None:
        return None
    if check in _KINDS:
        return None if isinstance(value, check) else f"{name} must be {_KINDS[check]}, got {value!r}"
    try:
        check(value, name)
    except ZooError as exc:
        return str(exc)
    return None


def entry_problems(d: Any, n: int | None = None) -> list[str]:
    """Everything wrong with one manifest entry ``d`` (the ``n``-th, counted from 1), in words:
    types, ids, the weights path (:func:`task2vec.paths.weights_path_problem`) and the known
    source and metadata fields (top-1 in [0, 100], sizes and counts >= 1, ...)."""
    label = f"entry {n}" if n is not None else "an entry"
    if not isinstance(d, dict):
        return [f"{label} must be an object, got {type(d).__name__}"]
    if isinstance(d.get("id"), str) and _ID.match(d["id"]):
        label = f"entry {d['id']!r}"
    else:
        return [f"{label}: 'id' must be letters, digits and ._+- only, at most 128 characters, got {d.get('id')!r}"]
    problems = []
    unknown = set(d) - set(ZooEntry.__dataclass_fields__)
    if unknown:
        problems.append(f"{label}: unknown field(s) {sorted(unknown)}")
    if not isinstance(d.get("model"), str) or not d["model"]:
        problems.append(f"{label}: 'model' must be a non-empty string")
    if not isinstance(d.get("pretrained", False), bool):
        problems.append(f"{label}: 'pretrained' must be true or false")
    checkpoint = d.get("checkpoint")
    if checkpoint is not None:
        if not isinstance(checkpoint, str) or not checkpoint:
            problems.append(f"{label}: 'checkpoint' must be null or a path, got {checkpoint!r}")
        else:
            problem = weights_path_problem(checkpoint)
            if problem:
                problems.append(f"{label}: checkpoint {checkpoint!r} {problem}")
            if d.get("pretrained") is True:
                problems.append(f"{label}: give 'pretrained' or 'checkpoint', not both")
    for key, fields in (("source", _SOURCE_FIELDS), ("metadata", _METADATA_FIELDS)):
        part = d.get(key, {})
        if not isinstance(part, dict):
            problems.append(f"{label}: {key!r} must be an object")
            continue
        for name, check in fields.items():
            problem = _field_problem(part.get(name), f"{key} {name!r}", check)
            if problem:
                problems.append(f"{label}: {problem}")
    return problems


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON (sorted keys, no spaces) without its own
    ``manifest_sha256`` field: what that field records, so that layout is free but content is not."""
    body = {k: v for k, v in manifest.items() if k != CHECKSUM}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _random_init_seed(probe: dict[str, Any]) -> dict[str, int]:
    """``{"random_init_seed": s}`` for a probe of seeded random weights (``Probe.describe()``'s source), else ``{}``."""
    match = re.fullmatch(r"random-init\(seed=(\d+)\)", str(probe.get("weights_source", "")))
    return {"random_init_seed": int(match.group(1))} if match else {}


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Everything wrong with the fields of a manifest (a JSON object of this format), in words:
    unknown fields, types, ranges (alpha and the quality weight finite and >= 0, sizes >= 1), the
    arrays file's name and checksum, and every entry (:func:`entry_problems`)."""
    problems = []
    unknown = sorted(set(manifest) - MANIFEST_FIELDS)
    if unknown:
        problems.append(f"unknown field(s) {unknown}")
    probe = manifest.get("probe")
    if not isinstance(probe, dict):
        problems.append("field 'probe' must be an object")
    else:
        for key in ("name", "weights_hash"):
            if not isinstance(probe.get(key), str) or not probe[key]:
                problems.append(f"field 'probe.{key}' must be a non-empty string, got {probe.get(key)!r}")
        problem = _field_problem(probe.get("input_size", _MISSING), "field 'probe.input_size'", _count)
        problems += [problem] if problem else []
        seed = probe.get("random_init_seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32):
            problems.append(f"field 'probe.random_init_seed' must be an integer in [0, 2**32), got {seed!r}")
    if manifest.get("method") not in FISHER_METHODS:
        problems.append(f"field 'method' must be one of {', '.join(FISHER_METHODS)}, got {manifest.get('method')!r}")
    for key, check in (("embedding_settings", dict), ("model2vec", dict), ("alpha", _weight),
                       ("quality_weight", _weight), ("dim", _count), ("quality_prior", dict)):
        required = check is _weight
        problem = _field_problem(manifest.get(key, _MISSING if required else None), f"field {key!r}", check)
        problems += [problem] if problem else []
    if manifest.get("size_weight") is not None:  # optional: zoos before the size prior have none
        problem = _field_problem(manifest["size_weight"], "field 'size_weight'", _weight)
        problems += [problem] if problem else []
    entries = manifest.get("entries")
    if not isinstance(entries, list):
        problems.append("field 'entries' must be an array")
        return problems
    for n, e in enumerate(entries, start=1):
        problems += entry_problems(e, n)
    ids = [e.get("id") for e in entries if isinstance(e, dict)]
    dup = sorted({i for i in ids if isinstance(i, str) and ids.count(i) > 1})
    if dup:
        problems.append(f"duplicate entry id(s) {dup}")
    always = manifest.get("always_check")
    if always is not None:
        if not (isinstance(always, dict) and isinstance(always.get("ids"), list)
                and all(isinstance(i, str) for i in always["ids"])):
            problems.append("field 'always_check' must be an object with a list of entry ids, 'ids'")
        elif sorted(set(always["ids"]) - set(ids)) or len(set(always["ids"])) != len(always["ids"]):
            problems.append(f"field 'always_check.ids' must name distinct entries of the zoo, got {always['ids']}")
    arrays = manifest.get("arrays")
    if entries or arrays is not None:
        if not (isinstance(arrays, dict) and isinstance(arrays.get("file"), str) and _ARRAYS_FILE.match(arrays["file"])
                and isinstance(arrays.get("sha256"), str) and _SHA256.match(arrays["sha256"])):
            problems.append("field 'arrays' must name the arrays file (arrays-<16 hex digits>.npz, in the zoo "
                            "folder) and its sha256")
    if entries and manifest.get("dim") is None:
        problems.append("field 'dim' must be the embeddings' length when the zoo has entries")
    return problems


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of zoo folder ``path`` as JSON of this format, fields not yet checked."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ZooError(f"{str(path)!r} is not a zoo (no {MANIFEST}; create one with 'task2vec zoo init')")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZooError(f"{str(mpath)!r} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ZooError(f"{str(mpath)!r} is not a {FORMAT} manifest")
    return manifest


def _read_arrays(path: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                tuple[np.ndarray, np.ndarray] | None]:
    """(source, bias, t0, scales) from the arrays file a checked manifest names, verified against it."""
    mpath, arrays = path / MANIFEST, manifest["arrays"]
    apath = path / arrays["file"]
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
    if a_ids != [e["id"] for e in manifest["entries"]]:
        raise ZooError(f"{str(mpath)!r}: entry ids do not match the arrays file's ids (hand-edited manifest?)")
    if source.shape != bias.shape or source.shape[0] != len(a_ids) or (t0 is not None and t0.shape != source.shape[1:]):
        raise ZooError(f"zoo arrays in {str(apath)!r} have inconsistent shapes")
    if a_ids and source.shape[1] != manifest["dim"]:
        raise ZooError(f"{str(mpath)!r}: field 'dim' is {manifest['dim']}, but the arrays hold embeddings of "
                       f"{source.shape[1]} values")
    return source, bias, t0, scales


class EntryWeights(NamedTuple):
    """Where an entry's weights come from: ``path`` (a local file or URI; None for a library download or
    no weights) and ``status``: ``local`` (a file here), ``missing`` (a file that is not here),
    ``downloadable`` (a URI, or ``pretrained`` without a local copy) or ``none``."""

    path: str | None
    status: str

    @property
    def available(self) -> bool:
        return self.status == "local"


@dataclass
class Verification:
    """What :meth:`Zoo.verify` found in a zoo folder: ``problems`` (each one makes :meth:`Zoo.load`
    refuse the zoo, or would) and ``notes`` (worth knowing, not wrong: a weights file not built or
    fetched yet, a manifest written before checksums)."""

    path: Path
    entries: int
    problems: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _entry_weights(entry: ZooEntry, zoo_dir: Path) -> EntryWeights:
    """Where ``entry``'s weights come from (:meth:`Zoo.weights`)."""
    if entry.pretrained:
        local = find_local_weights(entry.model)
        return EntryWeights(str(local), "local") if local else EntryWeights(None, "downloadable")
    if not entry.checkpoint:
        return EntryWeights(None, "none")
    location = resolve_path(entry.checkpoint, zoo_dir, f"zoo {str(zoo_dir / MANIFEST)!r}, entry {entry.id!r}")
    if "://" in location:
        return EntryWeights(location, "downloadable")
    return EntryWeights(location, "local" if Path(location).is_file() else "missing")


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
            "probe": {**{k: probe[k] for k in ("name", "weights_hash", "input_size")}, **_random_init_seed(probe)},
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
        """Open a zoo folder; a hand-edited manifest (its checksum does not match), a field out of
        range (:func:`manifest_problems`) or arrays that do not match it are a :class:`ZooError`."""
        path = Path(path)
        mpath = path / MANIFEST
        manifest = _read_manifest(path)
        if CHECKSUM in manifest and manifest[CHECKSUM] != manifest_checksum(manifest):
            raise ZooError(f"zoo manifest {str(mpath)!r} was edited by hand (its checksum does not match): "
                           f"run 'task2vec zoo verify {path}' to see what is wrong")
        problems = manifest_problems(manifest)
        if problems:
            more = f" (and {len(problems) - 1} more: 'task2vec zoo verify {path}' lists them)" if len(problems) > 1 else ""
            raise ZooError(f"{str(mpath)!r}: {problems[0]}{more}")
        entries = [ZooEntry(**e) for e in manifest["entries"]]
        if not entries and not manifest.get("arrays"):
            return cls(path, manifest, [], np.zeros((0, 0)), np.zeros((0, 0)), None)
        return cls(path, manifest, entries, *_read_arrays(path, manifest))

    @staticmethod
    def verify(path: str | os.PathLike) -> Verification:
        """Every check :meth:`load` makes, each problem reported rather than the first: the
        manifest's checksum, every field, the arrays file; and as notes, entries whose weights file
        is not here (a build or a download brings it) and a manifest without a checksum."""
        path = Path(path)
        mpath = path / MANIFEST
        try:
            manifest = _read_manifest(path)
        except ZooError as exc:
            return Verification(path, 0, [str(exc)], [])
        problems, notes = [], []
        if CHECKSUM not in manifest:
            notes.append(f"zoo manifest {str(mpath)!r} carries no checksum (written before task2vec checksummed "
                         "manifests): its next change through task2vec adds one")
        elif manifest[CHECKSUM] != manifest_checksum(manifest):
            problems.append(f"zoo manifest {str(mpath)!r} was edited by hand (its checksum does not match): undo the "
                            "edit; 'task2vec zoo set' changes the settings, 'zoo add' and 'zoo remove' the entries")
        fields = [f"{str(mpath)!r}: {p}" for p in manifest_problems(manifest)]
        problems += fields
        entries = manifest["entries"] if isinstance(manifest.get("entries"), list) else []
        if not fields:
            if entries or manifest.get("arrays"):
                try:
                    _read_arrays(path, manifest)
                except ZooError as exc:
                    problems.append(str(exc))
            for e in [ZooEntry(**d) for d in entries]:
                try:
                    where = _entry_weights(e, path)
                except ZooError as exc:  # an unset ${VAR}: this environment's, not the zoo's
                    notes.append(str(exc))
                    continue
                if where.status == "missing":
                    notes.append(f"entry {e.id!r}: weights file {where.path!r} is not here ('task2vec zoo build' "
                                 "trains or fetches it)")
        return Verification(path, len(entries), problems, notes)

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
    def size_weight(self) -> float:
        return float(self.manifest.get("size_weight") or SIZE_WEIGHT)

    @property
    def method(self) -> str:
        return str(self.manifest["method"])

    def source_groups(self) -> list[str]:
        """Each entry's source task as a key, in entry order: its source fingerprint (the id where none is
        recorded). Entries with one key were trained on the same images, e.g. an expert of each architecture."""
        return [str(e.source.get("fingerprint") or f"id:{e.id}") for e in self.entries]

    @property
    def always_check(self) -> list[str]:
        """Entries the evidence check scores whatever the ranking (``configure(always_check=...)``)."""
        return list((self.manifest.get("always_check") or {}).get("ids", []))

    def load_probe(self, weights: str | os.PathLike | None = None, *, device: str = "auto") -> Probe:
        """The zoo's probe network (``weights``: its file, default the ``$TASK2VEC_WEIGHTS`` lookup);
        weights whose hash differs from the zoo's are refused."""
        p = self.probe
        random = weights is None and "random_init_seed" in p  # a test zoo's seeded random probe is rebuilt
        probe = Probe.create(p["name"], weights=weights, image_size=p["input_size"], device=device,
                             random_init=random, seed=int(p.get("random_init_seed", 0)))
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
        return Task2Vec(probe, **self.embedding_kwargs(**overrides))

    def embedding_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The :class:`Task2Vec` settings the zoo's sources were embedded with, ``overrides`` on top."""
        saved = self.manifest.get("embedding_settings", {})
        return {**{k: v for k, v in saved.items() if k in EMBEDDING_SETTINGS}, **overrides}

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
        return _entry_weights(entry, self.path)

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
        problems = entry_problems(asdict(entry))
        if problems:  # what load would refuse is never written
            raise ZooError(problems[0])
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
        problems = entry_problems(asdict(new))
        if problems:  # the source task's description, from the embedding's metadata
            raise ZooError(problems[0])
        row = embedding.vector[None, :]
        source = row if not len(self) else np.vstack([self.source, row])
        bias = np.zeros_like(row) if not len(self) else np.vstack([self.bias, np.zeros_like(row)])
        scales = None if self.scales is None else (np.vstack([self.scales[0], np.zeros((1, self.scales[0].shape[1]))]),
                                                   self.scales[1])
        self._commit(self.entries + [new], source, bias, t0_vec, dim=len(embedding.vector), scales=scales)
        return new

    def remove(self, entry_id: str) -> None:
        """Remove one entry (its bias, and its place in ``always_check``, go with it)."""
        self.entry(entry_id)
        if entry_id in self.always_check:
            self.manifest["always_check"]["ids"].remove(entry_id)
        keep = [i for i, e in enumerate(self.entries) if e.id != entry_id]
        self._commit([self.entries[i] for i in keep], self.source[keep], self.bias[keep], self.t0,
                     dim=self.manifest.get("dim"), scales=None if self.scales is None else
                     (self.scales[0][keep], self.scales[1]))

    def configure(self, *, alpha: float | None = None, quality_weight: float | None = None,
                  always_check: Sequence[str] | None = None, always_check_fitted: str = "given") -> None:
        """Change the ranking's alpha and quality weight, and the entries the evidence check always
        scores (``always_check``, with how they were chosen: ``always_check_fitted``; ``[]`` clears
        them). MODEL2VEC biases were learned at the old alpha: changing it drops them, to be refitted."""
        for name, value in (("alpha", alpha), ("quality_weight", quality_weight)):
            if value is not None:
                number(value, name, low=0, error=ZooError)
        if always_check is not None:
            ids = list(dict.fromkeys(always_check))
            for entry_id in ids:
                self.entry(entry_id)
            self.manifest["always_check"] = {"ids": ids, "fitted": str(always_check_fitted)} if ids else None
        drop = alpha is not None and float(alpha) != self.alpha and bool(self.manifest.get("model2vec"))
        if alpha is not None:
            self.manifest["alpha"] = float(alpha)
        if quality_weight is not None:
            self.manifest["quality_weight"] = float(quality_weight)
        if drop:
            self.manifest["model2vec"] = None
            self._commit(self.entries, self.source, np.zeros_like(self.source), self.t0, dim=self.manifest.get("dim"))
        else:  # the arrays stay as they are: only the manifest is rewritten
            self._commit(self.entries, self.source, self.bias, self.t0, dim=self.manifest.get("dim"),
                         scales=self.scales, arrays=False)

    def set_trivial(self, t0: Embedding) -> None:
        """Replace the zoo's trivial task (:func:`task2vec.space.trivial.trivial_embedding` of a source).
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
                dim: int | None, scales: tuple[np.ndarray, np.ndarray] | None = None, arrays: bool = True) -> None:
        self.manifest = dict(self.manifest, entries=[asdict(e) for e in entries], dim=dim)
        self.entries, self.source, self.bias, self.t0, self.scales = entries, source, bias, t0, scales
        try:
            self._write(arrays)
        except BaseException:
            loaded = Zoo.load(self.path)  # the folder is unchanged: return to what it holds
            self.manifest, self.entries, self.source, self.bias, self.t0, self.scales = (
                loaded.manifest, loaded.entries, loaded.source, loaded.bias, loaded.t0, loaded.scales)
            raise

    def _write(self, arrays: bool = True) -> None:
        """Arrays file first (new name; ``arrays=False``: the one there is kept), then the manifest
        with its checksum, atomically; then stray arrays go."""
        if arrays and self.entries:
            buf = io.BytesIO()
            np.savez_compressed(buf, format=np.array("task2vec.zoo.zoo.arrays/1"), ids=np.array(self.ids),
                                source=self.source, **({"t0": self.t0} if self.t0 is not None else {}),
                                **({"bias": self.bias} if self.scales is None else
                                   {"log_scales": self.scales[0], "group": self.scales[1]}))
            data = buf.getvalue()
            digest = _sha256(data)
            name = f"arrays-{digest[:16]}.npz"
            with atomic_open(self.path / name) as f:
                f.write(data)
            self.manifest["arrays"] = {"file": name, "sha256": digest}
        elif arrays:
            self.manifest.pop("arrays", None)
        body = {k: v for k, v in self.manifest.items() if k != CHECKSUM}
        digest = manifest_checksum(json.loads(json.dumps(body)))  # of the values as they will read back
        self.manifest = {"format": body["format"], CHECKSUM: digest, **body}
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
        return _standardised([e.metadata.get("imagenet_top1") for e in self.entries])

    def size_z(self) -> np.ndarray:
        """Standardised log parameter count per entry (0 where unknown or when fewer than two are known)."""
        return _standardised([np.log(e.metadata["params_m"]) if isinstance(e.metadata.get("params_m"), (int, float))
                              and e.metadata["params_m"] > 0 else None for e in self.entries])

    def prior(self, quality_weight: float | None = None, size_weight: float | None = None) -> np.ndarray:
        """The ranking's per-entry prior term (added to d_asym; lower is better)."""
        qw = self.quality_weight if quality_weight is None else quality_weight
        sw = self.size_weight if size_weight is None else size_weight
        return -qw * self.quality_z() - sw * self.size_z()

    def set_prior(self, quality_weight: float, size_weight: float, info: dict[str, Any]) -> None:
        """Store fitted prior weights with how they were fitted (``info``: records, grid, held-out figures)."""
        for name, value in (("quality_weight", quality_weight), ("size_weight", size_weight)):
            number(value, name, low=0, error=ZooError)
        self.manifest.update(quality_weight=float(quality_weight), size_weight=float(size_weight), quality_prior=info)
        self._commit(self.entries, self.source, self.bias, self.t0, dim=self.manifest.get("dim"),
                     scales=self.scales, arrays=False)

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
        quality = self.prior(qw)
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


def _standardised(values: Sequence[Any]) -> np.ndarray:
    """(x - mean) / std over the known numbers of ``values``; 0 for the others, and for all when
    fewer than two are known or they do not vary."""
    x = np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan for v in values],
                 dtype=np.float64)
    known = ~np.isnan(x)
    z = np.zeros(len(x))
    if known.sum() >= 2 and x[known].std() > 0:
        z[known] = (x[known] - x[known].mean()) / x[known].std()
    return z


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
