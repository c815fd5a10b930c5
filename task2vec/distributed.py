"""The process group as embedding and fine-tuning see it: rank, world size, collectives, shards.

``torchrun --nproc-per-node N -m task2vec ...`` starts N processes with ``RANK``/``WORLD_SIZE`` set;
:func:`init_from_env` joins them into one ``torch.distributed`` group (NCCL on CUDA, gloo on CPU).
Outside a group (or in a group of one) every helper is the single-process identity, so the same
code path serves both. Collectives go through the tensors' communication device (CUDA for NCCL,
CPU for gloo) and come back on the caller's device. The Ray helpers at the end serve the task-parallel
side (zoo builds, benchmark sweeps): a session, a task's resource request, results as they finish.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from .errors import UsageError

TIMEOUT = timedelta(minutes=30)  # a rank that waits longer than this for the others fails instead of hanging


def active() -> bool:
    """Whether this process is in an initialised group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes in the group (1 outside one)."""
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank (0 outside a group)."""
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Whether this process is the one that writes files and prints (rank 0)."""
    return rank() == 0


def init_from_env(device: str = "auto") -> str:
    """Join the group ``torchrun`` describes in the environment; return the device this rank uses.

    Without ``WORLD_SIZE`` > 1 (a plain start) nothing happens and ``device`` is returned as given.
    Under torchrun, ``auto`` and ``cuda`` become ``cuda:LOCAL_RANK`` (NCCL) when CUDA is present,
    else ``cpu`` (gloo); an explicit ``cuda:i`` is refused, since each rank needs its own GPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if device.startswith("cuda:"):
        raise UsageError(f"--device {device} under torchrun: give 'cuda' or 'auto' (each rank takes its LOCAL_RANK's GPU)")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available")
    local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT,
                                device_id=local if cuda else None)
    return str(local)


def _comm_device() -> torch.device:
    """Where the backend wants tensors: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``t`` over all ranks (a new tensor on ``t``'s device; ``t`` itself outside a group)."""
    if not active():
        return t
    buf = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``t`` on every rank (same shape and dtype everywhere)."""
    if not active():
        return t
    buf = t.detach().to(_comm_device(), copy=True).contiguous()
    dist.broadcast(buf, src=src)
    return buf.to(t.device)


def decide(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank: one decision (stop, skip) taken together."""
    return bool(broadcast(torch.tensor([int(flag)], dtype=torch.int64)).item())


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` concatenated along dim 0 in rank order; ranks may hold different row counts."""
    if not active():
        return t
    dev = _comm_device()
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[:t.shape[0]] = t.detach().to(dev)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(t.device)


def shard_batches(n: int, batch_size: int) -> np.ndarray:
    """This rank's positions among ``n`` items cut into batches of ``batch_size``: whole batches, dealt
    round-robin (batch b to rank b mod world size). Every rank's batches are exactly the batches one
    process would form, so a per-batch computation gives the same numbers however many ranks share it."""
    batch = np.arange(n) // batch_size
    return np.flatnonzero(batch % world_size() == rank())


def barrier() -> None:
    """Wait for every rank (nothing outside a group)."""
    if active():
        dist.barrier()


# ----------------------------------------------------------------------------- Ray (the `distributed` extra)
RAY_MISSING = "needs Ray: pip install 'task2vec[distributed]'"


def require_ray(what: str, error: type[Exception] = UsageError) -> Any:
    """The ``ray`` module; ``error(f"{what} needs Ray: pip install ...")`` where it is not installed."""
    try:
        import ray
    except ImportError:
        raise error(f"{what} {RAY_MISSING}") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str, what: str, error: type[Exception] = UsageError) -> Iterator[Any]:
    """The ``ray`` module joined to the cluster at ``address`` (``""``: a local Ray started here), or to the one
    this process already joined (left running then); :func:`require_ray`'s error where Ray is not installed."""
    ray = require_ray(what, error)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or None, log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def ray_resources(ray: Any) -> dict[str, float]:
    """One task's request: a GPU (and a CPU) where the cluster has GPUs, else a CPU."""
    return {"num_gpus": 1, "num_cpus": 1} if ray.cluster_resources().get("GPU", 0) > 0 else {"num_cpus": 1}


def as_completed(ray: Any, tasks: dict[Any, Any], *, progress: bool = True,
                 desc: str = "tasks") -> Iterator[tuple[Any, Any, str | None]]:
    """``(key, result, None)`` or ``(key, None, error line)`` for each of ``tasks`` (Ray object ref -> key) as it
    finishes, with a progress bar over the finished ones: a failed task does not stop the others."""
    from tqdm.auto import tqdm

    waiting = dict(tasks)
    with tqdm(total=len(waiting), desc=desc, unit="task", disable=not progress) as bar:
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1)
            key = waiting.pop(done[0])
            bar.update(1)
            try:
                result = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - the task's own error, handed to the caller as one line
                cause = getattr(exc, "cause", None) or exc
                yield key, None, f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[-1]}"
                continue
            yield key, result, None
