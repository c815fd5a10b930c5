"""The probe network: a fixed ImageNet model whose weights' Fisher embeds a task.

``Probe.create(name, weights=...)`` is the one factory. Torchvision probes come from a
registry; any other name is tried as a timm model. A probe carries its own
preprocessing (resolution, crop, interpolation, mean/std) and a hash of its weights.

Downloads fail fast when they cannot happen: with ``$TASK2VEC_OFFLINE`` or ``$HF_HUB_OFFLINE``
set, or when the download host (or the proxy) does not answer within ``REACH_TIMEOUT`` seconds,
only weights already in torchvision's or the Hugging Face hub's cache are used, and otherwise a
one-line :class:`WeightsError` says how to give local weights.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pickle
import re
import socket
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ..defaults import OFFLINE_ENV, PROBE, WEIGHTS_ENV
from ..errors import ProbeError, WeightsError
from ..validate import integer, seed as check_seed

REACH_TIMEOUT = 3.0  # seconds the reachability check of a download host may take, DNS included
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """How images are prepared for a model: resize to size/crop_pct, centre-crop to size."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875


@dataclass(frozen=True)
class _TorchvisionSpec:
    builder: str  # torchvision.models function name
    classifier: str  # dotted path of the final Linear
    config: DataConfig = DataConfig()


