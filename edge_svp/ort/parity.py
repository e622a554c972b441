"""Does ORT compute what torch computes? The first training step of one exported block, on the
same weights and batch, in both: loss and gradients (host side; needs torch and ORT)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge_svp.network import SVPNetwork
from edge_svp.ort.manifest import INPUT, LABELS, LOSS, V_REF, Manifest
from edge_svp.ort.runtime import BlockSession
from edge_svp.ort.weights import HEAD


@dataclass
class StepParity:
    block: int
    loss_torch: float
    loss_ort: float
    max_grad_diff: float  # over the block's and head's parameters

    @property
    def loss_diff(self) -> float:
        return abs(self.loss_torch - self.loss_ort)


def first_step(net: SVPNetwork, export_dir: str | Path, index: int, batch: int = 16, seed: int = 1):
    """Block `index` (0-based) of `net`, freshly exported to `export_dir` and not yet trained,
    on a random batch: its input, its reference v_ref and labels."""
    entry = Manifest.read(export_dir).blocks[index]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *entry.inputs[0].shape[1:], generator=generator)
    v_ref = torch.randn(batch, entry.inputs[1].shape[1], generator=generator)
    y = torch.randint(0, net.num_classes, (batch,), generator=generator)

    trainer = BlockSession(Path(export_dir), entry)
    trainer.module.train()
    ort_loss = trainer.forward({INPUT: x.numpy(), V_REF: v_ref.numpy(), LABELS: y.numpy()})[LOSS]

    block, objective = net.blocks[index], net.objectives[index]
    block.train()
    objective.train()
    block.zero_grad()
    objective.zero_grad()
    loss = objective(block(x), v_ref, y).loss
    loss.backward()
    named = [
        *block.named_parameters(),
        *((HEAD + n, p) for n, p in objective.head.named_parameters()),
    ]
    diffs = [
        np.abs(
            np.asarray(trainer.state.parameters[name].grad).reshape(-1) - p.grad.numpy().reshape(-1)
        ).max()
        for name, p in named
    ]
    return StepParity(index + 1, loss.item(), float(ort_loss), float(max(diffs)))
