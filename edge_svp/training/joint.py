"""Joint schedule: every batch flows through all blocks; each block steps on its local loss
right after its own forward, so only one block's autograd graph is alive at a time.

Under a memory plan a batch is split into micro-batches whose gradients accumulate; each
block steps once per batch, as without a plan.
"""

import time

import torch

from edge_svp.training.common import MicroSteps, evaluate
from edge_svp.training.context import TrainContext


def train_joint(ctx: TrainContext) -> None:
    net, data, train = ctx.net, ctx.data, ctx.train
    micro_batch = ctx.plan.blocks[0].micro_batch
    trainers = [ctx.block_trainer(i) for i in range(len(net))]
    order = torch.Generator().manual_seed(train.seed)
    with ctx.meter.section():
        for epoch in ctx.state.epochs(0, train.epochs, order, trainers):
            start = time.perf_counter()
            net.train()
            steps = ctx.state.remaining(
                MicroSteps(data.num_train(), train.batch_size, micro_batch, order)
            )
            for idx, share, last in ctx.reporter.track(steps, len(steps), f"epoch {epoch}"):
                x, y = data.batch("train", idx, train=True)
                h, v_ref = x, net.reference(x)
                for trainer in trainers:
                    h, out = trainer.micro_step(h, v_ref, y, share)
                    v_ref = out.v
                if last:
                    ctx.end_batch(trainers)
            test = evaluate(net, data, min(train.eval_batch_size, micro_batch))
            ctx.end_epoch(trainers, epoch, test, time.perf_counter() - start)
