"""Grad-CAM (Selvaraju et al., 2017): which image regions a fine-tuned classifier used for its decision.

For a class c and a feature map A (K channels) the map is ReLU(sum_k w_k A_k) with w_k the spatial mean
of d score_c / d A_k (captum's ``LayerGradCam``), upsampled bilinearly to the input and scaled per image to
[0, 1]. The model is left as it was found: hooks removed, train/eval flags and requires_grad untouched, no
gradient written to .grad. Choosing the target layer is this module's own work (captum needs it named).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import FinetuneError
from ..io import atomic_open

# modules under an attribute with one of these names are the classifier, never a Grad-CAM target
CLASSIFIER_NAMES = frozenset({"fc", "classifier", "head", "heads"})
STRIDE_SLACK = 1.5  # rounding allowed between a feature map's size and the image size over the stride
PROBE_SIZE = 224  # side of the dummy image used to find the target layer when no example input is given


@dataclass
class CamResult:
    """Grad-CAM maps for a batch: ``maps`` is float32 [N, H, W] in [0, 1] on the CPU, at the input's size."""

    maps: torch.Tensor
    class_idx: list[int]  # the class explained for each image
    probs: list[float]  # softmax probability of that class
    layer: str  # dotted name of the feature-map module

    def titles(self, classes: Sequence[str]) -> list[str]:
        """Figure titles such as ``"cat (p=0.93)"`` for ``save_cam_figure``."""
        return [f"{classes[c]} (p={p:.2f})" for c, p in zip(self.class_idx, self.probs)]


class _ModeGuard:
    """Puts a model in eval mode and restores every module's own train/eval flag on exit."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.modes = {m: m.training for m in model.modules()}

    def __enter__(self) -> nn.Module:
        return self.model.eval()

    def __exit__(self, *exc) -> None:
        for m, training in self.modes.items():
            m.training = training


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted, as in ``model.named_modules()``)."""
    modules = dict(model.named_modules())
    if not name or name not in modules:
        raise FinetuneError(f"unknown layer {name!r}: not a submodule of {type(model).__name__}")
    return modules[name]


def _classifier_names(model: nn.Module) -> set[str]:
    """Dotted names of the classifier: timm's ``get_classifier()`` and anything under CLASSIFIER_NAMES."""
    names = {n for n, _ in model.named_modules() if CLASSIFIER_NAMES.intersection(n.split("."))}
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Module):
        names |= {n for n, m in model.named_modules() for h in head.modules() if m is h}
    names.discard("")
    return names


def _is_spatial(t: torch.Tensor, image: torch.Tensor) -> bool:
    """Whether a 4-D tensor [N, C, h, w] can be a feature map of ``image``: h and w agree on one stride.

    That is, some s has |H/s - h| and |W/s - w| within STRIDE_SLACK (padding and rounding); this rules out
    other 4-D tensors such as attention heads [N, heads, tokens, dim] and channels-last maps [N, h, w, C].
    """
    (H, W), (h, w) = image.shape[2:], t.shape[2:]
    low = max(H / (h + STRIDE_SLACK), W / (w + STRIDE_SLACK))
    high = min(H / (h - STRIDE_SLACK) if h > STRIDE_SLACK else math.inf, W / (w - STRIDE_SLACK) if w > STRIDE_SLACK else math.inf)
    return low <= high


def _in_attention(name: str) -> bool:
    return any("attn" in part or "attention" in part for part in name.lower().split("."))


