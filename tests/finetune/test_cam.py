"""Grad-CAM on a hand-built CNN whose evidence for each class sits in a known region; target-layer choice."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from task2vec.finetune.cam import find_target_layer, grad_cam, overlay, resolve_layer, save_cam_figure
from task2vec.errors import FinetuneError, OutputPathError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = ["background", "red", "green"]


class BlobNet(nn.Module):
    """Fixed weights: feature channel 0 detects red, channel 1 green; logit 1 is mean red, logit 2 mean green.

    Logit 0 is a constant, so its score has no gradient at all.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.ReLU(inplace=True), nn.AvgPool2d(4))
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.features[0].weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]])[:, :, None, None])
            self.features[0].bias.zero_()
            self.fc.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
            self.fc.bias.copy_(torch.tensor([0.02, 0.0, 0.0]))

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def blob_image() -> torch.Tensor:
    """[1, 3, 32, 32]: a 12x12 red square in the top-left quadrant, an 8x8 green one in the bottom-right."""
    x = torch.zeros(1, 3, 32, 32)
    x[0, 0, 2:14, 2:14] = 1.0
    x[0, 1, 20:28, 20:28] = 1.0
    return x


def quadrant_mass(cam: torch.Tensor) -> tuple[float, float]:
    """Share of the map's total in the top-left and in the bottom-right quadrant."""
    h, w = cam.shape
    total = cam.sum().item()
    return cam[: h // 2, : w // 2].sum().item() / total, cam[h // 2:, w // 2:].sum().item() / total


def model_state(model: nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    }


def assert_same_state(before: dict, after: dict):
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])  # BN statistics included
    assert after["hooks"] == before["hooks"] == 0


def test_cam_peaks_where_the_class_evidence_is():
    model, x = BlobNet(), blob_image()
    red = grad_cam(model, x)  # predicted class: red (the larger square)
    assert red.class_idx == [1] and red.layer == "features.3"
    top_left, bottom_right = quadrant_mass(red.maps[0])
    assert top_left > 0.95 and bottom_right < 0.01
    assert all(i < 16 for i in np.unravel_index(red.maps[0].argmax().item(), (32, 32)))
    green = grad_cam(model, x, class_idx=2)
    assert green.class_idx == [2]
    top_left, bottom_right = quadrant_mass(green.maps[0])
    assert bottom_right > 0.95 and top_left < 0.01


def test_cam_matches_the_formula():
    """Logit 1 is the spatial mean of feature channel 0, so the map is that channel, upsampled and scaled to max 1."""
    model, x = BlobNet(), blob_image()
    result = grad_cam(model, x, class_idx=1)
    with torch.no_grad():
        a = model.eval().features(x)[:, :1]
        expected = F.interpolate(a, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(result.maps, expected / expected.max(), atol=1e-5, rtol=0)
    assert result.maps.shape == (1, 32, 32) and result.maps.dtype == torch.float32
    assert result.maps.min() >= 0 and result.maps.max() == 1.0
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert result.probs == pytest.approx([probs[1].item()])


def test_zero_gradient_gives_an_all_zero_map():
    result = grad_cam(BlobNet(), blob_image(), class_idx=0)
    assert not torch.isnan(result.maps).any()
    assert result.maps.abs().max() == 0.0


def test_model_is_left_as_it_was():
    model, x = BlobNet(), blob_image()
    model.train()
    model.features[2].eval()  # mixed modes must come back module by module
    model.fc.bias.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)
    before = model_state(model)
    grad_cam(model, torch.cat([x, x.flip(2, 3)]), class_idx=[1, 2])
    assert_same_state(before, model_state(model))


def test_frozen_model_gives_the_same_maps():
    x = blob_image()
    expected = grad_cam(BlobNet(), x).maps
    frozen = BlobNet().requires_grad_(False)
    before = model_state(frozen)
    torch.testing.assert_close(grad_cam(frozen, x).maps, expected)
    assert_same_state(before, model_state(frozen))


def test_layer_override_and_batches():
    model = BlobNet()
    x = torch.cat([blob_image(), blob_image().flip(2, 3)])  # second image: red bottom-right, green top-left
    result = grad_cam(model, x, class_idx=1, layer="features.2")
    assert result.layer == "features.2" and result.class_idx == [1, 1]
    assert result.maps.shape == (2, 32, 32)
    assert quadrant_mass(result.maps[0])[0] > 0.95
    assert quadrant_mass(result.maps[1])[1] > 0.95


def test_find_target_layer_on_torchvision_models():
    x = torch.randn(1, 3, 64, 64)
    mobilenet = torchvision.models.mobilenet_v2(num_classes=3)
    name, module = find_target_layer(mobilenet, x)
    assert name == "features.18" and module is mobilenet.features[18]
    resnet = torchvision.models.resnet18(num_classes=3)
    name, module = find_target_layer(resnet, x)
    assert name == "layer4" and module is resnet.layer4
    assert find_target_layer(BlobNet(), blob_image())[0] == "features.3"


