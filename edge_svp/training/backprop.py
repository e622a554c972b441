"""The baseline: ordinary end-to-end backprop of the same blocks, with one optimizer over
everything and the classifier a user would write (train.bp_head "standard": global average
pooling and a linear layer, SVPNetwork.classifier), or, for ablations, the last block's SVP
head on its fixed projection ("svp").

To the training step (step.py) backprop is one block: the whole chain of blocks, whose
local objective is the classifier's cross-entropy. With `recompute`, each block's
activations are recomputed in the backward pass instead of kept (torch.utils.checkpoint):
the honest memory baseline for a local method.
"""

from contextlib import contextmanager, nullcontext
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from edge_svp.svp import LocalOutput
from edge_svp.training.evaluation import evaluate
from edge_svp.training.schedule import Schedule

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def has_batchnorm(module: nn.Module) -> bool:
    """Does `module` normalise by batch statistics? Then a micro-batch is normalised alone:
    gradient accumulation does not give it the whole batch's statistics."""
    return any(isinstance(m, BATCHNORMS) for m in module.modules())


@contextmanager
def running_statistics_kept(module: nn.Module):
    """The running statistics of `module`'s BatchNorm layers as they were before: a
    recomputed forward pass must not count its batch a second time. (Turning the statistics
    off instead would change which tensors the recomputation saves.)"""
    buffers = [b for m in module.modules() if isinstance(m, BATCHNORMS) for b in m.buffers()]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)


class EndToEnd(nn.Module):
    """The blocks as one chain, optionally recomputing each block's activations in backward."""

    def __init__(self, blocks: nn.ModuleList, recompute: bool):
        super().__init__()
        self.blocks, self.recompute = blocks, recompute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.recompute:
                x = checkpoint(block, x, use_reentrant=False, context_fn=partial(_contexts, block))
            else:
                x = block(x)
        return x


def _contexts(block: nn.Module):
    """The contexts of a checkpointed block's first forward pass and of its recomputation."""
    return nullcontext(), running_statistics_kept(block)


class ClassifierLoss(nn.Module):
    """Cross-entropy of a classifier on the chain's output: backprop's objective."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, h: torch.Tensor, v_ref, y: torch.Tensor) -> LocalOutput:
        logits = self.classifier(h)
        loss = F.cross_entropy(logits, y)
        return LocalOutput(loss=loss, logits=logits.detach(), v=None, terms={"ce": loss.detach()})


class SVPHeadClassifier(nn.Module):
    """The last block's SVP head as a classifier (train.bp_head = "svp", for ablations)."""

    def __init__(self, objective: nn.Module):
        super().__init__()
        self.objective = objective

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.objective.classify(h)


def backprop_step(net, recompute: bool) -> tuple[nn.Module, nn.Module, list]:
    """(module, objective, parameters) of backprop as one training step: the chain of blocks,
    the cross-entropy of the network's classifier, and everything both train."""
    if net.classifier is not None:
        classifier, head = net.classifier, net.classifier
    else:
        classifier, head = SVPHeadClassifier(net.objectives[-1]), net.objectives[-1].head
    params = [p for b in net.blocks for p in b.parameters()] + list(head.parameters())
    return EndToEnd(net.blocks, recompute), ClassifierLoss(classifier), params


class Backprop(Schedule):
    """The baseline: the blocks as one chain, one optimizer, the standard classifier."""

    name = "end-to-end"
    tag = "bp"
    method = "bp"
    label = "backprop"
    local = False
    follows_budget = False  # a target's budget is SVP's; backprop is planned on request

    def classifier(self, train) -> bool:
        return train.bp_head == "standard"

    def probe_copies_every_block(self) -> bool:
        return True

    def plan(self, planner, net):
        return planner.plan_end_to_end(net)

    def train(self, ctx) -> None:
        net = ctx.net
        step = ctx.plan.blocks[0]  # its micro-batch, and whether it recomputes activations
        trainer = ctx.trainer(len(net), *backprop_step(net, step.recompute_activations))

        def micro_step(batch, share) -> None:
            x, y = batch
            trainer.micro_step(x, None, y, share)

        def test() -> list:  # only the network's prediction is trained
            return evaluate(net, ctx.data, ctx.eval_batch(step.micro_batch))[-1:]

        with ctx.meter.section():
            ctx.run_epochs([trainer], step.micro_batch, micro_step, test)

    def trained_heads(self, accuracies):
        return [None] * (len(accuracies) - 1) + accuracies[-1:]

    def planned_modules(self, net):
        return [net.blocks]
