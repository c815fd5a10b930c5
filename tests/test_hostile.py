"""Hostile files and flags across every command: each is refused with exit code 2 and one line
``task2vec: error: ...`` that names the problem, no traceback, and nothing written or changed.

The material is real and tiny: 8 flower photos at 32 px, their embedding by the real ImageNet
MobileNetV2 at 64 px, a one-entry zoo of it and a one-epoch fine-tuning run; the hostile files
are these with one field spoiled, so each case tests that field alone (``test_the_material_is_sound``
shows the unspoiled files work).
"""

from __future__ import annotations

import fractions
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from task2vec import (Embedding, EmbeddingFileError, FinetuneError, Probe, ProbeError, SettingError, Task2Vec,
                      WeightsError, Zoo, ZooError)
from task2vec.finetune.augment_config import AugmentConfig
from task2vec.cli.main import main
from task2vec.space.distance import pairwise
from task2vec.finetune.trainer import Trainer
from task2vec.backbones.probe import load_state_dict_file
from task2vec.space.taskmap import layout
from task2vec.space.trivial import trivial_embedding
from task2vec.zoo.zoo import MANIFEST, ZooEntry
from task2vec.zoo.spec import entry_metadata

from conftest import WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
SEED_RANGE = "must be an integer in [0, 4294967296)"
EMBED_FAST = ["--random-init", "--probe", "resnet18", "--image-size", "32", "--max-samples", "8", "--batch-size", "4",
              "--quiet", "--device", "cpu"]