def test_grad_cam_on_a_frozen_mobilenet():
    model = torchvision.models.mobilenet_v2(num_classes=3).requires_grad_(False)
    before = model_state(model)
    result = grad_cam(model, torch.rand(2, 3, 64, 64), class_idx=[0, 2])
    assert result.layer == "features.18" and result.class_idx == [0, 2]
    assert result.maps.shape == (2, 64, 64)
    assert result.maps.min() >= 0 and result.maps.max() <= 1 and not torch.isnan(result.maps).any()
    assert all(0 < p < 1 for p in result.probs)
    assert_same_state(before, model_state(model))


def test_patch_embedding_is_not_a_target():
    class PatchNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, 8, 8, stride=8)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.proj(x).flatten(2).transpose(1, 2).mean(1))

    with pytest.raises(FinetuneError, match="stem 'proj' alone"):
        find_target_layer(PatchNet(), torch.zeros(1, 3, 32, 32))


def test_bad_layers_and_classes():
    model, x = BlobNet(), blob_image()
    with pytest.raises(FinetuneError, match="unknown layer 'nope'"):
        grad_cam(model, x, layer="nope")
    with pytest.raises(FinetuneError, match="unknown layer 'features.9'"):
        resolve_layer(model, "features.9")
    assert resolve_layer(model, "features.0") is model.features[0]
    before = model_state(model)
    with pytest.raises(FinetuneError, match="layer 'fc' outputs .*not a 4-D feature map"):
        grad_cam(model, x, layer="fc")
    assert_same_state(before, model_state(model))  # the failed forward left no hook behind
    with pytest.raises(FinetuneError, match=r"class index 3 is not an integer in \[0, 3\)"):
        grad_cam(model, x, class_idx=3)
    with pytest.raises(FinetuneError, match="got 2 class indices for 1 images"):
        grad_cam(model, x, class_idx=[1, 2])
    with pytest.raises(FinetuneError, match="image batch"):
        grad_cam(model, x[0])


def test_a_layer_that_does_not_run_or_does_not_reach_the_scores_is_an_error():
    class Detached(BlobNet):
        def forward(self, x):
            with torch.no_grad():
                features = self.features(x)
            return self.fc(features.mean((2, 3))).detach()

    model, x = BlobNet(), blob_image()
    model.spare = nn.Conv2d(3, 2, 1)  # never called
    before = model_state(model)
    with pytest.raises(FinetuneError, match="layer 'spare' did not run in the forward pass"):
        grad_cam(model, x, layer="spare")
    assert_same_state(before, model_state(model))
    with pytest.raises(FinetuneError, match="do not depend on layer 'features.3'"):
        grad_cam(Detached(), x, layer="features.3")


def test_overlay():
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    cam = torch.zeros(8, 8)
    cam[:4, :4] = 1.0
    out = overlay(image, cam)
    assert out.mode == "RGB" and out.size == (40, 30)
    assert np.array_equal(np.asarray(overlay(image, cam, alpha=0.0)), np.asarray(image))
    pixels = np.asarray(overlay(image, cam.numpy(), alpha=1.0)).astype(int)
    assert pixels[0, 0, 0] > 100 and pixels[0, 0, 2] < 50  # jet at 1: red
    assert pixels[-1, -1, 2] > 100 and pixels[-1, -1, 0] < 50  # jet at 0: blue
    tensor_image = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    assert np.array_equal(np.asarray(overlay(tensor_image, cam)), np.asarray(out))
    with pytest.raises(FinetuneError, match="uint8 tensor"):
        overlay(tensor_image.float(), cam)
    with pytest.raises(FinetuneError, match="alpha must be in"):
        overlay(image, cam, alpha=1.5)
    with pytest.raises(FinetuneError, match="colormap 'nope'"):
        overlay(image, cam, colormap="nope")
    with pytest.raises(FinetuneError, match="2-D map"):
        overlay(image, cam[None])


def test_save_cam_figure(tmp_path):
    model, x = BlobNet(), blob_image()
    x = torch.cat([x, x.flip(2, 3)])
    result = grad_cam(model, x)
    titles = result.titles(CLASSES)
    assert titles[0].startswith("red (p=0.")
    images = [(img * 255).to(torch.uint8) for img in x]
    path = save_cam_figure(images, result.maps, titles, tmp_path / "cam.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["cam.png"]  # written atomically: no temporary file left
    with pytest.raises(FinetuneError, match="got 2, 2, 1"):
        save_cam_figure(images, result.maps, titles[:1], tmp_path / "other.png")
    with pytest.raises(OutputPathError):
        save_cam_figure(images, result.maps, titles, tmp_path / "missing" / "cam.png")