# Registry of torchvision probes (timm covers every other name).
TORCHVISION_PROBES: dict[str, _TorchvisionSpec] = {
    "mobilenet_v2": _TorchvisionSpec("mobilenet_v2", "classifier.1"),
    "mobilenet_v3_large": _TorchvisionSpec("mobilenet_v3_large", "classifier.3"),
    "resnet18": _TorchvisionSpec("resnet18", "fc"),
    "resnet34": _TorchvisionSpec("resnet34", "fc"),
    "resnet50": _TorchvisionSpec("resnet50", "fc"),
    "efficientnet_b0": _TorchvisionSpec("efficientnet_b0", "classifier.1",
                                        DataConfig(crop_pct=224 / 256, interpolation="bicubic")),
    "densenet121": _TorchvisionSpec("densenet121", "classifier"),
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` means CUDA when present, else CPU; asking for absent CUDA is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ProbeError(f"device {device!r} requested but CUDA is not available")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ProbeError(f"unknown device {device!r}") from exc


def state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    """Short SHA-256 of a state dict's names, shapes, dtypes and values."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _weights_kind(path: Path) -> str | None:
    """``torch`` (a zip archive or a pickle) or ``safetensors`` by the file's first bytes; None otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {str(path)!r} ({exc.strerror})") from None
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":  # an 8-byte header length, then the JSON header
        return "safetensors"
    return None


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read weights from .safetensors or .pth/.pt (``weights_only=True``: no pickle code runs).

    The format is told by the file's first bytes, not its name; anything else, and a pickle of
    Python objects beyond tensors, is a one-line :class:`WeightsError`.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    kind = _weights_kind(path)
    if kind is None:
        raise WeightsError(f"{str(path)!r} is not a weights file (neither a torch .pt/.pth nor a .safetensors file)")
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only=True met a Python object it will not build
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise WeightsError(f"weights file {str(path)!r} holds pickled Python objects{f' ({found[1]})' if found else ''}, "
                           "which are not loaded: save a plain state dict or .safetensors") from None
    except Exception as exc:  # truncated or corrupt: the first sentence of what the reader says
        reason = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read weights file {str(path)!r} ({kind}: {reason})") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return state


def find_local_weights(name: str, directory: str | os.PathLike | None = None) -> Path | None:
    """Look in ``directory`` (default: ``$TASK2VEC_WEIGHTS``) for ``<name>*.safetensors|.pth|.pt``.

    A tagged or hub name (``tf_efficientnet_lite0.in1k``, ``hf-hub:timm/tf_efficientnet_lite0.in1k``)
    is looked up as written (its last path part), then by its bare architecture name.
    """
    directory = directory or os.environ.get(WEIGHTS_ENV)
    if not directory or not Path(directory).is_dir():
        return None
    ident = parse_model_id(name)
    names = [ident.hub_id.rpartition("/")[2] if ident.hub_id else name]
    if ident.architecture and ident.tag:
        names.append(ident.architecture.partition(".")[0])
    for candidate in dict.fromkeys(names):
        found = _local_file(candidate, Path(directory))
        if found is not None:
            return found
    return None


def _local_file(name: str, directory: Path) -> Path | None:
    """``<name>*`` in ``directory``, by extension preference, an exact stem first."""
    for ext in (".safetensors", ".pth", ".pt"):
        hits = sorted(directory.glob(f"{glob.escape(name)}*{ext}"))
        # "resnet34*" must not take "resnet34d": prefer an exact stem, then a '_' or '-' separated suffix
        hits = [p for p in hits if p.stem == name or p.stem[len(name)] in "_-."]
        if hits:
            return hits[0]
    return None


HF_HUB_PREFIX = "hf-hub:"
TIMM_HUB_ORG = "timm"  # timm's own organisation on the hub: its model names are timm architecture names


@dataclass(frozen=True)
class ModelId:
    """A model name split into its parts: ``hf-hub:org/name`` or timm's ``architecture.tag``.

    ``architecture`` is the timm or torchvision name when it is known without the hub (a plain
    name, ``name.tag``, or ``hf-hub:timm/name.tag``), else None; ``hub_id`` is ``org/name`` for
    hub ids. Parsing needs no network.
    """

    name: str
    architecture: str | None
    tag: str | None = None
    hub_id: str | None = None


def parse_model_id(name: str) -> ModelId:
    """Split ``name`` (``mobilenet_v2``, ``tf_efficientnet_lite0.in1k``, ``hf-hub:org/name``); a
    malformed hub id is a one-line :class:`ProbeError`."""
    if not isinstance(name, str) or not name.strip():
        raise ProbeError(f"a model name must be a non-empty string, got {name!r}")
    if name.startswith(HF_HUB_PREFIX):
        hub_id = name[len(HF_HUB_PREFIX):]
        org, _, repo = hub_id.partition("/")
        if not org or not repo or "/" in repo or any(c.isspace() for c in hub_id):
            raise ProbeError(f"bad Hugging Face hub id {name!r}: expected hf-hub:ORG/NAME")
        base, _, tag = repo.partition(".")
        known = org == TIMM_HUB_ORG and _timm_name(base)
        return ModelId(name, repo if known else None, (tag or None) if known else None, hub_id)
    if name in TORCHVISION_PROBES:
        return ModelId(name, name)
    base, _, tag = name.partition(".")
    return ModelId(name, name, tag or None) if tag and _timm_name(base) else ModelId(name, name)


def _timm_name(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@dataclass(frozen=True)
class _Download:
    """How an architecture's pretrained weights are fetched.

    ``fetch`` builds the model with them; ``url`` is where they come from (None: no network is
    involved, e.g. an architecture without pretrained weights, whose ``fetch`` fails at once);
    ``hub``: through the Hugging Face hub, which can answer from its cache without a request.
    """

    fetch: Callable[[], nn.Module]
    url: str | None
    hub: bool = False


def _torch_hub_cached(url: str) -> bool:
    """True when torch.hub's checkpoint cache already holds the file of ``url`` (no request needed)."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return bool(name) and (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


def _timm_download(name: str) -> _Download:
    import timm

    def fetch() -> nn.Module:
        return timm.create_model(name, pretrained=True)

    if name.startswith(HF_HUB_PREFIX):
        from huggingface_hub import constants

        return _Download(fetch, f"{constants.ENDPOINT}/{name[len(HF_HUB_PREFIX):]}", hub=True)
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an unknown pretrained tag: create_model says so without a request
        return _Download(fetch, None)
    if cfg is None or cfg.file or cfg.state_dict:
        return _Download(fetch, None)
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        return _Download(fetch, f"{constants.ENDPOINT}/{cfg.hf_hub_id}", hub=True)
    if cfg.url and not _torch_hub_cached(cfg.url):
        return _Download(fetch, cfg.url)
    return _Download(fetch, None)


def _architecture(name: str) -> tuple[nn.Module, Callable[[nn.Module], int], DataConfig, _Download]:
    """Return (random-init model, classifier remover, data config, how to fetch the pretrained weights)."""
    if name in TORCHVISION_PROBES:
        import torchvision

        spec = TORCHVISION_PROBES[name]
        builder = getattr(torchvision.models, spec.builder)

        def strip(model: nn.Module) -> int:
            linear = model.get_submodule(spec.classifier)
            _set_submodule(model, spec.classifier, nn.Identity())
            return linear.in_features

        url = torchvision.models.get_model_weights(spec.builder).DEFAULT.url
        download = _Download(lambda: builder(weights="DEFAULT"), None if _torch_hub_cached(url) else url)
        return builder(), strip, spec.config, download
    import timm

    ident = parse_model_id(name)
    if ident.hub_id is not None:
        model = _hub_model(ident)
    elif not timm.is_model(name):
        known = ", ".join(sorted(TORCHVISION_PROBES))
        raise ProbeError(f"unknown probe {name!r}: not a torchvision probe ({known}) nor a timm model name")
    else:
        model = timm.create_model(name, pretrained=False)
    cfg = timm.data.resolve_data_config({}, model=model)

    def strip_timm(m: nn.Module) -> int:
        m.reset_classifier(0)
        # what the body now outputs: a pre-logits head (MobileNetV3's conv_head) widens num_features
        return int(getattr(m, "head_hidden_size", None) or m.num_features)

    config = DataConfig(
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )
    return model, strip_timm, config, _timm_download(name)


def _hub_model(ident: ModelId) -> nn.Module:
    """The random-init timm model of a hub id: from timm's registry for ``hf-hub:timm/<name>``, else
    from the hub's ``config.json`` (its cache first; offline, a one-line WeightsError)."""
    import timm

    if ident.architecture is not None:
        return timm.create_model(ident.architecture, pretrained=False)
    from huggingface_hub import constants

    offline = offline_reason(constants.ENDPOINT)
    try:
        with _hub_offline():  # the hub's cache may hold its config: no request
            return timm.create_model(ident.name, pretrained=False)
    except Exception as exc:
        if offline is not None:
            raise WeightsError(f"cannot build {ident.name!r}: its architecture is in the hub's config.json and there is "
                               f"no download ({offline}; not in the Hugging Face cache either)") from exc
    try:
        return timm.create_model(ident.name, pretrained=False)
    except Exception as exc:
        raise WeightsError(f"cannot build {ident.name!r} from the Hugging Face hub ({type(exc).__name__}: "
                           f"{_first_line(exc)})") from exc


def host_reachable(host: str, port: int = 443, timeout: float = REACH_TIMEOUT) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds, name lookup included.

    The attempt runs in a daemon thread joined with the timeout, because a hanging DNS lookup
    ignores socket timeouts; a thread still waiting then ends with the process.
    """
    opened = threading.Event()

    def connect() -> None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
            opened.set()

    thread = threading.Thread(target=connect, name=f"task2vec-reach-{host}", daemon=True)
    thread.start()
    thread.join(timeout)
    return opened.is_set()


def _is_true(value: str | None) -> bool:
    """The Hugging Face hub's reading of a flag variable: 1, true, yes or on (any case)."""
    return (value or "").strip().upper() in {"1", "TRUE", "YES", "ON"}


def offline_reason(url: str) -> str | None:
    """Why ``url`` cannot be downloaded now, or None when it may be.

    Offline when ``$TASK2VEC_OFFLINE`` or ``$HF_HUB_OFFLINE`` is set, or when the URL's host (its
    proxy, when the environment names one) does not answer within ``REACH_TIMEOUT`` seconds.
    """
    for var in (OFFLINE_ENV, "HF_HUB_OFFLINE"):
        if _is_true(os.environ.get(var)):
            return f"{var} is set"
    parts = urllib.parse.urlparse(url)
    host, port = parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443)
    proxy = urllib.request.getproxies().get(parts.scheme)
    target, target_port = host, port
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        target, target_port = p.hostname or "", p.port or (443 if p.scheme == "https" else 80)
    if not host_reachable(target, target_port):
        return f"{target} cannot be reached" + (" (the proxy)" if target != host else "")
    return None


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Inside, Hugging Face hub requests fail at once and files come from its cache only; restored after."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _download(name: str, download: _Download) -> nn.Module:
    """The pretrained model, or a one-line WeightsError when the download fails or cannot happen."""
    hint = f"pass --weights FILE or set {WEIGHTS_ENV} to a folder holding {name}*.safetensors"
    offline = offline_reason(download.url) if download.url is not None else None
    if offline is not None and not download.hub:
        raise WeightsError(f"no local weights for {name!r} and no download ({offline}): {hint}")
    try:
        if offline is None:
            return download.fetch()
        with _hub_offline():  # the hub's cache may hold them; no request, no retries
            return download.fetch()
    except Exception as exc:  # hub unreachable, not cached, no pretrained tag
        if offline is not None:
            raise WeightsError(f"no local weights for {name!r} and no download ({offline}; not in the "
                               f"Hugging Face cache either): {hint}") from exc
        raise WeightsError(f"no local weights for {name!r} and the download failed ({type(exc).__name__}): "
                           f"{hint}") from exc


@lru_cache(maxsize=None)
def architecture_facts(name: str) -> tuple[float, int]:
    """(Parameters in millions, to 2 decimals; default input size) of architecture ``name``.

    Counted as the library builds it, ImageNet classifier included, so the figure matches the
    published tables (mobilenet_v2: 3.5). Built on the meta device: no memory, no weights.
    """
    with torch.device("meta"):
        model, _, config, _ = _architecture(name)
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 2), config.input_size


@dataclass
class Network:
    """A classification network whose classifier was replaced by ``nn.Identity``.

    ``body`` maps images to ``feature_dim`` features; ``weights_hash`` hashes the weights as
    loaded (the whole network, or the body alone for ``body_only`` loads).
    """

    name: str
    body: nn.Module
    feature_dim: int
    config: DataConfig
    weights_source: str
    weights_hash: str


def known_architecture(name: str) -> bool:
    """True for a torchvision registry name or a timm model name."""
    if name in TORCHVISION_PROBES:
        return True
    ident = parse_model_id(name)
    return ident.hub_id is not None or _timm_name(name)


def _body_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A task2vec fine-tuning state (``body.*``, ``classifier.*``, ``aux_heads.*``) -> the body's keys."""
    if any(k.startswith("body.") for k in state):
        return {k[len("body."):]: v for k, v in state.items() if k.startswith("body.")}
    return state


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)


def build_network(name: str, weights: str | os.PathLike | None = None, *, pretrained: bool | None = None,
                  random_init: bool = False, seed: int = 0, body_only: bool = False) -> Network:
    """Build ``name`` (torchvision registry or timm) with weights, its classifier removed.

    Weights come, in order, from ``weights`` (.safetensors/.pth/.pt), from
    ``$TASK2VEC_WEIGHTS/<name>*``, then from torchvision/timm's download (unless
    ``pretrained=False``; offline, only from their caches). ``random_init=True`` skips all of that. ``body_only`` accepts files
    whose classifier has another number of classes (fine-tuned experts, task2vec checkpoints):
    the body must match exactly, the classifier's weights are ignored.
    """
    check_seed(seed, error=ProbeError)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random init is reproducible and leaves the global RNG alone
        model, strip, config, download = _architecture(name)
    full_keys = set(model.state_dict())
    feature_dim: int | None = None  # set once the classifier is removed
    if random_init:
        source = f"random-init(seed={seed})"
    else:
        path = Path(weights) if weights is not None else find_local_weights(name)
        if path is not None:
            state = load_state_dict_file(path)
            if body_only:
                state = _body_state(state)
                unknown = sorted(set(state) - full_keys)
                if unknown:
                    raise WeightsError(f"weights file {str(path)!r} does not fit {name!r}: unexpected key {unknown[0]!r}")
                feature_dim = strip(model)
                body_keys = set(model.state_dict())
                state = {k: v for k, v in state.items() if k in body_keys}
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise WeightsError(f"weights file {str(path)!r} does not fit {name!r}: {_first_line(exc)}") from exc
            source = str(path)
        elif pretrained is False:
            raise WeightsError(
                f"no weights for {name!r}: pass --weights FILE or set {WEIGHTS_ENV} to a folder "
                f"holding {name}*.safetensors (random weights only with random_init=True)")
        else:
            model = _download(name, download)
            source = "pretrained-download"
    weights_hash = state_dict_hash(model.state_dict())
    if feature_dim is None:
        feature_dim = strip(model)
    return Network(name, model, feature_dim, config, source, weights_hash)


def normalize_batch(batch: torch.Tensor, config: DataConfig, device: torch.device) -> torch.Tensor:
    """uint8 NCHW batch -> float on ``device``, normalised with the model's mean/std (channels_last on CUDA)."""
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
    x = (batch.to(device, non_blocking=True).float() / 255.0 - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


class Probe:
    """A frozen feature extractor in eval mode plus what is needed to feed it.

    Attributes: ``name``, ``model`` (images -> penultimate features), ``feature_dim``,
    ``config`` (:class:`DataConfig`), ``weights_hash``, ``weights_source``, ``device``.
    """

    def __init__(self, name: str, model: nn.Module, feature_dim: int, config: DataConfig,
                 weights_hash: str, weights_source: str, device: torch.device):
        self.name = name
        self.model = model.eval().requires_grad_(False).to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.feature_dim = feature_dim
        self.config = config
        self.weights_hash = weights_hash
        self.weights_source = weights_source
        self.device = device

    @classmethod
    def create(cls, name: str = PROBE, weights: str | os.PathLike | None = None, *,
               pretrained: bool | None = None, random_init: bool = False, seed: int = 0,
               image_size: int | None = None, device: str | torch.device = "auto") -> "Probe":
        """Build a probe.

        Weights are taken, in order, from ``weights`` (a .safetensors/.pth file), from
        ``$TASK2VEC_WEIGHTS/<name>*.safetensors|.pth``, then downloaded through
        torchvision/timm (unless ``pretrained=False``). ``random_init=True`` skips all of
        that (for tests only). ``image_size`` overrides the model's resolution.
        """
        if image_size is not None:
            integer(image_size, "image_size", low=32, error=ProbeError)
        device = resolve_device(device)
        net = build_network(name, weights, pretrained=pretrained, random_init=random_init, seed=seed)
        config = net.config if image_size is None else replace(net.config, input_size=int(image_size))
        return cls(name, net.body, net.feature_dim, config, net.weights_hash, net.weights_source, device)

    def layers(self) -> list[tuple[str, nn.Module]]:
        """The body's convolutions and linear layers, in module order (the embedding's layout)."""
        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def transform(self, image) -> torch.Tensor:
        """PIL image (or CHW tensor) -> resized, centre-cropped uint8 CHW tensor."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        cfg = self.config
        x = TF.pil_to_tensor(image) if not isinstance(image, torch.Tensor) else image
        if x.dtype.is_floating_point:
            x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        mode = InterpolationMode(cfg.interpolation) if cfg.interpolation in ("bilinear", "bicubic", "nearest") \
            else InterpolationMode.BILINEAR
        x = TF.resize(x, int(cfg.input_size / cfg.crop_pct), interpolation=mode, antialias=True)
        return TF.center_crop(x, [cfg.input_size, cfg.input_size]).contiguous()

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW batch -> float, normalised, on the probe's device."""
        return normalize_batch(batch, self.config, self.device)

    def describe(self) -> dict:
        return {"name": self.name, "weights_hash": self.weights_hash, "weights_source": self.weights_source,
                "input_size": self.config.input_size, "feature_dim": self.feature_dim}

    def __repr__(self) -> str:
        return f"Probe({self.name!r}, weights_hash={self.weights_hash!r}, input_size={self.config.input_size})"
