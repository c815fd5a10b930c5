"""The four real ImageNet backbones of ../shared (MobileNetV2, EfficientNet-Lite0/1/2) through every stage,
and model ids from the Hugging Face hub and timm's ``name.tag`` (parsed offline, weights from a local file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from task2vec.cli.main import main
from task2vec.data import load_rgb
from task2vec.embedding.embedding import Embedding
from task2vec.errors import ProbeError, WeightsError
from task2vec.backbones.probe import Probe, find_local_weights, load_state_dict_file, parse_model_id
from task2vec.zoo.spec import entry_metadata

from conftest import SHARED, WEIGHTS

FILES = {"mobilenet_v2": "mobilenet_v2_imagenet", "tf_efficientnet_lite0": "tf_efficientnet_lite0_imagenet",
         "tf_efficientnet_lite1": "tf_efficientnet_lite1_imagenet", "tf_efficientnet_lite2": "tf_efficientnet_lite2_imagenet"}
LITE0 = SHARED / "weights" / "tf_efficientnet_lite0_imagenet.safetensors"
ANT, BEE = 310, 309  # ImageNet-1k logits (../shared/weights/imagenet_classes.txt, line i + 1 = logit i)
HUB = "hf-hub:timm/tf_efficientnet_lite0.in1k"


@pytest.fixture
def offline_weights(monkeypatch, shared):
    """Offline, with ../shared/weights as the local weights folder."""
    monkeypatch.setenv("TASK2VEC_OFFLINE", "1")
    monkeypatch.setenv("TASK2VEC_WEIGHTS", str(shared / "weights"))


def _imagenet_net(arch: str) -> torch.nn.Module:
    """The whole network, ImageNet classifier included, with the real weights."""
    if arch == "mobilenet_v2":
        import torchvision

        net = torchvision.models.mobilenet_v2()
    else:
        import timm

        net = timm.create_model(arch)
    net.load_state_dict(load_state_dict_file(SHARED / "weights" / f"{FILES[arch]}.safetensors"))
    return net.eval()


@pytest.mark.parametrize("arch", sorted(FILES))
def test_the_imagenet_head_of_each_backbone_classifies_real_photos(arch, shared, one_torch_thread):
    """Ants and bees of hymenoptera/val, 1000-way top-1 on the right class (chance 0.1 %), with the
    preprocessing the probe uses (timm's data config for the EfficientNets: own size, bicubic, 0.5/0.5)."""
    probe = Probe.create(arch, weights=SHARED / "weights" / f"{FILES[arch]}.safetensors", device="cpu")
    if arch != "mobilenet_v2":
        c = probe.config
        assert (c.interpolation, c.mean, c.std) == ("bicubic", (0.5,) * 3, (0.5,) * 3)
        assert c.input_size == {"tf_efficientnet_lite0": 224, "tf_efficientnet_lite1": 240,
                                "tf_efficientnet_lite2": 260}[arch]
    paths = [(p, ANT) for p in sorted((shared / "data" / "hymenoptera" / "val" / "ants").iterdir())[:10]]
    paths += [(p, BEE) for p in sorted((shared / "data" / "hymenoptera" / "val" / "bees").iterdir())[:10]]
    batch = probe.normalize(torch.stack([probe.transform(load_rgb(p)) for p, _ in paths]))
    with torch.no_grad():
        top = _imagenet_net(arch)(batch).argmax(1).numpy()
    accuracy = float(np.mean(top == np.array([y for _, y in paths])))
    assert accuracy >= 0.4, f"{arch}: {accuracy:.2f} of 20 ants and bees on the right ImageNet class"


def test_model_ids_parse_without_the_network():
    assert parse_model_id("mobilenet_v2").architecture == "mobilenet_v2"
    tagged = parse_model_id("tf_efficientnet_lite0.in1k")
    assert (tagged.architecture, tagged.tag, tagged.hub_id) == ("tf_efficientnet_lite0.in1k", "in1k", None)
    hub = parse_model_id(HUB)
    assert (hub.architecture, hub.tag, hub.hub_id) == ("tf_efficientnet_lite0.in1k", "in1k", "timm/tf_efficientnet_lite0.in1k")
    other = parse_model_id("hf-hub:someone/their-model")
    assert (other.architecture, other.hub_id) == (None, "someone/their-model")  # its architecture is in the hub's config
    for bad in ("hf-hub:", "hf-hub:org", "hf-hub:a/b/c", "hf-hub:a b/c", ""):
        with pytest.raises(ProbeError, match="hub id|non-empty"):
            parse_model_id(bad)


def test_tagged_and_hub_names_find_the_local_file(offline_weights, shared):
    for name in ("tf_efficientnet_lite0", "tf_efficientnet_lite0.in1k", HUB):
        assert find_local_weights(name) == LITE0
    assert find_local_weights("tf_efficientnet_lite3.in1k") is None
    hashes = {Probe.create(name, image_size=64, device="cpu").weights_hash
              for name in ("tf_efficientnet_lite0", "tf_efficientnet_lite0.in1k", HUB)}
    assert len(hashes) == 1
    meta = entry_metadata(HUB, None, pretrained=True)
    assert meta["params_m"] == 4.65 and meta["input_size"] == 224 and meta["imagenet_top1"] == pytest.approx(74.846)
    assert meta["imagenet_top1_source"] == "timm-results-imagenet.csv: tf_efficientnet_lite0.in1k at 224 px"


def test_offline_hub_ids_without_local_weights_fail_fast_in_one_line(offline_weights, shared, tmp_path, capsys):
    with pytest.raises(WeightsError, match="TASK2VEC_OFFLINE is set"):
        Probe.create("hf-hub:someone/their-model")
    hym = str(shared / "data" / "hymenoptera")
    for argv in (["embed", hym, "--probe", "hf-hub:someone/their-model", "-o", str(tmp_path / "x.t2v.npz")],
                 ["embed", hym, "--probe", "tf_efficientnet_lite3.in1k", "-o", str(tmp_path / "x.t2v.npz")],
                 ["finetune", hym, "--model", "hf-hub:timm/tf_efficientnet_lite3.in1k", "-o", str(tmp_path / "r")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("task2vec: error: ") and len(err.strip().splitlines()) == 1, err
        assert "TASK2VEC_OFFLINE is set" in err


def test_embed_with_an_efficientnet_probe(offline_weights, shared, tmp_path, one_torch_thread):
    out = {}
    for probe in ("mobilenet_v2", "tf_efficientnet_lite0.in1k"):
        path = tmp_path / f"{probe}.t2v.npz"
        assert main(["embed", str(shared / "data" / "hymenoptera"), "--probe", probe, "--image-size", "64",
                     "--max-samples", "12", "--quiet", "-o", str(path)]) == 0
        out[probe] = Embedding.load(path)
    lite = out["tf_efficientnet_lite0.in1k"]
    assert lite.meta["probe"]["name"] == "tf_efficientnet_lite0.in1k" and lite.meta["probe"]["input_size"] == 64
    assert lite.vector.shape != out["mobilenet_v2"].vector.shape and np.all(np.isfinite(lite.vector))


def test_an_efficientnet_zoo_entry_is_checked_fine_tuned_predicted_and_explained(offline_weights, shared, tmp_path,
                                                                                 capsys, one_torch_thread):
    """A zoo of the MobileNetV2 and a hub-named EfficientNet-Lite0 (weights from the local file): ``recommend
    --check`` scores both by LogME; the EfficientNet is fine-tuned at its entry's input size, then predicts
    and draws its class activation map."""
    z, hym = tmp_path / "zoo", shared / "data" / "hymenoptera"
    assert main(["zoo", "init", str(z), "--weights", str(WEIGHTS), "--image-size", "64"]) == 0
    for entry, model in (("mnv2", "mobilenet_v2"), ("lite0", HUB)):
        assert main(["zoo", "add", str(z), "--id", entry, "--model", model, "--pretrained", "--input-size", "64",
                     "--source-dataset", str(shared / "data" / "flowers5"), "--max-samples", "12", "--quiet"]) == 0
    manifest = json.loads((z / "zoo.json").read_text())
    lite = next(e for e in manifest["entries"] if e["id"] == "lite0")
    assert lite["metadata"]["params_m"] == 4.65 and lite["metadata"]["imagenet_top1"] == pytest.approx(74.846)
    ranking = tmp_path / "r.json"
    capsys.readouterr()
    assert main(["recommend", str(hym), "--zoo", str(z), "--check", "2", "--max-samples", "12", "--quiet",
                 "--json", str(ranking)]) == 0
    doc = json.loads(ranking.read_text())
    assert sorted(doc["checked"]) == ["lite0", "mnv2"]
    assert all(isinstance(r["logme"], float) for r in doc["recommendations"])
    run = tmp_path / "run"
    books = shared / "data" / "small_books"
    assert main(["finetune", str(books), "--model", HUB, "-o", str(run), "--image-size", "64", "--epochs", "1",
                 "--max-train-images", "20", "--batch-size", "10", "--device", "cpu", "--quiet"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["arch"] == HUB and cfg["data_config"]["interpolation"] == "bicubic"
    assert cfg["data_config"]["input_size"] == 64  # offline: the weights can only be the local file
    photos = sorted((books / "test").glob("*.jpg"))[:2]
    assert main(["predict", str(run / "best.pt"), *map(str, photos), "--topk", "2", "--json", str(tmp_path / "p.json")]) == 0
    assert len(json.loads((tmp_path / "p.json").read_text())["predictions"]) == 2
    assert main(["cam", str(run / "best.pt"), str(photos[0]), "-o", str(tmp_path / "cam.png")]) == 0
    figure = np.asarray(Image.open(tmp_path / "cam.png").convert("RGB")).astype(float)
    assert np.abs(figure[:, :300] - figure[:, 300:]).mean() > 10  # the overlay is not the photo


def test_the_committed_cross_architecture_zoo(shared):
    """zoo/arch as committed (manifest and arrays; its expert weights are git-ignored and not needed here):
    four generalists of three families with derived metadata, and experts of two architectures per source."""
    from task2vec.backbones.probe import architecture_facts
    from task2vec.backbones.quality import imagenet_top1_source
    from task2vec.zoo.zoo import Zoo

    zoo = Zoo.load(Path(__file__).resolve().parents[2] / "zoo" / "arch")
    assert len(zoo) == 22 and zoo.probe["input_size"] == 112
    generalists = {e.model: e for e in zoo.entries if e.metadata.get("imagenet_top1") is not None}
    assert sorted(generalists) == ["mobilenet_v2", "tf_efficientnet_lite0", "tf_efficientnet_lite1",
                                   "tf_efficientnet_lite2"]
    for model, e in generalists.items():
        published = "quantized_mobilenet_v2" if model == "mobilenet_v2" else model  # the dequantized recovery
        assert (e.metadata["imagenet_top1"], e.metadata["imagenet_top1_source"]) == imagenet_top1_source(published)
        assert (e.metadata["params_m"], e.metadata["input_size"]) == architecture_facts(model)
    experts = [e for e in zoo.entries if e.model == "tf_efficientnet_lite0" and e.metadata.get("imagenet_top1") is None]
    assert len(experts) == 6 and all(e.metadata["input_size"] == 112 for e in experts)
    for e in experts:  # the MobileNetV2 expert of the same source half: the same source task, embedded once
        twin = zoo.ids.index(e.id.removesuffix("-lite0"))
        assert zoo.entries[twin].model == "mobilenet_v2"
        assert zoo.entries[twin].source["fingerprint"] == e.source["fingerprint"]
        np.testing.assert_array_equal(zoo.source[twin], zoo.source[zoo.ids.index(e.id)])
    prior = zoo.prior()
    assert prior[zoo.ids.index("efficientnet-lite2-generalist")] == prior.min() < 0  # the best top-1 is favoured


def test_imagenet_weights_in_a_spec_need_a_checkpoint(tmp_path):
    from task2vec.errors import ZooError
    from task2vec.zoo.spec import read_spec, trained_by_spec

    spec = tmp_path / "spec.yaml"
    head = "zoo: z\nprobe: mobilenet_v2\nfinetune: {image_size: 112}\nentries:\n  - id: a\n    model: tf_efficientnet_lite0\n"
    spec.write_text(head + "    pretrained: true\n    imagenet_weights: true\n    source_dataset: d\n")
    with pytest.raises(ZooError, match="'imagenet_weights' .* needs a checkpoint"):
        read_spec(spec)
    spec.write_text(head + "    checkpoint: w.safetensors\n    imagenet_weights: true\n    source_dataset: d\n")
    s = read_spec(spec)
    assert not trained_by_spec(s, s["entries"][0])  # published weights: never trained by the spec, own input size
