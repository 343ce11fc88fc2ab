"""torch.distributed in a few helpers, with single-process defaults (after mosaicml/streaming's `distributed.py`).

`torchrun` sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous variables); another launcher may set RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT per process. Without them this is one process of a world of one, and
`barrier` / `all_gather_object` do nothing. The backend is nccl on CUDA, gloo on CPU. torch is imported where a
process group is used, so a job of one process (an update, a study) does not pay for it.
"""

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

from .constants import DISTRIBUTED_TIMEOUT_S
from .errors import InputError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def my_share(self, items: list) -> list:
        """Round-robin: rank r takes items r, r + size, r + 2 * size, ..."""
        return items[self.rank::self.size]


def world_from_env() -> World:
    env = os.environ
    size = int(env.get("WORLD_SIZE", 1))
    return World(rank=int(env.get("RANK", 0)), size=size, local_rank=int(env.get("LOCAL_RANK", 0)),
                 local_size=int(env.get("LOCAL_WORLD_SIZE", size)))


def is_initialized() -> bool:
    torch = sys.modules.get("torch")  # never imported: no process group
    return torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized()


def init(world: World, device) -> bool:
    """Join the process group when launched with more than one process; True if this call joined."""
    if world.size == 1 or is_initialized():
        return False
    import torch

    backend = "nccl" if device.type == "cuda" else "gloo"
    # a rank may wait long at a barrier (rank 0 alone writes the shards): the default 30 minutes is too short
    torch.distributed.init_process_group(backend, timeout=timedelta(seconds=DISTRIBUTED_TIMEOUT_S))
    return True


def destroy() -> None:
    if is_initialized():
        sys.modules["torch"].distributed.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        sys.modules["torch"].distributed.barrier()


def all_gather_object(obj) -> list:
    if not is_initialized():
        return [obj]
    dist = sys.modules["torch"].distributed
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s object on every rank (e.g. an error message, so that all ranks stop together)."""
    if not is_initialized():
        return obj
    box = [obj]
    sys.modules["torch"].distributed.broadcast_object_list(box, src=src)
    return box[0]


class RankStopped(InputError):
    """Another rank failed: this one stops with its message (no rank waits at a barrier for one that gave up)."""


def on_main(world: World, fn):
    """`fn()` on rank 0 only (every rank calls this at the same point); a failure there stops every rank with its
    message, so none waits at a barrier. Returns rank 0's result (None elsewhere)."""
    failure, result = None, None
    if world.is_main:
        try:
            result = fn()
        except BaseException as error:  # a Ctrl-C too: the other ranks must not wait for this one
            failure = error
    if world.size > 1 and is_initialized():
        message = broadcast_object(None if failure is None else _said(failure))
        if failure is None and message is not None:
            raise RankStopped(f"rank 0 stopped: {message}")
    if failure is not None:
        raise failure
    return result


def together(world: World, fn):
    """`fn()` on every rank; a failure on any stops them all (each rank learns the others' outcome)."""
    failure, result = None, None
    try:
        result = fn()
    except BaseException as error:
        failure = error
    if world.size > 1 and is_initialized():
        said = all_gather_object(None if failure is None else _said(failure))
        others = [(rank, message) for rank, message in enumerate(said) if message is not None and rank != world.rank]
        if failure is None and others:
            raise RankStopped(f"rank {others[0][0]} stopped: {others[0][1]}")
    if failure is not None:
        raise failure
    return result


def _said(error: BaseException) -> str:
    return "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else str(error) or type(error).__name__


def device_for(world: World, requested: str | None):
    """Each rank on its own GPU (LOCAL_RANK); a requested device is taken as given, once checked (`pick_device`)."""
    import torch

    from .model import pick_device

    if requested:
        return pick_device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def share_cores() -> None:
    """For the command line, never the library: CPU ranks of one machine split its cores between them, so that
    torchrun's processes do not each start a thread per core."""
    import torch

    world = world_from_env()
    if world.local_size > 1 and not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_size))
