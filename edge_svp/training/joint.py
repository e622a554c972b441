"""Joint schedule: every batch flows through all blocks; each block steps on its local loss
right after its own forward, so only one block's autograd graph is alive at a time.

Under a memory plan a batch is split into micro-batches whose gradients accumulate; each
block steps once per batch, as without a plan.
"""

import time

import torch

from edge_svp.training.common import BatchStats, evaluate, micro_steps
from edge_svp.training.precision import BlockStep


def train_joint(net, data, train, optim, reporter, on_epoch, plan, meter, memory) -> None:
    n_blocks = len(net)
    micro_batch = plan.blocks[0].micro_batch
    steps = -(-data.num_train() // train.batch_size)
    steppers = [
        BlockStep(net.trainable_parameters(i), optim, steps * train.epochs, train.precision,
                  data.device)
        for i in range(n_blocks)
    ]  # fmt: skip
    order = torch.Generator().manual_seed(train.seed)
    with meter.section():
        for epoch in range(1, train.epochs + 1):
            start = time.perf_counter()
            net.train()
            stats = [BatchStats() for _ in range(n_blocks)]
            epoch_steps = list(micro_steps(data.num_train(), train.batch_size, micro_batch, order))
            for idx, share, last in reporter.track(epoch_steps, len(epoch_steps), f"epoch {epoch}"):
                x, y = data.batch("train", idx, train=True)
                h, v_ref = x, net.reference(x)
                for i in range(n_blocks):
                    with steppers[i].autocast():
                        # detach: the block boundary; no gradient reaches the previous block
                        h = net.blocks[i](h.detach())
                        out = net.objectives[i](h, v_ref, y)
                    steppers[i].backward(out.loss * share)
                    stats[i].update(out.loss, out.logits, y)
                    v_ref = out.v
                if last:
                    for stepper in steppers:
                        stepper.step()
            test = evaluate(net, data, min(train.eval_batch_size, micro_batch))
            seconds = time.perf_counter() - start
            lr = steppers[0].lr
            on_epoch(
                [
                    s.record(
                        block=i + 1, epoch=epoch, test_accuracy=test[i], seconds=seconds, lr=lr
                    )
                    for i, s in enumerate(stats)
                ]
            )
