"""Joint schedule: every batch flows through all blocks; each block steps on its local loss
right after its own forward, so only one block's autograd graph is alive at a time."""

import time

import torch

from edge_svp.data import batches
from edge_svp.train.common import BatchStats, evaluate, make_lr_schedule, make_optimizer


def train_joint(net, data, train, optim, reporter, on_epoch) -> None:
    n_blocks = len(net)
    steps = -(-data.num_train() // train.batch_size)
    optimizers = [make_optimizer(net.trainable_parameters(i), optim) for i in range(n_blocks)]
    schedules = [make_lr_schedule(o, optim, steps * train.epochs) for o in optimizers]
    order = torch.Generator().manual_seed(train.seed)
    for epoch in range(1, train.epochs + 1):
        start = time.perf_counter()
        net.train()
        stats = [BatchStats() for _ in range(n_blocks)]
        for idx in reporter.track(
            batches(data.num_train(), train.batch_size, True, order), steps, f"epoch {epoch}"
        ):
            x, y = data.batch("train", idx, train=True)
            h, v_ref = x, net.reference(x)
            for i in range(n_blocks):
                # detach: the block boundary; no gradient reaches the previous block
                h = net.blocks[i](h.detach())
                out = net.objectives[i](h, v_ref, y)
                optimizers[i].zero_grad(set_to_none=True)
                out.loss.backward()
                optimizers[i].step()
                schedules[i].step()
                stats[i].update(out.loss, out.logits, y)
                v_ref = out.v
        test = evaluate(net, data, train.eval_batch_size)
        seconds = time.perf_counter() - start
        lr = schedules[0].get_last_lr()[0]
        on_epoch(
            [
                s.record(block=i + 1, epoch=epoch, test_accuracy=test[i], seconds=seconds, lr=lr)
                for i, s in enumerate(stats)
            ]
        )
