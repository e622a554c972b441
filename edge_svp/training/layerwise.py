"""Layerwise schedule, run as a MemoryPlan says: train block 1 to completion, freeze it,
cache its outputs, train block 2 on the cache, and so on.

Only the block in training (with its head, its optimizer and one micro-batch) is on the
device; frozen blocks go back to the host. Each block's outputs go to an ActivationCache on
the device, in host RAM or on disk, and stream back with a prefetching thread. With
`recompute`, the frozen prefix runs again on every batch instead, which keeps data
augmentation live for every block. Memory is released between blocks, and each block's
peak is measured.
"""

import time

import torch

from edge_svp.data import batches
from edge_svp.memory import release_memory
from edge_svp.memory.activation_cache import ActivationCache
from edge_svp.training.common import BatchStats, micro_steps
from edge_svp.training.precision import BlockStep


class BlockInputs:
    """Inputs, references and labels for block `index`, from wherever the plan put them."""

    def __init__(self, net, data, index: int, source: str, caches: dict):
        self.net, self.data, self.index = net, data, index
        self.source, self.caches = source, caches

    @torch.no_grad()
    def _prefix(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.net.blocks[: self.index]:
            x = block(x)
        return x

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.index == 0:
                return self.net.reference(x)
            return self.net.objectives[self.index - 1].project(x)

    def stream(self, split: str, chunks: list[torch.Tensor], train: bool):
        """(x, v_ref, y) for each index chunk, in order."""
        labels = getattr(self.data.dataset, f"y_{split}")
        if self.source in ("data", "recompute"):
            for idx in chunks:
                x, y = self.data.batch(split, idx, train=train)
                x = self._prefix(x) if self.source == "recompute" else x
                yield x, self._reference(x), y
            return
        for idx, x in self.caches[split].stream(chunks):
            yield x, self._reference(x), labels[idx].to(self.data.device)


@torch.no_grad()
def _fill_cache(block, inputs: BlockInputs, split, plan, memory, device, out_shape):
    n = len(getattr(inputs.data.dataset, f"y_{split}"))
    cache = ActivationCache(
        n, out_shape, plan.output_cache, memory.cache_dtype, device, memory.cache_dir
    )
    chunks = list(batches(n, plan.micro_batch, shuffle=False))
    start = 0
    for x, _, _ in inputs.stream(split, chunks, train=False):
        out = block(x)
        cache.write(start, out)
        start += len(out)
    return cache


@torch.no_grad()
def _head_accuracy(net, index, inputs: BlockInputs, micro_batch: int) -> float:
    n = len(inputs.data.dataset.y_test)
    correct = 0
    for x, _, y in inputs.stream("test", list(batches(n, micro_batch, False)), train=False):
        logits = net.objectives[index].classify(net.blocks[index](x))
        correct += int((logits.argmax(-1) == y).sum())
    return correct / n


def train_layerwise(net, data, train, optim, reporter, on_epoch, plan, meter, memory) -> None:
    device = data.device
    order = torch.Generator().manual_seed(train.seed)
    net.to("cpu")  # everything waits on the host; each block comes to the device for its turn
    net.input_projection.to(device)
    caches: dict = {}
    for i, block_plan in enumerate(plan.blocks):
        block, objective = net.blocks[i], net.objectives[i]
        with meter.section():
            block.to(device)
            objective.to(device)
            if i:
                net.objectives[i - 1].to(device)  # its projection makes the reference
            if block_plan.input_source == "recompute":
                net.blocks[:i].to(device)
            inputs = BlockInputs(net, data, i, block_plan.input_source, caches)
            _train_block(net, i, inputs, train, optim, reporter, on_epoch, block_plan, order)
            block.requires_grad_(False)  # frozen from here on
            block.eval()
            if block_plan.output_cache:
                shape = plan.costs[i].output_shape
                new = {
                    split: _fill_cache(block, inputs, split, block_plan, memory, device, shape)
                    for split in ("train", "test")
                }
                for cache in caches.values():
                    cache.close()
                caches = new
            net.blocks[: i + 1].to("cpu")
            net.objectives[: i + 1].to("cpu")
            del inputs
            release_memory(device)
    for cache in caches.values():
        cache.close()
    net.to(device)
    net.requires_grad_(True)


def _train_block(net, i, inputs, train, optim, reporter, on_epoch, block_plan, order) -> None:
    block, objective = net.blocks[i], net.objectives[i]
    n = len(inputs.data.dataset.y_train)
    steps_per_epoch = -(-n // train.batch_size)
    stepper = BlockStep(net.trainable_parameters(i), optim, steps_per_epoch * train.epochs,
                        train.precision, inputs.data.device)  # fmt: skip
    for epoch in range(1, train.epochs + 1):
        start = time.perf_counter()
        block.train()
        objective.train()
        stats = BatchStats()
        steps = list(micro_steps(n, train.batch_size, block_plan.micro_batch, order))
        stream = inputs.stream("train", [idx for idx, _, _ in steps], train=True)
        label = f"block {i + 1} epoch {epoch}"
        for (x, v_ref, y), (_, share, last) in reporter.track(
            zip(stream, steps, strict=True), len(steps), label
        ):
            with stepper.autocast():
                out = objective(block(x), v_ref, y)
            stepper.backward(out.loss * share)
            stats.update(out.loss, out.logits, y)
            if last:
                stepper.step()
        block.eval()
        objective.eval()
        test = _head_accuracy(net, i, inputs, block_plan.micro_batch)
        seconds = time.perf_counter() - start
        lr = stepper.lr
        on_epoch([stats.record(block=i + 1, epoch=epoch, test_accuracy=test,
                               seconds=seconds, lr=lr)])  # fmt: skip