def find_target_layer(model: nn.Module, example: torch.Tensor | None = None) -> tuple[str, nn.Module]:
    """The module whose output is the last spatial feature map before global pooling: (dotted name, module).

    Rule: run ``example`` (default: one zero image of PROBE_SIZE px) through the model in eval mode with
    hooks on every submodule. Feature maps are 4-D outputs [N, C, H, W] (aspect checked by ``_is_spatial``)
    of modules outside the classifier (a name part in CLASSIFIER_NAMES, or timm's ``get_classifier()``)
    and outside attention modules (a name part containing "attn"/"attention": their 4-D outputs are
    attention weights). The target tensor is the last feature map in execution order with H, W > 1 (any
    H, W if there is none). Nested modules often return that same tensor (resnet: ``layer4.1.relu``,
    ``layer4.1``, ``layer4``); the outermost is named, passing over modules that only hand back their
    input (Identity, in-place activations) and modules spanning the backbone: those that contain the
    first convolution run (the stem) or hold maps of more than two sizes (one stage's input and output).
    So mobilenet_v2 gives ``features.18``, resnets ``layer4``; ties go to the module that finished first.
    A map made by the stem alone (a vision transformer's patch embedding) is refused: name the layer.
    """
    if example is None:
        param = next(model.parameters(), None)
        first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        example = torch.zeros(1, first_conv.in_channels if first_conv else 3, PROBE_SIZE, PROBE_SIZE,
                              dtype=param.dtype if param is not None else torch.float32,
                              device=param.device if param is not None else "cpu")
    if not isinstance(example, torch.Tensor) or example.dim() != 4 or example.shape[0] == 0:
        raise FinetuneError(f"example input must be a [N, C, H, W] tensor, got {getattr(example, 'shape', type(example))}")
    names = {m: n for n, m in model.named_modules() if n}
    records: list[tuple[str, torch.Tensor, bool]] = []  # (module name, 4-D output, output is the module's input)
    stem: list[str] = []

    def hook(module: nn.Module, args: tuple, out: object) -> None:
        name = names[module]
        if isinstance(module, nn.Conv2d) and not stem:
            stem.append(name)
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            records.append((name, out, bool(args) and out is args[0]))

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with _ModeGuard(model), torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    classifier = _classifier_names(model)
    maps = [r for r in records if r[0] not in classifier and not _in_attention(r[0]) and _is_spatial(r[1], example)]
    if not maps:
        raise FinetuneError(f"{type(model).__name__} has no module with a spatial feature map output: name a layer")
    large = [r for r in maps if r[1].shape[2] > 1 and r[1].shape[3] > 1]
    target = (large or maps)[-1][1]
    producers = [n for n, t, through in maps if t is target and not through] or [n for n, t, _ in maps if t is target]
    if producers == stem:
        raise FinetuneError(f"{type(model).__name__}: the last feature map is made by the stem {stem[0]!r} alone: name a layer")

    def one_stage(name: str) -> bool:
        inside = [t.shape[2:] for n, t, _ in large if n.startswith(name + ".")]
        return not (stem and stem[0].startswith(name + ".")) and len(set(inside) | {target.shape[2:]}) <= 2

    producers = [n for n in producers if one_stage(n)] or producers
    name = min(producers, key=lambda n: n.count("."))  # min keeps the first of equal depth
    return name, resolve_layer(model, name)


def _class_indices(class_idx: int | Sequence[int] | None, logits: torch.Tensor) -> list[int]:
    n, c = logits.shape
    if class_idx is None:
        return logits.argmax(1).tolist()
    idx = [class_idx] * n if isinstance(class_idx, (int, np.integer)) and not isinstance(class_idx, bool) else list(class_idx)
    if len(idx) != n:
        raise FinetuneError(f"got {len(idx)} class indices for {n} images")
    for k in idx:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < c:
            raise FinetuneError(f"class index {k!r} is not an integer in [0, {c})")
    return [int(k) for k in idx]


