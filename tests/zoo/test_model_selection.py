"""The model-selection benchmark end to end (--quick) on a tiny zoo built here: pipeline, not numbers."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from task2vec.defaults import RECOMMEND_CHECK, RECOMMEND_FISHER_IMAGES, RECOMMEND_MAX_RANK
from task2vec.zoo.spec import build_zoo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def benchmarks_importable(monkeypatch):
    """The benchmark scripts import as modules for the length of each test (sys.path restored after)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))


SPEC = """
zoo: zoo
probe: mobilenet_v2
weights: ${TASK2VEC_SHARED}/weights/mobilenet_v2_imagenet.safetensors
image_size: 64
embedding: {method: exact, max_samples: 24, seed: 0}
split_seed: 0
finetune:
  from: ${TASK2VEC_SHARED}/weights/mobilenet_v2_imagenet.safetensors
  image_size: 64
  epochs: 1
  max_train_images: 40
  val_fraction: 0.2
  augment: none
  patience: 0
entries:
  - id: generalist
    model: mobilenet_v2
    checkpoint: ${TASK2VEC_SHARED}/weights/mobilenet_v2_imagenet.safetensors
    source_dataset: ${TASK2VEC_SHARED}/data/flowers5
    half: source
    metadata: {imagenet_top1: 71.878}
  - id: mnist-expert
    model: mobilenet_v2
    checkpoint: experts/mnist.safetensors
    source_dataset: ${TASK2VEC_SHARED}/data/mnist_test
    classes: ["4", "9"]
    half: source
  - id: pneumonia-expert
    model: mobilenet_v2
    checkpoint: experts/pneumonia.safetensors
    source_dataset: ${TASK2VEC_SHARED}/data/pneumoniamnist
    half: source
"""


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory, shared):
    base = tmp_path_factory.mktemp("ms")
    (base / "spec.yaml").write_text(SPEC)
    os.environ.setdefault("TASK2VEC_SHARED", str(shared))
    build_zoo(base / "spec.yaml", log=lambda _: None, progress=False)
    return base


