"""Multi-layer perceptron: one block per hidden layer (Linear + ReLU)."""

import math

from torch import nn

from edge_svp.config import MLPOptions


def build(options: MLPOptions, input_shape: tuple[int, ...]) -> list[nn.Module]:
    blocks, in_dim = [], math.prod(input_shape)
    for i, width in enumerate(options.widths):
        layers = [nn.Flatten()] if i == 0 else []
        layers.append(nn.Linear(in_dim, width))
        if options.batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        blocks.append(nn.Sequential(*layers))
        in_dim = width
    return blocks
