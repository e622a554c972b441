"""One chained inference model: the run's preprocessing, all blocks, then the network's
prediction (its classifier, or the last block's pool, projection and head).

The result runs with a plain onnxruntime.InferenceSession on raw inputs: input "x", uint8
pixels (batch, H, W, C) as images decode (the preprocessing, scale, mean and std, is in the
graph), output "logits". inference.json beside it names the classes and describes both.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from edge_svp.data import Preprocess
from edge_svp.files import make_dir
from edge_svp.network import SVPNetwork
from edge_svp.ort.predictor import INFO, MODEL
from edge_svp.ort.requirements import missing

try:
    import onnx

    from edge_svp.ort import graph
    from edge_svp.ort.export import block_shapes, preprocessing, versions
    from edge_svp.ort.manifest import INPUT
except ImportError as e:
    raise missing("ONNX export", e) from None

FEATURES, LOGITS = "features", "logits"  # the model's own names


class RawInput(nn.Module):
    """The run's preprocessing (edge_svp.data.Preprocess) as graph operations: raw inputs,
    images as (N, H, W, C), to what the first block takes."""

    def __init__(self, preprocess: Preprocess, input_dtype: torch.dtype, image: bool):
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(shape))
        self.register_buffer("std", torch.tensor(preprocess.std).view(shape))
        self.scale = 255.0 if input_dtype == torch.uint8 else 1.0  # as data.dataset._to_float
        self.image = image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image:
            x = x.permute(0, 3, 1, 2)
        return (x.float() / self.scale - self.mean) / self.std


def raw_shape(net: SVPNetwork) -> tuple[int, ...]:
    """One raw input: images as they decode, (H, W, C); features as they are."""
    shape = net.input_shape
    return (*shape[1:], shape[0]) if len(shape) == 3 else shape


def inference_model(net: SVPNetwork, preprocess: Preprocess, input_dtype) -> onnx.ModelProto:
    """The preprocessing, the blocks and the network's prediction as one ONNX model: its
    classifier, exported with the blocks, or the last block's SVP head, written into the
    graph after them."""
    net = net.cpu().eval()
    classifier = net.classifier is not None
    raw = RawInput(preprocess, input_dtype, image=len(net.input_shape) == 3)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer warnings of the exporter
        output = LOGITS if classifier else FEATURES
        torch.onnx.export(
            nn.Sequential(raw, *net.blocks, *([net.classifier] if classifier else [])),
            (torch.zeros(2, *raw_shape(net), dtype=input_dtype),),
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
    projection = w.add_initializer("svp.projection", objective.projection.dense().numpy())
    shape = block_shapes(net)[-1]
    z = graph.pool(w, FEATURES, shape, objective.pool_size, objective.token_pool)
    kind = "linear" if isinstance(objective.head, nn.Linear) else "mlp"
    graph.head(w, graph.project(w, z, projection), kind, prefix="svp.head.")
    logits = model.graph.node[-1].output[0]
    model.graph.node.append(onnx.helper.make_node("Identity", [logits], [LOGITS]))
    del model.graph.output[:]
    model.graph.output.append(graph.float_input(LOGITS, ["batch", net.num_classes]))


def export_inference(
    net: SVPNetwork,
    preprocess: Preprocess,
    classes,
    input_dtype,
    out: str | Path,
    unfinished: str | None = None,
) -> Path:
    """model.onnx and inference.json; `unfinished` (where an unfinished run's checkpoint
    stands) is recorded in the latter."""
    out = make_dir(out)
    onnx.save(inference_model(net, preprocess, input_dtype), str(out / MODEL))
    info = {
        "model": MODEL,
        "input": {
            "name": INPUT,
            "shape": ["batch", *raw_shape(net)],
            "dtype": str(input_dtype).removeprefix("torch."),
            "layout": "NHWC" if len(net.input_shape) == 3 else "ND",
        },
        "output": {"name": LOGITS, "shape": ["batch", net.num_classes], "dtype": "float32"},
        # already in the graph: for reference only
        "preprocessing": {**preprocessing(preprocess, input_dtype), "in_graph": True},
        "classes": list(classes),
        "unfinished": unfinished,
        "versions": versions(),
    }
    (out / INFO).write_text(json.dumps(info, indent=2) + "\n")
    return out / MODEL
