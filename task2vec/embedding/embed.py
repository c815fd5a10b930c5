"""Task2Vec: embed a labelled image dataset as the per-filter Fisher of a probe network."""

from __future__ import annotations

import time
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..version import __version__
from ..defaults import EMBEDDING_DEFAULTS as _D, METHODS
from ..data import (IndexedSubset, SkipBadCollate, as_task, balanced_indices, half_split, interleave_classes,
                   report_bad)
from ..distributed import all_gather_rows, broadcast, is_main, shard_batches, world_size
from .dsym import symmetric
from .embedding import Embedding
from ..errors import DatasetError, ProbeError
from .fisher import FisherAccumulator
from .head import fit_linear_head
from ..backbones.probe import Probe
from ..validate import integer, number, seed as seed_value
from .variational import BETA, prior_inverse_variance, variational_fisher


class Task2Vec:
    """Embeds tasks with a fixed probe.

    Hyperparameters (constructor):
      method: ``exact`` (default: expectation over the model's own labels, through the
        eigen-directions of the logit Fisher, truncated to ``max_rank``), ``montecarlo``
        (``samples_per_image`` sampled labels), ``empirical`` (true labels) or
        ``variational`` (the paper's robust Fisher).
      max_samples: images used, drawn class-balanced with ``seed``.
      min_images_per_class: at least this many images per class are drawn, so a task with many
        classes is not embedded from about one image each: max(max_samples,
        min_images_per_class * classes) images in all, capped at what the task has.
      head_prior: precision of the Gaussian prior on the task head's weights (acting on
        standardised features). The head is the MAP fit of the *summed* class-balanced
        cross-entropy, so the penalty per image is ``head_prior / n``: the head becomes as
        confident as the task's evidence allows. (A fixed per-image penalty crushes heads
        with many classes, each seen in n/C images, and makes hard tasks look trivial.)
      cache_bytes: decoded images are kept in memory between passes up to this size.
      noise_target: adaptive stopping (exact, montecarlo, empirical). None (default): the Fisher
        runs over all drawn images. A number: the images are taken one class at a time in turn,
        and the Fisher pass stops after the first round of ``round_images`` images at which the
        half-split noise (the d_sym between the two class-balanced halves' embeddings) is below
        it, or at the cap. The head is still fitted on every drawn image. The images used and the
        reason for stopping are in ``meta["fisher_images"]`` and ``meta["fisher_stop"]``.
      fisher_images: the Fisher pass over only the first N drawn images, taken one class at a time
        in turn (so class-balanced), while the head is fitted on every drawn image: the Fisher is
        the embedding's cost, the head's features are one forward pass. None (default): all of them.
    Inside an initialised ``torch.distributed`` group (``torchrun``; :mod:`task2vec.distributed`)
    each rank reads whole batches of the sample, dealt round-robin; the features are all-gathered
    into the single process's order, rank 0 fits the head and broadcasts it, and the per-filter
    Fisher sums and counts are all-reduced in float64: every rank returns the single-process
    embedding (within float64 rounding). ``montecarlo`` draws each batch's labels from its own
    seed (the run's and the batch's number), so its labels do not depend on the ranks either.
    ``variational`` trains one posterior and is not data-parallel, and adaptive stopping would stop
    the ranks apart: both are refused in a group.
    Learned state after :meth:`embed`: ``head_`` (the fitted classifier), ``embedding_``, and
    the probe's penultimate ``features_`` (N, D) of the ``indices_`` (N,) of the task's images it
    read, with their ``labels_`` (N,): what :class:`task2vec.zoo.evidence.EvidenceCheck` scores the
    probe by, without a second forward pass.
    """

    def __init__(self, probe: Probe, method: str = _D["method"], *, max_samples: int = _D["max_samples"],
                 min_images_per_class: int = _D["min_images_per_class"],
                 samples_per_image: int = _D["samples_per_image"], max_rank: int | None = _D["max_rank"],
                 batch_size: int = _D["batch_size"], head_prior: float = _D["head_prior"], seed: int = _D["seed"],
                 workers: int = _D["workers"], max_bad_fraction: float = _D["max_bad_fraction"],
                 cache_bytes: int = 2 << 30, beta: float = BETA, prior_scale: float = 1.0,
                 variational_epochs: int = 10, noise_target: float | None = _D["noise_target"],
                 round_images: int = _D["round_images"], fisher_images: int | None = _D["fisher_images"],
                 progress: bool = True):
        if method not in METHODS:
            raise ProbeError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
        for name, value, low in (("max_samples", max_samples, 2), ("min_images_per_class", min_images_per_class, 1),
                                 ("batch_size", batch_size, 1), ("samples_per_image", samples_per_image, 1),
                                 ("workers", workers, 0), ("variational_epochs", variational_epochs, 1),
                                 ("cache_bytes", cache_bytes, 0), ("round_images", round_images, 1)):
            integer(value, name, low=low, error=ProbeError)
        if max_rank is not None:
            integer(max_rank, "max_rank", low=1, error=ProbeError)
        for name, value in (("head_prior", head_prior), ("beta", beta), ("prior_scale", prior_scale)):
            number(value, name, low=0, low_open=True, error=ProbeError)
        self.probe, self.method = probe, method
        self.max_samples, self.samples_per_image, self.max_rank = max_samples, samples_per_image, max_rank
        self.min_images_per_class = int(min_images_per_class)
        number(max_bad_fraction, "max_bad_fraction", low=0, high=1, error=ProbeError)
        self.batch_size, self.head_prior, self.workers = batch_size, head_prior, workers
        self.seed = seed_value(seed, error=ProbeError)
        self.max_bad_fraction, self.cache_bytes = max_bad_fraction, cache_bytes
        self.beta, self.prior_scale, self.variational_epochs = beta, prior_scale, variational_epochs
        if noise_target is not None:
            number(noise_target, "noise_target", low=0, low_open=True, error=ProbeError)
            if method == "variational":
                raise ProbeError("noise_target (adaptive stopping) needs a per-sample Fisher method, not 'variational'")
        self.noise_target, self.round_images = noise_target, round_images
        if fisher_images is not None:
            integer(fisher_images, "fisher_images", low=2, error=ProbeError)
            if method == "variational":
                raise ProbeError("fisher_images needs a per-sample Fisher method, not 'variational'")
        self.fisher_images = fisher_images
        self.progress = progress

    # ------------------------------------------------------------------ helpers
    def settings(self) -> dict[str, Any]:
        """The settings that shape the embedding, as recorded in its ``meta["method"]``."""
        s: dict[str, Any] = {"name": self.method, "max_samples": self.max_samples,
                             "min_images_per_class": self.min_images_per_class, "seed": self.seed,
                             "head_prior": self.head_prior, "batch_size": self.batch_size}
        if self.method == "montecarlo":
            s["samples_per_image"] = self.samples_per_image
        if self.method == "exact":
            s["max_rank"] = self.max_rank
        if self.method == "variational":
            s.update(beta=self.beta, prior_scale=self.prior_scale, epochs=self.variational_epochs)
        if self.noise_target is not None:
            s.update(noise_target=self.noise_target, round_images=self.round_images)
        if self.fisher_images is not None:
            s["fisher_images"] = self.fisher_images
        return s

    def _autocast(self):
        return torch.autocast(self.probe.device.type, dtype=torch.bfloat16, enabled=self.probe.device.type == "cuda")

    # ------------------------------------------------------------------ main entry
    def embed(self, data: Any, *, label_column: str | None = None, name: str | None = None) -> Embedding:
        """Embed a task: an ImageFolder directory, a CSV of path,label, or a torch Dataset."""
        start = time.perf_counter()
        if self.method == "variational" and world_size() > 1:
            raise ProbeError("the variational method is not data-parallel: run it in one process (not under torchrun)")
        if self.noise_target is not None and world_size() > 1:
            raise ProbeError("adaptive stopping (noise_target) is not data-parallel: the ranks would stop apart; run it "
                             "in one process (not under torchrun)")
        task = as_task(data, label_column=label_column)
        n_draw = max(self.max_samples, self.min_images_per_class * len(task.classes))
        indices = balanced_indices(task.labels, n_draw, self.seed)
        if self.noise_target is not None or self.fisher_images is not None:
            # any prefix class-balanced: the Fisher pass may stop after any round, or at fisher_images
            indices = indices[interleave_classes(task.labels[indices])]
        halves = half_split(task.labels[indices])
        group_of = dict(zip(indices.tolist(), halves.tolist()))
        position = {int(i): p for p, i in enumerate(indices)}
        probe = self.probe
        mine = indices[shard_batches(len(indices), self.batch_size)]  # this rank's whole batches (all of them alone)
        subset = IndexedSubset(task, mine, probe.transform)
        loader = torch.utils.data.DataLoader(subset, batch_size=self.batch_size, shuffle=False,
                                             num_workers=self.workers, collate_fn=SkipBadCollate())
        per_image = 3 * probe.config.input_size ** 2
        cache: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = (
            [] if len(mine) * per_image <= self.cache_bytes else None)

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
            """The sampled images again, after pass 1: from memory when they fit, else decoded anew."""
            if cache is not None:
                yield from cache
                return
            for images, labels, index, _bad in loader:
                if images is not None:
                    yield images, labels, index

        n_passes = 2 if self.method != "variational" else 1 + self.variational_epochs
        bar = tqdm(total=len(mine) * n_passes, desc=f"task2vec {probe.name}", unit="img",
                   disable=not (self.progress and is_main()), leave=False)

        # Pass 1: penultimate features (the body is frozen: computed once).
        feats, labels_seen, read, bad = [], [], [], []
        stage = dict.fromkeys(("decode", "features", "head", "fisher"), 0.0)  # seconds, in meta["seconds_by_stage"]
        with torch.no_grad():
            t = time.perf_counter()
            for images, labels, index, bad_idx in loader:
                stage["decode"] += time.perf_counter() - t
                bad.extend(bad_idx)
                bar.update(len(bad_idx))
                if images is None:
                    t = time.perf_counter()
                    continue
                t = time.perf_counter()
                with self._autocast():
                    feats.append(probe.model(probe.normalize(images)).float().cpu())
                labels_seen.append(labels)
                read.append(index)
                if cache is not None:
                    cache.append((images, labels, index))
                bar.update(len(images))
                stage["features"] += time.perf_counter() - t
                t = time.perf_counter()
        bad = all_gather_rows(torch.tensor(bad, dtype=torch.int64)).tolist()
        report_bad(task, bad, len(indices), self.max_bad_fraction)
        # every rank's features, in the order one process reads them (the sample's)
        X = all_gather_rows(torch.cat(feats) if feats else torch.zeros(0, probe.feature_dim))
        y = all_gather_rows(torch.cat(labels_seen) if feats else torch.zeros(0, dtype=torch.long))
        read_all = all_gather_rows(torch.cat(read) if feats else torch.zeros(0, dtype=torch.long))
        if not len(y):
            raise DatasetError("no readable images in the dataset")
        order = torch.as_tensor(np.argsort([position[int(i)] for i in read_all], kind="stable"))
        X, y, read_all = X[order], y[order], read_all[order]
        n_classes = len(task.classes)
        missing = sorted(set(range(n_classes)) - set(y.tolist()))
        if missing:
            raise DatasetError(f"class {task.classes[missing[0]]!r} has no readable images")

        # The task head, fitted on cached features (by rank 0, the others receive it).
        head_l2 = self.head_prior / len(y)
        t = time.perf_counter()
        head = (fit_linear_head(X, y, n_classes, l2=head_l2) if is_main()
                else torch.nn.Linear(X.shape[1], n_classes).requires_grad_(False))
        for param in head.parameters():
            param.data.copy_(broadcast(param.data))
        head = head.to(probe.device)
        stage["head"] = time.perf_counter() - t
        self.head_ = head
        self.features_, self.labels_ = X.numpy(), y.numpy()
        self.indices_ = read_all.numpy()
        with torch.no_grad():
            p = torch.softmax(head(X.to(probe.device)), 1).cpu()
        head_stats = {"l2": head_l2, "train_accuracy": float((p.argmax(1) == y).float().mean()),
                      "mean_confidence": float(p.max(1).values.mean())}

        # Pass 2: the Fisher.
        t_fisher = time.perf_counter()
        meta_extra: dict[str, Any] = {}
        layers = probe.layers()
        if self.method == "variational":
            def xy() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                for images, labels, _ in batches():
                    yield probe.normalize(images), labels

            vector, prior, loss = variational_fisher(
                probe.model, head, [m for _, m in layers], xy, len(y), beta=self.beta,
                prior_scale=self.prior_scale, epochs=self.variational_epochs, seed=self.seed,
                progress=bar.update)
            meta_extra["prior_inverse_variance"] = prior
            meta_extra["final_loss"] = loss
            noise, half_vectors = None, None
            layer_table = FisherAccumulator(layers).layer_table()
        else:
            acc = FisherAccumulator(layers, self.method, samples_per_image=self.samples_per_image,
                                    max_rank=self.max_rank, n_groups=2, autocast=probe.device.type == "cuda")
            used, next_check, stopped = 0, self.round_images, False
            for images, labels, index in batches():
                if self.fisher_images is not None:  # positions are the sample's, so every rank cuts alike
                    keep = torch.tensor([position[int(i)] < self.fisher_images for i in index])
                    if not keep.any():
                        break  # batches come in the sample's order: the rest lie beyond the prefix too
                    images, labels, index = images[keep], labels[keep], index[keep]
                groups = torch.tensor([group_of[int(i)] for i in index])
                batch_seed = np.random.SeedSequence([self.seed, position[int(index[0])] // self.batch_size]).generate_state(1)[0]
                acc.generator = torch.Generator().manual_seed(int(batch_seed))
                acc.update(probe.model, head, probe.normalize(images), labels, groups)
                bar.update(len(images))
                used += len(images)
                if self.noise_target is not None and used >= next_check and used < len(y):
                    next_check += self.round_images
                    stopped = bool(acc.counts.min() > 0
                                   and symmetric(acc.fisher(0).numpy(), acc.fisher(1).numpy()) < self.noise_target)
                    if stopped:
                        break
            meta_extra["fisher_images"] = used
            if self.noise_target is not None:
                meta_extra["fisher_stop"] = "noise_target" if stopped else "cap"
            acc.all_reduce()
            vector = acc.fisher()
            half_vectors = (np.stack([acc.fisher(0).numpy(), acc.fisher(1).numpy()])
                            if acc.counts.min() > 0 else None)
            noise = float(symmetric(*half_vectors)) if half_vectors is not None else None
            meta_extra["fisher_mass_captured"] = acc.mass_captured
            meta_extra["prior_inverse_variance"] = prior_inverse_variance([m for _, m in layers])
            layer_table = acc.layer_table()
        bar.close()
        stage["fisher"] = time.perf_counter() - t_fisher

        fingerprint = task.fingerprint()
        meta = {
            "format_version": 1,
            "task2vec_version": __version__,
            "name": name or (getattr(task, "source", "") or "task"),
            "probe": probe.describe(),
            "method": self.settings(),
            "layers": layer_table,
            "n_images": int(len(y)),
            "n_skipped_images": len(bad),
            "n_classes": n_classes,
            "classes": list(task.classes),
            "dataset": {"source": getattr(task, "source", ""), "fingerprint": fingerprint,
                        "n_available": int(len(task))},
            "head": head_stats,
            "noise_half_split": noise,
            "device": str(probe.device),
            "seconds": round(time.perf_counter() - start, 3),
            "seconds_by_stage": {k: round(v, 3) for k, v in stage.items()},  # decode: waiting on the DataLoader
            **meta_extra,
        }
        X64 = X.double()
        self.embedding_ = Embedding(vector.numpy(), meta, domain_mean=X64.mean(0).numpy(),
                                    domain_var=X64.var(0, unbiased=False).numpy(), halves=half_vectors)
        return self.embedding_
