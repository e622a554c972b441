"""What the ranks exchange at the end of every epoch, and at the start of a resumed run:
statistics gathered on rank 0, the stages' weights and training state for its checkpoint, and
back from a checkpoint to every rank. Every wait ends after the run's timeout."""

from __future__ import annotations

import torch
import torch.distributed as dist

from edge_svp.distributed.pipeline import in_stage, merge_states, stage_state
from edge_svp.distributed.stages import Layout
from edge_svp.distributed.stream import peer_errors


def gather(obj, control, timeout: float, rank: int) -> list | None:
    """gather_object to rank 0; like every wait, it ends after the timeout."""
    out = [None] * dist.get_world_size(control) if rank == 0 else None
    with peer_errors(None, timeout):
        dist.gather_object(obj, out, dst=0, group=control)
    return out


def barrier(control, timeout: float) -> None:
    with peer_errors(None, timeout):
        dist.barrier(group=control)


def collect_states(net, layout, rank, stages, shapes, control, timeout) -> dict | None:
    """Rank 0 receives the first replica's weights of every other stage, tensor by tensor into
    tensors of known shapes (no copies beyond the weights themselves); returns the whole
    network's state dict on rank 0, None elsewhere."""
    first, stop = stages[layout.stage(rank)]
    if rank and layout.replica(rank) == 0:
        with peer_errors(0, timeout):
            for tensor in stage_state(net, first, stop).values():
                dist.send(tensor.contiguous(), 0, group=control)
    if rank:
        return None
    parts = [stage_state(net, first, stop)]
    for s, (a, b) in enumerate(stages[1:], start=1):
        source, part = layout.rank(s, 0), {}
        with peer_errors(source, timeout):
            for name, (shape, dtype) in shapes.items():
                if in_stage(name, a, b):
                    part[name] = torch.empty(shape, dtype=dtype)
                    dist.recv(part[name], source, group=control)
        parts.append(part)
    return merge_states(parts)


def resume_payloads(checkpoint: dict, layout: Layout, shared: dict) -> list[dict]:
    """What each rank goes on with, from the merged checkpoint (RunWriter.epoch)."""
    training, state = checkpoint["training"], checkpoint["state_dict"]
    payloads = []
    for rank, saved in enumerate(training["ranks"]):
        first, stop = shared["stages"][layout.stage(rank)]
        payloads.append({"state": {k: v for k, v in state.items() if in_stage(k, first, stop)},
                         "trainers": saved["trainers"], "rng": saved["rng"],
                         "order": training["order"], "bad_batches": saved["bad_batches"]})  # fmt: skip
    return payloads


def on_cpu(obj):
    """`obj` (nested dicts, lists and tuples) with every tensor moved to the CPU, for rank 0's
    checkpoint."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(on_cpu(v) for v in obj)
    return obj
