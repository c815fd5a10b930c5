"""Fine-tuning checkpoints: written atomically, read with ``weights_only=True`` and checked, and a checkpoint's body
exported as ``.safetensors`` (what a zoo entry's ``checkpoint`` holds)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..io import atomic_open


CHECKPOINT_FORMAT = "task2vec.finetune/1"


def save_checkpoint(path: Path, ckpt: dict[str, Any]) -> None:
    """Write a checkpoint atomically (plain tensors and containers only)."""
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a task2vec fine-tuning checkpoint with ``weights_only=True``; anything else is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or a pickle with code in it
        raise CheckpointError(f"{str(path)!r} is not a task2vec checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a task2vec fine-tuning checkpoint (no {CHECKPOINT_FORMAT!r} format)")
    return ckpt


def export_weights(checkpoint: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write the body of a fine-tuned model as ``.safetensors`` (the architecture's own key names).

    This is what a zoo entry's ``checkpoint`` holds: :func:`task2vec.backbones.models.create_body` loads it
    into the same architecture, with a new classifier for the next task.
    """
    from safetensors.torch import save

    ckpt = load_checkpoint(checkpoint)
    body = {k[len("body."):]: v.contiguous() for k, v in ckpt["model_state"].items() if k.startswith("body.")}
    if not body:
        raise CheckpointError(f"{str(checkpoint)!r} holds no body weights")
    path = Path(path)
    with atomic_open(path, "wb") as f:
        f.write(save(body, metadata={"format": "task2vec.body/1", "arch": str(ckpt["arch"]),
                                     "classes": json.dumps(ckpt["classes"])}))
    return path
