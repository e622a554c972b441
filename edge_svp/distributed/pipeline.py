"""One rank's part of the pipeline: train its blocks on what arrives, pass their output on.

Every rank walks the same batches in the same order (the order follows from the seed, so
no rank needs to be told it). The first stage reads the data; a later stage receives the
previous stage's detached output and the labels, and recomputes from that output the
reference v of the block before its first (a fixed projection, the same numbers the sender
computed). Each stage then trains its blocks exactly as the joint schedule does
(edge_svp/training/joint.py), through the same BlockTrainers (edge_svp/training/step.py):
per micro-batch one local backward per block, per batch one optimizer step per block. A stage uses the outputs of the previous stage's blocks as they
were when it sent them, which is what joint training feeds them too, so a pipeline of
deterministic blocks computes the same weights as a single process. Nothing is sent
backward: a stage waits for its input, never for a later stage.

Data-parallel replicas of a stage each take every R-th example of a batch and sum their
gradients (all-reduce) before each step, so they step on the whole batch's gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.distributed as dist
from torch import nn

from edge_svp.config import TrainConfig
from edge_svp.data import batches
from edge_svp.distributed.stages import Layout
from edge_svp.distributed.stream import Inbox, Outbox, wait
from edge_svp.errors import NumericalFault
from edge_svp.faults import rank_fault
from edge_svp.training.batches import TrainData
from edge_svp.training.optim import block_optim
from edge_svp.training.step import BlockTrainer, StepSettings, step_blocks


@dataclass
class StageContext:
    """Where this rank sits in the pipeline, its links to its neighbours, and what its stage
    trains with: the network (the stage's blocks kept: keep_stage), the data (the first stage
    only) and a BlockTrainer per block."""

    first: int  # the stage's blocks: first .. stop-1
    stop: int
    replica: int
    replicas: int
    inbox: Inbox | None  # None on the first stage, which reads the data
    outbox: Outbox | None  # None on the last stage
    replica_group: object  # the stage's replicas, for the all-reduce; None without replicas
    timeout: float
    fault: object  # called with the micro-step number (edge_svp/distributed/failure.py)
    skip_bad_batches: bool = False
    net: nn.Module | None = None  # an SVPNetwork
    data: TrainData | None = None  # None on a later stage, which receives its input
    trainers: list[BlockTrainer] = field(default_factory=list)
    step: int = 0  # micro-steps done so far
    allreduce_bytes: int = 0
    bad_batches: int = 0  # skipped for NaN or inf

    @property
    def owned(self) -> range:
        return range(self.first, self.stop)

    def counters(self) -> dict:
        """What this rank has sent and all-reduced, and waited for its links, so far."""
        links = [link for link in (self.inbox, self.outbox) if link]
        return {
            "sent_bytes": self.outbox.bytes if self.outbox else 0,
            "allreduce_bytes": self.allreduce_bytes,
            "wait_seconds": sum(link.wait_seconds for link in links),
        }


def keep_stage(net, first: int, stop: int, device: torch.device) -> None:
    """Drop the blocks other stages train and move this stage's part to `device`. Every rank
    builds the whole network from the seed, so the blocks it keeps start as in one process."""
    for i in range(len(net)):
        if first <= i < stop:
            net.blocks[i].to(device)
            net.objectives[i].to(device)
        else:
            net.blocks[i] = nn.Identity()
    reference = net.input_projection if first == 0 else net.objectives[first - 1]
    reference.to(device)


def in_stage(name: str, first: int, stop: int) -> bool:
    """Does state-dict entry `name` of the whole network belong to blocks first..stop-1?"""
    prefixes = tuple(
        f"{part}.{i}." for part in ("blocks", "objectives") for i in range(first, stop)
    )
    return name.startswith(prefixes + (("input_projection.",) if first == 0 else ()))


def stage_state(net, first: int, stop: int) -> dict:
    """This stage's entries of the network's state dict, on the CPU, under the whole
    network's names."""
    return {k: v.cpu() for k, v in net.state_dict().items() if in_stage(k, first, stop)}


def merge_states(parts: list[dict]) -> dict:
    """The stages' state dicts as one, in the order of a whole SVPNetwork's state dict."""
    merged = {}
    for section in ("blocks.", "input_projection.", "objectives."):
        for part in parts:
            merged.update({k: v for k, v in part.items() if k.startswith(section)})
    return merged


def reference(ctx: StageContext, x: torch.Tensor) -> torch.Tensor:
    """The reference v of the stage's first block, made from the stage's input."""
    if ctx.first == 0:
        return ctx.net.reference(x)
    with torch.no_grad():
        return ctx.net.objectives[ctx.first - 1].reference_of(x)


def all_reduce_gradients(params: list[nn.Parameter], ctx: StageContext) -> None:
    """Sum the replicas' gradients: each weighted its examples by their share of the whole
    batch, so the sum is the batch's gradient."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    wait(dist.all_reduce(flat, group=ctx.replica_group, async_op=True), None, ctx.timeout)
    ctx.allreduce_bytes += flat.numel() * flat.element_size()
    for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad = g.view_as(p)


def average_buffers(ctx: StageContext) -> None:
    """Replicas' BatchNorm statistics, averaged, so that every replica evaluates alike."""
    for i in ctx.owned:
        for buffer in ctx.net.blocks[i].buffers():
            if buffer.is_floating_point():
                wait(dist.all_reduce(buffer, group=ctx.replica_group, async_op=True), None,
                     ctx.timeout)  # fmt: skip
                buffer /= ctx.replicas


