"""Check a zoo ranking's first picks by the evidence of their own features on the task (LogME).

Task2Vec ranks a whole zoo from one probe pass, but it sees each model only through the task the
model was trained on, not through what that training did to its features. A digit expert is the
nearest source for a "thick vs thin strokes" task, yet it was trained to ignore stroke thickness.
The check runs the entries of the ``top`` first source tasks of the ranking over the task's images
(one forward pass each; entries trained on one source, such as an expert of each architecture, tie on
the distance, so they are checked together: :func:`shortlist`), scores
them and the zoo entry that *is* the probe by LogME (the probe's features were computed while
embedding, so its score costs no forward pass) and moves them to the front of the ranking, best
evidence first. The rest of the ranking is untouched.

On the model-selection benchmark the check with ``top=1`` picks better than LogME, LEEP and NCE
over the whole zoo, at a fraction of their cost, but does not order the rest of the zoo as well as
they do. Figures: benchmarks/README.md.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence, TypeVar

import numpy as np
import torch

from ..data import IndexedSubset, SkipBadCollate
from ..embedding.embed import Task2Vec
from ..errors import Task2VecError, ZooError
from ..backbones.models import create_body
from .resolve import resolve_model
from ..backbones.probe import load_state_dict_file, normalize_batch, state_dict_hash
from .transferability import logme
from ..validate import integer
from .zoo import Candidate, Zoo, ZooEntry


def rerank(order: Sequence[int], evidence: Mapping[int, float]) -> list[int]:
    """``order`` with the items that have ``evidence`` moved to the front, highest evidence first.

    Ties keep their place in ``order``; items without evidence keep their relative order.
    """
    order = list(order)
    unknown = set(evidence) - set(order)
    if unknown:
        raise Task2VecError(f"evidence for items not in the order: {sorted(unknown)[:3]}")
    checked = sorted((i for i in order if i in evidence), key=lambda i: (-evidence[i], order.index(i)))
    return checked + [i for i in order if i not in evidence]


T = TypeVar("T")


def shortlist(order: Sequence[T], groups: Mapping[T, Hashable], top: int) -> list[T]:
    """The items of ``order`` in its first ``top`` distinct ``groups``, in order.

    Task2Vec sees a model only through the task it was trained on, so entries of one source task (an expert of
    each architecture) get the same distance and their order among themselves says nothing: the check takes
    all of a source's entries or none.
    """
    first = set(list(dict.fromkeys(groups[i] for i in order))[:top])
    return [i for i in order if groups[i] in first]


def _local_weights(zoo: Zoo, entry: ZooEntry) -> Path | None:
    """The file an entry's weights load from, when it is a local file."""
    weights = zoo.weights(entry)
    return Path(weights.path) if weights.available else None


def probe_entry(zoo: Zoo, probe_weights: str | None = None) -> str | None:
    """The id of the zoo entry whose weights are the zoo's probe (same architecture and weights hash).

    ``probe_weights``, the file the probe was loaded from, is matched by path first; otherwise the
    local weights of every entry of the probe's architecture are hashed.
    """
    name, want = zoo.probe["name"], zoo.probe["weights_hash"]
    same_arch = [e for e in zoo.entries if e.model == name]
    files = {e.id: _local_weights(zoo, e) for e in same_arch}
    if probe_weights is not None and Path(probe_weights).is_file():
        target = Path(probe_weights).resolve()
        for entry_id, path in files.items():
            if path is not None and path.resolve() == target:
                return entry_id
    for entry_id, path in files.items():
        if path is not None and path.is_file() and state_dict_hash(load_state_dict_file(path)) == want:
            return entry_id
    return None


