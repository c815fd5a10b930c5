"""Build a whole zoo from a YAML spec, resumably.

```yaml
zoo: demo                        # the zoo folder, relative to the spec's folder
probe: mobilenet_v2
weights: ${TASK2VEC_SHARED}/weights/mobilenet_v2_imagenet.safetensors   # optional
image_size: 112                  # optional: the probe's resolution
embedding: {method: exact, max_samples: 300, seed: 0}                   # Task2Vec settings
alpha: 0.15                      # optional
split_seed: 0                    # optional: the seed of data.image_half (entries with `half`)
quality_weight: 0.05             # optional
always_check: [tiny-objects-expert]   # optional: entries recommend's check always scores
entries:
  - id: mnist-expert
    model: mobilenet_v2
    checkpoint: experts/mnist.safetensors      # or pretrained: true; kept as written, relative to the zoo
    source_dataset: ${TASK2VEC_SHARED}/data/mnist_test   # or source_embedding: x.npz
    label_column: digit                         # optional, CSV datasets
    classes: ["0", "1", "2"]                    # optional: only these classes of the source dataset
    half: source                                # optional: only the images data.image_half puts in that half
    name: MNIST digits                          # optional source-task name
    metadata: {license: BSD-3-Clause}
    finetune: {epochs: 4}                       # optional: overrides of the top-level finetune settings
  - id: lite0-generalist
    model: tf_efficientnet_lite0
    checkpoint: ${TASK2VEC_WEIGHTS}/tf_efficientnet_lite0_imagenet.safetensors
    imagenet_weights: true                      # published ImageNet weights: top-1 looked up (true: the model's
                                                # own figure; a name: that name's, e.g. quantized_mobilenet_v2)
finetune:                        # optional: how missing expert checkpoints are trained
  from: ${TASK2VEC_SHARED}/weights/mobilenet_v2_imagenet.safetensors   # the weights fine-tuning starts from
  epochs: 3
  image_size: 112
  max_train_images: 1000
```

Paths follow :mod:`task2vec.paths`: ``${VAR}`` from the environment (a relative value is
relative to the working directory; an unset one is an error), other relative paths relative to
the spec's folder, except ``checkpoint``, kept as written and relative to the zoo folder (inside it:
:func:`task2vec.paths.weights_path_problem`).
``params_m`` and ``input_size`` are derived, never typed: the parameter count from the
architecture, the input size from the ``finetune`` section's ``image_size`` for the experts
the spec trains, else from the architecture's own data config. ``imagenet_top1`` (with
``imagenet_top1_source``) is looked up for ``pretrained`` entries and for checkpoints marked
``imagenet_weights`` (:func:`task2vec.backbones.quality.imagenet_top1_source`); such a checkpoint is never
trained by the spec.
Entries already in the zoo are skipped, so an interrupted build resumes where it stopped.
With ``ray`` (``task2vec zoo build SPEC --ray [ADDRESS]``; the ``distributed`` extra) every expert's
training and every source embedding is a Ray task (one GPU each where the cluster has GPUs, else
one CPU); the driver alone adds the entries to the zoo, each as soon as its tasks are done (so in
the order they finish), atomically: a killed driver or worker loses only the unfinished entries,
and a rerun resumes them (a training run from its last checkpoint). A failed task is reported
with its entry id while the others go on; the build then fails naming them. The zoo folder (and
the datasets) must be on a filesystem every node sees.
With a ``finetune`` section, an entry whose ``checkpoint`` file is missing is trained first
(:func:`task2vec.finetune.trainer.fit` on its source dataset, run kept in ``<zoo>/runs/<id>/``, body
exported with :func:`task2vec.finetune.checkpoint.export_weights`); a clone that has the manifest but
not the weights gets them back with the same command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import yaml

from ..data import ImageTask, load_task, subset
from ..distributed import as_completed, ray_resources, ray_session, require_ray
from ..embedding.embed import Task2Vec
from ..defaults import EMBEDDING_DEFAULTS
from ..space.distance import ALPHA
from ..embedding.embedding import Embedding
from ..errors import CheckpointError, FinetuneError, ProbeError, RunBusyError, ZooError
from ..paths import resolve_path, weights_path_problem
from ..backbones.probe import Probe, architecture_facts, parse_model_id
from ..backbones.quality import imagenet_top1_source
from ..space.trivial import trivial_embedding
from ..validate import integer, number, seed as check_seed
from .zoo import EMBEDDING_SETTINGS, QUALITY_WEIGHT, Zoo, ZooEntry

ENTRY_KEYS = {"id", "model", "pretrained", "checkpoint", "source_dataset", "source_embedding", "label_column",
              "name", "metadata", "finetune", "classes", "half", "imagenet_weights"}
TOP_KEYS = {"zoo", "probe", "weights", "image_size", "embedding", "alpha", "quality_weight", "always_check", "entries",
            "finetune", "split_seed"}
EMBED_KEYS = {*EMBEDDING_SETTINGS, "workers", "device", "max_bad_fraction"}
DERIVED_METADATA = ("params_m", "input_size")  # computed for every entry, never typed


def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The validated spec, with paths resolved by :func:`task2vec.paths.resolve_path`; an entry's
    ``checkpoint`` stays as written (the manifest records it) and its resolved form, relative to
    the zoo folder, is added as ``checkpoint_path``."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ZooError(f"cannot read zoo spec {str(path)!r} ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ZooError(f"zoo spec {str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(spec, dict):
        raise ZooError(f"zoo spec {str(path)!r} must be a mapping")
    unknown = set(spec) - TOP_KEYS
    if unknown:
        raise ZooError(f"zoo spec {str(path)!r}: unknown key(s) {sorted(unknown)}")
    for key in ("zoo", "probe"):
        if not isinstance(spec.get(key), str):
            raise ZooError(f"zoo spec {str(path)!r}: {key!r} must be a string")
    if not isinstance(spec.get("entries"), list) or not spec["entries"]:
        raise ZooError(f"zoo spec {str(path)!r}: 'entries' must be a non-empty list")
    emb = spec.get("embedding") or {}
    if not isinstance(emb, dict) or set(emb) - EMBED_KEYS:
        raise ZooError(f"zoo spec {str(path)!r}: 'embedding' may only set {sorted(EMBED_KEYS)}")
    for key in ("alpha", "quality_weight"):
        if spec.get(key) is not None:
            number(spec[key], f"zoo spec {str(path)!r}: {key!r}", low=0, error=ZooError)
    always = spec.get("always_check")
    if always is not None and (not isinstance(always, list) or not all(isinstance(i, str) for i in always)
                               or set(always) - {e.get("id") for e in spec["entries"] if isinstance(e, dict)}):
        raise ZooError(f"zoo spec {str(path)!r}: 'always_check' must list ids of its entries, got {always!r}")
    if spec.get("image_size") is not None:
        integer(spec["image_size"], f"zoo spec {str(path)!r}: 'image_size'", low=32, error=ZooError)
    if spec.get("split_seed") is not None:
        check_seed(spec["split_seed"], f"zoo spec {str(path)!r}: 'split_seed'", error=ZooError)
    base = Path(os.path.relpath(path.parent))  # the spec's relative paths stay relative: recorded so, not as absolute
    spec["zoo"] = resolve_path(spec["zoo"], base, str(path))
    tune = spec.get("finetune") or {}
    if not isinstance(tune, dict):
        raise ZooError(f"zoo spec {str(path)!r}: 'finetune' must be a mapping of fine-tuning settings")
    if tune.get("from"):
        tune["from"] = resolve_path(str(tune["from"]), base, str(path))
    if spec.get("weights"):
        spec["weights"] = resolve_path(spec["weights"], base, str(path))
    ids = []
    for i, e in enumerate(spec["entries"]):
        where = f"zoo spec {str(path)!r}, entry {i + 1}"
        if not isinstance(e, dict):
            raise ZooError(f"{where}: must be a mapping")
        if set(e) - ENTRY_KEYS:
            raise ZooError(f"{where}: unknown key(s) {sorted(set(e) - ENTRY_KEYS)}")
        if not isinstance(e.get("id"), str) or not isinstance(e.get("model"), str):
            raise ZooError(f"{where}: 'id' and 'model' are required strings")
        where = f"{where} ({e['id']})"
        if ("source_dataset" in e) == ("source_embedding" in e):
            raise ZooError(f"{where}: give exactly one of source_dataset and source_embedding")
        if e.get("pretrained") and e.get("checkpoint"):
            raise ZooError(f"{where}: give pretrained or checkpoint, not both")
        if e.get("checkpoint") is not None and not isinstance(e["checkpoint"], str):
            raise ZooError(f"{where}: 'checkpoint' must be a string")
        problem = weights_path_problem(e["checkpoint"]) if e.get("checkpoint") else None
        if problem:  # the manifest records it as written
            raise ZooError(f"{where}: checkpoint {e['checkpoint']!r} {problem}")
        if e.get("half") is not None and e["half"] not in ("source", "target"):
            raise ZooError(f"{where}: 'half' must be source or target, got {e['half']!r}")
        if e.get("imagenet_weights") is not None and (not isinstance(e["imagenet_weights"], (bool, str))
                                                      or not e.get("checkpoint")):
            raise ZooError(f"{where}: 'imagenet_weights' (true, or the published model name whose ImageNet top-1 "
                           f"the checkpoint carries) needs a checkpoint, got {e['imagenet_weights']!r}")
        if e.get("classes") is not None and not isinstance(e["classes"], list):
            raise ZooError(f"{where}: 'classes' must be a list of class names")
        if not isinstance(e.get("finetune") or {}, dict):
            raise ZooError(f"{where}: 'finetune' must be a mapping")
        e = spec["entries"][i] = {**e, "finetune": dict(e.get("finetune") or {})}  # YAML aliases share entries
        if not isinstance(e.get("metadata") or {}, dict):
            raise ZooError(f"{where}: 'metadata' must be a mapping")
        refuse_derived(e.get("metadata") or {}, where)
        for key in ("source_dataset", "source_embedding"):
            if e.get(key):
                e[key] = resolve_path(str(e[key]), base, where)
        if e["finetune"].get("from"):
            e["finetune"]["from"] = resolve_path(str(e["finetune"]["from"]), base, where)
        if e.get("checkpoint"):  # kept as written for the manifest; resolved against the zoo folder
            e["checkpoint_path"] = resolve_path(e["checkpoint"], spec["zoo"], where)
        ids.append(e["id"])
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ZooError(f"zoo spec {str(path)!r}: duplicate id(s) {dup}")
    return spec


def refuse_derived(metadata: dict[str, Any], where: str) -> None:
    """Refuse metadata that types what is derived (:data:`DERIVED_METADATA`)."""
    typed = [k for k in DERIVED_METADATA if k in metadata]
    if typed:
        raise ZooError(f"{where}: metadata {typed[0]!r} is derived (parameters from the architecture, input size "
                       "from the fine-tuning image_size or the architecture), not typed: remove it")


def entry_metadata(model: str, given: dict[str, Any] | None, input_size: int | None = None, *,
                   pretrained: bool, published: str | None = None) -> dict[str, Any]:
    """Metadata for an entry: what was given, ``params_m`` and ``input_size`` derived, and
    ImageNet top-1 from the published tables when known.

    ``params_m`` counts ``model`` as the library builds it, ImageNet classifier included (as
    published tables count it); ``input_size`` is the resolution the weights were trained at,
    default the architecture's own. The published top-1 describes the published weights only:
    a checkpoint (a fine-tuned expert) gets one only when it is given. ``published`` names the
    published model whose figure the weights carry (default ``model``), e.g. ``quantized_mobilenet_v2``
    for a dequantized recovery of it; ``imagenet_top1_source`` says where the figure comes from.
    """
    meta = dict(given or {})
    refuse_derived(meta, f"a {model!r} entry")
    if meta.get("imagenet_top1") is not None:
        meta["imagenet_top1"] = number(meta["imagenet_top1"], "imagenet_top1 (a percentage)", low=0, high=100,
                                       error=ZooError)
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1):
        raise ZooError(f"input_size must be a positive integer, got {input_size!r}")
    try:
        params_m, default_size = architecture_facts(model)
    except ProbeError:
        raise ZooError(f"unknown model {model!r}: neither a torchvision nor a timm architecture name") from None
    if pretrained and "imagenet_top1" not in meta:
        found = imagenet_top1_source(published or parse_model_id(model).architecture or model, input_size)
        if found is not None:
            meta["imagenet_top1"], meta["imagenet_top1_source"] = found
    meta.update(params_m=params_m, input_size=input_size or default_size)
    return meta


def finetune_settings(spec: dict[str, Any], e: dict[str, Any]) -> dict[str, Any]:
    """The entry's fine-tuning settings: its own ``finetune`` over the spec's."""
    return {**(spec.get("finetune") or {}), **(e.get("finetune") or {})}


def trained_by_spec(spec: dict[str, Any], e: dict[str, Any]) -> bool:
    """Whether the spec's ``finetune`` section makes the entry's checkpoint: a local checkpoint of
    an entry with a source dataset, other than the weights fine-tuning starts from (the generalist)."""
    target = e.get("checkpoint_path")
    if e.get("imagenet_weights") or spec.get("finetune") is None or not e.get("source_dataset") or not target or "://" in target:
        return False
    start = finetune_settings(spec, e).get("from")
    return start is None or Path(start).resolve() != Path(target).resolve()


def entry_task(spec: dict[str, Any], e: dict[str, Any]) -> ImageTask:
    """The source task of a spec entry: its dataset, restricted to its ``classes`` and ``half``."""
    task = load_task(e["source_dataset"], label_column=e.get("label_column"))
    if e.get("classes") is None and e.get("half") is None:
        return task
    return subset(task, classes=e.get("classes"), half=e.get("half"), seed=int(spec.get("split_seed") or 0))


def build_zoo(spec_path: str | os.PathLike, log: Callable[[str], None] = print, progress: bool = True,
              train: bool = True, ray: str | None = None) -> Zoo:
    """Create or complete the zoo that ``spec_path`` describes; returns it.

    ``train=False`` adds entries whose expert checkpoint is missing without training it (their
    source task is embedded all the same): a later build with ``train=True`` trains them.
    ``ray``: run the trainings and embeddings as Ray tasks on the cluster at that address (``""``:
    a local Ray started here, or the one this process already joined).
    """
    if ray is not None:
        require_ray("building on Ray", ZooError)  # at the door, before any work
    spec = read_spec(spec_path)
    settings = spec.get("embedding") or {}
    given = {e["id"]: Embedding.load(e["source_embedding"]) for e in spec["entries"] if e.get("source_embedding")}
    probe = Probe.create(spec["probe"], weights=spec.get("weights"), image_size=spec.get("image_size"),
                         device=settings.get("device", "auto"))
    runtime = {k: v for k, v in settings.items() if k in ("workers", "max_bad_fraction")}
    Task2Vec(probe, **{k: v for k, v in settings.items() if k in EMBEDDING_SETTINGS}, **runtime)  # checked first
    zoo_dir = Path(spec["zoo"])
    if (zoo_dir / "zoo.json").exists():
        zoo = Zoo.load(zoo_dir)
        if zoo.probe["weights_hash"] != probe.weights_hash or zoo.probe["input_size"] != probe.config.input_size:
            raise ZooError(f"zoo {str(zoo_dir)!r} was built with another probe ({zoo.probe}) than the spec's")
    else:
        zoo = Zoo.create(zoo_dir, probe.describe(), method=settings.get("method", "exact"),
                         alpha=float(ALPHA if spec.get("alpha") is None else spec["alpha"]),
                         quality_weight=float(QUALITY_WEIGHT if spec.get("quality_weight") is None
                                              else spec["quality_weight"]),
                         embedding_settings={"min_images_per_class": EMBEDDING_DEFAULTS["min_images_per_class"], **settings})
    if ray is not None:
        with ray_session(ray, "building on Ray", ZooError) as ray_module:
            _build_on_ray(ray_module, zoo, spec, given, probe, runtime, train, log, progress)
        return _finish_build(zoo, spec)
    embedder = zoo.embedder(probe, progress=progress, **runtime)
    embedded: dict[tuple, Embedding] = {}  # entries of one source task (experts of two architectures) share it
    for e in spec["entries"]:
        if train:
            _train_missing_expert(zoo.path, spec, e, log, progress)
        if e["id"] in zoo.ids:
            log(f"{e['id']}: already in the zoo, skipped")
            continue
        if e["id"] in given:
            emb = given[e["id"]]
        else:
            key = _source_key(e)
            if key not in embedded:
                embedded[key] = embedder.embed(entry_task(spec, e), name=e.get("name") or e["id"])
            emb = embedded[key]
        _add_entry(zoo, spec, e, emb, probe, log)
    return _finish_build(zoo, spec)


def _source_key(e: dict[str, Any]) -> tuple:
    """What makes an entry's source task: entries of one source (experts of two architectures) share its embedding."""
    return (e["source_dataset"], e.get("label_column"), tuple(e.get("classes") or ()), e.get("half"),
            e.get("name") or e["id"])


