"""The baseline: ordinary end-to-end backprop of the same blocks, classified by the last
block's head (on its fixed projection), with one optimizer over everything.

With `checkpointing`, each block's activations are recomputed in the backward pass instead
of kept (torch.utils.checkpoint): the honest memory baseline for a local method.
"""

import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from edge_svp.training.common import (
    BatchStats,
    evaluate,
    make_lr_schedule,
    make_optimizer,
    micro_steps,
)
from edge_svp.training.precision import autocast, grad_scaler


def _forward(net, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    for block in net.blocks:
        x = checkpoint(block, x, use_reentrant=False) if checkpointing else block(x)
    return net.objectives[-1].classify(x)


def train_backprop(net, data, train, optim, reporter, on_epoch, plan, meter, memory, state) -> None:
    steps = -(-data.num_train() // train.batch_size)
    params = [p for b in net.blocks for p in b.parameters()]
    params += list(net.objectives[-1].head.parameters())
    optimizer = make_optimizer(params, optim)
    schedule = make_lr_schedule(optimizer, optim, steps * train.epochs)
    scaler = grad_scaler(train.precision, data.device)
    order = torch.Generator().manual_seed(train.seed)
    last = len(net)
    with meter.section():
        for epoch in state.epochs(
            0, train.epochs, order, [optimizer], [schedule], [last], [scaler]
        ):
            start = time.perf_counter()
            net.train()
            stats = BatchStats()
            epoch_batches = state.remaining(
                list(micro_steps(data.num_train(), train.batch_size, train.batch_size, order)),
                [stats],
            )
            for idx, _, _ in reporter.track(epoch_batches, len(epoch_batches), f"epoch {epoch}"):
                x, y = data.batch("train", idx, train=True)
                with autocast(train.precision, data.device):
                    logits = _forward(net, x, train.checkpointing)
                    loss = F.cross_entropy(logits, y)
                scaler.scale(loss).backward()
                stats.update(loss, logits.detach(), y)
                state.step()
            test = evaluate(net, data, min(train.eval_batch_size, train.batch_size))[-1]
            seconds = time.perf_counter() - start
            lr = schedule.get_last_lr()[0]
            on_epoch([stats.record(block=last, epoch=epoch, test_accuracy=test,
                                   seconds=seconds, lr=lr)])  # fmt: skip
