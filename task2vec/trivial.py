"""The trivial task t0: a task that carries no information for the probe.

- Variational embeddings: t0 is the per-layer prior term 1/lambda_l^2 (what the
  optimisation returns when the task loss does not depend on the weights).
- Fisher embeddings (exact / montecarlo / empirical): t0 is the embedding, with the same
  probe, resolution, method and settings, of a task whose labels are *independent of its
  images*: a fixed, seeded set of synthetic 1/f-noise images (natural-image-like spectra,
  no user data needed) with random balanced binary labels.

  Measured caveat (MobileNetV2, 112 px): with 1280 features and 256 images the head still
  memorises the random labels (train accuracy 0.95, mean confidence 0.74), so this t0 is
  a *large* Fisher (about 100x a real task's) whose shape reflects the noise images' domain.
  d_sym(t, t0) therefore tracks how far a task's images are from natural-photo statistics
  more than how hard the task is (Spearman with linear-probe error -0.51 over 14 tasks, -0.38
  over the 41 targets of benchmarks/model_selection.py);
  see the README's "trivial task" section before reading it as task complexity.

t0 is computed once per (probe, weights hash, resolution, method settings) and cached in
``$TASK2VEC_CACHE`` (default ``~/.cache/task2vec``) as an ordinary embedding file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from .embedding import Embedding
from .errors import IncompatibleEmbeddingsError

CACHE_ENV = "TASK2VEC_CACHE"
N_REFERENCE_IMAGES = 256


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "task2vec"))


def reference_images(n: int = N_REFERENCE_IMAGES, size: int = 128, seed: int = 0) -> torch.Tensor:
    """``n`` RGB uint8 images of 1/f noise (power spectrum ~ 1/f^2, like natural photos), seeded."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size)
    spectrum = amplitude * np.exp(2j * np.pi * rng.random((n, 3, size, size // 2 + 1)))
    img = np.fft.irfft2(spectrum, s=(size, size))
    img -= img.mean(axis=(2, 3), keepdims=True)
    img /= img.std(axis=(1, 2, 3), keepdims=True) + 1e-12
    return torch.from_numpy(np.clip(127.5 + 48 * img, 0, 255).astype(np.uint8))


class NoiseTask(torch.utils.data.Dataset):
    """Reference images with random balanced labels: ``(uint8 CHW tensor, label)``."""

    def __init__(self, n: int = N_REFERENCE_IMAGES, seed: int = 0):
        self.images = reference_images(n, seed=seed)
        self.targets = np.random.default_rng(seed + 1).permutation(np.arange(n) % 2).tolist()
        self.classes = ["a", "b"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


def _key(embedding: Embedding) -> str:
    probe, method = embedding.meta["probe"], dict(embedding.meta["method"])
    method.pop("max_samples", None)
    blob = json.dumps({"probe": [probe["name"], probe["weights_hash"], probe["input_size"]], "method": method},
                      sort_keys=True)
    return f"{probe['name']}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def trivial_embedding(like: Embedding, probe=None, *, use_cache: bool = True) -> Embedding:
    """t0 in the same space as ``like`` (computed with ``probe`` when not cached)."""
    if like.method == "variational":
        prior = like.meta.get("prior_inverse_variance")
        if prior is None:
            raise IncompatibleEmbeddingsError(f"{like!r} has no prior term in its metadata")
        vector = np.repeat(prior, [layer["filters"] for layer in like.meta["layers"]])
        return Embedding(vector, {**like.meta, "name": "t0", "trivial": True})
    path = cache_dir() / "t0" / f"{_key(like)}.t2v.npz"
    if use_cache and path.is_file():
        return Embedding.load(path)
    if probe is None:
        from .probe import Probe

        p = like.meta["probe"]
        probe = Probe.create(p["name"], image_size=p["input_size"])
    if probe.weights_hash != like.meta["probe"]["weights_hash"]:
        raise IncompatibleEmbeddingsError(
            f"probe weights {probe.weights_hash} differ from the embedding's {like.meta['probe']['weights_hash']}")
    from .embed import Task2Vec

    m = like.meta["method"]
    t2v = Task2Vec(probe, method=m["name"], max_rank=m.get("max_rank"), samples_per_image=m.get("samples_per_image", 1),
                   head_l2=m["head_l2"], batch_size=m.get("batch_size", 32), seed=0, progress=False)
    t0 = t2v.embed(NoiseTask(), name="t0")
    t0.meta["trivial"] = True
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        t0.save(path)
    return t0
