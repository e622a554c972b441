"""Layerwise schedule: train block 1 to completion, freeze it, cache its outputs, train
block 2 on the cache, and so on. Only one block trains at a time.

The cache here lives in host memory as float32; block 1 sees live (augmented) data, later
blocks see the frozen prefix's outputs on un-augmented data.
"""

import time

import torch

from edge_svp.data import batches
from edge_svp.train.common import BatchStats, make_lr_schedule, make_optimizer


@torch.no_grad()
def _forward_split(net, data, index, cached, split, batch_size) -> torch.Tensor:
    """Outputs of frozen block `index` on a whole split, kept on the host."""
    n = len(getattr(data.dataset, f"y_{split}"))
    outs = []
    for idx in batches(n, batch_size, shuffle=False):
        x = cached[idx].to(data.device) if cached is not None else data.batch(split, idx, False)[0]
        outs.append(net.blocks[index](x).cpu())
    return torch.cat(outs)


@torch.no_grad()
def _head_accuracy(net, index, data, cached_test, batch_size) -> float:
    correct, n = 0, len(data.dataset.y_test)
    for idx in batches(n, batch_size, shuffle=False):
        if cached_test is None:
            x, y = data.batch("test", idx, train=False)
        else:
            x, y = cached_test[idx].to(data.device), data.dataset.y_test[idx].to(data.device)
        logits = net.objectives[index].classify(net.blocks[index](x))
        correct += int((logits.argmax(-1) == y).sum())
    return correct / n


def train_layerwise(net, data, train, optim, reporter, on_epoch) -> None:
    steps = -(-data.num_train() // train.batch_size)
    order = torch.Generator().manual_seed(train.seed)
    cache = {"train": None, "test": None}  # outputs of the frozen prefix
    for i in range(len(net)):
        block, objective = net.blocks[i], net.objectives[i]
        optimizer = make_optimizer(net.trainable_parameters(i), optim)
        schedule = make_lr_schedule(optimizer, optim, steps * train.epochs)
        for epoch in range(1, train.epochs + 1):
            start = time.perf_counter()
            block.train()
            objective.train()
            stats = BatchStats()
            label = f"block {i + 1} epoch {epoch}"
            for idx in reporter.track(
                batches(data.num_train(), train.batch_size, True, order), steps, label
            ):
                if cache["train"] is None:
                    x, y = data.batch("train", idx, train=True)
                    v_ref = net.reference(x)
                else:
                    x = cache["train"][idx].to(data.device)
                    y = data.dataset.y_train[idx].to(data.device)
                    with torch.no_grad():
                        v_ref = net.objectives[i - 1].project(x)
                out = objective(block(x), v_ref, y)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                schedule.step()
                stats.update(out.loss, out.logits, y)
            block.eval()
            objective.eval()
            test = _head_accuracy(net, i, data, cache["test"], train.eval_batch_size)
            seconds = time.perf_counter() - start
            lr = schedule.get_last_lr()[0]
            on_epoch([stats.record(block=i + 1, epoch=epoch, test_accuracy=test,
                                   seconds=seconds, lr=lr)])  # fmt: skip
        block.requires_grad_(False)  # frozen from here on
        if i + 1 < len(net):
            for split in ("train", "test"):
                cache[split] = _forward_split(
                    net, data, i, cache[split], split, train.eval_batch_size
                )
    net.requires_grad_(True)
