"""Joint schedule: every batch flows through all blocks; each block steps on its local loss
right after its own forward, so only one block's autograd graph is alive at a time.

Under a memory plan a batch is split into micro-batches whose gradients accumulate; each
block steps once per batch, as without a plan.
"""

import time

import torch

from edge_svp.training.common import (
    BatchStats,
    evaluate,
    make_lr_schedule,
    make_optimizer,
    micro_steps,
)
from edge_svp.training.precision import autocast, grad_scaler


def train_joint(net, data, train, optim, reporter, on_epoch, plan, meter, memory, state) -> None:
    n_blocks = len(net)
    micro_batch = plan.blocks[0].micro_batch
    steps = -(-data.num_train() // train.batch_size)
    optimizers = [make_optimizer(net.trainable_parameters(i), optim) for i in range(n_blocks)]
    schedules = [make_lr_schedule(o, optim, steps * train.epochs) for o in optimizers]
    scalers = [grad_scaler(train.precision, data.device) for _ in optimizers]
    order = torch.Generator().manual_seed(train.seed)
    blocks = list(range(1, n_blocks + 1))
    with meter.section():
        for epoch in state.epochs(0, train.epochs, order, optimizers, schedules, blocks, scalers):
            start = time.perf_counter()
            net.train()
            stats = [BatchStats() for _ in range(n_blocks)]
            epoch_steps = state.remaining(
                list(micro_steps(data.num_train(), train.batch_size, micro_batch, order)), stats
            )
            for idx, share, last in reporter.track(epoch_steps, len(epoch_steps), f"epoch {epoch}"):
                x, y = data.batch("train", idx, train=True)
                h, v_ref = x, net.reference(x)
                for i in range(n_blocks):
                    with autocast(train.precision, data.device):
                        # detach: the block boundary; no gradient reaches the previous block
                        h = net.blocks[i](h.detach())
                        out = net.objectives[i](h, v_ref, y)
                    scalers[i].scale(out.loss * share).backward()
                    stats[i].update(out.loss, out.logits, y)
                    v_ref = out.v
                if last:
                    state.step()
            test = evaluate(net, data, min(train.eval_batch_size, micro_batch))
            seconds = time.perf_counter() - start
            lr = schedules[0].get_last_lr()[0]
            on_epoch(
                [
                    s.record(
                        block=i + 1, epoch=epoch, test_accuracy=test[i], seconds=seconds, lr=lr
                    )
                    for i, s in enumerate(stats)
                ]
            )
