"""The classifier a user training with backprop would put on a network: global average
pooling of feature maps (B, C, H, W) or tokens (B, N, D), flat features (B, D) as they are,
then a trainable linear layer. The backprop baseline's default head."""

import torch
from torch import nn


class StandardHead(nn.Module):
    def __init__(self, feature_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        width = feature_shape[0] if len(feature_shape) == 3 else feature_shape[-1]
        self.linear = nn.Linear(width, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 4:  # feature maps: average over the spatial positions
            h = h.mean(dim=(2, 3))
        elif h.dim() == 3:  # tokens: average over them
            h = h.mean(dim=1)
        return self.linear(h)
