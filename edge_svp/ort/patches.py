"""Graph patches that onnxruntime-training 1.19.2 needs, and why (see docs/ort.md).

The release is the last one of ORT training on PyPI, so these stay here rather than wait for
upstream fixes. Each patch is a no-op on a graph that does not need it.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper


def add_layernorm_outputs(model: onnx.ModelProto) -> int:
    """LayerNormalization (opset >= 17) is exported with only Y; the gradient builder reads
    the optional Mean and InvStdDev outputs and fails with `i < node_->OutputDefs().size()`."""
    count = 0
    for i, node in enumerate(model.graph.node):
        if node.op_type == "LayerNormalization" and len(node.output) == 1:
            node.output.extend([f"{node.name or 'ln'}_{i}_mean", f"{node.name or 'ln'}_{i}_invstd"])
            count += 1
    return count


def add_dropout_masks(model: onnx.ModelProto) -> int:
    """Dropout without its optional mask output hits the same gradient-builder error."""
    count = 0
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Dropout" and len(node.output) == 1:
            node.output.append(f"{node.name or 'dropout'}_{i}_mask")
            count += 1
    return count


def castlike_to_cast(model: onnx.ModelProto) -> int:
    """CastLike has no gradient builder; Cast to the second input's type is the same op."""
    nodes = [n for n in model.graph.node if n.op_type == "CastLike"]
    if not nodes:
        return 0
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {t.name: t.data_type for t in model.graph.initializer}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        types[value.name] = value.type.tensor_type.elem_type
    for node in nodes:
        to = types.get(node.input[1], TensorProto.FLOAT)
        del node.input[1:]
        del node.attribute[:]
        node.op_type = "Cast"
        node.attribute.append(helper.make_attribute("to", to))
    return len(nodes)


def batchnorm_training_mode(model: onnx.ModelProto) -> int:
    """An eval-mode BatchNormalization (one output) in a training graph would train on the
    running statistics; give it training_mode=1 and the running-statistics outputs."""
    count = 0
    for i, node in enumerate(model.graph.node):
        if node.op_type == "BatchNormalization" and len(node.output) == 1:
            for attribute in [a for a in node.attribute if a.name == "training_mode"]:
                node.attribute.remove(attribute)
            node.attribute.append(helper.make_attribute("training_mode", 1))
            node.output.extend([f"bn_{i}_running_mean", f"bn_{i}_running_var"])
            count += 1
    return count


TRAINING_PATCHES = [add_layernorm_outputs, add_dropout_masks, castlike_to_cast,
                    batchnorm_training_mode]  # fmt: skip


def prepare_for_training(model: onnx.ModelProto) -> dict[str, int]:
    """Apply every training-graph patch in place; returns how many nodes each one changed."""
    counts = {patch.__name__: patch(model) for patch in TRAINING_PATCHES}
    return {name: n for name, n in counts.items() if n}


def trim_eval_batchnorm(model: onnx.ModelProto) -> int:
    """generate_artifacts sets training_mode=0 on BatchNormalization in the eval graph but
    keeps its three outputs, and the eval session then refuses to load ("This number of op
    outputs should be 1 when Training_mode = False"). Keep only Y."""
    count = 0
    for node in model.graph.node:
        training = [a.i for a in node.attribute if a.name == "training_mode"]
        if node.op_type == "BatchNormalization" and len(node.output) > 1 and not any(training):
            del node.output[1:]
            count += 1
    return count
