"""The ranking's prior, learned: how much ImageNet top-1 and model size count against the task distance.

A zoo ranks entry i for task t by ``d_asym(m_i -> t) - quality_weight * z_i - size_weight * s_i``
(:mod:`task2vec.zoo.zoo`; z: standardised ImageNet top-1, s: standardised log parameter count). A
typed ``quality_weight`` is a guess; :class:`QualityPrior` fits both weights on transfer records
(task, model, measured error; :mod:`task2vec.zoo.records`), like MODEL2VEC's biases: the pair of
weights on a small grid whose picks have the lowest mean regret over the records' tasks (ties go to
the weaker prior). A grid, not gradient descent, because the objective (the error of the pick) is
piecewise constant in the weights and a few dozen tasks cannot support more than two numbers.

:func:`leave_one_task_out` measures the fitted prior on held-out tasks only (each task's weights
chosen on the others), against the zoo's current weights and the plain distance.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
from scipy.stats import weightedtau

from ..defaults import QUALITY_PRIOR_GRID, SIZE_PRIOR_GRID
from ..errors import RecordsError
from ..validate import number


def _grid(values: Sequence[float], name: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not len(values):
        raise RecordsError(f"{name} must be a non-empty list of weights, got {values!r}")
    return tuple(sorted({float(number(v, name, low=0, error=RecordsError)) for v in values}))


def _check(distances, quality_z, size_z, records) -> tuple[np.ndarray, ...]:
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or not np.isfinite(d).all():
        raise RecordsError(f"distances must be a finite (tasks, models) matrix, got shape {d.shape}")
    q, s = (np.asarray(v, dtype=np.float64) for v in (quality_z, size_z))
    if q.shape != (d.shape[1],) or s.shape != (d.shape[1],):
        raise RecordsError(f"quality_z and size_z must have one value per model ({d.shape[1]}), got {q.shape}, {s.shape}")
    ti, mi, e = (np.asarray(r) for r in records)
    if not (ti.shape == mi.shape == e.shape) or ti.ndim != 1 or not len(ti):
        raise RecordsError("records must be three equal-length 1-d arrays (task index, model index, error)")
    if ti.min() < 0 or ti.max() >= d.shape[0] or mi.min() < 0 or mi.max() >= d.shape[1]:
        raise RecordsError("a record's task or model index is out of range")
    return d, q, s, ti.astype(int), mi.astype(int), e.astype(np.float64)


def _picks(d, q, s, ti, mi, e, tasks, qw: float, sw: float) -> dict[str, np.ndarray]:
    """Per task of ``tasks``: regret, relative error increase, top-1 and weighted tau of the ranking with these weights."""
    out = {k: np.full(len(tasks), np.nan) for k in ("regret", "relative_error_increase", "top1", "weighted_tau")}
    for n, t in enumerate(tasks):
        here = ti == t
        models, err = mi[here], e[here]
        score = d[t, models] - qw * q[models] - sw * s[models]
        k = int(np.lexsort((models, score))[0])
        best = err.min()
        out["regret"][n] = err[k] - best
        out["top1"][n] = float(err[k] <= best)
        if best > 0:
            out["relative_error_increase"][n] = (err[k] - best) / best
        out["weighted_tau"][n] = weightedtau(-score, -err).correlation
    return out


class QualityPrior:
    """Fit ``quality_weight`` and ``size_weight`` on transfer records (lowest mean regret on a grid).

    ``fit(distances, quality_z, size_z, records)``: ``distances`` (tasks, models) the zoo's d_asym of
    every record task to every entry (its MODEL2VEC biases included), ``quality_z`` / ``size_z`` (models,)
    as :meth:`task2vec.zoo.zoo.Zoo.quality_z` / ``size_z``, ``records`` (task index, model index, error).
    Tasks with fewer than two recorded models are skipped (nothing to choose between).
    """

    def __init__(self, quality_weights: Sequence[float] = QUALITY_PRIOR_GRID,
                 size_weights: Sequence[float] = SIZE_PRIOR_GRID) -> None:
        self.quality_weights = _grid(quality_weights, "quality_weights")
        self.size_weights = _grid(size_weights, "size_weights")

    def fit(self, distances, quality_z, size_z, records, tasks: Sequence[int] | None = None) -> "QualityPrior":
        d, q, s, ti, mi, e = _check(distances, quality_z, size_z, records)
        counts = np.bincount(ti, minlength=len(d))
        usable = np.flatnonzero(counts >= 2) if tasks is None else np.array([t for t in tasks if counts[t] >= 2], int)
        if not len(usable):
            raise RecordsError("no task has records for two or more models: nothing to fit the prior on")
        # the weaker prior first, so that a tie (a flat stretch of the regret) keeps it
        pairs = sorted(itertools.product(self.quality_weights, self.size_weights), key=lambda p: (p[0] + p[1], p))
        regrets = [float(np.mean(_picks(d, q, s, ti, mi, e, usable, *p)["regret"])) for p in pairs]
        best = int(np.argmin(regrets))
        self.quality_weight_, self.size_weight_ = pairs[best]
        self.regret_ = regrets[best]
        self.n_tasks_ = len(usable)
        return self


def leave_one_task_out(distances, quality_z, size_z, records, *, current: tuple[float, float],
                       quality_weights: Sequence[float] = QUALITY_PRIOR_GRID,
                       size_weights: Sequence[float] = SIZE_PRIOR_GRID) -> dict[str, Any]:
    """Held-out figures of the learned prior: each task's weights fitted on the *other* tasks.

    Returns ``{"n_tasks", "summary": {method: {measure: mean}}, "weights": [(qw, sw) per task]}`` for
    the methods ``learned`` (held out), ``current`` (the given ``(quality_weight, size_weight)``) and
    ``distance`` (no prior).
    """
    d, q, s, ti, mi, e = _check(distances, quality_z, size_z, records)
    counts = np.bincount(ti, minlength=len(d))
    held = np.flatnonzero(counts >= 2)
    if len(held) < 2:
        raise RecordsError("leave-one-task-out needs two or more tasks with records for two or more models")
    per = {m: {k: [] for k in ("regret", "relative_error_increase", "top1", "weighted_tau")}
           for m in ("learned", "current", "distance")}
    chosen = []
    for t in held:
        fitted = QualityPrior(quality_weights, size_weights).fit(d, q, s, (ti, mi, e), tasks=[u for u in held if u != t])
        chosen.append((fitted.quality_weight_, fitted.size_weight_))
        for method, w in (("learned", chosen[-1]), ("current", current), ("distance", (0.0, 0.0))):
            for k, v in _picks(d, q, s, ti, mi, e, [t], *w).items():
                per[method][k].append(v[0])

    def mean(x: list[float]) -> float:
        x = np.asarray(x, dtype=np.float64)
        return float(np.nanmean(x)) if not np.isnan(x).all() else math.nan

    return {"n_tasks": len(held), "weights": chosen,
            "summary": {m: {k: mean(v) for k, v in per[m].items()} for m in per}}
