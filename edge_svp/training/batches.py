"""What a schedule feeds its blocks: a dataset on its way to the device, and one epoch's
micro-batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edge_svp.data import Dataset, Preprocess


@dataclass
class TrainData:
    """A dataset with its preprocessing, on its way to a device."""

    dataset: Dataset
    preprocess: Preprocess
    device: torch.device

    def batch(self, split: str, idx: torch.Tensor, train: bool) -> tuple[torch.Tensor, ...]:
        x = getattr(self.dataset, f"x_{split}")[idx]
        y = getattr(self.dataset, f"y_{split}")[idx]
        return self.preprocess(x, train=train).to(self.device), y.to(self.device)

    def num_train(self) -> int:
        return len(self.dataset.y_train)


class MicroSteps:
    """(indices, share of its batch, last of its batch?) for each micro-batch of one epoch.

    Gradients of the micro-batches of one batch are accumulated, each loss weighted by its
    share, so a step sees the same gradient as the whole batch would give. Data-parallel
    replicas each take every `replicas`-th example of a batch (possibly none), so that the
    sum of their gradients is the whole batch's.

    The epoch's order is drawn from `generator` at once; the micro-steps are made as they are
    iterated, so their memory does not grow with their number (N / micro-batch), which the
    planner does not count. `len` is their number; `after(k)` is the epoch less its first k
    batches (a resumed run's).
    """

    def __init__(self, n, batch_size, micro_batch, generator, replica=0, replicas=1, skip=0):
        self.order = torch.randperm(n, generator=generator)
        self.batch_size, self.micro_batch = batch_size, micro_batch
        self.replica, self.replicas, self.skip = replica, replicas, skip

    def _batches(self):
        n = len(self.order)
        for start in range(self.skip * self.batch_size, n, self.batch_size):
            yield self.order[start : start + self.batch_size]

    def _chunks(self, batch_size: int) -> int:
        mine = len(range(self.replica, batch_size, self.replicas))
        return max(-(-mine // self.micro_batch), 1)  # one empty chunk if none

    def __len__(self) -> int:
        n = len(self.order)
        starts = range(self.skip * self.batch_size, n, self.batch_size)
        return sum(self._chunks(min(self.batch_size, n - start)) for start in starts)

    def __iter__(self):
        for idx in self._batches():
            chunks = idx[self.replica :: self.replicas].split(self.micro_batch) or (idx[:0],)
            for j, chunk in enumerate(chunks):
                yield chunk, len(chunk) / len(idx), j == len(chunks) - 1

    def after(self, batches: int):
        """The same epoch less its first `batches` batches."""
        rest = object.__new__(MicroSteps)
        rest.__dict__.update(self.__dict__, skip=self.skip + batches)
        return rest
