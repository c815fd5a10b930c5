"""The evidence check of a zoo ranking (task2vec.zoo.evidence): the real probe on real data."""

import json

import pytest
import torch
from safetensors.torch import save_file

from task2vec import Probe, Task2Vec, Task2VecError, ZooError
from task2vec.cli.main import main
from task2vec.data import load_task
from task2vec.zoo.evidence import EvidenceCheck, probe_entry, rerank, shortlist
from task2vec.backbones.probe import build_network
from task2vec.zoo.transferability import logme
from task2vec.zoo.zoo import Zoo

from conftest import WEIGHTS

FAST = ["--max-samples", "24", "--quiet", "--weights", str(WEIGHTS)]


def test_rerank_moves_the_checked_items_first_by_evidence():
    assert rerank([3, 1, 0, 2], {0: 0.5, 1: 0.9}) == [1, 0, 3, 2]
    assert rerank([3, 1, 0, 2], {0: 0.5, 1: 0.5}) == [1, 0, 3, 2]  # a tie keeps the ranking's order
    assert rerank([3, 1, 0, 2], {}) == [3, 1, 0, 2]
    with pytest.raises(Task2VecError, match="not in the order"):
        rerank([0, 1], {5: 1.0})


def test_shortlist_takes_every_entry_of_the_first_sources():
    groups = {0: "mnist", 1: "mnist", 2: "cifar", 3: "flowers", 4: "cifar"}
    assert shortlist([2, 0, 3, 1, 4], groups, 1) == [2, 4]  # cifar's two entries, wherever the second ranks
    assert shortlist([2, 0, 3, 1, 4], groups, 2) == [2, 0, 1, 4]
    assert shortlist([2, 0, 3, 1, 4], groups, 9) == [2, 0, 3, 1, 4]
    assert shortlist(["b", "a"], {"a": "a", "b": "b"}, 1) == ["b"]  # every entry its own source: the first picks


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory, shared):
    """Task2Vec ranks a random-init MobileNetV2 first (its source is the target set itself) and the
    ImageNet probe last (its source is X-rays); the check must put the probe first again."""
    root = tmp_path_factory.mktemp("evidence")
    random_weights = root / "random.safetensors"
    save_file({k: v.contiguous() for k, v in build_network("mobilenet_v2", random_init=True, seed=3)
               .body.state_dict().items()}, str(random_weights))
    z = root / "zoo"
    assert main(["zoo", "init", str(z), "--weights", str(WEIGHTS), "--image-size", "112"]) == 0
    (z / "random.safetensors").symlink_to(random_weights)  # a zoo's checkpoints lie inside it
    (z / "imagenet.safetensors").symlink_to(WEIGHTS)
    assert main(["zoo", "add", str(z), "--id", "random", "--model", "mobilenet_v2", "--checkpoint",
                 "random.safetensors", "--source-dataset", str(shared / "data" / "hymenoptera"), *FAST]) == 0
    assert main(["zoo", "add", str(z), "--id", "imagenet", "--model", "mobilenet_v2", "--checkpoint",
                 "imagenet.safetensors",
                 "--source-dataset", str(shared / "data" / "pneumoniamnist"), *FAST]) == 0
    return z


def zoo_with_random_entry(zoo_dir, tmp_path, entry_id: str, seed: int, source):
    """A copy of the test zoo with one more entry: a seeded random-init MobileNetV2 trained, nominally, on ``source``."""
    import shutil

    z = tmp_path / "zoo"
    shutil.copytree(zoo_dir, z, symlinks=True)
    weights = tmp_path / f"{entry_id}.safetensors"
    save_file({k: v.contiguous() for k, v in build_network("mobilenet_v2", random_init=True, seed=seed)
               .body.state_dict().items()}, str(weights))
    (z / weights.name).symlink_to(weights)
    assert main(["zoo", "add", str(z), "--id", entry_id, "--model", "mobilenet_v2", "--checkpoint", weights.name,
                 "--source-dataset", str(source), *FAST]) == 0
    return z