def stage_trainers(ctx: StageContext, optim, steps_per_epoch: int, train) -> list[BlockTrainer]:
    """A BlockTrainer for each of the stage's blocks, over train.epochs, as
    TrainContext.block_trainer makes one in a single process."""
    net, device = ctx.net, next(ctx.net.parameters()).device
    warmup = round(optim.warmup_epochs * steps_per_epoch)
    return [
        BlockTrainer(i + 1, (net.blocks[i], net.objectives[i], net.trainable_parameters(i)),
                     StepSettings(block_optim(optim, i), steps_per_epoch * train.epochs,
                                  train.precision, device, warmup))
        for i in ctx.owned
    ]  # fmt: skip


def local_steps(ctx: StageContext, x, y, share: float) -> torch.Tensor:
    """Forward and local backward of each of the stage's blocks; the last block's output."""
    h, v_ref = x, reference(ctx, x)
    for trainer in ctx.trainers:
        h, out = trainer.micro_step(h, v_ref, y, share)
        v_ref = out.v
    return h


def warm_up(ctx: StageContext, probe, shared: dict, optim) -> None:
    """A throwaway step of the stage with `optim`'s optimizer, on `probe` (a copy of the
    network, its stage kept) and random input, as rank 0's probe of every block does:
    one-time set-up (tens of MiB on CPU) is then not charged to training."""
    device = next(probe.parameters()).device
    x = torch.randn(2, *shared["block_inputs"][ctx.first], device=device)
    y = torch.randint(0, shared["num_classes"], (2,), device=device)
    throwaway = replace(ctx, net=probe, trainers=[])
    throwaway.trainers = stage_trainers(throwaway, optim, 1, TrainConfig(epochs=1))
    local_steps(throwaway, x, y, 1.0)
    for trainer in throwaway.trainers:
        trainer.step()


def train_epoch(ctx: StageContext, steps, reporter, epoch: int) -> None:
    """One epoch of this stage over `steps` (MicroSteps for this replica); the trainers
    keep the epoch's statistics."""
    net, data, trainers = ctx.net, ctx.data, ctx.trainers
    net.train()
    for trainer in trainers:
        trainer.new_epoch()
    params = [p for t in trainers for p in t.params]
    inputs = ctx.inbox.receive(len(idx) for idx, _, _ in steps) if ctx.inbox else None
    batch = 0
    for idx, share, last in reporter.track(steps, len(steps), f"epoch {epoch}"):
        ctx.fault(ctx.step)
        ctx.step += 1
        if inputs is not None:
            x, y = next(inputs)
        elif len(idx):
            x, y = data.batch("train", idx, train=True)
        if len(idx):
            h = local_steps(ctx, x, y, share)
            if ctx.outbox:
                ctx.outbox.send(h, y)
        if last:
            batch += 1
            if ctx.replica_group is not None:
                all_reduce_gradients(params, ctx)

            def fault(block: int, what: str, batch=batch) -> NumericalFault:
                return NumericalFault(
                    f"NaN or inf in the {what} at block {block}, epoch {epoch}, step {batch}; "
                    "training stopped; lower the learning rate (--lr) or skip such batches "
                    "with --skip-bad-batches"
                )

            ctx.bad_batches += not step_blocks(trainers, ctx.skip_bad_batches, fault)
    if ctx.outbox:
        ctx.outbox.flush()


@torch.no_grad()
def evaluate_stage(ctx: StageContext, num_test: int, batch_size: int) -> list[int]:
    """Correct test predictions of each of this stage's heads, on this replica's share of the
    test batches (every R-th batch)."""
    net, data = ctx.net, ctx.data
    net.eval()

    def mine():  # made as used, twice: their sizes for the inbox, then the batches
        return (idx for j, idx in enumerate(batches(num_test, batch_size, shuffle=False))
                if j % ctx.replicas == ctx.replica)  # fmt: skip

    inputs = ctx.inbox.receive(len(idx) for idx in mine()) if ctx.inbox else None
    correct = [0] * len(ctx.owned)
    for idx in mine():
        h, y = next(inputs) if inputs is not None else data.batch("test", idx, train=False)
        for k, i in enumerate(ctx.owned):
            h = net.blocks[i](h)
            correct[k] += int((net.objectives[i].classify(h).argmax(-1) == y).sum())
        if ctx.outbox:
            ctx.outbox.send(h, y)
    if ctx.outbox:
        ctx.outbox.flush()
    net.train()
    return correct


def stage_context(config, layout: Layout, rank: int, shared, groups, timeout, device):
    """This rank's StageContext: its blocks and its links (`groups`: the stream's, the
    replicas') to the neighbouring stages and its replicas."""
    stream, replica_group = groups
    stage, replica = layout.stage(rank), layout.replica(rank)
    first, stop = shared["stages"][stage]
    inbox = outbox = None
    if stage:
        inbox = Inbox(layout.rank(stage - 1, replica), stream, timeout,
                      shared["block_inputs"][first], device)  # fmt: skip
    if stage < layout.stages - 1:
        outbox = Outbox(layout.rank(stage + 1, replica), stream, timeout)
    return StageContext(first, stop, replica, layout.replicas, inbox, outbox, replica_group,
                        timeout, rank_fault(rank), config.train.skip_bad_batches)  # fmt: skip