def test_quick_benchmark_end_to_end(tiny_zoo, shared, tmp_path):
    env = {**os.environ, "TASK2VEC_SHARED": str(shared)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "model_selection.py"), "--quick", "--zoo", str(tiny_zoo / "zoo"),
           "--spec", str(tiny_zoo / "spec.yaml"), "--m2v-folds", "2", "--fisher-caps", "16",
           "--map-layout", "pca",  # UMAP's compile, 35 s a process, is tested once, in tests/cli
           "--cache", str(tmp_path / "cache"),
           "--out", str(tmp_path / "out")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("summary.csv", "per_target.csv", "alpha_sweep.csv", "results.json", "fig3.png", "taskmap.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = {r["method"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert set(rows) == {"oracle", "chance", "generalist", "task2vec sym", "recommend (defaults)",
                         "task2vec asym (alpha LOTO)", "model2vec", "domain embedding", "LogME", "LEEP", "NCE",
                         "static: ImageNet top-1", "static: parameters", "static: always the largest",
                         "static: best architecture's generalist (LOTO)", "task2vec asym + learned prior (LOTO)"}
    assert float(rows["oracle"]["regret_points"]) == 0 and float(rows["oracle"]["top1"]) == 1
    for r in rows.values():
        assert 0 <= float(r["top3"]) <= 1 and float(r["regret_points"]) >= 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["acc"]) == 4 and all(len(a) == 3 for a in res["acc"])
    assert all(0 <= a <= 1 for row in res["acc"] for a in row)
    assert len(res["finetune_check"]) == 1  # one target fine-tuned with every model
    # every method judged again against the fine-tune accuracies of that one target
    ft = {r["method"]: r for r in csv.DictReader(open(out / "summary_finetune.csv"))}
    assert set(ft) == set(rows) | {"linear probe (ground truth)"} and res["finetune_targets"] == 1
    assert float(ft["oracle"]["regret_points"]) == 0 and float(ft["oracle"]["top1"]) == 1
    paired = list(csv.DictReader(open(out / "paired.csv")))
    assert {r["ground_truth"] for r in paired} == {"linear probe", "fine-tune"}
    assert res["best_static"].startswith("static: ")  # the static ranking of least regret, a reference too
    assert {r["reference"] for r in paired} == {"task2vec sym", "LogME", "generalist", "recommend (defaults)",
                                                res["best_static"]}
    # the checked pick is Task2Vec's first pick or the generalist (the probe), whichever LogME prefers
    from model_selection import GRID, config_name

    configs = res["configs"]
    assert len(configs) == sum(c["fisher_images"] in (None, 16) for c in GRID) and res["chosen_config"] in configs
    capped = configs["max_rank 1, Fisher on 16 images, alpha 0, no biases, no check"]
    assert capped["fisher_images"] == 16 and capped["seconds_per_target"] > 0
    assert {r["config"] for r in csv.DictReader(open(out / "configs.csv"))} == set(configs)
    fast = configs["max_rank 1, alpha 0, no biases, no check"]["picks"]
    checked = configs["max_rank 1, alpha 0, no biases, check 1"]["picks"]
    generalist = [m["id"] for m in json.loads((tiny_zoo / "zoo" / "zoo.json").read_text())["entries"]].index(
        "generalist")
    assert all(c in (f, generalist) for f, c in zip(fast, checked))
    # the benchmark's own ranking of a configuration is what task2vec.recommend does with the same settings
    shipped = {"max_rank": RECOMMEND_MAX_RANK, "fisher_images": RECOMMEND_FISHER_IMAGES, "alpha": 0.15, "biases": False,
               "check": RECOMMEND_CHECK, "broad": 0}
    assert res["shipped_config"] == shipped
    assert res["picks"]["recommend (defaults)"] == configs[config_name(shipped)]["picks"]
    assert all(float(r["ci95_low"]) <= float(r["ci95_high"]) for r in paired)
    check = next(iter(res["finetune_check"].values()))
    assert float(ft["linear probe (ground truth)"]["weighted_tau"]) == pytest.approx(check["weighted_tau"], abs=1e-3)
    per = list(csv.DictReader(open(out / "per_target.csv")))
    assert [r["target"] for r in per] == ["mnist-4-vs-9", "mnist-thickness", "cifar10-cat-vs-dog",
                                          "flowers-daisy-dandelion"]
    # a second run finds everything cached: nothing is embedded, trained or extracted again
    timings = json.loads((tmp_path / "cache" / "timings.json").read_text())
    second = subprocess.run(cmd + ["--write-biases"], env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((tmp_path / "cache" / "timings.json").read_text()) == timings
    manifest = json.loads((tiny_zoo / "zoo" / "zoo.json").read_text())
    assert manifest["model2vec"]["n_tasks"] == 4
    # a second fine-tune seed: seed 0 comes from the cache, the truth is the mean, and seed-vs-seed is reported
    third = subprocess.run(cmd[:-2] + ["--out", str(tmp_path / "out2"), "--finetune-seeds", "0", "1"], env=env,
                           capture_output=True, text=True, timeout=900)
    assert third.returncode == 0, third.stderr[-3000:]
    res2 = json.loads((tmp_path / "out2" / "results.json").read_text())
    check2 = next(iter(res2["finetune_check"].values()))
    assert check2["finetune_acc_seeds"][0] == check["finetune_acc"]
    assert check2["finetune_acc"] == pytest.approx(list(np.mean(check2["finetune_acc_seeds"], axis=0)))
    ft2 = {r["method"]: r for r in csv.DictReader(open(tmp_path / "out2" / "summary_finetune.csv"))}
    assert "fine-tune, another seed" in ft2 and 0 <= float(ft2["fine-tune, another seed"]["top3"]) <= 1


def test_unknown_target_is_an_error(tiny_zoo, shared, tmp_path):
    from model_selection import main as benchmark

    args = ["--zoo", str(tiny_zoo / "zoo"), "--spec", str(tiny_zoo / "spec.yaml"), "--cache", str(tmp_path / "c")]
    with pytest.raises(SystemExit, match="unknown target"):
        benchmark([*args, "--targets", "no-such-task"])
    with pytest.raises(SystemExit, match="unknown target"):  # the holdout set is its own pool
        benchmark([*args, "--set", "holdout", "--targets", "mnist-4-vs-9"])


def test_holdout_targets_are_new():
    from model_selection_targets import HOLDOUT, TARGETS

    names = [t.name for t in HOLDOUT]
    assert len(set(names)) == len(names) >= 10 and not set(names) & {t.name for t in TARGETS}
    fields = lambda t: (t.dataset, t.shots, t.column, t.classes, t.prefix, t.groups, t.attribute, t.ways)  # noqa: E731
    assert not {fields(t) for t in HOLDOUT if t.ways is None} & {fields(t) for t in TARGETS}


def test_shifted_families_are_new_and_their_images_are_shifted(shared, tmp_path):
    """Issue 18's families: names and draws differ from every other set; each image is the shifted original."""
    from PIL import Image, ImageOps

    from model_selection_targets import HOLDOUT, SHIFTED, SHIFTED_HOLDOUT, SHIFTS, TARGETS, Target, build_target

    names = [t.name for t in TARGETS + HOLDOUT + SHIFTED + SHIFTED_HOLDOUT]
    assert len(set(names)) == len(names)
    fields = lambda t: (t.dataset, t.shots, t.classes, t.groups, t.shift, t.ways)  # noqa: E731
    assert not {fields(t) for t in SHIFTED_HOLDOUT} & {fields(t) for t in SHIFTED + TARGETS + HOLDOUT}
    assert {t.shift for t in SHIFTED + SHIFTED_HOLDOUT} == set(SHIFTS) | {None}
    assert TARGETS[0].key() == "mnist-10way-664c8528d0"  # a new field keeps the cache keys of the earlier sets
    t = Target("mnist-invert", "mnist_test", 3, 4, "inverted", classes=("3", "8"), shift="invert")
    plain = build_target(Target("mnist-invert", "mnist_test", 3, 4, "inverted", classes=("3", "8")), shared / "data")
    shifted = build_target(t, shared / "data", cache=tmp_path)
    assert shifted.train.classes == plain.train.classes and (shifted.train.labels == plain.train.labels).all()
    for a, b in zip(plain.test.paths, shifted.test.paths):
        want = ImageOps.invert(Image.open(a).convert("RGB"))
        assert b.is_relative_to(tmp_path) and list(Image.open(b).getdata()) == list(want.getdata())
    digits = build_target(Target("uci", "sklearn:digits", 2, 3, "external", classes=("1", "7"), whole=True),
                          shared / "data", cache=tmp_path)
    assert len(digits.train) == 4 and Image.open(digits.train.paths[0]).size == (8, 8)


def test_paired_differences_against_hand_computed_cases():
    from model_selection import MEASURES, paired_differences

    def rows(regrets):
        return [{k: (r if k == "regret" else 0.0) for k in MEASURES} for r in regrets]

    per = {"ref": rows([1.0, 2.0, 3.0, 4.0]), "same": rows([1.0, 2.0, 3.0, 4.0]),
           "worse": rows([2.0, 3.0, 4.0, 5.0]), "mixed": rows([0.0, 4.0, 3.0, 4.0]), "oracle": rows([0.0] * 4)}
    out = paired_differences(per, "ref", n_boot=500)
    assert set(out) == {"same", "worse", "mixed"}  # the reference, oracle and chance are not compared
    assert out["same"]["regret"] == [0.0, 0.0, 0.0] and out["worse"]["regret"] == [1.0, 1.0, 1.0]
    mean, lo, hi = out["mixed"]["regret"]  # differences -1, +2, 0, 0
    assert mean == pytest.approx(0.25) and -1.0 <= lo < mean < hi <= 2.0


@pytest.mark.slow
def test_quick_benchmark_on_ray_fills_the_cache_from_tasks(tiny_zoo, shared, tmp_path):
    """``--ray``: the fine-tunes and embeddings run as tasks on a local Ray the script starts; the driver writes
    them to the cache, and the embeddings are those of the run without Ray."""
    pytest.importorskip("ray")
    from task2vec.embedding.embedding import Embedding

    env = {**os.environ, "TASK2VEC_SHARED": str(shared), "PYTHONPATH": str(ROOT)}
    base = [sys.executable, str(ROOT / "benchmarks" / "model_selection.py"), "--quick", "--zoo", str(tiny_zoo / "zoo"),
            "--spec", str(tiny_zoo / "spec.yaml"), "--m2v-folds", "2", "--out", str(tmp_path / "out")]
    ray_run = subprocess.run(base + ["--cache", str(tmp_path / "ray"), "--ray"], env=env, capture_output=True,
                             text=True, timeout=1500)
    assert ray_run.returncode == 0, ray_run.stderr[-3000:]
    assert "ray: 11 tasks" in ray_run.stdout  # 4 targets x 2 embeddings + 1 target x 3 models fine-tuned
    finetuned = list((tmp_path / "ray" / "finetune").iterdir())
    assert len(finetuned) == 1 and len(json.loads(finetuned[0].read_text())) == 3
    plain = subprocess.run(base + ["--cache", str(tmp_path / "plain"), "--no-finetune"], env=env,
                           capture_output=True, text=True, timeout=1500)
    assert plain.returncode == 0, plain.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "ray" / "embeddings").iterdir())
    assert len(names) == 8 and names == sorted(p.name for p in (tmp_path / "plain" / "embeddings").iterdir())
    for name in names:
        a, b = (Embedding.load(tmp_path / d / "embeddings" / name) for d in ("ray", "plain"))
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-6)


