"""MODEL2VEC (Achille et al. 2019, Sec. "MODEL2VEC"): learned model embeddings for model selection.

A zoo holds M models, each with the embedding F_i of the task it was trained on. Ranking the
models for a target task t by the asymmetric distance d_asym(F_i -> t) assumes that the training
task's embedding says everything about the model; MODEL2VEC instead embeds model i as
m_i = F_i + b_i, with the bias b_i learned from *transfer records* (task t_k, model i, measured
error e_ki), and ranks by

    score_i(t) = d_sym(m_i, t) - alpha * d_sym(m_i + t0, t0)     (lower = better),

the second term being the model's complexity (:func:`task2vec.space.distance.complexity`).

Fit: for every record task with at least two recorded models, the softmax over those models of
-score_i(t_k) / tau should match the soft target softmax(-e_ki / T) built from the measured errors
(cross-entropy, reported as the KL divergence, averaged over tasks), plus an L2 pull of the
biases towards zero so that a model with few records keeps its plain embedding.

d_sym needs non-negative vectors, so the bias is parameterised multiplicatively,
m_i = F_i * exp(c_i), and stored additively, b_i = m_i - F_i:

- ``parameterisation="layer"`` (default): one log-scale per model and layer (``layer_sizes``
  says how many filters each layer holds; without it, one log-scale per model). About 50
  parameters per model for MobileNetV2's 17,056 filters, so a few dozen records suffice.
- ``parameterisation="filter"``: one log-scale per model and filter (D per model): the full
  freedom of the paper's b_i, which needs many records per model not to overfit.

The penalty is ``l2 * sum_i mean_j c_ij^2`` over the filters j (a layer's log-scale counts once per
filter it scales), the same for both parameterisations. Models without usable records get exactly
b_i = 0. The score temperature tau is fitted jointly with the biases unless ``temperature`` fixes it.

:func:`leave_one_task_out` measures selection quality on held-out tasks only; the records come as
arrays or from a CSV (:func:`task2vec.zoo.records.read_records`).

Defaults (``parameterisation="layer"``, ``l2=0.1``, ``target_temperature=0.01``, tau fitted) were
chosen on *synthetic* held-out results only (no real transfer records were available); validate
them on real records before trusting them. Figures: benchmarks/README.md.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
from scipy.stats import weightedtau
from torch.utils.checkpoint import checkpoint

from ..defaults import MODEL2VEC_L2, MODEL2VEC_PARAMETERISATIONS as PARAMETERISATIONS
from ..space.distance import ALPHA, asymmetric_scores, complexity, symmetric_torch
from ..embedding.embedding import Embedding
from ..errors import IncompatibleEmbeddingsError, RecordsError, Task2VecError
from ..validate import embedding_array, integer, number

METHODS = ("asymmetric", "model2vec", "chance", "oracle")
CHUNK_ELEMENTS = 1 << 25  # pairs x filters per autograd chunk (256 MiB of float64; larger sets are checkpointed)


# --------------------------------------------------------------------------- differentiable d_sym

def _pair_distances(m: torch.Tensor, tasks: torch.Tensor, mi: torch.Tensor, ti: torch.Tensor) -> torch.Tensor:
    """d_sym(m[mi[k]], tasks[ti[k]]) for every k, in chunks (recomputed in backward) to bound memory."""
    chunk = max(1, CHUNK_ELEMENTS // m.shape[1])
    if len(mi) <= chunk:
        return symmetric_torch(m[mi], tasks[ti])
    parts = [checkpoint(lambda mm, i, j: symmetric_torch(mm[i], tasks[j]), m, mi[s:s + chunk], ti[s:s + chunk],
                        use_reentrant=False)
             for s in range(0, len(mi), chunk)]
    return torch.cat(parts)


def scaled(F: np.ndarray, log_scales: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Model embeddings m = F * exp(log_scales[:, group]): what MODEL2VEC learns, from its log-scales."""
    return F * np.exp(log_scales[:, group])


# --------------------------------------------------------------------------- input checks

def _matrix(x, name: str, cols: int | None = None) -> np.ndarray:
    a = embedding_array(x, name, ndim=2, error=Task2VecError)
    if cols is not None and a.shape[1] != cols:
        raise IncompatibleEmbeddingsError(f"{name} has {a.shape[1]} filters per row but the model vectors have {cols}")
    return a


