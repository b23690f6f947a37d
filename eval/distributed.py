"""Several eval processes under a launcher (accelerate launch, torchrun): joining the group, and deciding once.

Shared by the CLIP scorer (eval.run, eval.scoring) and the MLLM scorer (eval.llava).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


_joined_gloo = False  # whether this process joined a gloo group (see `exit_process`)


def init_distributed() -> torch.device:
    """Joins the process group a launcher set up (nccl on GPUs, gloo on CPUs); returns this rank's device."""
    global _joined_gloo
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        _joined_gloo = backend == "gloo"
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def decided_on_rank0(decide: Callable[[], Any]) -> Any:
    """`decide()` run on rank 0 alone (it reads, hashes and writes the shared files), its value or its error on
    every rank, so all ranks follow one plan and fail together instead of waiting on each other."""
    rank, world = rank_and_world()
    if world == 1:
        return decide()
    box: list[Any] = [None]
    if rank == 0:
        try:
            box = [("value", decide())]
        except Exception as err:  # re-raised below, on every rank
            box = [("error", err)]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def exit_process(code: int) -> NoReturn:
    """Ends a command: sys.exit, or, after a gloo group, os._exit once the output is flushed.

    gloo's worker threads outlive `destroy_process_group`, and the thread that ran a collective drops its reference
    to that collective's tensors a moment after the caller has seen it complete. If that happens while the
    interpreter finalizes, the thread cannot take the GIL, is unwound inside a noexcept destructor, and
    std::terminate aborts the process ("terminate called without an active exception", exit -6): seen at the end
    of a 2-process CPU eval. Every result is written and closed before this is called.
    """
    if _joined_gloo:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