def _add_entry(zoo: Zoo, spec: dict[str, Any], e: dict[str, Any], emb: Embedding, probe: Probe,
               log: Callable[[str], None]) -> None:
    """Add a spec entry with its source embedding to the zoo (the zoo's t0 from the first one)."""
    t0 = None if zoo.t0 is not None else trivial_embedding(emb, probe)
    size = finetune_settings(spec, e).get("image_size") if trained_by_spec(spec, e) else None
    published = e.get("imagenet_weights")
    entry = ZooEntry(e["id"], e["model"], bool(e.get("pretrained", False)), e.get("checkpoint"),
                     {"name": e["name"]} if e.get("name") else {},
                     entry_metadata(e["model"], e.get("metadata"), size,
                                    pretrained=bool(e.get("pretrained", False) or published),
                                    published=published if isinstance(published, str) else None))
    zoo.add(entry, emb, t0)
    log(f"{e['id']}: added ({emb.meta.get('n_images')} images, {emb.meta.get('n_classes')} classes)")


def _finish_build(zoo: Zoo, spec: dict[str, Any]) -> Zoo:
    """The spec's settings that apply to the whole zoo, once every entry is in."""
    if spec.get("always_check") is not None and spec["always_check"] != zoo.always_check:
        zoo.configure(always_check=spec["always_check"], always_check_fitted="the zoo's spec")
    return zoo


