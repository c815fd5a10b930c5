"""The trivial task t0: a task that carries no information for the probe.

An embedding says how strongly a task's data pin down each filter of the probe. A task whose
labels say nothing pins down none, and what is left is the prior on the weights. So t0 is the
prior precision of the probe, 1/lambda_l^2 = 1 / mean(w^2) over each layer l (the prior of the
variational embedding, ``prior_scale`` 1), in the units of the embedding:

- Variational embeddings are posterior precisions, 1/sigma_f^2 ~ n F_f / beta + 1/lambda_l^2
  (task2vec.embedding.variational). t0 is 1/lambda_l^2 itself, and a task's complexity is the paper's
  d_sym(a, t0).
- Fisher embeddings (exact / montecarlo / empirical) are F_f, the Fisher per image. Divided by
  n / beta, the same posterior is F_f + beta / (n lambda_l^2). So t0 is beta / (n lambda_l^2),
  with n the number of images the embedding used and beta = 0.01 (the variational default), and
  the complexity is d_sym(a + t0, t0): the distance between the task's second-order variational
  posterior and the prior (:func:`task2vec.space.distance.complexity`).

t0 depends only on the probe's weights (and, for Fisher embeddings, on n): no images are
needed. Embeddings record 1/lambda_l^2 in ``meta["prior_inverse_variance"]``; for older ones the
probe is loaded to compute it.

The complexity tracks how hard a task is for the probe (checked against linear-probe error on
real tasks). It measures how much the labels pin down the probe through the refitted head, so a
task with too few images per class for its head to learn still comes out simple. Figures:
benchmarks/README.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..defaults import BETA
from ..embedding.embedding import Embedding
from ..errors import IncompatibleEmbeddingsError

if TYPE_CHECKING:
    from ..backbones.probe import Probe


def trivial_embedding(like: Embedding, probe: Probe | None = None) -> Embedding:
    """t0 in the same space as ``like`` (``probe`` is loaded from the embedding's metadata when
    needed and not given)."""
    if not like.meta.get("layers"):
        raise IncompatibleEmbeddingsError(f"{like!r} does not record its layers (meta.layers)")
    if like.method != "variational" and not like.meta.get("n_images"):
        raise IncompatibleEmbeddingsError(f"{like!r} does not record how many images it was made from")
    prior = like.meta.get("prior_inverse_variance")
    if prior is None:
        if like.method == "variational":
            raise IncompatibleEmbeddingsError(f"{like!r} has no prior term in its metadata")
        prior = _probe_prior(like, probe)
    sizes = [layer["filters"] for layer in like.meta["layers"]]
    if len(prior) != len(sizes):
        raise IncompatibleEmbeddingsError(f"{like!r}: {len(prior)} prior terms for {len(sizes)} layers")
    vector = np.repeat(np.asarray(prior, dtype=np.float64), sizes)
    meta = {**like.meta, "name": "t0", "trivial": True, "prior_inverse_variance": list(map(float, prior))}
    if like.method != "variational":
        n = int(like.meta["n_images"])
        vector = vector * (BETA / n)
        meta["trivial_scale"] = {"beta": BETA, "n_images": n}
    return Embedding(vector, meta)


def recorded_probe(like: Embedding) -> dict:
    """The probe ``like`` records (``meta.probe``), with the name, weights hash and input size t0 needs."""
    p = like.meta.get("probe", {})
    missing = [k for k in ("name", "weights_hash", "input_size") if p.get(k) is None]
    if missing:
        raise IncompatibleEmbeddingsError(f"{like!r} does not record its probe's {missing[0]} (meta.probe.{missing[0]})")
    return p


def _probe_prior(like: Embedding, probe: Probe | None) -> list[float]:
    """1/lambda_l^2 of the probe layers ``like`` was embedded with (checked by weights hash)."""
    from ..backbones.probe import Probe
    from ..embedding.variational import prior_inverse_variance

    p = recorded_probe(like)
    if probe is None:  # the weights file it was embedded with when still there, else the usual search
        source = p.get("weights_source")
        weights = source if source and os.path.isfile(source) else None
        probe = Probe.create(p["name"], weights=weights, image_size=p["input_size"])
    if probe.weights_hash != p["weights_hash"]:
        raise IncompatibleEmbeddingsError(
            f"probe weights {probe.weights_hash} differ from the embedding's {p['weights_hash']}")
    modules = dict(probe.layers())
    missing = [layer["name"] for layer in like.meta["layers"] if layer["name"] not in modules]
    if missing:
        raise IncompatibleEmbeddingsError(f"the probe has no layer {missing[0]!r} of {like!r}")
    return prior_inverse_variance([modules[layer["name"]] for layer in like.meta["layers"]])
