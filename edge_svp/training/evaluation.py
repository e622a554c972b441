"""Test accuracy of every block's head."""

from __future__ import annotations

import torch

from edge_svp.data import batches
from edge_svp.training.batches import TrainData


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