def _vector(x, name: str, size: int) -> np.ndarray:
    a = embedding_array(x, name, ndim=1, error=Task2VecError)
    if a.shape != (size,):
        raise IncompatibleEmbeddingsError(f"{name} has {a.shape[0]} filters but the model vectors have {size}")
    return a


def _index_array(x, name: str, n: int, size: int) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or len(a) != size:
        raise RecordsError(f"records {name} must be 1-D with {size} entries like the others, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            k = int(np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))[0])
            raise RecordsError(f"records {name}[{k}] = {a[k].item()!r} is not an integer index")
    elif a.dtype.kind not in "iu":
        raise RecordsError(f"records {name} must be integer indices, got dtype {a.dtype}")
    a = a.astype(np.int64)
    bad = (a < 0) | (a >= n)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise RecordsError(f"records {name}[{k}] = {a[k]} is out of range [0, {n})")
    return a


def _records(records, n_tasks: int, n_models: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate (task_idx, model_idx, error) arrays, or anything with those three attributes
    (:class:`~task2vec.zoo.records.Records`)."""
    if all(hasattr(records, k) for k in ("task_idx", "model_idx", "error")):
        ti, mi, e = records.task_idx, records.model_idx, records.error
    else:
        try:
            ti, mi, e = records
        except (TypeError, ValueError):
            raise RecordsError("records must be three arrays (task_idx, model_idx, error) or a Records object") from None
    try:
        e = np.asarray(e, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RecordsError(f"records error must be numeric ({exc})") from None
    if e.ndim != 1:
        raise RecordsError(f"records error must be 1-D, got shape {e.shape}")
    if not len(e):
        raise RecordsError("no records: need (task, model, error) triples to fit")
    ti = _index_array(ti, "task_idx", n_tasks, len(e))
    mi = _index_array(mi, "model_idx", n_models, len(e))
    bad = ~np.isfinite(e) | (e < 0) | (e > 1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise RecordsError(f"records error[{k}] = {e[k].item()!r} is not an error rate in [0, 1]")
    key = ti * n_models + mi
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(first[np.flatnonzero(counts > 1)[0]])
        raise RecordsError(f"duplicate records for task {ti[k]} on model {mi[k]}")
    return ti, mi, e


def _groups(layer_sizes, dim: int, parameterisation: str) -> tuple[np.ndarray, np.ndarray]:
    """(group of each filter, filters per group) for the chosen parameterisation."""
    if layer_sizes is None:
        return (np.arange(dim), np.ones(dim, dtype=np.int64)) if parameterisation == "filter" \
            else (np.zeros(dim, dtype=np.int64), np.array([dim]))
    sizes = np.asarray(layer_sizes)
    if sizes.ndim != 1 or not len(sizes) or sizes.dtype.kind not in "iu" or (sizes <= 0).any():
        raise Task2VecError(f"layer_sizes must be positive integers, got {list(np.atleast_1d(sizes))[:8]}")
    if sizes.sum() != dim:
        raise IncompatibleEmbeddingsError(f"layer_sizes add up to {int(sizes.sum())} filters but the vectors have {dim}")
    if parameterisation == "filter":
        return np.arange(dim), np.ones(dim, dtype=np.int64)
    return np.repeat(np.arange(len(sizes)), sizes), sizes.astype(np.int64)


def _positive(value, name: str, *, allow_none: bool = False, allow_zero: bool = False) -> Any:
    if value is None and allow_none:
        return None
    return number(value, name, low=0, low_open=not allow_zero, error=Task2VecError)


# --------------------------------------------------------------------------- the model

class Model2Vec:
    """Learn model embeddings m_i = F_i * exp(c_i) so that d_asym(m_i -> t) ranks models like their errors.

    Parameters
    ----------
    alpha: weight of the trivial-task term in d_asym (the paper's 0.15 by default).
    l2: strength of the pull of the log-scales towards 0 (b_i = 0); the data term is a mean over
        tasks, so a model recorded on few tasks is pulled back harder relative to its evidence.
    temperature: tau of the predicted softmax(-score / tau); ``None`` fits it (from a
        moment-matched start) jointly with the biases.
    target_temperature: T of the target softmax(-error / T), in error units (0.01: one
        percentage point of error is a factor e in the target weights).
    parameterisation: ``"layer"`` (one log-scale per model and layer) or ``"filter"``.
    max_iter: L-BFGS iterations (strong-Wolfe line search, float64, deterministic: the fit starts
        from b = 0 and draws no random numbers).

    Attributes after :meth:`fit`: ``model_embeddings_`` (M, D), ``biases_`` (M, D) = m - F,
    ``log_scales_`` (M, groups), ``group_`` (D,) the group of each filter, ``n_records_`` (M,)
    records per model that entered the fit,
    ``temperature_``, ``loss_`` (objective at the end: KL + penalty), ``kl_`` and
    ``kl_plain_`` (mean KL at the end and with b = 0 at the same tau), ``n_iter_``.
    """

    def __init__(self, alpha: float = ALPHA, *, l2: float = MODEL2VEC_L2, temperature: float | None = None,
                 target_temperature: float = 0.01, parameterisation: str = PARAMETERISATIONS[0],
                 max_iter: int = 200):
        self.alpha = number(alpha, "alpha", error=Task2VecError)
        self.l2 = _positive(l2, "l2", allow_zero=True)
        self.temperature = _positive(temperature, "temperature", allow_none=True)
        self.target_temperature = _positive(target_temperature, "target_temperature")
        if parameterisation not in PARAMETERISATIONS:
            raise Task2VecError(f"parameterisation must be one of {', '.join(PARAMETERISATIONS)}, "
                                f"got {parameterisation!r}")
        self.parameterisation = parameterisation
        self.max_iter = integer(max_iter, "max_iter", low=1, error=Task2VecError)

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("alpha", "l2", "temperature", "target_temperature",
                                              "parameterisation", "max_iter")}

    def fit(self, model_vectors, task_vectors, records, t0, layer_sizes=None) -> "Model2Vec":
        """Fit the biases on ``records`` = (task_idx, model_idx, error) (or a :class:`~task2vec.zoo.records.Records`).

        ``model_vectors`` (M, D): the zoo's training-task embeddings F_i; ``task_vectors`` (T, D):
        the record tasks' embeddings; ``t0`` (D,): the trivial task; ``layer_sizes``: filters per
        layer (sum D) for the "layer" parameterisation.
        """
        F = _matrix(model_vectors, "model_vectors")
        M, D = F.shape
        X = _matrix(task_vectors, "task_vectors", D)
        t0 = _vector(t0, "t0", D)
        group, sizes = _groups(layer_sizes, D, self.parameterisation)
        ti, mi, e = _records(records, len(X), M)

        # tasks with >= 2 recorded models carry ranking information; the others cannot move anything
        _, inverse, per_task = np.unique(ti, return_inverse=True, return_counts=True)
        used = per_task[inverse] >= 2
        ti, mi, e, inverse = ti[used], mi[used], e[used], inverse[used]
        rows = np.unique(inverse, return_inverse=True)[1]
        n_rows = int(rows.max()) + 1 if len(rows) else 0
        self.n_records_ = np.bincount(mi, minlength=M)
        self.n_tasks_ = n_rows
        self.layer_sizes_ = sizes.tolist() if self.parameterisation == "layer" else None
        self.t0_ = t0

        C = torch.zeros((M, len(sizes)), dtype=torch.float64)
        tau = self.temperature
        self.n_iter_, self.loss_, self.kl_, self.kl_plain_ = 0, 0.0, 0.0, 0.0
        if n_rows:
            C, tau = self._optimise(F, X, t0, group, sizes, ti, mi, e, rows, n_rows)
        elif tau is None:
            tau = 0.01
        self.log_scales_ = C.detach().numpy().copy()
        self.group_ = group
        self.model_embeddings_ = scaled(F, self.log_scales_, group)
        self.biases_ = self.model_embeddings_ - F
        self.temperature_ = float(tau)
        return self

    def _optimise(self, F, X, t0, group, sizes, ti, mi, e, rows, n_rows):
        Ft, Xt, t0t = (torch.from_numpy(a) for a in (F, X, t0))
        gt = torch.from_numpy(group)
        weight = torch.from_numpy(sizes / sizes.sum())  # each log-scale counts once per filter it scales
        mi_t, ti_t, rows_t = (torch.from_numpy(a) for a in (mi, ti, rows))
        order = np.argsort(rows, kind="stable")  # position of each record within its task's row
        cols = np.empty(len(rows), dtype=np.int64)
        cols[order] = np.arange(len(rows)) - np.searchsorted(rows[order], rows[order])
        cols_t = torch.from_numpy(cols)
        width = int(cols.max()) + 1

        target = torch.full((n_rows, width), -math.inf, dtype=torch.float64)
        target[rows_t, cols_t] = torch.from_numpy(-e / self.target_temperature)
        logq = torch.log_softmax(target, 1)[rows_t, cols_t]
        q = logq.exp()

        def scores(C):
            m = Ft * torch.exp(C[:, gt])
            return asymmetric_scores(m, Xt, t0t, self.alpha, sym=_pair_distances(m, Xt, mi_t, ti_t),
                                     model_complexity=complexity(m, t0t)[mi_t])

        def kl(score, tau):
            logits = torch.full((n_rows, width), -math.inf, dtype=torch.float64)
            logits = logits.index_put((rows_t, cols_t), -score / tau)
            logp = torch.log_softmax(logits, 1)[rows_t, cols_t]
            return (q * (logq - logp)).sum() / n_rows

        C = torch.zeros((F.shape[0], len(sizes)), dtype=torch.float64, requires_grad=True)
        with torch.no_grad():
            plain = scores(C)
        if self.temperature is None:  # start tau where the plain scores spread like -error / T
            spread_s = _within_task_std(plain.numpy(), rows)
            spread_e = _within_task_std(e, rows)
            tau0 = self.target_temperature * spread_s / spread_e if spread_s > 0 and spread_e > 0 else 0.01
            log_tau = torch.tensor(math.log(tau0), dtype=torch.float64, requires_grad=True)
            params = [C, log_tau]
        else:
            log_tau = torch.tensor(math.log(self.temperature), dtype=torch.float64)
            params = [C]

        def objective():
            return kl(scores(C), log_tau.exp()) + self.l2 * (weight * C * C).sum()

        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=self.max_iter, history_size=20,
                                tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
        self.n_iter_ = int(opt.state[params[0]].get("n_iter", 0))
        with torch.no_grad():
            tau = float(log_tau.exp())
            self.loss_ = float(objective())
            self.kl_ = float(kl(scores(C), tau))
            self.kl_plain_ = float(kl(plain, tau))
        return C.detach(), tau

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_embeddings_"):
            raise Task2VecError("this Model2Vec is not fitted yet: call fit() first")

    def score(self, task_vectors) -> np.ndarray:
        """(Q, M) asymmetric distances d_asym(m_i -> t_q) with the learned embeddings (lower = better)."""
        self._check_fitted()
        X = np.asarray(task_vectors, dtype=np.float64) if not isinstance(task_vectors, Embedding) \
            else task_vectors.vector
        X = _matrix(X[None] if X.ndim == 1 else X, "task_vectors", self.model_embeddings_.shape[1])
        return asymmetric_scores(self.model_embeddings_, X, self.t0_, self.alpha)

    def rank(self, task_vectors) -> np.ndarray:
        """(Q, M) model indices, best first, for each task."""
        return np.argsort(self.score(task_vectors), axis=1, kind="stable")


def _within_task_std(values: np.ndarray, rows: np.ndarray) -> float:
    centred = values - (np.bincount(rows, values) / np.bincount(rows))[rows]
    return float(np.sqrt(np.mean(centred ** 2)))


# --------------------------------------------------------------------------- held-out evaluation

def _chance_tau(acc: np.ndarray, n_perm: int = 500, seed: int = 0) -> float:
    """Expected weighted tau of a uniformly random ranking (exact up to 6 models, else seeded sampling)."""
    n = len(acc)
    if n <= 6:
        perms = itertools.permutations(range(n))
    else:
        rng = np.random.default_rng(seed)
        perms = (rng.permutation(n) for _ in range(n_perm))
    taus = [weightedtau(np.asarray(p, dtype=float), acc).correlation for p in perms]
    return float(np.nanmean(taus)) if not np.isnan(taus).all() else math.nan


def _record(row: dict, n: int, err: np.ndarray, picked: np.ndarray, tau: float, pick=np.nan) -> None:
    """Store task n's measures for one method; ``picked`` holds the picked model's error, or all
    recorded errors for an expectation over a uniformly random pick."""
    best = err.min()
    row["pick"][n] = pick
    row["regret"][n] = picked.mean() - best
    row["relative_error_increase"][n] = ((picked - best) / best).mean() if best > 0 else np.nan
    row["top1"][n] = (picked == best).mean()
    row["weighted_tau"][n] = tau


def leave_one_task_out(model_vectors, task_vectors, records, t0, alpha: float = ALPHA, *, layer_sizes=None,
                       **fit_kw) -> dict:
    """Held-out model-selection quality of plain d_asym vs MODEL2VEC (plus chance and oracle).

    For every task with >= 2 recorded models, MODEL2VEC is fitted on the records of all *other*
    tasks, and each method picks the recorded model with the lowest score for the held-out task.
    Per method: ``relative_error_increase`` = mean (e_pick - e_best) / e_best (the paper's Table 1;
    over tasks with e_best > 0), ``regret`` = mean e_pick - e_best, ``top1`` = fraction of tasks where
    the pick is a best model, ``weighted_tau`` = mean ``scipy.stats.weightedtau(-score, 1 - error)``.
    "chance" reports expectations under a uniformly random pick / ranking; "oracle" picks the best.

    Returns ``{"tasks", "n_tasks", "n_relative", "n_skipped", "n_fallback", "summary", "per_task"}``:
    ``summary[method][measure]`` floats and ``per_task[method][measure]`` arrays over ``tasks``.
    ``n_fallback`` counts held-out tasks whose training records were empty (plain embeddings used).
    """
    F = _matrix(model_vectors, "model_vectors")
    X = _matrix(task_vectors, "task_vectors", F.shape[1])
    t0 = _vector(t0, "t0", F.shape[1])
    ti, mi, e = _records(records, len(X), len(F))
    Model2Vec(alpha, **fit_kw)  # validate the settings before the first fit
    _groups(layer_sizes, F.shape[1], fit_kw.get("parameterisation", "layer"))
    counts = np.bincount(ti, minlength=len(X))
    held = np.flatnonzero(counts >= 2)
    if not len(held):
        raise RecordsError("no task has records for two or more models: nothing to select between")

    plain = asymmetric_scores(F, X[held], t0, alpha)
    measures = ("pick", "relative_error_increase", "regret", "top1", "weighted_tau")
    per = {m: {k: np.full(len(held), np.nan) for k in measures} for m in METHODS}
    n_fallback, n_relative = 0, 0
    for n, h in enumerate(held):
        here = ti == h
        models, err = mi[here], e[here]
        acc = 1.0 - err
        n_relative += bool(err.min() > 0)
        train = ~here
        if train.any():
            fitted = Model2Vec(alpha, **fit_kw).fit(F, X, (ti[train], mi[train], e[train]), t0, layer_sizes)
            learned = fitted.score(X[h])[0]
        else:
            learned, n_fallback = plain[n], n_fallback + 1
        for method, s in (("asymmetric", plain[n]), ("model2vec", learned)):
            k = int(np.argmin(s[models]))
            _record(per[method], n, err, err[[k]], weightedtau(-s[models], acc).correlation, models[k])
        _record(per["chance"], n, err, err, _chance_tau(acc))
        best = int(np.argmin(err))
        _record(per["oracle"], n, err, err[[best]], weightedtau(acc, acc).correlation, models[best])

    def mean(x):
        return float(np.nanmean(x)) if not np.isnan(x).all() else math.nan

    summary = {m: {k: mean(per[m][k]) for k in measures if k != "pick"} for m in METHODS}
    return {"tasks": held, "n_tasks": len(held), "n_relative": n_relative,
            "n_skipped": int(((counts > 0) & (counts < 2)).sum()), "n_fallback": n_fallback,
            "summary": summary, "per_task": per}
