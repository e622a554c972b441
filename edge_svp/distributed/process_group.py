"""A rank's device and its process groups: the stream between stages (gloo, or NCCL on a
GPU of its own), bookkeeping on gloo, and a stage's data-parallel replicas."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from edge_svp.device import resolve_device
from edge_svp.distributed import SETUP_SECONDS
from edge_svp.distributed.stages import Layout
from edge_svp.errors import EdgeSVPError


def rank_device(name: str) -> tuple[torch.device, str]:
    """This rank's device and the communication backend of its stream: NCCL on a GPU of its
    own, else gloo."""
    device = resolve_device(name)
    if device.type != "cuda":
        return device, "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    count = torch.cuda.device_count()
    if local_world > count:
        raise EdgeSVPError(
            f"NCCL needs a GPU for each process: {local_world} processes on this machine, "
            f"{count} GPU(s); use fewer processes, or --device cpu (gloo)"
        )
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device, "nccl"


def join(rank: int, world: int, timeout: float):
    """Join the process group; returns the store this run's ranks share."""
    setup = timedelta(seconds=max(SETUP_SECONDS, timeout))
    store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=setup))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=setup)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun may restart a run
    return dist.PrefixStore(f"edge_svp/{attempt}", store)


def groups(layout: Layout, rank: int, comm: str, timeout: float):
    """(stream, control, replicas): point-to-point on `comm` (gloo or NCCL), bookkeeping on
    gloo, and the stage's replicas (None without replicas), each with `timeout`."""
    limit = timedelta(seconds=timeout)
    stream = dist.new_group(backend=comm, timeout=limit)
    control = dist.new_group(backend="gloo", timeout=limit)
    replicas = None
    if layout.replicas > 1:  # every rank creates every group, in the same order
        for s in range(layout.stages):
            group = dist.new_group(layout.stage_ranks(s), backend=comm, timeout=limit)
            replicas = group if s == layout.stage(rank) else replicas
    return stream, control, replicas