def test_static_baselines_look_at_no_target_but_the_others():
    """Experts inherit their architecture's top-1; ties go to the generalist; the best architecture's
    generalist is chosen on the other targets only."""
    from types import SimpleNamespace as E

    from model_selection import STATIC, static_scores

    zoo = E(entries=[E(model="a", metadata={"imagenet_top1": 70.0, "params_m": 3.5}),
                     E(model="b", metadata={"imagenet_top1": 77.0, "params_m": 6.1}),
                     E(model="a", metadata={"params_m": 3.5}), E(model="b", metadata={"params_m": 6.1})])
    acc = np.array([[0.9, 0.5, 0.6, 0.4], [0.8, 0.6, 0.9, 0.5], [0.5, 0.9, 0.6, 0.4]])
    s = static_scores(zoo, acc)
    assert set(s) == set(STATIC) and all(v.shape == acc.shape for v in s.values())
    assert list(np.argsort(-s[STATIC[0]][0], kind="stable")) == [1, 3, 0, 2]  # b before a, generalist first
    assert int(np.argmax(s[STATIC[1]][0])) == 1 and s[STATIC[2]][0].tolist() == [0, 1, 0, 0]
    # on the other targets: target 0, a 0.65 < b 0.75 -> b; target 1, a 0.7 = b 0.7 -> a (first); target 2, a 0.85
    assert [int(np.argmax(r)) for r in s[STATIC[3]]] == [1, 0, 0]


def test_choose_config_keeps_to_the_cost_bar():
    """Issue 18's rule: only configurations within COST_BAR of LogME's seconds compete (all, when none is)."""
    from model_selection import COST_BAR, choose_config

    def cfg(regret, seconds, max_rank=16, fisher_images=None, check=1):
        return {"regret": regret, "seconds_per_target": seconds, "max_rank": max_rank, "fisher_images": fisher_images,
                "check": check, "broad": 0, "relative_error_increase": regret / 10, "biases": False, "alpha": 0.5}

    configs = {"exact": cfg(2.0, 3.0), "cheap": cfg(2.5, 0.9, 1, 16), "cheaper, worse": cfg(4.0, 0.5, 1, 16, 0),
               "cheap, tied": cfg(2.55, 0.95, 1, 32)}
    assert COST_BAR == 0.5
    assert choose_config(configs, logme_seconds=2.0) == "cheap"  # the smaller Fisher cap wins the tie
    assert choose_config(configs, logme_seconds=1.0) == "cheaper, worse"  # the only one within the bar
    assert choose_config(configs, logme_seconds=0.1) == "exact"  # none is: the old rule over all of them