def test_check_puts_the_better_features_first(zoo_dir, shared, probe112):
    zoo = Zoo.load(zoo_dir)
    assert probe_entry(zoo, WEIGHTS) == "imagenet"
    assert probe_entry(zoo) == "imagenet"  # found by the weights hash when the path is not given
    task = load_task(shared / "data" / "hymenoptera")
    embedder = Task2Vec(probe112, max_samples=24, progress=False)
    emb = embedder.embed(task)
    assert embedder.features_.shape == (24, probe112.feature_dim) and len(embedder.labels_) == 24
    assert sorted(set(embedder.indices_.tolist())) == sorted(embedder.indices_.tolist())
    ranking = zoo.rank(emb, k=len(zoo))
    assert [r.id for r in ranking] == ["random", "imagenet"]
    check = EvidenceCheck(top=1).fit(zoo, ranking, task, embedder)
    assert set(check.evidence_) == {"random", "imagenet"} and check.probe_entry_ == "imagenet"
    assert check.evidence_["imagenet"] == pytest.approx(logme(embedder.features_, embedder.labels_))
    assert check.evidence_["imagenet"] > check.evidence_["random"]
    # the random network's evidence is its own features' LogME on the same images
    net = build_network("mobilenet_v2", random_init=True, seed=3).body.eval()
    with torch.no_grad():
        images = torch.stack([probe112.transform(task[int(i)][0]) for i in embedder.indices_])
        feats = net(probe112.normalize(images)).numpy()
    assert check.evidence_["random"] == pytest.approx(logme(feats, embedder.labels_), rel=1e-4)
    reranked = check.rerank(ranking)
    assert [(r.rank, r.id) for r in reranked] == [(1, "imagenet"), (2, "random")]
    assert reranked[0].evidence == check.evidence_["imagenet"] and ranking[0].evidence is None


def test_always_checked_entries_are_scored_whatever_their_rank(zoo_dir, shared, tmp_path, capsys, cli_warnings):
    """A zoo's always_check entries join the check's top picks and the probe's entry (issue 18's shortlist)."""
    from task2vec import recommend

    z = zoo_with_random_entry(zoo_dir, tmp_path, "other", 4, shared / "data" / "pneumoniamnist")
    data = shared / "data" / "hymenoptera"
    plain = recommend(data, z, k=3, check=1, max_samples=24, weights=WEIGHTS)
    assert set(plain.checked) == {"random", "imagenet"}  # Task2Vec's first pick and the probe's entry
    assert main(["zoo", "set", str(z), "--always-check", "other"]) == 0
    assert "always checked: other" in capsys.readouterr().out
    assert Zoo.load(z).always_check == ["other"]
    assert main(["zoo", "list", str(z)]) == 0 and "always checked: other" in capsys.readouterr().out
    rec = recommend(data, z, k=3, check=1, max_samples=24, weights=WEIGHTS)
    assert "other" in rec.checked and rec.settings["always_check"] == ["other"]
    assert next(c for c in rec.candidates if c.id == "other").evidence is not None
    assert recommend(data, z, k=3, check=0, max_samples=24, weights=WEIGHTS).checked == []  # no check, no shortlist
    with pytest.raises(ZooError, match="no entry 'nope'"):
        Zoo.load(z).configure(always_check=["nope"])
    zoo = Zoo.load(z)
    zoo.remove("other")
    assert Zoo.load(z).always_check == []
    assert main(["zoo", "set", str(z), "--always-check", "random"]) == 0
    assert main(["zoo", "set", str(z), "--always-check", ""]) == 0
    assert Zoo.load(z).always_check == [] and "always checked: none" in capsys.readouterr().out


def test_entries_of_one_source_are_checked_together(zoo_dir, shared, tmp_path):
    """A second network trained on the first pick's source (another architecture's expert) ties with it on the
    distance; the check scores both, not whichever the tie put first (issue 21's twins)."""
    from task2vec import recommend

    z = zoo_with_random_entry(zoo_dir, tmp_path, "twin", 5, shared / "data" / "hymenoptera")
    zoo = Zoo.load(z)
    groups = dict(zip(zoo.ids, zoo.source_groups()))
    assert groups["twin"] == groups["random"] != groups["imagenet"]
    rec = recommend(shared / "data" / "hymenoptera", z, k=3, check=1, max_samples=24, weights=WEIGHTS)
    assert set(rec.checked) == {"random", "twin", "imagenet"}  # the first source's two entries and the probe's
    assert all(c.evidence is not None for c in rec.candidates)


def test_check_refuses_bad_use(zoo_dir, shared, probe112):
    zoo = Zoo.load(zoo_dir)
    task = load_task(shared / "data" / "hymenoptera")
    for bad in (0, -1, 1.5):
        with pytest.raises(ZooError, match="top must be an integer"):
            EvidenceCheck(bad)
    embedder = Task2Vec(probe112, max_samples=24, progress=False)
    with pytest.raises(ZooError, match="has not embedded a task yet"):
        EvidenceCheck().fit(zoo, [], task, embedder)
    emb = embedder.embed(task)
    with pytest.raises(ZooError, match="the ranking has 1 of the zoo's 2 entries"):
        EvidenceCheck().fit(zoo, zoo.rank(emb, k=1), task, embedder)
    with pytest.raises(ZooError, match="has not been fitted"):
        EvidenceCheck().rerank(zoo.rank(emb, k=2))