TUNE_FAST = ["--model", "mobilenet_v2", "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--no-records",
             "--quiet", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_torch_thread", "cli_warnings")


# ----------------------------------------------------------------------------- the material
def _spoiled_embeddings(good: Path, root: Path) -> None:
    """``bad_<name>.npz``: the good embedding file with one array or metadata field spoiled."""
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    layers, vector = meta["layers"], arrays["vector"]

    def save(name: str, **changes) -> None:
        out = {**arrays, **changes}
        np.savez(root / f"bad_{name}.npz", **{k: v for k, v in out.items() if v is not None})

    def with_meta(name: str, **fields) -> None:
        save(name, meta=np.array(json.dumps({**meta, **fields})))

    save("meta_list", meta=np.array("[]"))
    save("meta_not_json", meta=np.array("{probe: mobilenet"))
    save("no_meta", meta=None)
    with_meta("probe_string", probe="mobilenet_v2")
    with_meta("input_size_word", probe={**meta["probe"], "input_size": "big"})
    with_meta("no_filters", layers=[{k: v for k, v in layer.items() if k != "filters"} for layer in layers])
    with_meta("negative_filters", layers=[{**layer, "filters": -layer["filters"]} for layer in layers])
    with_meta("filters_miscounted", layers=[{**layers[0], "filters": layers[0]["filters"] + 1}, *layers[1:]])
    with_meta("layers_string", layers="features")
    with_meta("short_prior", prior_inverse_variance=[1.0])
    save("vector_strings", vector=np.array(["0.5"] * len(vector)))
    save("vector_complex", vector=vector.astype(np.complex128))
    save("vector_2d", vector=vector.reshape(2, -1))
    save("vector_nan", vector=np.where(np.arange(len(vector)) == 3, np.nan, vector))
    save("vector_negative", vector=-vector)
    save("domain_mean_shape", domain_mean=arrays["domain_mean"][:5])
    save("domain_var_shape", domain_var=arrays["domain_var"].reshape(2, -1))
    save("halves_shape", halves=arrays["halves"][:1])


def _spoiled_checkpoints(best: Path, root: Path) -> None:
    """``ckpt_<name>.pt``: the run's best checkpoint with one ``data_config`` field spoiled."""
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    for name, change in (("size_negative", {"input_size": -5}), ("std_zero", {"std": [0.0, 0.0, 0.0]}),
                         ("crop_nan", {"crop_pct": float("nan")})):
        torch.save({**ckpt, "data_config": {**ckpt["data_config"], **change}}, root / f"ckpt_{name}.pt")
    torch.save({k: v for k, v in ckpt.items() if k != "data_config"}, root / "ckpt_no_data_config.pt")


def _edited_zoos(zoo: Path, root: Path) -> None:
    """``zoo_<name>``: copies of the zoo whose manifest was edited by hand (its checksum no longer
    matches); ``legacy_<name>``: the same edit in a manifest without a checksum, as written before
    there was one, whose fields are checked all the same."""
    m = json.loads((zoo / MANIFEST).read_text())
    entry = m["entries"][0]
    edits = {"alpha5": {"alpha": 5.0}, "alpha_nan": {"alpha": float("nan")},
             "outside": {"entries": [{**entry, "pretrained": False, "checkpoint": "/etc/passwd"}]},
             "top1": {"entries": [{**entry, "metadata": {**entry["metadata"], "imagenet_top1": 99.9}}]},
             "top1_150": {"entries": [{**entry, "metadata": {**entry["metadata"], "imagenet_top1": 150}}]}}
    for name, change in edits.items():
        for kind, checksum in (("zoo", True), ("legacy", False)):
            shutil.copytree(zoo, root / f"{kind}_{name}")
            edited = {k: v for k, v in {**m, **change}.items() if checksum or k != "manifest_sha256"}
            (root / f"{kind}_{name}" / MANIFEST).write_text(json.dumps(edited, indent=1))


def _resumable_copy(run: Path, dest: Path, config_text: str) -> None:
    """A copy of ``run`` (its checkpoint linked, not copied) whose config.json reads ``config_text``."""
    dest.mkdir()
    for f in run.iterdir():
        if f.suffix == ".pt":
            try:
                os.link(f, dest / f.name)
            except OSError:
                shutil.copy2(f, dest / f.name)
        else:
            shutil.copy2(f, dest / f.name)
    (dest / "config.json").write_text(config_text)


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared, one_torch_thread, oversized_images) -> SimpleNamespace:
    """The real material and its spoiled copies, in one folder that no refused command may change."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / "flowers"
    for cls in ("daisy", "rose"):
        (data / cls).mkdir(parents=True)
        for i, p in enumerate(sorted((shared / "data" / "flowers5" / cls).iterdir())[:4]):
            Image.open(p).convert("RGB").resize((32, 32)).save(data / cls / f"{i}.png")
    probe = Probe.create("mobilenet_v2", weights=WEIGHTS, image_size=64, device="cpu")
    emb = Task2Vec(probe, max_samples=8, min_images_per_class=4, progress=False).embed(data, name="flowers")
    good = emb.save(root / "good.t2v.npz")
    shutil.copy(good, root / "same.t2v.npz")
    _spoiled_embeddings(good, root)

    zoo = Zoo.create(root / "zoo", probe.describe(), embedding_settings={"max_samples": 8, "min_images_per_class": 4})
    zoo.add(ZooEntry("flowers", "mobilenet_v2", True, None, {}, entry_metadata("mobilenet_v2", {}, pretrained=True)),
            emb, trivial_embedding(emb))
    _edited_zoos(root / "zoo", root)

    run = root / "run"
    assert main(["finetune", str(data), "-o", str(run), "--random-init", *TUNE_FAST]) == 0
    _spoiled_checkpoints(run / "best.pt", root)
    _resumable_copy(run, root / "run_config_garbled", '{"params": {"lr": 0.001')
    _resumable_copy(run, root / "run_config_list", "[]\n")

    (root / "text.pt").write_text("these are not weights\n")
    for name in ("wide", "bomb", "big"):
        shutil.copy(oversized_images[name], root / f"{name}.png")
    torch.save({"weight": torch.zeros(2), "note": fractions.Fraction(1, 3)}, root / "pickled.pt")
    (root / "nul.csv").write_bytes(b"path,label\nflowers/daisy/0\x00.png,daisy\nflowers/rose/0.png,rose\n")
    (root / "labels.csv").write_bytes(b"file,name\n\xff\xfegood.t2v.npz,x\n")
    for name, text in (("alpha_word", "alpha: abc\n"), ("seed_negative", "split_seed: -1\n"),
                       ("image_size_small", "image_size: 8\n")):
        (root / f"spec_{name}.yaml").write_text(f"zoo: built\nprobe: mobilenet_v2\n{text}"
                                                f"entries:\n  - {{id: a, model: mobilenet_v2, source_embedding: good.t2v.npz}}\n")
    (root / "spec_bad_embedding.yaml").write_text(
        "zoo: built\nprobe: mobilenet_v2\nentries:\n  - {id: a, model: mobilenet_v2, source_embedding: bad_vector_complex.npz}\n")
    return SimpleNamespace(root=root, data=data, good=good, zoo=root / "zoo", run=run,
                           image=data / "daisy" / "0.png", probe=probe, emb=emb)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time: what a refused command must not touch."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------- the hostile command lines
# (id, argv with {placeholders}, what the one line must say); {out} is an empty folder of the test's own
BAD_EMBEDDINGS = [
    ("meta_list", "meta must be a JSON object, got an array"),
    ("meta_not_json", "meta is not JSON text"),
    ("no_meta", "has no 'meta' array"),
    ("probe_string", "meta.probe must be an object, got a string"),
    ("input_size_word", "meta.probe.input_size must be an integer >= 1, got 'big'"),
    ("no_filters", "meta.layers[0].filters must be an integer >= 1, got None"),
    ("negative_filters", "meta.layers[0].filters must be an integer >= 1, got -32"),
    ("filters_miscounted", "vector has 17056 values but meta.layers hold 17057"),
    ("layers_string", "meta.layers must be an array, got a string"),
    ("short_prior", "meta.prior_inverse_variance must be an array of one positive number per layer"),
    ("vector_strings", "vector must hold real numbers, got <U3 values"),
    ("vector_complex", "vector must hold real numbers, got complex128 values"),
    ("vector_2d", "vector must be 1-D, got shape (2, 8528)"),
    ("vector_nan", "vector must be finite, it holds 1 NaN or inf"),
    ("vector_negative", "vector must be non-negative"),
    ("domain_mean_shape", "domain_mean must have shape (1280,), got (5,)"),
    ("domain_var_shape", "domain_var must have shape (1280,), got (2, 640)"),
    ("halves_shape", "halves must have shape (2, 17056), got (1, 17056)"),
]

CASES = [
    # embed
    ("embed-seed-negative", ["embed", "{data}", "-o", "{out}/e.npz", "--seed", "-1"], f"--seed {SEED_RANGE}, got -1"),
    ("embed-seed-huge", ["embed", "{data}", "-o", "{out}/e.npz", "--seed", "4294967296"],
     f"--seed {SEED_RANGE}, got 4294967296"),
    ("embed-max-samples-word", ["embed", "{data}", "-o", "{out}/e.npz", "--max-samples", "abc"],
     "--max-samples must be an integer, got 'abc'"),
    ("embed-head-prior-inf", ["embed", "{data}", "-o", "{out}/e.npz", "--head-prior", "inf"],
     "--head-prior must be a finite number, got inf"),
    ("embed-bad-fraction-nan", ["embed", "{data}", "-o", "{out}/e.npz", "--max-bad-fraction", "nan"],
     "--max-bad-fraction must be a finite number, got nan"),
    ("embed-bad-fraction-2", ["embed", "{data}", "-o", "{out}/e.npz", *EMBED_FAST, "--max-bad-fraction", "2"],
     "max_bad_fraction must be a number in [0, 1], got 2.0"),
    ("embed-image-size-16", ["embed", "{data}", "-o", "{out}/e.npz", *EMBED_FAST, "--image-size", "16"],
     "image_size must be an integer >= 32, got 16"),
    ("embed-weights-text", ["embed", "{data}", "-o", "{out}/e.npz", "--weights", "{root}/text.pt"],
     "text.pt' is not a weights file (neither a torch .pt/.pth nor a .safetensors file)"),
    ("embed-weights-pickle", ["embed", "{data}", "-o", "{out}/e.npz", "--weights", "{root}/pickled.pt"],
     "pickled.pt' holds pickled Python objects (fractions.Fraction), which are not loaded"),
    ("embed-csv-nul", ["embed", "{root}/nul.csv", "-o", "{out}/e.npz", *EMBED_FAST],
     "line 2: path 'flowers/daisy/0\\x00.png' holds a NUL byte"),
    ("embed-unknown-flag", ["embed", "{data}", "-o", "{out}/e.npz", "--bogus"], "unrecognized arguments: --bogus"),
    ("embed-no-dataset", ["embed", "-o", "{out}/e.npz"], "the following arguments are required: dataset"),
    # distance
    *[(f"distance-{name}", ["distance", "{good}", f"{{root}}/bad_{name}.npz", "--csv", "{out}/d.csv"],
       f"bad_{name}.npz': {what}" if name != "no_meta" else what) for name, what in BAD_EMBEDDINGS],
    ("distance-alpha-nan", ["distance", "{good}", "{root}/same.t2v.npz", "--alpha", "nan"],
     "--alpha must be a finite number, got nan"),
    ("distance-alpha-inf", ["distance", "{good}", "{root}/same.t2v.npz", "--alpha", "inf"],
     "--alpha must be a finite number, got inf"),
    ("distance-alpha-negative", ["distance", "{good}", "{root}/same.t2v.npz", "--kind", "asym", "--alpha", "-5"],
     "--alpha must be a number >= 0, got -5.0"),
    ("distance-alpha-word", ["distance", "{good}", "{root}/same.t2v.npz", "--alpha", "x"], "--alpha must be a number, got 'x'"),
    ("distance-kind-unknown", ["distance", "{good}", "{root}/same.t2v.npz", "--kind", "euclid", "--csv", "{out}/d.csv"],
     "argument --kind: invalid choice: 'euclid'"),
    ("distance-asym-weights-text", ["distance", "{good}", "{root}/same.t2v.npz", "--kind", "asym", "--weights",
                                    "{root}/text.pt", "--csv", "{out}/d.csv"], "text.pt' is not a weights file"),
    # map
    ("map-same-file-twice", ["map", "{good}", "{root}/../{root_name}/good.t2v.npz", "-o", "{out}/m.png"],
     "good.t2v.npz' is given twice"),
    ("map-seed-negative", ["map", "{good}", "{root}/same.t2v.npz", "-o", "{out}/m.png", "--seed", "-1"],
     f"--seed {SEED_RANGE}, got -1"),
    ("map-labels-not-utf8", ["map", "{good}", "{root}/same.t2v.npz", "-o", "{out}/m.png", "--labels", "{root}/labels.csv"],
     "labels.csv' is not readable CSV text (UnicodeDecodeError)"),
    ("map-vector-complex", ["map", "{good}", "{root}/bad_vector_complex.npz", "-o", "{out}/m.png"],
     "vector must hold real numbers, got complex128 values"),
    # zoo init / add / list / remove / set / build / fit-model2vec
    ("zoo-init-alpha-nan", ["zoo", "init", "{out}/z", "--alpha", "nan"], "--alpha must be a finite number, got nan"),
    ("zoo-init-quality-negative", ["zoo", "init", "{out}/z", "--quality-weight", "-1"],
     "--quality-weight must be a number >= 0, got -1.0"),
    ("zoo-init-weights-pickle", ["zoo", "init", "{out}/z", "--weights", "{root}/pickled.pt"],
     "holds pickled Python objects (fractions.Fraction)"),
    ("zoo-init-image-size-word", ["zoo", "init", "{out}/z", "--image-size", "big"], "--image-size must be an integer, got 'big'"),
    ("zoo-add-unknown-model", ["zoo", "add", "{zoo}", "--id", "x", "--model", "notamodel", "--source-embedding", "{good}"],
     "unknown model 'notamodel'"),
    ("zoo-add-probe-string", ["zoo", "add", "{zoo}", "--id", "x", "--model", "resnet18", "--source-embedding",
                              "{root}/bad_probe_string.npz"], "meta.probe must be an object, got a string"),
    ("zoo-add-domain-mean-shape", ["zoo", "add", "{zoo}", "--id", "x", "--model", "resnet18", "--source-embedding",
                                   "{root}/bad_domain_mean_shape.npz"], "domain_mean must have shape (1280,), got (5,)"),
    ("zoo-add-top1-150", ["zoo", "add", "{zoo}", "--id", "x", "--model", "resnet18", "--imagenet-top1", "150",
                          "--source-embedding", "{good}"],
     "imagenet_top1 (a percentage) must be a number in [0, 100], got 150.0"),
    ("zoo-add-top1-nan", ["zoo", "add", "{zoo}", "--id", "x", "--model", "resnet18", "--imagenet-top1", "nan",
                          "--source-embedding", "{good}"], "--imagenet-top1 must be a finite number, got nan"),
    ("zoo-add-input-size-word", ["zoo", "add", "{zoo}", "--id", "x", "--model", "resnet18", "--input-size", "x",
                                 "--source-embedding", "{good}"], "--input-size must be an integer, got 'x'"),
    ("zoo-add-no-id", ["zoo", "add", "{zoo}", "--model", "resnet18", "--source-embedding", "{good}"],
     "the following arguments are required: --id"),
    ("zoo-list-no-dir", ["zoo", "list"], "the following arguments are required: dir"),
    ("zoo-remove-no-id", ["zoo", "remove", "{zoo}"], "the following arguments are required: --id"),
    ("zoo-set-alpha-nan", ["zoo", "set", "{zoo}", "--alpha", "nan"], "--alpha must be a finite number, got nan"),
    ("zoo-set-alpha-negative", ["zoo", "set", "{zoo}", "--alpha", "-5"], "--alpha must be a number >= 0, got -5.0"),
    ("zoo-set-quality-inf", ["zoo", "set", "{zoo}", "--quality-weight", "inf"],
     "--quality-weight must be a finite number, got inf"),
    ("zoo-build-alpha-word", ["zoo", "build", "{root}/spec_alpha_word.yaml"], "'alpha' must be a number, got 'abc'"),
    ("zoo-build-seed-negative", ["zoo", "build", "{root}/spec_seed_negative.yaml"], f"'split_seed' {SEED_RANGE}, got -1"),
    ("zoo-build-image-size-small", ["zoo", "build", "{root}/spec_image_size_small.yaml"],
     "'image_size' must be an integer >= 32, got 8"),
    ("zoo-build-bad-embedding", ["zoo", "build", "{root}/spec_bad_embedding.yaml"],
     "bad_vector_complex.npz': vector must hold real numbers, got complex128 values"),
    ("zoo-fit-l2-nan", ["zoo", "fit-model2vec", "{zoo}", "--l2", "nan"], "--l2 must be a finite number, got nan"),
    ("zoo-add-checkpoint-outside", ["zoo", "add", "{zoo}", "--id", "x", "--model", "resnet18", "--checkpoint",
                                    "/etc/passwd", "--source-embedding", "{good}"],
     "--checkpoint '/etc/passwd' lies outside the zoo folder and $TASK2VEC_SHARED: copy it into the zoo folder"),
    ("zoo-add-checkpoint-dotdot", ["zoo", "add", "{zoo}", "--id", "x", "--model", "resnet18", "--checkpoint",
                                   "../w.pt", "--source-embedding", "{good}"],
     "--checkpoint '../w.pt' leaves the zoo folder ('..')"),
    # a manifest edited by hand: refused by its checksum, or without one by the field it spoils
    *[(f"{cmd}-edited-{name}", argv, f"{MANIFEST}' was edited by hand (its checksum does not match): run "
                                     f"'task2vec zoo verify {{root}}/zoo_{name}' to see what is wrong")
      for name in ("alpha5", "outside", "top1")
      for cmd, argv in (("zoo-list", ["zoo", "list", f"{{root}}/zoo_{name}"]),
                        ("recommend", ["recommend", "{good}", "--zoo", f"{{root}}/zoo_{name}", "--json", "{out}/r.json"]))],
    ("zoo-verify-edited", ["zoo", "verify", "{root}/zoo_outside"],
     "zoo {root}/zoo_outside: 2 problem(s) found"),  # edited, and a checkpoint outside the zoo
    ("zoo-set-edited", ["zoo", "set", "{root}/zoo_top1", "--alpha", "0.1"], "was edited by hand"),
    ("finetune-edited-zoo", ["finetune", "{data}", "-o", "{out}/run", "--model", "{root}/zoo_outside:flowers"],
     "was edited by hand"),
    ("zoo-list-legacy-outside", ["zoo", "list", "{root}/legacy_outside"],
     "entry 'flowers': checkpoint '/etc/passwd' is an absolute path: a manifest names weights relative to the zoo"),
    ("recommend-legacy-outside", ["recommend", "{good}", "--zoo", "{root}/legacy_outside"],
     "checkpoint '/etc/passwd' is an absolute path"),
    ("recommend-legacy-alpha-nan", ["recommend", "{good}", "--zoo", "{root}/legacy_alpha_nan"],
     "zoo.json': field 'alpha' must be a finite number, got nan"),
    ("zoo-list-legacy-top1-150", ["zoo", "list", "{root}/legacy_top1_150"],
     "entry 'flowers': metadata 'imagenet_top1' (a percentage) must be a number in [0, 100], got 150"),
    ("zoo-verify-legacy-outside", ["zoo", "verify", "{root}/legacy_outside"], "1 problem(s) found"),
    ("zoo-unknown-command", ["zoo", "frobnicate", "{zoo}"], "invalid choice: 'frobnicate'"),
    # recommend
    ("recommend-meta-list", ["recommend", "{root}/bad_meta_list.npz", "--zoo", "{zoo}", "--json", "{out}/r.json"],
     "meta must be a JSON object, got an array"),
    ("recommend-domain-var-shape", ["recommend", "{root}/bad_domain_var_shape.npz", "--zoo", "{zoo}"],
     "domain_var must have shape (1280,), got (2, 640)"),
    ("recommend-vector-strings", ["recommend", "{root}/bad_vector_strings.npz", "--zoo", "{zoo}"],
     "vector must hold real numbers, got <U3 values"),
    ("recommend-quality-nan", ["recommend", "{good}", "--zoo", "{zoo}", "--quality-weight", "nan"],
     "--quality-weight must be a finite number, got nan"),
    ("recommend-alpha-negative", ["recommend", "{good}", "--zoo", "{zoo}", "--alpha", "-5"],
     "--alpha must be a number >= 0, got -5.0"),
    ("recommend-k-word", ["recommend", "{good}", "--zoo", "{zoo}", "-k", "x"], "-k must be an integer, got 'x'"),
    ("recommend-k-zero", ["recommend", "{good}", "--zoo", "{zoo}", "-k", "0", "--json", "{out}/r.json"],
     "k must be an integer >= 1, got 0"),
    ("recommend-seed-huge", ["recommend", "{data}", "--zoo", "{zoo}", "--seed", "99999999999"],
     f"--seed {SEED_RANGE}, got 99999999999"),
    # finetune
    ("finetune-rotate-nan", ["finetune", "{data}", "-o", "{out}/run", "--rotate", "nan"],
     "--rotate must be a finite number, got nan"),
    ("finetune-color-jitter-nan", ["finetune", "{data}", "-o", "{out}/run", "--color-jitter", "nan"],
     "--color-jitter must be a finite number, got nan"),
    ("finetune-mixup-nan", ["finetune", "{data}", "-o", "{out}/run", "--mixup", "nan"],
     "--mixup must be a finite number, got nan"),
    ("finetune-cutmix-inf", ["finetune", "{data}", "-o", "{out}/run", "--cutmix", "inf"],
     "--cutmix must be a finite number, got inf"),
    ("finetune-lr-inf", ["finetune", "{data}", "-o", "{out}/run", "--lr", "inf"], "--lr must be a finite number, got inf"),
    ("finetune-epochs-fraction", ["finetune", "{data}", "-o", "{out}/run", "--epochs", "1.5"],
     "--epochs must be an integer, got '1.5'"),
    ("finetune-seed-negative", ["finetune", "{data}", "-o", "{out}/run", "--seed", "-1"], f"--seed {SEED_RANGE}, got -1"),
    ("finetune-seed-huge", ["finetune", "{data}", "-o", "{out}/run", "--seed", "18446744073709551616"],
     f"--seed {SEED_RANGE}, got 18446744073709551616"),
    ("finetune-repeats-past-seed-range", ["finetune", "{data}", "-o", "{out}/run", *TUNE_FAST, "--random-init",
                                          "--seed", "4294967295", "--repeats", "2"], f"seed {SEED_RANGE}, got 4294967296"),
    ("finetune-rotate-200", ["finetune", "{data}", "-o", "{out}/run", *TUNE_FAST, "--rotate", "200"],
     "augmentation rotate (degrees) must be a number in [0, 180], got 200.0"),
    ("finetune-mixup-negative", ["finetune", "{data}", "-o", "{out}/run", *TUNE_FAST, "--mixup", "-1"],
     "augmentation mixup must be a number >= 0, got -1.0"),
    ("finetune-weights-text", ["finetune", "{data}", "-o", "{out}/run", *TUNE_FAST, "--weights", "{root}/text.pt"],
     "text.pt' is not a weights file"),
    ("finetune-resume-config-garbled", ["finetune", "{data}", "-o", "{root}/run_config_garbled", "--resume", "--random-init",
                                        *TUNE_FAST], "run_config_garbled': its config.json is not JSON (JSONDecodeError)"),
    ("finetune-resume-config-list", ["finetune", "{data}", "-o", "{root}/run_config_list", "--resume", "--random-init",
                                     *TUNE_FAST], "its config.json is not a task2vec run's (no 'params' mapping)"),
    # predict, cam
    ("predict-input-size-negative", ["predict", "{root}/ckpt_size_negative.pt", "{image}", "--json", "{out}/p.json"],
     "data_config.input_size must be an integer >= 1, got -5"),
    ("predict-std-zero", ["predict", "{root}/ckpt_std_zero.pt", "{image}"], "data_config.std must be a positive number, got 0.0"),
    ("predict-crop-nan", ["predict", "{root}/ckpt_crop_nan.pt", "{image}"],
     "data_config.crop_pct must be a finite number, got nan"),
    ("predict-no-data-config", ["predict", "{root}/ckpt_no_data_config.pt", "{image}"],
     "data_config must be a mapping, got NoneType"),
    ("predict-text-checkpoint", ["predict", "{root}/text.pt", "{image}"], "text.pt' is not a task2vec checkpoint"),
    ("predict-topk-zero", ["predict", "{run}/best.pt", "{image}", "--topk", "0"], "--topk must be an integer >= 1, got 0"),
    ("cam-input-size-negative", ["cam", "{root}/ckpt_size_negative.pt", "{image}", "-o", "{out}/c.png"],
     "data_config.input_size must be an integer >= 1, got -5"),
    ("cam-no-output", ["cam", "{run}/best.pt", "{image}"], "the following arguments are required: -o/--output"),
    *[(f"{command}-image-{name}", [command, "{run}/best.pt", "{image}", f"{{root}}/{name}.png", *out], what)
      for command, out in (("predict", ["--json", "{out}/p.json"]), ("cam", ["-o", "{out}/c.png"]))
      for name, what in (("wide", "wide.png': 60000 x 1 pixels, its long side more than 32 times its short one"),
                         ("big", "big.png': 10000 x 9000 pixels, more than the limit of 89,478,485"),
                         ("bomb", "bomb.png': Image size (900000000 pixels) exceeds limit"))],
    ("no-command", ["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, fragment", [pytest.param(a, f, id=i) for i, a, f in CASES])
def test_hostile_input_is_one_line_and_leaves_nothing(world, tmp_path, capsys, argv, fragment):
    out = tmp_path / "out"
    out.mkdir()
    paths = {"root": world.root, "root_name": world.root.name, "data": world.data, "good": world.good,
             "zoo": world.zoo, "run": world.run, "image": world.image, "out": out}
    before = _tree(world.root)
    code = main([a.format(**paths) for a in argv])
    stdout, stderr = capsys.readouterr()
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("task2vec: error: "), stderr
    assert fragment.format(**paths) in lines[0], lines[0]
    assert "Traceback" not in stdout + stderr
    assert os.listdir(out) == []  # no output, no temp file
    assert _tree(world.root) == before  # the zoo, the run and every input unchanged


def test_the_material_is_sound(world, tmp_path, capsys):
    """The unspoiled files work: each hostile case above fails for its one spoiled field or flag."""
    same = str(world.root / "same.t2v.npz")
    for argv in (["distance", world.good, same, "--kind", "asym"],
                 ["map", world.good, same, "-o", tmp_path / "m.png"],  # two identical tasks: all distances 0
                 ["recommend", world.good, "--zoo", world.zoo, "--check", "0"],
                 ["predict", world.run / "best.pt", world.image],
                 ["finetune", world.data, "-o", world.run, "--resume", "--random-init", *TUNE_FAST]):
        code = main([str(a) for a in argv])
        stderr = capsys.readouterr().err
        assert code == 0, (argv, stderr)
        assert "warning" not in stderr, stderr  # no singular-limits warning from the map's dendrogram


def test_manifests_without_a_checksum_still_load(world, capsys):
    """Written before the checksum: a value in range is taken as it stands (nothing says it was edited)."""
    for name in ("alpha5", "top1"):
        assert main(["zoo", "list", str(world.root / f"legacy_{name}")]) == 0
    out = capsys.readouterr().out
    assert "alpha 5.0" in out and "99.9" in out


def test_an_absolute_checkpoint_is_recorded_relative_to_the_zoo_or_the_shared_folder(world, tmp_path, capsys,
                                                                                     monkeypatch):
    zoo, shared = tmp_path / "zoo", tmp_path / "shared"
    shutil.copytree(world.zoo, zoo)
    for folder in (zoo / "experts", shared / "weights"):
        folder.mkdir(parents=True)
        (folder / "w.safetensors").write_bytes(b"not read by zoo add")
    monkeypatch.setenv("TASK2VEC_SHARED", str(shared))
    for entry_id, checkpoint in (("inside", zoo / "experts" / "w.safetensors"), ("shared", shared / "weights" / "w.safetensors"),
                                 ("relative", "experts/w.safetensors")):
        assert main(["zoo", "add", str(zoo), "--id", entry_id, "--model", "mobilenet_v2", "--checkpoint", str(checkpoint),
                     "--source-embedding", str(world.good)]) == 0, capsys.readouterr().err
    entries = {e.id: e.checkpoint for e in Zoo.load(zoo).entries}
    assert entries == {"flowers": None, "inside": "experts/w.safetensors",
                       "shared": "${TASK2VEC_SHARED}/weights/w.safetensors", "relative": "experts/w.safetensors"}
    assert Zoo.verify(zoo).ok and Zoo.verify(zoo).notes == []


def test_a_flag_of_the_wrong_type_is_one_line_in_a_real_process(world):
    """argparse's usage block and exit path replaced: the installed entry point prints one line."""
    proc = subprocess.run([sys.executable, "-m", "task2vec", "distance", str(world.good), str(world.good), "--alpha", "nan"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "task2vec: error: --alpha must be a finite number, got nan\n"


# ----------------------------------------------------------------------------- the same checks in the library
def test_library_refuses_the_same_numbers_with_typed_errors(world):
    nan = float("nan")
    cases = [
        (lambda: Task2Vec(world.probe, seed=-1), ProbeError, f"seed {SEED_RANGE}, got -1"),
        (lambda: Task2Vec(world.probe, seed=2 ** 32), ProbeError, f"seed {SEED_RANGE}"),
        (lambda: Task2Vec(world.probe, max_bad_fraction=nan), ProbeError, "max_bad_fraction must be a finite number"),
        (lambda: Probe.create("resnet18", random_init=True, seed=-3), ProbeError, f"seed {SEED_RANGE}, got -3"),
        (lambda: Trainer(seed=2 ** 32), FinetuneError, f"seed {SEED_RANGE}"),
        (lambda: Trainer(lr=float("inf")), FinetuneError, "lr must be a finite number, got inf"),
        (lambda: AugmentConfig(rotate=nan), FinetuneError, "augmentation rotate (degrees) must be a finite number"),
        (lambda: AugmentConfig(color_jitter=nan), FinetuneError, "augmentation color_jitter must be a finite number"),
        (lambda: AugmentConfig(mixup=nan), FinetuneError, "augmentation mixup must be a finite number"),
        (lambda: AugmentConfig(cutmix=-1.0), FinetuneError, "augmentation cutmix must be a number >= 0"),
        (lambda: pairwise([world.emb, world.emb], alpha=nan), SettingError, "alpha must be a finite number, got nan"),
        (lambda: pairwise([world.emb, world.emb], alpha=-5), SettingError, "alpha must be a number >= 0, got -5"),
        (lambda: Zoo.load(world.zoo).configure(alpha=nan), ZooError, "alpha must be a finite number"),
        (lambda: Zoo.load(world.zoo).rank(world.emb, quality_weight=nan), ZooError, "quality_weight must be a finite"),
        (lambda: layout(np.zeros((2, 2)), "pca", seed=-1), SettingError, f"seed {SEED_RANGE}"),
        (lambda: Embedding(world.emb.vector.astype(np.complex128), world.emb.meta), EmbeddingFileError,
         "vector must hold real numbers, got complex128 values"),
        (lambda: Embedding(world.emb.vector, []), EmbeddingFileError, "meta must be a JSON object, got an array"),
        (lambda: load_state_dict_file(world.root / "text.pt"), WeightsError, "is not a weights file"),
    ]
    for make, error, fragment in cases:
        with pytest.raises(error) as info:
            make()
        assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)


# ----------------------------------------------------------------------------- images over the pixel limits
def _add_oversized(folder: Path, world: SimpleNamespace) -> Path:
    """``folder`` (daisy/ and rose/) with the 60000 x 1 PNG added to daisy/ and the bomb to rose/."""
    for cls, name in (("daisy", "wide"), ("rose", "bomb")):
        shutil.copy(world.root / f"{name}.png", folder / cls / f"{name}.png")
    return folder


def test_predict_and_cam_name_the_oversized_image(world, tmp_path, capsys):
    for argv in (["predict", world.run / "best.pt", world.root / "wide.png"],
                 ["cam", world.run / "best.pt", world.root / "wide.png", "-o", tmp_path / "c.png"]):
        assert main([str(a) for a in argv]) == 2
        assert capsys.readouterr().err == (f"task2vec: error: cannot read image '{world.root / 'wide.png'}': "
                                           "60000 x 1 pixels, its long side more than 32 times its short one\n")
    assert os.listdir(tmp_path) == []


def test_embed_skips_oversized_images_as_bad(world, tmp_path, capsys):
    data = _add_oversized(shutil.copytree(world.data, tmp_path / "data"), world)
    out = tmp_path / "e.npz"
    assert main(["embed", str(data), "-o", str(out), *EMBED_FAST, "--max-samples", "16"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("task2vec: error: 2 of 10 images could not be read (limit 5%), first: ") and "\n" not in line
    assert "60000 x 1 pixels" in line or "Image size (900000000 pixels)" in line, line
    assert not out.exists()
    assert main(["embed", str(data), "-o", str(out), *EMBED_FAST, "--max-samples", "16", "--max-bad-fraction", "0.25"]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("task2vec: warning: skipped 2 of 10 unreadable images, first: ") and "\n" not in err, err
    meta = Embedding.load(out).meta
    assert meta["n_images"] == 8 and meta["n_skipped_images"] == 2


def test_finetune_skips_oversized_images_as_bad(world, tmp_path, capsys):
    split = tmp_path / "split"
    for cls in ("daisy", "rose"):  # three photos of each class to train on, one to validate on
        photos = sorted((world.data / cls).iterdir())
        (split / "train" / cls).mkdir(parents=True)
        (split / "val" / cls).mkdir(parents=True)
        for p in photos[:3]:
            shutil.copy(p, split / "train" / cls / p.name)
        shutil.copy(photos[3], split / "val" / cls / photos[3].name)
    _add_oversized(split / "train", world)
    assert main(["finetune", str(split), "-o", str(tmp_path / "run"), "--random-init", *TUNE_FAST]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("task2vec: error: 2 of 8 images could not be read (limit 5%), first: ") and "\n" not in line
    assert "wide.png' (60000 x 1 pixels" in line or "bomb.png' (Image size (900000000 pixels)" in line, line
    trainer = Trainer(model="mobilenet_v2", random_init=True, image_size=32, epochs=1, batch_size=4, device="cpu",
                      progress=False, max_bad_fraction=0.25)
    with pytest.warns(UserWarning, match="skipped 2 of 8 unreadable images, first: "):
        result = trainer.fit(split, tmp_path / "run2")
    assert result.epochs_run == 1 and (tmp_path / "run2" / "best.pt").is_file()


# ----------------------------------------------------------------------------- existing outputs: refused unless --force
OUTPUTS = [  # (id, argv writing {dest}<suffix>, the suffix of the file that exists beforehand)
    ("embed", ["embed", "{data}", "-o", "{dest}.npz", *EMBED_FAST], ".npz"),
    ("distance-csv", ["distance", "{good}", "{root}/same.t2v.npz", "--csv", "{dest}.csv"], ".csv"),
    *[(f"map{suffix}", ["map", "{good}", "{root}/same.t2v.npz", "-o", "{dest}.png"], suffix)
      for suffix in (".png", ".csv", ".html")],  # the PNG and the two files beside it
    ("recommend-json", ["recommend", "{good}", "--zoo", "{zoo}", "--check", "0", "--json", "{dest}.json"], ".json"),
    ("predict-json", ["predict", "{run}/best.pt", "{image}", "--json", "{dest}.json"], ".json"),
    ("cam", ["cam", "{run}/best.pt", "{image}", "-o", "{dest}.png"], ".png"),
]


@pytest.mark.parametrize("argv, suffix", [pytest.param(a, s, id=i) for i, a, s in OUTPUTS])
def test_an_existing_output_is_refused_at_once_unless_forced(world, tmp_path, capsys, monkeypatch, argv, suffix):
    from task2vec import data
    from task2vec.zoo import recommendation
    from task2vec.space import taskmap
    from task2vec.finetune.inference import FinetunedModel

    paths = {"root": world.root, "data": world.data, "good": world.good, "zoo": world.zoo, "run": world.run,
             "image": world.image, "dest": tmp_path / "out"}
    argv = [a.format(**paths) for a in argv]
    existing = tmp_path / f"out{suffix}"
    existing.write_bytes(b"old\n")
    before = (existing.stat().st_size, existing.stat().st_mtime_ns)

    def computed(*args, **kwargs):
        pytest.fail("work was done before the output was checked")

    with monkeypatch.context() as mp:  # nothing is loaded, embedded, laid out or recommended
        for owner, name in ((data, "load_task"), (Probe, "create"), (Embedding, "load"), (FinetunedModel, "load"),
                            (recommendation, "recommend"), (taskmap, "layout")):
            mp.setattr(owner, name, computed)
        assert main(argv) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    assert stderr == f"task2vec: error: output file '{existing}' exists: pass --force to replace it\n"
    assert os.listdir(tmp_path) == [existing.name]
    assert existing.read_bytes() == b"old\n" and (existing.stat().st_size, existing.stat().st_mtime_ns) == before
    assert main([*argv, "--force"]) == 0, capsys.readouterr().err
    assert existing.read_bytes() != b"old\n"
