"""VGG-style CNN: each block is (conv3x3-norm-ReLU) x n, followed by 2x2 max pooling after
every block or after evenly spaced ones (options.downsamples); the norm is BatchNorm or
GroupNorm (options.norm)."""

import math

from torch import nn

from edge_svp.config import CNNOptions
from edge_svp.errors import EdgeSVPError, unknown

GROUPS = 8  # GroupNorm's groups, or as many as divide the channels


def group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(math.gcd(GROUPS, channels), channels)


NORMS = {"batch": nn.BatchNorm2d, "group": group_norm}


def pooled_blocks(options: CNNOptions, size: int) -> set[int]:
    """The indices (from 0) of the blocks followed by a 2x2 max-pool, for a `size`-pixel input."""
    n = len(options.channels)
    if options.downsamples is None:  # every block while the map is 2 pixels or more
        return set(range(min(n, max(size.bit_length() - 1, 0))))
    if options.downsamples > n or size >> options.downsamples < 1:
        raise EdgeSVPError(
            f"cnn downsamples {options.downsamples} is more than the {n} blocks or than a "
            f"{size}-pixel image can be halved"
        )
    return {-(-k * n // options.downsamples) - 1 for k in range(1, options.downsamples + 1)}


def build(options: CNNOptions, input_shape: tuple[int, ...]) -> list[nn.Module]:
    if options.norm not in NORMS:
        raise unknown("cnn norm", options.norm, NORMS)
    if len(input_shape) != 3:
        raise EdgeSVPError(f"the cnn model needs (C, H, W) images, got input shape {input_shape}")
    blocks, in_ch = [], input_shape[0]
    pooled = pooled_blocks(options, min(input_shape[1:]))
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
        if i in pooled:
            layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))
    return blocks
