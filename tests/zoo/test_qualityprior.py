"""The learned prior: quality and size weights fitted on transfer records, held out task by task, stored in the zoo."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from task2vec.cli.main import main
from task2vec.errors import RecordsError
from task2vec.zoo.qualityprior import QualityPrior, leave_one_task_out
from task2vec.zoo.zoo import Zoo

from conftest import WEIGHTS


def _synthetic(seed: int, n_tasks: int = 14, n_models: int = 6):
    """Records where the better-ImageNet model transfers better and the distance is noise."""
    rng = np.random.default_rng(seed)
    q = (np.arange(n_models) - (n_models - 1) / 2) / 1.7  # standardised-like top-1
    s = rng.normal(size=n_models)  # size, unrelated to the errors
    d = rng.uniform(0.2, 0.4, size=(n_tasks, n_models))
    ti, mi = (a.ravel() for a in np.meshgrid(np.arange(n_tasks), np.arange(n_models), indexing="ij"))
    e = 0.3 - 0.04 * q[mi] + rng.normal(0, 0.005, size=len(ti))
    return d, q, s, (ti, mi, e)


def test_the_prior_learns_that_quality_predicts_transfer():
    d, q, s, rec = _synthetic(0)
    prior = QualityPrior().fit(d, q, s, rec)
    assert prior.quality_weight_ >= 0.1 and prior.n_tasks_ == 14
    held = leave_one_task_out(d, q, s, rec, current=(0.0, 0.0))
    learned, plain = held["summary"]["learned"], held["summary"]["distance"]
    assert learned["regret"] < plain["regret"] and learned["top1"] > plain["top1"]
    assert len(held["weights"]) == 14 and all(w[0] > 0 for w in held["weights"])


def test_without_signal_the_weaker_prior_wins_ties():
    d, q, s, (ti, mi, e) = _synthetic(1)
    flat = np.full_like(e, 0.2)  # every model equally good: every weight ties, the weakest is kept
    prior = QualityPrior().fit(d, q, s, (ti, mi, flat))
    assert (prior.quality_weight_, prior.size_weight_) == (0.0, 0.0) and prior.regret_ == 0.0


def test_bad_input_is_refused_by_name():
    d, q, s, rec = _synthetic(2)
    with pytest.raises(RecordsError, match="quality_weights"):
        QualityPrior(quality_weights=[])
    with pytest.raises(RecordsError, match="size_weights"):
        QualityPrior(size_weights=[-1.0])
    with pytest.raises(RecordsError, match="one value per model"):
        QualityPrior().fit(d, q[:2], s, rec)
    ti, mi, e = rec
    with pytest.raises(RecordsError, match="out of range"):
        QualityPrior().fit(d, q, s, (ti, mi + 100, e))
    with pytest.raises(RecordsError, match="two or more models"):
        QualityPrior().fit(d, q, s, (ti[:1], mi[:1], e[:1]))


def test_fit_quality_stores_the_weights_and_how(real_embedding_files, shared, tmp_path, capsys, monkeypatch):
    """A real three-entry zoo (three architectures, top-1 from the published tables), records in which the
    better ImageNet model always transfers best: the fitted prior turns the ranking to it."""
    monkeypatch.setenv("TASK2VEC_WEIGHTS", str(shared / "weights"))
    z = tmp_path / "zoo"
    assert main(["zoo", "init", str(z), "--weights", str(WEIGHTS), "--image-size", "112"]) == 0
    models = {"mnv2": "mobilenet_v2", "lite0": "tf_efficientnet_lite0", "lite2": "tf_efficientnet_lite2"}
    for (entry, model), source in zip(models.items(), real_embedding_files):
        assert main(["zoo", "add", str(z), "--id", entry, "--model", model, "--pretrained",
                     "--source-embedding", str(source), "--quiet"]) == 0
    accuracy = {"mnv2": 0.6, "lite0": 0.7, "lite2": 0.8}
    records = tmp_path / "records.csv"
    with open(records, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "model", "accuracy"])
        for task in real_embedding_files:
            for entry in models:
                w.writerow([str(task), entry, accuracy[entry]])
    capsys.readouterr()
    assert main(["zoo", "fit-quality", str(z), "--records", str(records), "--quality-weights", "0", "0.5",
                 "--size-weights", "0"]) == 0
    out = capsys.readouterr().out
    assert "leave-one-task-out over 3 tasks" in out and "fitted quality weight 0.5 and size weight 0" in out
    zoo = Zoo.load(z)
    assert (zoo.quality_weight, zoo.size_weight) == (0.5, 0.0)
    info = zoo.manifest["quality_prior"]
    assert info["n_records"] == 9 and info["quality_weights"] == [0.0, 0.5] and info["held_out"]["learned"]["regret"] == 0
    ranking = tmp_path / "r.json"
    assert main(["recommend", str(real_embedding_files[0]), "--zoo", str(z), "--json", str(ranking), "--quiet",
                 "--check", "0"]) == 0
    assert json.loads(ranking.read_text())["recommendations"][0]["id"] == "lite2"
    assert main(["zoo", "fit-quality", str(z), "--records", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("task2vec: error: ") and len(err.strip().splitlines()) == 1
