"""Joint schedule: every batch flows through all blocks; each block steps on its local loss
right after its own forward, so only one block's autograd graph is alive at a time.

Under a memory plan a batch is split into micro-batches whose gradients accumulate; each
block steps once per batch, as without a plan.
"""

from edge_svp.training.evaluation import evaluate
from edge_svp.training.schedule import Schedule


class Joint(Schedule):
    name = tag = "joint"
    method = "svp"
    label = "SVP joint"
    pipelines = True  # every block steps on every batch: stages can stream it
    shared_peak = True  # all blocks train at once: one section of the meter

    def plan(self, planner, net):
        return planner.plan_svp(net, all_resident=True)

    def train(self, ctx) -> None:
        net = ctx.net
        micro_batch = ctx.plan.blocks[0].micro_batch
        trainers = [ctx.block_trainer(i) for i in range(len(net))]

        def micro_step(batch, share) -> None:
            x, y = batch
            h, v_ref = x, net.reference(x)
            for trainer in trainers:
                h, out = trainer.micro_step(h, v_ref, y, share)
                v_ref = out.v

        def test() -> list:
            return evaluate(net, ctx.data, ctx.eval_batch(micro_batch))

        with ctx.meter.section():
            ctx.run_epochs(trainers, micro_batch, micro_step, test)

    def measured_peaks(self, peaks, plan):
        return peaks * len(plan.blocks)  # one measurement for the whole run (shared_peak)
