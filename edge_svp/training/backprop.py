"""The baseline: ordinary end-to-end backprop of the same blocks, classified by the last
block's head (on its fixed projection), with one optimizer over everything.

With `checkpointing`, each block's activations are recomputed in the backward pass instead
of kept (torch.utils.checkpoint): the honest memory baseline for a local method.
"""

import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from edge_svp.data import batches
from edge_svp.training.common import BatchStats, evaluate
from edge_svp.training.precision import BlockStep


def _forward(net, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    for block in net.blocks:
        x = checkpoint(block, x, use_reentrant=False) if checkpointing else block(x)
    return net.objectives[-1].classify(x)


def train_backprop(net, data, train, optim, reporter, on_epoch, plan, meter, memory) -> None:
    steps = -(-data.num_train() // train.batch_size)
    params = [p for b in net.blocks for p in b.parameters()]
    params += list(net.objectives[-1].head.parameters())
    stepper = BlockStep(params, optim, steps * train.epochs, train.precision, data.device)
    order = torch.Generator().manual_seed(train.seed)
    last = len(net)
    with meter.section():
        for epoch in range(1, train.epochs + 1):
            start = time.perf_counter()
            net.train()
            stats = BatchStats()
            for idx in reporter.track(
                batches(data.num_train(), train.batch_size, True, order), steps, f"epoch {epoch}"
            ):
                x, y = data.batch("train", idx, train=True)
                with stepper.autocast():
                    logits = _forward(net, x, train.checkpointing)
                    loss = F.cross_entropy(logits, y)
                stepper.backward(loss)
                stepper.step()
                stats.update(loss, logits.detach(), y)
            test = evaluate(net, data, min(train.eval_batch_size, train.batch_size))[-1]
            seconds = time.perf_counter() - start
            lr = stepper.lr
            on_epoch([stats.record(block=last, epoch=epoch, test_accuracy=test,
                                   seconds=seconds, lr=lr)])  # fmt: skip
