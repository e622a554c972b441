"""VGG-style CNN: each block is (conv3x3-BN-ReLU) x n followed by 2x2 max pooling."""

from torch import nn

from edge_svp.config import CNNOptions
from edge_svp.errors import EdgeSVPError


def build(options: CNNOptions, input_shape: tuple[int, ...]) -> list[nn.Module]:
    if len(input_shape) != 3:
        raise EdgeSVPError(f"the cnn model needs (C, H, W) images, got input shape {input_shape}")
    blocks, in_ch, size = [], input_shape[0], min(input_shape[1:])
    for convs in options.channels:
        layers = []
        for out_ch in convs:
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(),
            ]
            in_ch = out_ch
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        blocks.append(nn.Sequential(*layers))
    return blocks
