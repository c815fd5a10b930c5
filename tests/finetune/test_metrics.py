"""Classification metrics against a hand-computed example; CSV and PNG outputs; repeat summaries."""

import csv
import json

import numpy as np
import pytest
import torch

from task2vec.errors import FinetuneError, OutputPathError
from task2vec.finetune.metrics import confusion_matrix, evaluate, mean_std, plot_confusion, summarize_repeats, write_confusion_csv

CLASSES = ["cat", "dog", "owl"]
# six samples, no owl; predictions (argmax): 0, 1, 1, 0, 1, 1
LOGITS = np.array([[3, 1, 0], [0, 2, 1], [1, 3, 0], [2, 1, 0], [0, 4, 1], [1, 2, 0]], dtype=np.float32)
LABELS = np.array([0, 0, 1, 1, 1, 0])


def _plain(value) -> bool:
    """True when value is built only from JSON's own Python types."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (int, float, str, bool)


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(LABELS, LOGITS.argmax(1), 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 2, 0], [1, 2, 0], [0, 0, 0]]
    assert confusion_matrix(np.array([], dtype=int), np.array([], dtype=int), 2).tolist() == [[0, 0], [0, 0]]


def test_evaluate_by_hand():
    r = evaluate(LOGITS, LABELS, CLASSES, topk=(1, 2, 5))
    assert r.accuracy == pytest.approx(3 / 6)
    # ranks of the true class: 0, 2, 0, 1, 0, 1
    assert r.topk == pytest.approx({1: 3 / 6, 2: 5 / 6})  # k=5 > 3 classes is skipped
    assert r.per_class == {"cat": pytest.approx(1 / 3), "dog": pytest.approx(2 / 3), "owl": None}
    assert r.balanced_accuracy == pytest.approx(0.5)  # mean over the classes that have samples
    assert r.confusion.tolist() == [[1, 2, 0], [1, 2, 0], [0, 0, 0]]
    assert r.n_samples == 6


def test_ties_count_against_top1_like_argmax():
    r = evaluate(np.array([[1.0, 1.0, 0.0]]), np.array([1]), CLASSES, topk=(1, 2))
    assert r.accuracy == r.topk[1] == 0.0
    assert r.topk[2] == 1.0


def test_loss_equals_torch_cross_entropy_and_tensors_are_accepted():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g) * 4
    labels = torch.randint(0, 7, (50,), generator=g)
    r = evaluate(logits, labels, [f"c{i}" for i in range(7)])
    assert r.loss == pytest.approx(torch.nn.functional.cross_entropy(logits.double(), labels).item(), rel=1e-6)
    assert r.accuracy == pytest.approx((logits.argmax(1) == labels).double().mean().item())
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).double().mean().item()
    assert r.topk[5] == pytest.approx(top5)


def test_most_confused_order():
    cm_labels = np.array([0] * 5 + [1] * 4 + [2] * 6)
    preds = np.array([0, 1, 1, 2, 2] + [0, 0, 0, 1] + [1, 1, 1, 0, 2, 2])
    logits = np.eye(3)[preds]
    r = evaluate(logits, cm_labels, CLASSES)
    assert r.most_confused() == [("dog", "cat", 3, pytest.approx(3 / 4)), ("owl", "dog", 3, pytest.approx(3 / 6)),
                                 ("cat", "dog", 2, pytest.approx(2 / 5)), ("cat", "owl", 2, pytest.approx(2 / 5)),
                                 ("owl", "cat", 1, pytest.approx(1 / 6))]
    assert r.most_confused(2) == r.most_confused()[:2]
    assert r.most_confused(0) == []


def test_as_dict_is_plain_json():
    d = evaluate(LOGITS, LABELS, CLASSES).as_dict()
    assert _plain(d)
    assert json.loads(json.dumps(d)) == d
    assert d["topk"] == {"1": 0.5}  # top-5 skipped with 3 classes
    assert d["per_class"]["owl"] is None
    assert d["most_confused"][0] == ["cat", "dog", 2, pytest.approx(2 / 3)]


def test_confusion_csv_round_trip(tmp_path):
    r = evaluate(LOGITS, LABELS, CLASSES)
    path = write_confusion_csv(r, None, tmp_path / "confusion.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true\\predicted", "cat", "dog", "owl"]
    assert [row[0] for row in rows[1:]] == CLASSES
    assert np.array([[int(v) for v in row[1:]] for row in rows[1:]]).tolist() == r.confusion.tolist()
    write_confusion_csv(r.confusion, ["a", "b", "c"], tmp_path / "bare.csv")
    assert (tmp_path / "bare.csv").read_text().splitlines()[1] == "a,1,2,0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.csv", "confusion.csv"]


@pytest.mark.parametrize("n_classes, normalize", [(3, True), (25, False)])
def test_plot_confusion_writes_png(tmp_path, n_classes, normalize):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, n_classes, 200)
    classes = [f"class number {i} with a long name" for i in range(n_classes)]
    r = evaluate(rng.normal(size=(200, n_classes)), labels, classes)
    path = plot_confusion(r.confusion, classes, tmp_path / "cm.png", normalize=normalize, title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]  # no temporary file left behind


def test_plot_into_missing_directory_fails_early(tmp_path):
    with pytest.raises(OutputPathError):
        plot_confusion(np.eye(2, dtype=int), ["a", "b"], tmp_path / "missing" / "cm.png")


@pytest.mark.parametrize("logits, labels, classes, topk, match", [
    (LOGITS[0], LABELS, CLASSES, (1,), r"shape \[N, C\]"),
    (LOGITS, LABELS[:5], CLASSES, (1,), "got 5 labels for 6 rows"),
    (LOGITS, np.array([0, 0, 1, 1, 3, 0]), CLASSES, (1,), "value 3 is outside"),
    (LOGITS, np.array([0, 0, 1, 1, -1, 0]), CLASSES, (1,), "value -1 is outside"),
    (LOGITS, LABELS.astype(float), CLASSES, (1,), "integer class indices"),
    (LOGITS, LABELS, CLASSES[:2], (1,), "2 class names for 3 classes"),
    (LOGITS, LABELS, ["a", "b", "a"], (1,), "'a' appears more than once"),
    (LOGITS, LABELS, CLASSES, (0,), "got 0"),
    (np.where(LOGITS > 3, np.nan, LOGITS), LABELS, CLASSES, (1,), "1 NaN or infinite"),
    (LOGITS.astype(int), LABELS, CLASSES, (1,), "floating point"),
])
def test_evaluate_bad_input(logits, labels, classes, topk, match):
    with pytest.raises(FinetuneError, match=match):
        evaluate(logits, labels, classes, topk=topk)


def test_other_bad_input(tmp_path):
    with pytest.raises(FinetuneError, match="y_true has 2 labels but y_pred has 3"):
        confusion_matrix(np.array([0, 1]), np.array([0, 1, 1]), 2)
    with pytest.raises(FinetuneError, match="n_classes must be a positive integer, got 0"):
        confusion_matrix(np.array([0]), np.array([0]), 0)
    with pytest.raises(FinetuneError, match=r"square.*\(2, 3\)"):
        write_confusion_csv(np.zeros((2, 3), dtype=int), ["a", "b"], tmp_path / "x.csv")
    with pytest.raises(FinetuneError, match="class names are required"):
        write_confusion_csv(np.zeros((2, 2), dtype=int), None, tmp_path / "x.csv")
    with pytest.raises(FinetuneError, match="n, got -1"):
        evaluate(LOGITS, LABELS, CLASSES).most_confused(-1)
    assert list(tmp_path.iterdir()) == []


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, np.std([1, 2, 3, 4], ddof=1)))
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(FinetuneError, match="non-empty"):
        mean_std([])
    with pytest.raises(FinetuneError, match="needs numbers"):
        mean_std(["a"])


def test_summarize_repeats():
    a = evaluate(LOGITS, LABELS, CLASSES, topk=(1, 2)).as_dict()
    b = evaluate(LOGITS[:, [1, 0, 2]], LABELS, CLASSES, topk=(1, 2)).as_dict()  # predictions: 1, 0, 0, 1, 0, 0
    s = summarize_repeats([a, b])
    assert s["repeats"] == 2
    assert s["mean"]["accuracy"] == pytest.approx((a["accuracy"] + b["accuracy"]) / 2)
    assert s["std"]["accuracy"] == pytest.approx(np.std([a["accuracy"], b["accuracy"]], ddof=1))
    assert s["mean"]["topk"]["2"] == pytest.approx((a["topk"]["2"] + b["topk"]["2"]) / 2)
    assert s["mean"]["per_class"].keys() == {"cat", "dog"}  # owl has no samples (None): left out
    assert s["mean"]["n_samples"] == 6 and s["std"]["n_samples"] == 0.0
    assert "confusion" not in s["mean"] and "classes" not in s["mean"]
    assert _plain(s)
    one = summarize_repeats([a])
    assert one["std"]["loss"] == 0.0 and one["mean"]["loss"] == pytest.approx(a["loss"])
    with pytest.raises(FinetuneError, match="at least one"):
        summarize_repeats([])
    with pytest.raises(FinetuneError, match="got list"):
        summarize_repeats([[1.0]])
