"""What the schedules share: optimisers, learning-rate schedules, evaluation, batch stats."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from edge_svp.config import OptimConfig
from edge_svp.data import Dataset, Preprocess, batches
from edge_svp.errors import EdgeSVPError


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


def resolve_device(name: str) -> torch.device:
    """The device `name` (auto | cpu | cuda) means here; CUDA with its index, which the
    allocator's per-device calls need."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise EdgeSVPError("device 'cuda' was asked for, but torch sees no CUDA device")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg` names, fused where this torch has a fused kernel for the device:
    one pass over each parameter instead of a dozen element-wise ones (Adam on a CPU: 9 ms a
    step for 3 M parameters, against 52 ms)."""
    params = list(params)
    if cfg.name == "sgd":
        cls, options = torch.optim.SGD, {"momentum": cfg.momentum}
    else:
        cls, options = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam, {}
    try:
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True, **options)
    except (RuntimeError, TypeError):  # no fused kernel for these parameters' device here
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **options)


def make_lr_schedule(optimizer, cfg: OptimConfig, total_steps: int, warmup_steps: int = 0):
    """Per-step schedule: cosine decay to zero over `total_steps`, or constant; with
    `warmup_steps`, a linear rise from zero over the first of them."""

    def factor(step: int) -> float:
        warmup = min((step + 1) / warmup_steps, 1.0) if warmup_steps else 1.0
        if cfg.lr_schedule == "constant":
            return warmup
        return warmup * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def block_optim(cfg: OptimConfig, index: int) -> OptimConfig:
    """The optimizer settings of block `index` (0-based): lr times its optim.block_lr."""
    if not cfg.block_lr:
        return cfg
    return dataclasses.replace(cfg, lr=cfg.lr * cfg.block_lr[min(index, len(cfg.block_lr) - 1)])


class BatchStats:
    """Running mean loss and accuracy over one epoch. A micro-batch whose loss is NaN or inf
    is left out and flagged (`nonfinite`) for step_blocks (training/step.py) to act on."""

    def __init__(self):
        self.loss = 0.0
        self.correct = 0
        self.count = 0
        self.nonfinite = False

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = len(y)
        loss = float(loss.detach())
        if not math.isfinite(loss):
            self.nonfinite = True
            return
        self.loss += loss * n
        self.correct += int((logits.argmax(-1) == y).sum())
        self.count += n

    def state(self) -> dict:
        return {"loss": self.loss, "correct": self.correct, "count": self.count}

    def load(self, state: dict) -> None:
        self.loss, self.correct, self.count = state["loss"], state["correct"], state["count"]

    def record(self, **extra) -> dict:
        return {
            **extra,
            "loss": self.loss / max(self.count, 1),
            "train_accuracy": self.correct / max(self.count, 1),
        }


@torch.no_grad()
def evaluate(net, data: TrainData, batch_size: int) -> list[float | None]:
    """Test accuracy of every block's head (None for a head the network does not have:
    SVPNetwork.all_logits)."""
    was_training = net.training
    net.eval()
    correct = [0] * len(net)
    n = len(data.dataset.y_test)
    for idx in batches(n, batch_size, shuffle=False):
        x, y = data.batch("test", idx, train=False)
        for i, logits in enumerate(net.all_logits(x)):
            if logits is None:
                correct[i] = None
            else:
                correct[i] += int((logits.argmax(-1) == y).sum())
    net.train(was_training)
    return [None if c is None else c / n for c in correct]


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