def embed_source(spec: dict[str, Any], entry_id: str, embed_settings: dict[str, Any]) -> Embedding:
    """A spec entry's source embedding with the spec's probe (a Ray task of :func:`build_zoo`)."""
    e = next(x for x in spec["entries"] if x["id"] == entry_id)
    probe = Probe.create(spec["probe"], weights=spec.get("weights"), image_size=spec.get("image_size"),
                         device=(spec.get("embedding") or {}).get("device", "auto"))
    return Task2Vec(probe, progress=False, **embed_settings).embed(entry_task(spec, e), name=e.get("name") or e["id"])


def train_expert(zoo_dir: str, spec: dict[str, Any], entry_id: str) -> list[str]:
    """Train a spec entry's missing expert checkpoint; its log lines (a Ray task of :func:`build_zoo`)."""
    lines: list[str] = []
    e = next(x for x in spec["entries"] if x["id"] == entry_id)
    _train_missing_expert(Path(zoo_dir), spec, e, lines.append, False)
    return lines


def _absolute(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with its resolved paths made absolute, for workers whose working folder is not the driver's."""
    def absolute(value: Any) -> Any:
        return str(Path(value).absolute()) if value and "://" not in str(value) else value

    out = {**spec, "zoo": absolute(spec["zoo"]), "weights": absolute(spec.get("weights"))}
    if spec.get("finetune"):
        out["finetune"] = {**spec["finetune"], "from": absolute(spec["finetune"].get("from"))}
    out["entries"] = []
    for e in spec["entries"]:
        e = {**e, **{k: absolute(e[k]) for k in ("source_dataset", "source_embedding", "checkpoint_path") if e.get(k)}}
        if e["finetune"].get("from"):
            e["finetune"] = {**e["finetune"], "from": absolute(e["finetune"]["from"])}
        out["entries"].append(e)
    return out


def _build_on_ray(ray: Any, zoo: Zoo, spec: dict[str, Any], given: dict[str, Embedding], probe: Probe,
                  runtime: dict[str, Any], train: bool, log: Callable[[str], None], progress: bool) -> None:
    """The trainings and embeddings as Ray tasks; the driver adds each entry once its tasks are done."""
    resources = {**ray_resources(ray), "max_retries": 0}
    remote_spec = _absolute(spec)
    ref = ray.put(remote_spec)
    settings = zoo.embedding_kwargs(**runtime)
    embed_task = ray.remote(embed_source).options(**resources)
    train_task = ray.remote(train_expert).options(**resources)
    tasks: dict[Any, tuple[str, str]] = {}  # task -> (entry id, "train" | "embed")
    todo: dict[str, set[str]] = {}  # entry id (not in the zoo yet) -> its unfinished tasks
    for e in remote_spec["entries"]:
        parts = set()
        if train and trained_by_spec(remote_spec, e) and not Path(e["checkpoint_path"]).is_file():
            tasks[train_task.remote(str(zoo.path.absolute()), ref, e["id"])] = (e["id"], "train")
            parts.add("train")
        if e["id"] not in zoo.ids and e["id"] not in given:
            tasks[embed_task.remote(ref, e["id"], settings)] = (e["id"], "embed")
            parts.add("embed")
        if e["id"] in zoo.ids and not parts:
            log(f"{e['id']}: already in the zoo, skipped")
        elif e["id"] not in zoo.ids:
            todo[e["id"]] = parts
    embeddings: dict[str, Embedding] = dict(given)
    spec_entry = {e["id"]: e for e in spec["entries"]}
    for entry_id in [i for i, parts in todo.items() if not parts]:  # given embeddings, nothing to run
        _add_entry(zoo, spec, spec_entry[entry_id], embeddings.pop(entry_id), probe, log)
        del todo[entry_id]
    failed: list[str] = []
    for (entry_id, part), result, error in as_completed(ray, tasks, progress=progress, desc="zoo build (tasks)"):
        if error is not None:
            log(f"{entry_id}: {part} failed ({error})")
            failed.append(entry_id)
            todo.pop(entry_id, None)
            continue
        if part == "train":
            for line in result:
                log(line)
        else:
            embeddings[entry_id] = result
        if entry_id in todo:
            todo[entry_id].discard(part)
            if not todo[entry_id]:
                _add_entry(zoo, spec, spec_entry[entry_id], embeddings.pop(entry_id), probe, log)
                del todo[entry_id]
    if failed:
        raise ZooError(f"{len(failed)} entr{'y' if len(failed) == 1 else 'ies'} failed: {', '.join(sorted(set(failed)))} "
                       "(the others were added; a rerun retries these)")


def _train_missing_expert(zoo_dir: Path, spec: dict[str, Any], e: dict[str, Any], log: Callable[[str], None],
                          progress: bool) -> None:
    """Fine-tune an entry whose checkpoint is missing, when the spec says how."""
    if not trained_by_spec(spec, e) or Path(e["checkpoint_path"]).is_file():
        return
    from ..finetune.trainer import Trainer, fit
    from ..finetune.checkpoint import export_weights
    from ..finetune.runfolder import has_checkpoint

    target = Path(e["checkpoint_path"])
    settings = finetune_settings(spec, e)
    start = settings.pop("from", None)
    run_dir = zoo_dir / "runs" / e["id"]
    log(f"{e['id']}: training the expert on {e['source_dataset']} -> {target}")
    task = entry_task(spec, e)
    try:
        Trainer(model=e["model"], weights=start, progress=progress, **settings)  # the spec's settings, checked
    except TypeError as exc:  # an unknown setting name
        raise ZooError(f"entry {e['id']!r}: bad finetune setting ({exc})") from None
    resume = has_checkpoint(run_dir)
    try:
        result = fit(task, run_dir, resume=resume, model=e["model"], weights=start, progress=progress, **settings)
    except (FinetuneError, CheckpointError) as exc:
        if not resume or isinstance(exc, RunBusyError):
            raise
        log(f"{e['id']}: cannot continue its run in {run_dir} ({exc}); training it again")
        result = fit(task, run_dir, overwrite=True, model=e["model"], weights=start, progress=progress, **settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    export_weights(run_dir / "best.pt", target)
    log(f"{e['id']}: expert val accuracy {result.val_accuracy:.4f} (best epoch {result.best_epoch})")
