"""Training schedules: joint and layerwise SVP, and the backprop baseline.

train(net, dataset)                       # SVP, joint schedule, defaults
train(net, dataset, TrainConfig(schedule="layerwise", epochs=5))
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from edge_svp.config import DataConfig, OptimConfig, TrainConfig
from edge_svp.data import Dataset, Preprocess
from edge_svp.progress import Reporter
from edge_svp.train.backprop import train_backprop
from edge_svp.train.common import TrainData, evaluate, resolve_device
from edge_svp.train.joint import train_joint
from edge_svp.train.layerwise import train_layerwise

SCHEDULES = {"joint": train_joint, "layerwise": train_layerwise}


def train(
    net,
    dataset: Dataset,
    train: TrainConfig | None = None,
    optim: OptimConfig | None = None,
    preprocess: Preprocess | None = None,
    reporter: Reporter | None = None,
    on_epoch: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Train `net` in place; returns one record per block per epoch."""
    train = train or TrainConfig()
    optim = optim or OptimConfig()
    defaults = DataConfig()
    preprocess = preprocess or Preprocess.fit(dataset.x_train, defaults.normalize, defaults.augment)
    device = resolve_device(train.device)
    torch.manual_seed(train.seed)  # augmentation and dropout draws
    net.to(device)
    data = TrainData(dataset, preprocess, device)
    records: list[dict] = []

    reporter = reporter or Reporter()

    def collect(epoch_records: list[dict]) -> None:
        records.extend(epoch_records)
        reporter.epoch(epoch_records)
        if on_epoch:
            on_epoch(epoch_records)

    run = train_backprop if train.method == "bp" else SCHEDULES[train.schedule]
    run(net, data, train, optim, reporter, collect)
    return records


def block_accuracies(net, dataset: Dataset, preprocess: Preprocess, batch_size: int = 1000):
    """Test accuracy of every block's head, on the device the network is on."""
    device = next(net.parameters()).device
    return evaluate(net, TrainData(dataset, preprocess, device), batch_size)


__all__ = ["SCHEDULES", "block_accuracies", "train"]
