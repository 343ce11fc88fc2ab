"""torch.distributed in a few helpers, with single-process defaults (after mosaicml/streaming's `distributed.py`).

`torchrun` sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous variables); without them this is one process
of a world of one, and `barrier` / `all_gather_object` do nothing. The backend is nccl on CUDA, gloo on CPU.
"""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from .constants import DISTRIBUTED_TIMEOUT_S
from .model import pick_device


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
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init(world: World, device: torch.device) -> bool:
    """Join the process group when launched by torchrun with more than one process; True if this call joined."""
    if world.size == 1 or is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    # a rank may wait long at a barrier (rank 0 alone writes the shards): the default 30 minutes is too short
    torch.distributed.init_process_group(backend, timeout=timedelta(seconds=DISTRIBUTED_TIMEOUT_S))
    return True


def destroy() -> None:
    if is_initialized():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        torch.distributed.barrier()


def all_gather_object(obj) -> list:
    if not is_initialized():
        return [obj]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s object on every rank (e.g. an error message, so that all ranks stop together)."""
    if not is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def device_for(world: World, requested: str | None) -> torch.device:
    """Each rank on its own GPU (LOCAL_RANK); a requested device is taken as given, once checked (`pick_device`)."""
    if requested:
        return pick_device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def share_cores() -> None:
    """For the command line, never the library: CPU ranks of one machine split its cores between them, so that
    torchrun's processes do not each start a thread per core."""
    world = world_from_env()
    if world.local_size > 1 and not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_size))
