"""From a dataset to the backbone to fine-tune, in one call: embed, rank, check.

:func:`recommend` embeds the task with the zoo's own probe and settings, ranks the zoo
(:meth:`task2vec.zoo.zoo.Zoo.rank`), checks the first picks on the task's images
(:class:`task2vec.zoo.evidence.EvidenceCheck`), and says how far the ranking can be trusted: which
picks stay in the top k under either half of the images, and which lie within the task's noise
of the best. Its defaults (:data:`CHECK`, :data:`MAX_RANK`, and the alpha and quality weight the
zoo records) are the configuration the model-selection benchmark measures best
(``benchmarks/model_selection.py``, row ``recommend (defaults)``; figures in ``benchmarks/README.md``).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..data import as_task
from ..defaults import RECOMMEND_CHECK as CHECK, RECOMMEND_FISHER_IMAGES as FISHER_IMAGES, RECOMMEND_K as K
from ..defaults import RECOMMEND_MAX_RANK as MAX_RANK
from ..embedding.embedding import Embedding
from ..errors import ZooError
from .evidence import EvidenceCheck
from ..io import atomic_open
from ..validate import integer
from .zoo import Candidate, Zoo, is_embedding_file

SCHEMA_VERSION = 1  # of the JSON that Recommendation.save writes


@dataclass
class Recommendation:
    """A zoo's ranking for one task, with what it was made from and how much it can be trusted.

    ``candidates``: the ``k`` best, best first. ``noise``: the task embedding's half-split noise
    (the distance between the embeddings of two halves of its images; a pessimistic estimate,
    since each half has half the images). ``checked``: ids the check scored, ``skipped``: ids it
    could not (weights not here).
    """

    task: str
    zoo: str
    candidates: list[Candidate]
    probe: dict[str, Any]
    settings: dict[str, Any]
    noise: float | None
    n_images: int | None
    checked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best(self) -> Candidate:
        return self.candidates[0]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON: ``schema_version``, the settings, the probe, the noise and one record per candidate."""
        return {"schema_version": SCHEMA_VERSION, "task": self.task, "zoo": self.zoo, "probe": self.probe,
                "settings": self.settings, "noise_half_split": self.noise, "n_images": self.n_images,
                "checked": self.checked, "skipped_checks": self.skipped, "seconds": round(self.seconds, 3),
                "recommendations": [c.as_dict() for c in self.candidates]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`as_dict` as JSON, atomically; returns the path."""
        path = Path(path)
        with atomic_open(path, "w") as f:
            json.dump(self.as_dict(), f, indent=1)
            f.write("\n")
        return path


def recommend(data: Any, zoo: Zoo | str | os.PathLike, k: int = K, *, check: int = CHECK,
              max_rank: int | None = MAX_RANK, fisher_images: int | None = FISHER_IMAGES, alpha: float | None = None,
              quality_weight: float | None = None,
              weights: str | os.PathLike | None = None, device: str = "auto", label_column: str | None = None,
              progress: bool = False, **embedding: Any) -> Recommendation:
    """Rank ``zoo``'s models for the task ``data`` (a dataset folder, CSV, torch Dataset, or an embedding).

    The task is embedded with the zoo's probe (``weights``: its file, default the
    ``$TASK2VEC_WEIGHTS`` lookup) and the settings its sources were embedded with, except
    ``max_rank``, ``fisher_images`` (the Fisher over only that many of the drawn images: the
    embedding's cost) and any Task2Vec setting in ``embedding``. ``check``: the entries of how many
    first source tasks are run over the images and re-ranked, with the probe's own entry and the zoo's ``always_check``
    entries, by LogME (0: none; an embedding brings no images, so it is ranked unchecked, with a warning). ``alpha`` and
    ``quality_weight`` default to the zoo's.
    """
    start = time.perf_counter()
    zoo = zoo if isinstance(zoo, Zoo) else Zoo.load(zoo)
    if not len(zoo):
        raise ZooError(f"zoo {str(zoo.path)!r} is empty: add models with 'task2vec zoo add'")
    k = integer(k, "k", low=1, error=ZooError)
    check = integer(check, "check", low=0, error=ZooError)
    given = isinstance(data, Embedding) or (isinstance(data, (str, os.PathLike)) and is_embedding_file(data))
    task = embedder = None
    if given:
        emb = data if isinstance(data, Embedding) else Embedding.load(data)
        if check:
            warnings.warn("the check needs the dataset's images: an embedding is ranked unchecked", stacklevel=2)
            check = 0
    else:
        task = as_task(data, label_column=label_column)  # bad data fails before the probe loads
        embedder = zoo.embedder(zoo.load_probe(weights, device=device), max_rank=max_rank,
                                fisher_images=fisher_images, progress=progress, **embedding)
        emb = embedder.embed(task)
    ranking = zoo.rank(emb, alpha=alpha, quality_weight=quality_weight)
    checker = None
    if check:
        checker = EvidenceCheck(check, always=zoo.always_check).fit(zoo, ranking, task, embedder)
        ranking = checker.rerank(ranking)
    ranking = _trust(zoo, emb, ranking, k, alpha, quality_weight)
    settings = {"k": k, "check": check, "always_check": zoo.always_check if check else [],
                "alpha": zoo.alpha if alpha is None else float(alpha),
                "quality_weight": zoo.quality_weight if quality_weight is None else float(quality_weight),
                "embedding": emb.meta.get("method", {})}
    return Recommendation(
        emb.name, str(zoo.path), ranking[:k], dict(emb.meta.get("probe", zoo.probe)), settings,
        emb.meta.get("noise_half_split"), emb.meta.get("n_images"),
        checked=list(checker.evidence_) if checker else [], skipped=list(checker.skipped_) if checker else [],
        seconds=time.perf_counter() - start)


def _trust(zoo: Zoo, emb: Embedding, ranking: list[Candidate], k: int, alpha: float | None,
           quality_weight: float | None) -> list[Candidate]:
    """Mark each candidate ``stable`` (in the top k under both half-split embeddings) and ``tied``
    (its score within the task's noise of the best score, when two or more are)."""
    if emb.halves is not None:
        tops = [{c.id for c in zoo.rank(emb.half(h), k, alpha=alpha, quality_weight=quality_weight)} for h in (0, 1)]
        ranking = [replace(c, stable=c.id in tops[0] and c.id in tops[1]) for c in ranking]
    noise = emb.meta.get("noise_half_split")
    if noise is not None:
        best = min(c.score for c in ranking)
        near = {c.id for c in ranking if c.score - best <= noise}
        if len(near) > 1:
            ranking = [replace(c, tied=c.id in near) for c in ranking]
    return ranking
