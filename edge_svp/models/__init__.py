"""Models are lists of blocks with explicit boundaries.

Each model kind is one file with a `build(options, input_shape)` that returns the blocks,
registered in MODELS below; its options are a dataclass in edge_svp/config.py
(MODEL_OPTIONS), so that a configuration is read without importing torch.
"""

from edge_svp.models import cnn, mlp, vit

MODELS = {"mlp": mlp.build, "cnn": cnn.build, "vit": vit.build}


def build_blocks(kind: str, options, input_shape: tuple[int, ...]) -> list:
    return MODELS[kind](options, tuple(input_shape))
