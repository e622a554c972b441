"""One chained inference model: all blocks, then the last block's pool, projection and head.

The result runs with a plain onnxruntime.InferenceSession: input "x" (preprocessed, dynamic
batch), output "logits". inference.json beside it holds the preprocessing and class names.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from edge_svp.checkpoint import make_dir
from edge_svp.data import Preprocess
from edge_svp.network import SVPNetwork
from edge_svp.ort.requirements import missing

try:
    import onnx

    from edge_svp.ort import graph
    from edge_svp.ort.export import block_shapes, preprocessing, versions
    from edge_svp.ort.manifest import INPUT
except ImportError as e:
    raise missing("ONNX export", e) from None

FEATURES, LOGITS = "features", "logits"  # the model's own names
MODEL, INFO = "model.onnx", "inference.json"


def inference_model(net: SVPNetwork) -> onnx.ModelProto:
    """The blocks and the network's prediction as one ONNX model: its classifier, exported
    with the blocks, or the last block's SVP head, written into the graph after them."""
    net = net.cpu().eval()
    classifier = net.classifier is not None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer warnings of the exporter
        output = LOGITS if classifier else FEATURES
        torch.onnx.export(
            nn.Sequential(*net.blocks, *([net.classifier] if classifier else [])),
            (torch.zeros(2, *net.input_shape),),
            buffer,
            dynamo=False,
            opset_version=graph.OPSET,
            input_names=[INPUT],
            output_names=[output],
            dynamic_axes={INPUT: {0: "batch"}, output: {0: "batch"}},
        )
    model = onnx.load_from_string(buffer.getvalue())
    if not classifier:
        _append_svp_head(model, net)
    onnx.checker.check_model(model)
    return model


def _append_svp_head(model: onnx.ModelProto, net: SVPNetwork) -> None:
    """The last block's head after FEATURES: pooling, fixed projection, head; out: LOGITS."""
    objective = net.objectives[-1]
    w = graph.GraphWriter(model.graph, "svp.")
    for key, value in objective.head.state_dict().items():
        w.add_initializer(f"svp.head.{key}", value.numpy())
    projection = w.add_initializer("svp.projection", objective.projection.weight.numpy())
    shape = block_shapes(net)[-1]
    z = graph.pool(w, FEATURES, shape, objective.pool_size, objective.token_pool)
    kind = "linear" if isinstance(objective.head, nn.Linear) else "mlp"
    graph.head(w, graph.project(w, z, projection), kind, prefix="svp.head.")
    logits = model.graph.node[-1].output[0]
    model.graph.node.append(onnx.helper.make_node("Identity", [logits], [LOGITS]))
    del model.graph.output[:]
    model.graph.output.append(graph.float_input(LOGITS, ["batch", net.num_classes]))


def export_inference(
    net: SVPNetwork, preprocess: Preprocess, classes, input_dtype, out: str | Path
) -> Path:
    out = make_dir(out)
    onnx.save(inference_model(net), str(out / MODEL))
    info = {
        "model": MODEL,
        "input": {"name": INPUT, "shape": ["batch", *net.input_shape], "dtype": "float32"},
        "output": {"name": LOGITS, "shape": ["batch", net.num_classes], "dtype": "float32"},
        "preprocessing": preprocessing(preprocess, input_dtype),
        "classes": list(classes),
        "versions": versions(),
    }
    (out / INFO).write_text(json.dumps(info, indent=2) + "\n")
    return out / MODEL