def grad_cam(model: nn.Module, x: torch.Tensor, class_idx: int | Sequence[int] | None = None,
             layer: str | None = None) -> CamResult:
    """Grad-CAM maps of ``x`` [N, 3, H, W] for ``class_idx`` (None: each image's predicted class).

    ``layer`` is a dotted module name; None picks it with ``find_target_layer``. The maps are captum's
    ``LayerGradCam`` (ReLU of the gradient-weighted channel sum), upsampled and scaled here; one forward
    pass gives them, the chosen classes and their probabilities. The model runs in eval mode. Works with
    frozen parameters (captum makes the captured activation a gradient leaf and runs the rest of the forward
    on a copy of it). For a module run several times in one forward (a shared activation), its last call is used.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] == 0:
        raise FinetuneError(f"grad_cam needs an image batch [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    if layer is None:
        layer, module = find_target_layer(model, x[:1])
    else:
        module = resolve_layer(model, layer)
    chosen: dict[str, Any] = {}

    def check_layer(mod: nn.Module, args: tuple, out: object) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise FinetuneError(f"layer {layer!r} outputs {getattr(out, 'shape', type(out).__name__)}, not a 4-D feature map")
        chosen["ran"] = True

    def class_scores(images: torch.Tensor) -> torch.Tensor:
        """The score of the explained class of each image, [N, 1] (captum's target 0)."""
        logits = model(images)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != images.shape[0]:
            got = getattr(logits, "shape", type(logits).__name__)
            raise FinetuneError(f"model output must be logits [N, classes], got {got}")
        if "ran" not in chosen:
            raise FinetuneError(f"layer {layer!r} did not run in the forward pass")
        if not logits.requires_grad:
            raise FinetuneError(f"the class scores do not depend on layer {layer!r} (is it run under torch.no_grad()?)")
        chosen["idx"] = _class_indices(class_idx, logits)
        rows = torch.arange(len(logits), device=logits.device)
        cols = torch.tensor(chosen["idx"], device=logits.device)
        chosen["probs"] = logits.detach().float().softmax(1)[rows, cols]
        return logits[rows, cols][:, None]

    handle = module.register_forward_hook(check_layer)  # before captum's hook, so it sees the layer's own output
    try:
        with _ModeGuard(model):
            cam = LayerGradCam(class_scores, module).attribute(x, target=0, relu_attributions=True)
    finally:
        handle.remove()
    with torch.no_grad():
        cam = LayerAttribution.interpolate(cam.detach().float(), tuple(x.shape[2:]), "bilinear")[:, 0].clamp_min(0)
        peak = cam.amax((1, 2), keepdim=True)
        cam = (cam / peak.clamp_min(torch.finfo(cam.dtype).tiny)).clamp(0, 1)  # an all-zero map stays zero
    return CamResult(maps=cam.cpu(), class_idx=chosen["idx"], probs=chosen["probs"].cpu().tolist(), layer=layer)


def _to_pil(image: Image.Image | torch.Tensor) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3:
        return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    got = f"{image.dtype} tensor of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
    raise FinetuneError(f"image must be a PIL image or a uint8 tensor [3, H, W], got {got}")


def overlay(image: Image.Image | torch.Tensor, cam: torch.Tensor | np.ndarray, alpha: float = 0.45,
            colormap: str = "jet") -> Image.Image:
    """The image blended with the colour-mapped CAM (resized bilinearly to the image): an RGB image of the image's size."""
    import matplotlib

    base = _to_pil(image)
    heat = cam.detach().float().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0 or not np.isfinite(heat).all():
        raise FinetuneError(f"cam must be a finite 2-D map, got shape {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise FinetuneError(f"alpha must be in [0, 1], got {alpha}")
    if colormap not in matplotlib.colormaps:
        raise FinetuneError(f"unknown matplotlib colormap {colormap!r}")
    heat = np.asarray(Image.fromarray(np.clip(heat, 0, 1).astype(np.float32)).resize(base.size, Image.Resampling.BILINEAR))
    colour = matplotlib.colormaps[colormap](np.clip(heat, 0, 1))[..., :3] * 255.0
    blended = (1.0 - alpha) * np.asarray(base, dtype=np.float64) + alpha * colour
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def save_cam_figure(images: Sequence[Image.Image | torch.Tensor], cams: Sequence[torch.Tensor | np.ndarray] | torch.Tensor,
                    titles: Sequence[str], path: str | Path) -> Path:
    """One PNG with a row per image: the original, then its Grad-CAM overlay titled e.g. ``"cat (p=0.93)"``."""
    from matplotlib.figure import Figure

    if not len(images) or not len(images) == len(cams) == len(titles):
        raise FinetuneError(f"need as many images, cams and titles (at least one), got {len(images)}, {len(cams)}, {len(titles)}")
    fig = Figure(figsize=(6.0, 3.0 * len(images)))
    axes = fig.subplots(len(images), 2, squeeze=False)
    for (left, right), image, cam, title in zip(axes, images, cams, titles):
        original = _to_pil(image)
        left.imshow(original)
        right.imshow(overlay(original, cam))
        right.set_title(str(title), fontsize=10)
        left.axis("off")
        right.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    with atomic_open(path) as f:
        f.write(buf.getvalue())
    return Path(path)
