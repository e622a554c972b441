"""Models are lists of blocks with explicit boundaries.

Each model kind is one file with an options dataclass and a `build(options, input_shape)`
that returns the blocks; register it in MODELS below.
"""

from typing import NamedTuple

from edge_svp.models import cnn, mlp, vit


class ModelSpec(NamedTuple):
    options: type  # dataclass of the kind's [model] options
    build: object  # build(options, input_shape) -> list[nn.Module]


MODELS = {
    "mlp": ModelSpec(mlp.MLPOptions, mlp.build),
    "cnn": ModelSpec(cnn.CNNOptions, cnn.build),
    "vit": ModelSpec(vit.ViTOptions, vit.build),
}


def build_blocks(kind: str, options, input_shape: tuple[int, ...]) -> list:
    return MODELS[kind].build(options, tuple(input_shape))