def test_recommend_check_cli(zoo_dir, shared, tmp_path, capsys, cli_warnings):
    hym = shared / "data" / "hymenoptera"
    assert main(["recommend", str(hym), "--zoo", str(zoo_dir), "--check", "0", "--json", str(tmp_path / "plain.json"),
                 *FAST]) == 0
    assert [r["id"] for r in json.loads((tmp_path / "plain.json").read_text())["recommendations"]] == \
        ["random", "imagenet"]
    capsys.readouterr()
    assert main(["recommend", str(hym), "--zoo", str(zoo_dir), "--check", "1", "--json", str(tmp_path / "c.json"),
                 *FAST]) == 0
    out = capsys.readouterr().out
    assert "checked by LogME" in out and out.splitlines()[2].split()[:2] == ["1", "imagenet"]
    assert out.splitlines()[1].split()[4] == "LogME"  # rank, model id, architecture, LogME
    doc = json.loads((tmp_path / "c.json").read_text())
    assert sorted(doc["checked"]) == ["imagenet", "random"] and doc["settings"]["check"] == 1
    assert [r["id"] for r in doc["recommendations"]] == ["imagenet", "random"]
    assert all(isinstance(r["logme"], float) for r in doc["recommendations"])
    assert doc["recommendations"][0]["why"].startswith("trained on imagenet; checked on the task: LogME")

    (tmp_path / "emb").mkdir()
    assert main(["embed", str(hym), "-o", str(tmp_path / "emb" / "x.npz"), "--image-size", "112", *FAST]) == 0
    capsys.readouterr()
    for argv in (["--check", "-1"], ["--check", "1", "--json", str(tmp_path / "no" / "x.json")]):
        assert main(["recommend", str(hym), "--zoo", str(zoo_dir), *argv, *FAST]) == 2
        err = capsys.readouterr().err
        assert err.startswith("task2vec: error: ") and len(err.strip().splitlines()) == 1, err
    assert main(["recommend", str(tmp_path / "emb" / "x.npz"), "--zoo", str(zoo_dir), "--check", "1"]) == 0
    out, err = capsys.readouterr()
    assert "needs the dataset's images" in err and len(err.strip().splitlines()) == 1
    assert "LogME" not in out


def test_check_names_an_entry_without_local_weights(zoo_dir, shared, tmp_path, capsys, cli_warnings):
    z = tmp_path / "zoo"
    gone = z / "gone.safetensors"
    assert main(["zoo", "init", str(z), "--weights", str(WEIGHTS), "--image-size", "112"]) == 0
    gone.write_bytes((zoo_dir.parent / "random.safetensors").read_bytes())
    assert main(["zoo", "add", str(z), "--id", "gone", "--model", "mobilenet_v2", "--checkpoint", "gone.safetensors",
                 "--source-dataset", str(shared / "data" / "hymenoptera"), *FAST]) == 0
    gone.unlink()
    capsys.readouterr()
    assert main(["recommend", str(shared / "data" / "hymenoptera"), "--zoo", str(z), "--check", "1",
                 "--json", str(tmp_path / "r.json"), *FAST]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == f"task2vec: warning: check: 'gone' skipped, its weights are missing ({gone})", err
    row = out.splitlines()[2].split()
    assert row[:2] == ["1", "gone"] and "missing" in row
    assert "not checked, weights not here: gone" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["skipped_checks"] == ["gone"] and doc["recommendations"][0]["weights_available"] is False


def test_zoo_embedder_carries_the_zoos_settings(tmp_path, probe112):
    zoo = Zoo.create(tmp_path / "z", probe112.describe(), embedding_settings={"method": "exact", "max_samples": 50,
                                                                               "seed": 3, "device": "cpu"})
    emb = zoo.embedder(probe112, max_rank=1, progress=False)
    assert (emb.max_samples, emb.seed, emb.max_rank, emb.progress) == (50, 3, 1, False)
    assert zoo.embedder(probe112).max_rank == 16  # unset: Task2Vec's default
    other = Probe.create("mobilenet_v2", weights=WEIGHTS, image_size=96, device="cpu")
    with pytest.raises(ZooError, match="is not the zoo's"):
        zoo.embedder(other)
