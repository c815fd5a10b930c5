"""Tests of task2vec/finetune/multitask.py: auxiliary-label CSVs, superclass groups, heads, losses and the model wrapper."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from task2vec.data import ImageTask, load_task
from task2vec.errors import FinetuneError
from task2vec.finetune.multitask import (
    AuxHeads,
    AuxLabels,
    MultiTaskModel,
    column_loss,
    load_aux_labels,
    load_groups,
    make_groups,
    superclass_loss,
)

SHARED = Path(os.environ.get("TASK2VEC_SHARED", "/work/shared"))
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
NATURAL = {"natural": ["bird", "cat", "deer", "dog", "frog", "horse"], "artificial": ["airplane", "automobile", "ship", "truck"]}


# ----------------------------------------------------------------------------- helpers
def tiny_task(root: Path, counts: dict[str, int]) -> ImageTask:
    """An ImageTask over empty files: loading aux labels never opens the images."""
    paths, labels = [], []
    for c, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            p = root / name / f"{name}{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
            paths.append(p)
            labels.append(c)
    return ImageTask(paths, np.asarray(labels, dtype=np.int64), sorted(counts), root)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def task(tmp_path) -> ImageTask:
    return tiny_task(tmp_path / "data", {"cat": 2, "dog": 2, "eel": 1})


def per_class_csv(tmp_path: Path, body: str) -> Path:
    return write(tmp_path / "aux.csv", body)


def raises(match: str, fn, *args, **kwargs) -> str:
    """Call, expect a FinetuneError naming ``match`` on one line; return the message."""
    with pytest.raises(FinetuneError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert match in msg, msg
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- superclass loss
def small_groups() -> tuple:
    return make_groups({"ab": ["a", "b"], "c": ["c"]}, ["a", "b", "c", "d"])


def test_superclass_loss_hand_computed():
    groups = small_groups()
    # row 0: logits ln1, ln2, ln3, -inf-ish -> softmax 1/6, 2/6, 3/6, 0; label a -> P(ab) = 1/6 + 2/6 = 1/2
    # row 1: logits 0, 0, 0, ln(1e-9) ~ uniform thirds; label c -> P(c) = 1/3
    logits = torch.tensor([[0.0, math.log(2), math.log(3), -50.0], [0.0, 0.0, 0.0, -50.0]])
    loss = superclass_loss(logits, torch.tensor([0, 2]), groups)
    assert loss.item() == pytest.approx((math.log(2) + math.log(3)) / 2, abs=1e-6)  # = ln(6)/2 = 0.8959


def test_superclass_loss_is_minus_log_summed_softmax():
    groups = small_groups()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=gen) * 3
    labels = torch.tensor([0, 1, 2, 0, 2, 1])
    P = torch.softmax(logits, 1) @ groups.matrix
    expected = -torch.log(P[torch.arange(6), groups.group_of[labels]]).mean()
    assert superclass_loss(logits, labels, groups).item() == pytest.approx(expected.item(), rel=1e-6)
    assert groups.matrix.tolist() == [[1, 0], [1, 0], [0, 1], [0, 0]]
    assert groups.group_of.tolist() == [0, 0, 1, -1]


def test_superclass_loss_skips_ungrouped_samples():
    groups = small_groups()
    logits = torch.tensor([[0.0, math.log(2), math.log(3), 5.0], [1.0, 2.0, 3.0, 4.0]])
    alone = superclass_loss(logits[:1], torch.tensor([0]), groups)
    with_ungrouped = superclass_loss(logits, torch.tensor([0, 3]), groups)  # class d is in no group
    assert with_ungrouped.item() == pytest.approx(alone.item())
    # only ungrouped samples: 0, still part of the graph
    x = logits.clone().requires_grad_(True)
    zero = superclass_loss(x, torch.tensor([3, 3]), groups)
    assert zero.item() == 0.0
    zero.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_superclass_loss_stable_for_huge_logits():
    groups = small_groups()
    x = torch.tensor([[1000.0, -1000.0, 3000.0, 0.0], [-5000.0, 5000.0, 0.0, 1.0]], requires_grad=True)
    loss = superclass_loss(x, torch.tensor([0, 1]), groups)
    # row 0: group ab's best logit is 2000 below c's -> -log P = 2000; row 1: P(ab) = 1 -> 0
    assert loss.item() == pytest.approx(1000.0)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0].tolist() == pytest.approx([-0.5, 0.0, 0.5, 0.0])


def test_superclass_loss_rejects_wrong_width():
    raises("N x 4", superclass_loss, torch.zeros(2, 3), torch.tensor([0, 1]), small_groups())


# ----------------------------------------------------------------------------- column losses
def test_bce_on_soft_targets_matches_hand_formula():
    x, t = torch.tensor([0.5, -2.0, 3.0]), torch.tensor([0.8, 0.1, 1.0])

    def hand(xi, ti):
        s = 1 / (1 + math.exp(-xi))
        return -(ti * math.log(s) + (1 - ti) * math.log(1 - s))

    expected = sum(hand(float(a), float(b)) for a, b in zip(x, t)) / 3
    assert column_loss("bce", x, t).item() == pytest.approx(expected, rel=1e-6)


def test_ce_and_reg_losses_match_hand_formulas():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = (-math.log(math.e / (math.e + math.e**2 + math.e**3)) + math.log(3)) / 2
    assert column_loss("ce", logits, torch.tensor([0, 2])).item() == pytest.approx(expected, rel=1e-6)
    # smooth L1 (beta 1): |d| = 0.5 -> 0.5 * 0.25 = 0.125; |d| = 2 -> 2 - 0.5 = 1.5
    out, target = torch.tensor([0.5, -1.0]), torch.tensor([0.0, 1.0])
    assert column_loss("reg", out, target).item() == pytest.approx((0.125 + 1.5) / 2)
    raises("'mse'", column_loss, "mse", out, target)


def fake_aux(tmp_path) -> tuple[AuxLabels, ImageTask]:
    """Per-class CSV: a soft score, a category and a number, with one missing cell each."""
    task = tiny_task(tmp_path / "data", {"cat": 2, "dog": 2, "eel": 1})
    csv_path = per_class_csv(tmp_path, "class,ear,habitat,weight\ncat,0.8,land,4\ndog,0.3,land,\neel,,water,2\n")
    return load_aux_labels(csv_path, task), task


def test_heads_loss_respects_masks_and_weights(tmp_path):
    aux, _ = fake_aux(tmp_path)
    torch.manual_seed(0)
    heads = AuxHeads(5, aux)
    assert [h.out_features for h in heads.heads] == [1, 2, 1]
    features = torch.randn(5, 5)
    outputs = heads(features)
    assert outputs["ear"].shape == (5,) and outputs["habitat"].shape == (5, 2) and outputs["weight"].shape == (5,)
    targets = aux.targets_for(torch.arange(5))
    total, logged = heads.loss(outputs, targets, {"ear": 0.5, "habitat": 1.0, "weight": 2.0})
    ear_t, ear_m = targets["ear"]
    assert ear_m.tolist() == [True, True, True, True, False]  # eel has no ear score
    ear = column_loss("bce", outputs["ear"][:4], ear_t[:4])
    habitat = column_loss("ce", outputs["habitat"], targets["habitat"][0])
    w_t, w_m = targets["weight"]
    assert w_m.tolist() == [True, True, False, False, True]
    weight = column_loss("reg", outputs["weight"][w_m], w_t[w_m])
    assert logged == pytest.approx({"ear": ear.item(), "habitat": habitat.item(), "weight": weight.item()})
    assert total.item() == pytest.approx(0.5 * ear.item() + habitat.item() + 2 * weight.item(), rel=1e-6)
    # a masked row's target has no influence, whatever its value
    targets["ear"] = (ear_t.clone().index_fill_(0, torch.tensor([4]), 1.0), ear_m)
    assert heads.loss(outputs, targets, {"ear": 0.5, "habitat": 1.0, "weight": 2.0})[0].item() == pytest.approx(total.item())


def test_heads_column_without_labels_in_batch_adds_zero(tmp_path):
    aux, _ = fake_aux(tmp_path)
    heads = AuxHeads(3, aux)
    batch = torch.tensor([4])  # the eel: no ear score
    total, logged = heads.loss(heads(torch.randn(1, 3)), aux.targets_for(batch), 1.0)
    assert "ear" not in logged and set(logged) == {"habitat", "weight"}
    assert total.item() == pytest.approx(logged["habitat"] + logged["weight"])
    total.backward()
    assert torch.equal(heads.heads[0].weight.grad, torch.zeros_like(heads.heads[0].weight))
    raises("'colour'", heads.loss, {}, {}, {"colour": 1.0})
    raises("'weight'", heads.loss, {}, {}, {"ear": 1.0, "habitat": 1.0})
    raises("'ear'", heads.loss, {}, {}, {"ear": -1.0, "habitat": 1.0, "weight": 1.0})


# ----------------------------------------------------------------------------- CSV loading
@pytest.fixture(scope="module")
def mnist() -> ImageTask:
    folder = SHARED / "data" / "mnist_test"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return load_task(folder)


def test_per_image_csv_on_real_morphometrics(mnist):
    csv_path = SHARED / "data" / "mnist_test" / "morphometrics.csv"
    aux = load_aux_labels(csv_path, mnist)
    assert aux.key == "image" and aux.key_column == "path"
    assert list(aux.columns) == ["area", "length", "thickness", "slant", "width", "height"]  # not path or label
    assert all(c.kind == "reg" and bool(c.mask.all()) for c in aux.columns.values())
    area = aux.columns["area"]
    assert area.target.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert area.target.std(correction=0).item() == pytest.approx(1.0, abs=1e-4)
    i = mnist.relative_paths().index("7/img_00000.png")  # first data line of the CSV: area 71.1875
    assert area.target[i].item() * area.std + area.mean == pytest.approx(71.1875, rel=1e-5)
    # the CSV's own label column, read as categories, lines up with the folder labels
    labels = load_aux_labels(csv_path, mnist, columns=["label"], kinds={"label": "ce"}).columns["label"]
    assert labels.categories == mnist.classes
    assert np.array_equal(labels.target.numpy(), mnist.labels)
    described = json.loads(json.dumps(aux.describe()))
    assert described["columns"]["area"]["labelled"] == 10000 and described["columns"]["area"]["kind"] == "reg"


def test_per_image_paths_relative_to_csv_folder(tmp_path):
    task = tiny_task(tmp_path / "data", {"cat": 2, "dog": 1})
    # the CSV sits beside the data folder: its paths go through "data/"; one spelled with "./"
    csv_path = write(tmp_path / "aux.csv", "file,soft\ndata/cat/cat0.png,0.2\n./data/cat/cat1.png,0.4\ndog/dog0.png,1\n")
    aux = load_aux_labels(csv_path, task)
    assert aux.columns["soft"].kind == "bce"
    assert aux.columns["soft"].target.tolist() == pytest.approx([0.2, 0.4, 1.0])
    target, mask = aux.targets_for(torch.tensor([2, 0]))["soft"]
    assert target.tolist() == pytest.approx([1.0, 0.2]) and mask.tolist() == [True, True]


def test_per_class_csv_and_auto_kinds(tmp_path):
    aux, task = fake_aux(tmp_path)
    assert aux.key == "class" and aux.key_column == "class"
    assert {n: c.kind for n, c in aux.columns.items()} == {"ear": "bce", "habitat": "ce", "weight": "reg"}
    assert aux.columns["ear"].target.tolist() == pytest.approx([0.8, 0.8, 0.3, 0.3, 0.0])  # cat, cat, dog, dog, eel
    assert aux.columns["habitat"].categories == ["land", "water"]
    assert aux.columns["habitat"].target.tolist() == [0, 0, 0, 0, 1]
    weight = aux.columns["weight"]  # cats 4, 4; eel 2 -> mean 10/3, population std sqrt(8/9)
    assert weight.mean == pytest.approx(10 / 3) and weight.std == pytest.approx(math.sqrt(8 / 9))
    z_cat, z_eel = (4 - 10 / 3) / math.sqrt(8 / 9), (2 - 10 / 3) / math.sqrt(8 / 9)
    assert weight.target.tolist() == pytest.approx([z_cat, z_cat, 0, 0, z_eel])
    # kinds override auto-detection; columns pick a subset
    again = load_aux_labels(tmp_path / "aux.csv", task, columns=["ear", "weight"], kinds={"ear": "reg", "weight": "ce"})
    assert list(again.columns) == ["ear", "weight"]
    assert again.columns["ear"].kind == "reg" and again.columns["weight"].categories == ["2", "4"]


def test_per_class_csv_keyed_by_label(tmp_path, task):
    csv_path = per_class_csv(tmp_path, "label,size\ncat,small\ndog,big\neel,small\n")
    aux = load_aux_labels(csv_path, task)
    assert aux.key_column == "label" and aux.columns["size"].target.tolist() == [1, 1, 0, 0, 1]


def test_identical_duplicate_rows_are_tolerated(tmp_path, task):
    csv_path = per_class_csv(tmp_path, "class,size\ncat,small\ndog,big\ncat,small\neel,small\n")
    assert load_aux_labels(csv_path, task).columns["size"].target.tolist() == [1, 1, 0, 0, 1]


@pytest.mark.parametrize(
    "body, match",
    [
        ("name,size\ncat,1\n", "no key column"),
        ("class,size\ncat,1\ndog,2\neel,3\nfox,4\nyak,5\n", "'fox', 'yak'"),  # keys matching nothing
        ("class,size\ncat,1\ndog,2\n", "no row for 1 of 3 task classes, e.g. 'eel'"),
        ("class,size\ncat,1\ndog,2\neel,3\ncat,5\n", "'cat'"),  # conflicting duplicate key
        ("class,size\ncat,1\ndog,2\neel,3\n", "'colour'"),  # requested column absent (see kwargs below)
        ("class,w\ncat,1\ndog,x\neel,3\n", "'x'"),  # reg with non-numeric cell
        ("class,w\ncat,1\ndog,0.5\neel,1.5\n", "'1.5'"),  # bce outside [0, 1]
        ("class,h\ncat,land\ndog,land\neel,\n", "'h'"),  # ce with one category
        ("class,w\ncat,2\ndog,2\neel,2\n", "'w'"),  # reg with zero variance
        ("class,w\ncat,1\ndog,n/a\neel,3\n", "'n/a'"),  # auto: numbers mixed with text
        ("class,w\ncat,\ndog,\neel,\n", "'w'"),  # no values at all
        ("class,class\ncat,1\n", "two columns named 'class'"),
        ("class,w\n", "no rows"),
        ("class,w\n,1\n", "line 2"),
    ],
)
def test_csv_errors(tmp_path, task, body, match):
    csv_path = per_class_csv(tmp_path, body)
    kwargs = {}
    if "'colour'" in match:
        kwargs = {"columns": ["size", "colour"]}
    elif "'x'" in match:
        kwargs = {"kinds": {"w": "reg"}}
    elif "'1.5'" in match:
        kwargs = {"kinds": {"w": "bce"}}
    raises(match, load_aux_labels, csv_path, task, **kwargs)


def test_csv_per_image_errors(tmp_path, task):
    rel = task.relative_paths()
    rows = [f"{p},{i % 2}" for i, p in enumerate(rel)]
    missing = write(tmp_path / "a.csv", "path,flag\n" + "\n".join(rows[1:]) + "\n")
    raises(f"no row for 1 of 5 task images, e.g. {rel[0]!r}", load_aux_labels, missing, task)
    extra = write(tmp_path / "b.csv", "path,flag\n" + "\n".join(rows + ["cat/ghost.png,1"]) + "\n")
    raises("'cat/ghost.png'", load_aux_labels, extra, task)
    twice = write(tmp_path / "c.csv", "path,flag\n" + "\n".join(rows + [f"./{rel[0]},1"]) + "\n")
    raises("lines 2 and 7", load_aux_labels, twice, task)


def test_file_kind_and_column_errors(tmp_path, task):
    raises("nope.csv", load_aux_labels, tmp_path / "nope.csv", task)
    (tmp_path / "bin.csv").write_bytes(b"class,w\n\xff\xfe\x00junk\n")
    raises("bin.csv", load_aux_labels, tmp_path / "bin.csv", task)
    good = per_class_csv(tmp_path, "class,w\ncat,1\ndog,2\neel,3\n")
    raises("'softmax'", load_aux_labels, good, task, kinds={"w": "softmax"})
    raises("'v'", load_aux_labels, good, task, kinds={"v": "reg"})
    raises("'class'", load_aux_labels, good, task, columns=["class"])
    only_key = per_class_csv(tmp_path, "class\ncat\ndog\neel\n")
    raises("no auxiliary label columns", load_aux_labels, only_key, task)


def test_real_omniglot_alphabet_as_aux(tmp_path):
    labels_csv = SHARED / "data" / "omniglot_small" / "labels.csv"
    if not labels_csv.is_file():
        pytest.skip(f"{labels_csv} is absent")
    task = load_task(labels_csv, label_column="character")
    aux = load_aux_labels(labels_csv, task, columns=["alphabet", "drawer"], kinds={"drawer": "ce"})
    alphabet = aux.columns["alphabet"]
    assert alphabet.kind == "ce" and len(alphabet.categories) >= 2 and bool(alphabet.mask.all())
    # every character belongs to the alphabet named before its "/"
    for i in range(0, len(task.paths), 97):
        assert alphabet.categories[alphabet.target[i]] == task.classes[task.labels[i]].split("/")[0]
    assert aux.columns["drawer"].kind == "ce"


# ----------------------------------------------------------------------------- groups
def test_groups_on_cifar10_classes(tmp_path):
    path = write(tmp_path / "groups.json", json.dumps(NATURAL))
    groups = load_groups(path, CIFAR10)
    assert groups.names == ["natural", "artificial"]
    assert groups.matrix.shape == (10, 2) and groups.matrix.dtype == torch.float32
    assert groups.matrix.sum(0).tolist() == [6, 4] and groups.matrix.sum(1).tolist() == [1] * 10
    assert groups.group_of.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    partial = load_groups(write(tmp_path / "p.json", json.dumps({"pets": ["cat", "dog"], "boats": ["ship"]})), CIFAR10)
    assert partial.group_of.tolist() == [-1, -1, -1, 0, -1, 0, -1, -1, 1, -1]
    assert partial.describe() == {"groups": {"pets": ["cat", "dog"], "boats": ["ship"]},
                                  "ungrouped": ["airplane", "automobile", "bird", "deer", "frog", "horse", "truck"]}


@pytest.mark.parametrize(
    "content, match",
    [
        ('["cat", "dog"]', "JSON object"),
        ('{"a": "cat", "b": ["dog"]}', "'a'"),
        ('{"a": [1], "b": ["dog"]}', "'a'"),
        ('{"a": ["cat", "dog"]}', "1 group"),
        ('{"a": ["cat", "unicorn"], "b": ["dog", "griffin"]}', "'unicorn', 'griffin'"),
        ('{"a": ["cat", "dog"], "b": ["dog"]}', "class 'dog' is in groups 'a' and 'b'"),
        ('{"a": ["cat"], "b": []}', "'b' is empty"),
        ('{"a": ["cat"],', "not valid JSON"),
    ],
)
def test_groups_errors(tmp_path, content, match):
    raises(match, load_groups, write(tmp_path / "g.json", content), CIFAR10)


def test_groups_missing_file(tmp_path):
    raises("none.json", load_groups, tmp_path / "none.json", CIFAR10)


# ----------------------------------------------------------------------------- model wrapper
def test_multitask_model_forward_is_main_logits_only(tmp_path):
    aux, _ = fake_aux(tmp_path)
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU())
    classifier = nn.Linear(8, 3)
    model = MultiTaskModel(body, classifier, AuxHeads(8, aux))
    x = torch.randn(4, 3, 2, 2)
    model.train()
    logits, aux_out = model.forward_train(x)
    assert logits.shape == (4, 3) and set(aux_out) == {"ear", "habitat", "weight"}
    model.eval()
    out = model(x)
    assert isinstance(out, torch.Tensor) and torch.equal(out, classifier(body(x)))
    out.sum().backward()
    assert all(p.grad is None for p in model.aux_heads.parameters())
    assert classifier.weight.grad is not None and body[1].weight.grad is not None
    # the aux loss does train the heads and the shared body
    model.zero_grad()
    total, _ = model.aux_heads.loss(model.forward_train(x)[1], aux.targets_for(torch.arange(4)), 1.0)
    total.backward()
    assert all(p.grad is not None for p in model.aux_heads.parameters()) and body[1].weight.grad.abs().sum() > 0
    plain = MultiTaskModel(body, classifier, None)
    assert plain.forward_train(x)[1] == {}
