"""Names and default values shared by the library and its command line, importing nothing heavy.

The CLI's parsers show these (``task2vec --help``) without loading torch; the modules that use
them (:mod:`task2vec.backbones.probe`, :mod:`task2vec.embedding.embed`, :mod:`task2vec.zoo.zoo`, :mod:`task2vec.finetune.trainer`,
...) import them from here, so every value has one source.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

WEIGHTS_ENV = "TASK2VEC_WEIGHTS"  # folder searched for <model>*.safetensors|.pth|.pt before any download
OFFLINE_ENV = "TASK2VEC_OFFLINE"  # set (1, true, yes, on): no download is attempted; HF_HUB_OFFLINE does the same

# Images refused before decoding (task2vec.data.load_rgb), so no pipeline's resize can exhaust memory:
MAX_IMAGE_PIXELS = 89_478_485  # width x height; PIL's own default bomb limit, without changing PIL's global
MAX_IMAGE_ASPECT = 32  # long side / short side: a shorter-side resize to S then holds at most 32 * S**2 pixels
PROBE = "mobilenet_v2"  # the default probe network (task2vec.backbones.probe.Probe.create)
LABEL_METHODS = ("exact", "montecarlo", "empirical")  # Fisher expectations over labels (task2vec.embedding.fisher)
METHODS = LABEL_METHODS + ("variational",)  # every Task2Vec method
BETA = 1e-2  # weight of the variational KL term; task2vec.space.trivial converts Fisher embeddings to posteriors with it

# Task2Vec's constructor defaults for the settings the CLI exposes.
EMBEDDING_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "method": "exact", "max_samples": 10_000, "min_images_per_class": 10,
    "max_rank": 16, "samples_per_image": 1, "batch_size": 32,
    "head_prior": 1.0, "seed": 0, "workers": 0, "max_bad_fraction": 0.05,
    # Adaptive stopping (off by default: not yet measured on the model-selection benchmark): the Fisher pass
    # stops at the first round of round_images images after which the half-split noise is below noise_target.
    "noise_target": None, "round_images": 256,
    # The Fisher pass over only the first N drawn images (a class-balanced prefix; the head still sees every drawn
    # image): the cost knob of a target's embedding. None: every drawn image.
    "fisher_images": None,
})
# The Task2Vec settings a zoo records for its sources; targets are embedded with the same ones.
EMBEDDING_SETTINGS = ("method", "max_samples", "min_images_per_class", "max_rank", "samples_per_image", "batch_size",
                      "seed", "head_prior")
QUALITY_WEIGHT = 0.05  # distance units per standard deviation of ImageNet top-1 across the zoo
SIZE_WEIGHT = 0.0  # distance units per standard deviation of log parameter count across the zoo (0: no size prior)
# The weights `zoo fit-quality` tries for the two prior terms (a grid: a handful of records cannot fit more)
QUALITY_PRIOR_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SIZE_PRIOR_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
RECOMMEND_K = 5  # recommendations shown
# task2vec.recommend's defaults: the configuration benchmarks/model_selection.py picks by its stated rule
# (GRID, REGRET_TIE, COST_BAR there: the lowest regret among the configurations at most half of LogME's cost;
# row "recommend (defaults)"; figures in benchmarks/README.md, issue 18). With the zoo's alpha and always-checked
# entries (zoo/demo: 0.15 and two broad experts, the same rule's choice) and no MODEL2VEC biases.
RECOMMEND_CHECK = 2  # the first two picks re-ranked by LogME with the probe's own entry and the always-checked ones
RECOMMEND_MAX_RANK = 1  # the target's Fisher along the leading direction of its label distribution only
RECOMMEND_FISHER_IMAGES = 16  # the target's Fisher over 16 of its images (class-balanced); the head sees them all
MODEL2VEC_L2 = 0.1  # pull of the MODEL2VEC log-scales toward 0
MODEL2VEC_PARAMETERISATIONS = ("layer", "filter")  # one log-scale per model and layer (the default), or per filter

FREEZE_HELP = "none | body | until:<module> (train only what comes after that block of the body)"
BALANCE = ("none", "sampler", "loss-weights")
# Fine-tuning's defaults (task2vec.finetune.trainer.Trainer and fit) for the settings the CLI exposes.
FINETUNE_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "model": "mobilenet_v2", "dropout": 0.0, "epochs": 15, "batch_size": 32, "lr": 1e-3, "body_lr": 0.1,
    "weight_decay": 0.05, "warmup_epochs": 1.0, "label_smoothing": 0.1, "grad_clip": 1.0, "patience": 5,
    "freeze": "none", "balance": "none", "augment": "standard", "aux_weight": 0.3, "group_weight": 0.3,
    "val_fraction": 0.2, "seed": 0, "device": "auto", "workers": 0, "repeats": 1,
})
PREDICT_TOPK = 5  # classes shown per image
