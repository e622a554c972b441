"""What a schedule trains with, in one object: the network and its data, the run's settings,
the memory plan, and where progress, measurements and checkpoints go."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from edge_svp.config import MemoryConfig, OptimConfig, TrainConfig
from edge_svp.memory.meter import MemoryMeter
from edge_svp.memory.plan import MemoryPlan
from edge_svp.progress import Reporter
from edge_svp.training.batches import MicroSteps, TrainData
from edge_svp.training.optim import block_optim, levers_of
from edge_svp.training.state import TrainState
from edge_svp.training.step import BlockTrainer, StepSettings, step_blocks


@dataclass
class TrainContext:
    net: nn.Module  # an SVPNetwork
    data: TrainData
    train: TrainConfig
    optim: OptimConfig
    memory: MemoryConfig
    plan: MemoryPlan
    reporter: Reporter
    on_epoch: Callable[[list[dict]], None] | None  # the caller's hook, after every epoch
    meter: MemoryMeter
    state: TrainState
    # the data order: one permutation per epoch, drawn from the seed (training/state.py)
    order: torch.Generator = field(init=False)

    def __post_init__(self):
        self.order = torch.Generator().manual_seed(self.train.seed)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.data.num_train() // self.train.batch_size)

    def trainer(self, number: int, module, objective, params, optim=None) -> BlockTrainer:
        """A BlockTrainer for block `number` (1-based), its LR schedule (and warm-up) over
        all the epochs it trains, its optimizer holding memory as the plan says."""
        steps = self.steps_per_epoch
        epochs = self.train.epochs_of(number)
        settings = StepSettings(optim or self.optim, steps * epochs, self.train.precision,
                                self.data.device, round(self.optim.warmup_epochs * steps),
                                levers_of(self.optim, self.plan))  # fmt: skip
        return BlockTrainer(number, (module, objective, params), settings)

    def block_trainer(self, i: int) -> BlockTrainer:
        """The trainer of SVP block i (0-based): the block, its objective and its head, at
        its own learning rate (optim.block_lr)."""
        net = self.net
        return self.trainer(i + 1, net.blocks[i], net.objectives[i], net.trainable_parameters(i),
                            block_optim(self.optim, i))  # fmt: skip

    def eval_batch(self, micro_batch: int) -> int:
        """Evaluation at the batch training was planned for, at most: it must fit too."""
        return min(self.train.eval_batch_size, micro_batch)

    def run_epochs(self, trainers, micro_batch: int, micro_step, test, stage: int = 0,
                   feed=None, label: str = "epoch") -> None:  # fmt: skip
        """The epoch skeleton every schedule trains over: the epochs of `stage` still to run
        (training/state.py; as many as its trainers' blocks train, train.epochs_of: a block
        whose epochs are done runs frozen in eval mode), each a shuffled pass in
        micro-batches. `feed` turns the epoch's MicroSteps into (batch, share, last) (default:
        the data's (x, y)); `micro_step(batch, share)` trains on one; `test()` gives the
        trainers' heads' test accuracies at the epoch's end."""
        feed = feed or self._examples
        epochs = max(self.train.epochs_of(t.number) for t in trainers)
        for epoch in self.state.epochs(stage, epochs, self.order, trainers):
            start = time.perf_counter()
            for trainer in trainers:
                trainer.module.train(not trainer.done)
                trainer.objective.train(not trainer.done)
            steps = self.state.remaining(
                MicroSteps(self.data.num_train(), self.train.batch_size, micro_batch, self.order)
            )
            for batch, share, last in self.reporter.track(feed(steps), len(steps),
                                                          f"{label} {epoch}"):  # fmt: skip
                micro_step(batch, share)
                if last:
                    self.end_batch(trainers)
            for trainer in trainers:
                trainer.module.eval()
                trainer.objective.eval()
            self.end_epoch(trainers, epoch, test(), time.perf_counter() - start)

    def _examples(self, steps):
        for idx, share, last in steps:
            yield self.data.batch("train", idx, train=True), share, last

    def end_batch(self, trainers: list[BlockTrainer]) -> None:
        """Step the trainers (or skip the batch, or stop, on NaN or inf), then let the
        training state count the batch and checkpoint when due."""
        stepped = step_blocks(trainers, self.train.skip_bad_batches, self.state.numerical_fault)
        self.state.end_batch(skipped=not stepped)

    def end_epoch(self, trainers: list[BlockTrainer], epoch: int, test, seconds: float) -> None:
        """One record per trainer (its epoch's loss and accuracy, its head's test accuracy
        `test`), to the reporter, the caller's hook and the training state."""
        records = [
            t.stats.record(block=t.number, epoch=epoch, test_accuracy=acc, seconds=seconds,
                           lr=t.lr)
            for t, acc in zip(trainers, test, strict=True)
        ]  # fmt: skip
        self.reporter.epoch(records)
        if self.on_epoch:
            self.on_epoch(records)
        self.state.end_epoch(records)
