"""A small Vision Transformer from plain ops.

Pre-LN transformer layers are written out (LayerNorm, Linear, softmax attention, GELU)
rather than taken from nn.TransformerEncoderLayer, which the TorchScript ONNX exporter
cannot export. The first block also holds the patch embedding and position embedding (and
the class token, where there is one).
"""

import torch
from torch import nn

from edge_svp.config import ViTOptions
from edge_svp.errors import EdgeSVPError


class PatchEmbedding(nn.Module):
    """Patch tokens plus position embeddings; with `class_token`, a learned token first."""

    def __init__(self, in_ch: int, image_size: int, patch_size: int, dim: int,
                 class_token: bool = False):  # fmt: skip
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch_size, stride=patch_size)
        num_tokens = (image_size // patch_size) ** 2 + class_token
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.position = nn.Parameter(torch.randn(1, num_tokens, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        if self.class_token is not None:  # shape[0], not len(): ONNX export keeps it dynamic
            tokens = torch.cat([self.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.position


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        weights = self.dropout(weights.softmax(dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, d))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float, norm1_affine: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=norm1_affine)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_ratio * dim, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def build(options: ViTOptions, input_shape: tuple[int, ...]) -> list[nn.Module]:
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise EdgeSVPError(f"the vit model needs square (C, H, W) images, got {input_shape}")
    if input_shape[1] % options.patch_size:
        raise EdgeSVPError(
            f"image size {input_shape[1]} is not a multiple of patch_size {options.patch_size}"
        )
    if options.dim % options.heads:
        raise EdgeSVPError(f"dim {options.dim} is not a multiple of heads {options.heads}")
    blocks = []
    for i, n_layers in enumerate(options.layers_per_block):
        layers = [
            TransformerLayer(
                options.dim,
                options.heads,
                options.mlp_ratio,
                options.dropout,
                options.attention_norm_affine,
            )
            for _ in range(n_layers)
        ]
        if i == 0:
            embed = PatchEmbedding(input_shape[0], input_shape[1], options.patch_size, options.dim,
                                   options.class_token)  # fmt: skip
            layers.insert(0, embed)
        blocks.append(nn.Sequential(*layers))
    return blocks