class EvidenceCheck:
    """Re-rank the entries of the first ``top`` source tasks of a zoo ranking, plus the probe's own entry, by LogME.

    Hyperparameters (constructor): ``top`` (the ranking's first ``top`` source tasks, each with every entry
    trained on it, are run over the task: :func:`shortlist`; default 1), ``always``
    (entry ids scored whatever their rank: a zoo's :attr:`~task2vec.zoo.zoo.Zoo.always_check`, the
    entries that transfer well in general, so that a source that merely looks like the task cannot
    crowd them out), ``batch_size``. Every candidate sees the images the embedding used, at the probe's resolution
    (the task was embedded at it), with the candidate's own normalisation.
    A candidate whose weights are not here (missing, or only downloadable) is skipped with one
    warning and keeps its place.
    Learned state after :meth:`fit`: ``evidence_`` (entry id -> LogME), ``seconds_`` (entry id ->
    forward pass plus LogME, 0 for the probe's forward pass), ``skipped_`` (ids of candidates
    not checked for want of local weights), ``probe_entry_`` (or None).
    """

    def __init__(self, top: int = 1, *, always: Sequence[str] = (), batch_size: int = 64):
        self.top = integer(top, "top", low=1, error=ZooError)
        self.always = tuple(always)
        self.batch_size = integer(batch_size, "batch_size", low=1, error=ZooError)

    def fit(self, zoo: Zoo, ranking: Sequence[Candidate], task: Any, embedder: Task2Vec) -> "EvidenceCheck":
        """Score the candidates on ``task``, the dataset ``embedder`` has just embedded."""
        for attr in ("features_", "labels_", "indices_"):
            if not hasattr(embedder, attr):
                raise ZooError("the embedder has not embedded a task yet: call embedder.embed(task) first")
        if len(ranking) != len(zoo):
            raise ZooError(f"the ranking has {len(ranking)} of the zoo's {len(zoo)} entries: "
                           "pass zoo.recommend(embedding, k=len(zoo))")
        probe = embedder.probe
        self.probe_entry_ = probe_entry(zoo, probe.weights_source)
        labels = embedder.labels_
        self.evidence_, self.seconds_, self.skipped_ = {}, {}, []
        if self.probe_entry_ is not None:
            start = time.perf_counter()
            self.evidence_[self.probe_entry_] = logme(embedder.features_, labels)
            self.seconds_[self.probe_entry_] = time.perf_counter() - start
        subset = IndexedSubset(task, embedder.indices_, probe.transform)
        by_id = {rec.id: rec for rec in ranking}
        unknown = [i for i in self.always if i not in by_id]
        if unknown:
            raise ZooError(f"always-checked entries {unknown} are not in the ranking")
        group = dict(zip(zoo.ids, zoo.source_groups()))
        picks = shortlist([rec.id for rec in ranking], group, self.top)
        for rec in [by_id[i] for i in [*picks, *self.always]]:
            if rec.id in self.evidence_ or rec.id in self.skipped_:
                continue
            if not rec.weights.available:
                warnings.warn(f"check: {rec.id!r} skipped, its weights are {rec.weights.status}"
                              + (f" ({rec.weights.path})" if rec.weights.path else ""), stacklevel=2)
                self.skipped_.append(rec.id)
                continue
            start = time.perf_counter()
            feats = self._features(zoo, rec.id, subset, probe.device)
            self.evidence_[rec.id] = logme(feats, labels)
            self.seconds_[rec.id] = time.perf_counter() - start
        return self

    def _features(self, zoo: Zoo, entry_id: str, subset: IndexedSubset, device: torch.device) -> np.ndarray:
        """The entry's penultimate features of the task's images (already at the probe's resolution)."""
        try:
            net = create_body(resolve_model(entry_id, zoo=zoo.path))
        except Task2VecError as exc:
            raise ZooError(f"cannot check zoo entry {entry_id!r}: {exc}") from None
        body = net.body.eval().to(device)
        loader = torch.utils.data.DataLoader(subset, batch_size=self.batch_size, shuffle=False,
                                             collate_fn=SkipBadCollate())
        feats = []
        with torch.no_grad():
            for images, _labels, _index, _bad in loader:
                if images is not None:
                    feats.append(body(normalize_batch(images, net.config, device)).float().cpu())
        out = torch.cat(feats).numpy() if feats else np.zeros((0, net.feature_dim), np.float32)
        if len(out) != len(subset):
            raise ZooError(f"cannot check zoo entry {entry_id!r}: {len(subset) - len(out)} of the task's images "
                           "could not be read again")
        return out

    def rerank(self, ranking: Sequence[Candidate]) -> list[Candidate]:
        """``ranking`` with the checked entries first, best evidence first, ranks renumbered."""
        if not hasattr(self, "evidence_"):
            raise ZooError("the check has not been fitted: call fit(zoo, ranking, task, embedder) first")
        pos = {r.id: i for i, r in enumerate(ranking)}
        missing = set(self.evidence_) - set(pos)
        if missing:
            raise ZooError(f"the ranking lacks the checked entries {sorted(missing)}")
        order = rerank(range(len(ranking)), {pos[k]: v for k, v in self.evidence_.items()})
        return [replace(ranking[i], rank=n, evidence=self.evidence_.get(ranking[i].id))
                for n, i in enumerate(order, start=1)]
