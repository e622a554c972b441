"""VGG-style CNN: each block is (conv3x3-norm-ReLU) x n followed by 2x2 max pooling; the norm
is BatchNorm or GroupNorm (options.norm)."""

import math

from torch import nn

from edge_svp.config import CNNOptions
from edge_svp.errors import EdgeSVPError, unknown

GROUPS = 8  # GroupNorm's groups, or as many as divide the channels


def group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(math.gcd(GROUPS, channels), channels)


NORMS = {"batch": nn.BatchNorm2d, "group": group_norm}


def build(options: CNNOptions, input_shape: tuple[int, ...]) -> list[nn.Module]:
    if options.norm not in NORMS:
        raise unknown("cnn norm", options.norm, NORMS)
    if len(input_shape) != 3:
        raise EdgeSVPError(f"the cnn model needs (C, H, W) images, got input shape {input_shape}")
    blocks, in_ch, size = [], input_shape[0], min(input_shape[1:])
    for i, convs in enumerate(options.channels):
        if not convs:
            raise EdgeSVPError(f"cnn block {i + 1} has no convolution: give its channels")
        layers = []
        for out_ch in convs:
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                NORMS[options.norm](out_ch),
                nn.ReLU(),
            ]
            in_ch = out_ch
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        blocks.append(nn.Sequential(*layers))
    return blocks
