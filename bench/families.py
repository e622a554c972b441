"""The deep network families (docs/svp.md, "Deep networks"), each a profile made N blocks
deep by one `--set`:

- `vit`: cifar10-vit-deep-cpu, one transformer layer per block (dim 64), sized for accuracy
  runs on a CPU;
- `cnn`: cifar10-cnn-deep, one conv-norm-ReLU per block in four stages of equal depth, each
  stage twice the channels of the one before and pooled at its end;
- `vit-192`: cifar10-vit-deep, one transformer layer per block (dim 192), the memory study's.
"""

from edge_svp.config import load_profile

FAMILIES = {"vit": "cifar10-vit-deep-cpu", "cnn": "cifar10-cnn-deep", "vit-192": "cifar10-vit-deep"}


def depth_settings(family: str, depth: int) -> list[str]:
    """The `--set` that makes the family's profile `depth` blocks deep."""
    model = load_profile(FAMILIES[family]).model
    if model.kind == "vit":
        return ["--set", f"model.layers_per_block={[1] * depth}"]
    # the profile's stages: its distinct widths in order, each made depth / stages blocks deep
    stages = list(dict.fromkeys(convs[0] for convs in model.options.channels))
    if depth % len(stages):
        raise SystemExit(f"a {family} depth must be a multiple of its {len(stages)} stages")
    channels = [[width] for width in stages for _ in range(depth // len(stages))]
    return ["--set", f"model.channels={channels}"]
