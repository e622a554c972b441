"""Host side: turn an SVPNetwork into ORT on-device training artifacts.

    export_dir/
      manifest.json        block order, tensor names and shapes, options (manifest.py)
      reference.onnx       v_0 = R_0 pool(x), the first block's reference
      block1/              training_model.onnx, eval_model.onnx, optimizer_model.onnx,
      block2/ ...          checkpoint (and trained_checkpoint once the runtime has run)

Each block is exported by itself with the TorchScript exporter in training mode (it keeps
BatchNorm's batch statistics, Dropout and the parameter names), patched (patches.py), and
given the SVP local objective as its loss (loss.py).
"""

from __future__ import annotations

import io
import re
import warnings
from importlib import metadata
from pathlib import Path

import torch

from edge_svp.config import RunConfig, config_to_dict
from edge_svp.data import Preprocess
from edge_svp.errors import EdgeSVPError
from edge_svp.files import make_dir
from edge_svp.network import SVPNetwork
from edge_svp.ort.requirements import missing
from edge_svp.training.layerwise import Layerwise

try:
    import onnx
    from onnx import numpy_helper
    from onnxruntime.training import artifacts, onnxblock

    from edge_svp.ort import graph, patches
    from edge_svp.ort.loss import LossSpec, SVPLoss
    from edge_svp.ort.manifest import (
        INPUT,
        LABELS,
        LOGITS,
        LOSS,
        OUTPUT,
        V_OUT,
        V_REF,
        Block,
        Manifest,
        Tensor,
    )
    from edge_svp.ort.quiet import quiet
except ImportError as e:
    raise missing("ONNX export", e) from None

UNSUPPORTED_GRADIENT = re.compile(r"gradient builder has not been registered: (\S+) for node (\S+)")
UNSUPPORTED_EXPORT = re.compile(r"[Ee]xporting the operator '?([\w:.]+)'? to ONNX")


def versions() -> dict:
    names = ["edge-svp", "torch", "onnx", "onnxruntime-training-cpu", "numpy"]
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def block_shapes(net: SVPNetwork) -> list[tuple[int, ...]]:
    """Per-example input shape of every block, then the last block's output shape."""
    shapes, h = [net.input_shape], torch.zeros(2, *net.input_shape)
    was_training = net.training
    net.eval()  # a probe must not move BatchNorm statistics
    with torch.no_grad():
        for block in net.blocks:
            h = block(h)
            shapes.append(tuple(h.shape[1:]))
    net.train(was_training)
    return shapes


def export_block_graph(block: torch.nn.Module, input_shape, index: int) -> onnx.ModelProto:
    """The block's forward in training mode, with its exact current weights and buffers."""
    # tracing runs one training-mode forward, which moves BatchNorm running statistics in
    # the module and in the exported initializers: undo both
    snapshot = {k: v.detach().clone() for k, v in block.state_dict().items()}
    buffer = io.BytesIO()
    block.train()
    try:
        with warnings.catch_warnings(), quiet(1):
            warnings.simplefilter("ignore")  # deprecation and tracer warnings of the exporter
            torch.onnx.export(
                block,
                (torch.randn(2, *input_shape),),
                buffer,
                dynamo=False,
                training=torch.onnx.TrainingMode.TRAINING,
                do_constant_folding=False,
                opset_version=graph.OPSET,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
    except Exception as e:  # the exporter raises several kinds for an op it cannot write
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        found = UNSUPPORTED_EXPORT.search(message)
        what = f"op {found.group(1)} cannot be exported to ONNX" if found else message
        raise EdgeSVPError(f"block {index}: {what}") from None
    finally:
        block.load_state_dict(snapshot)
    model = onnx.load_from_string(buffer.getvalue())
    for init in model.graph.initializer:
        if init.name in snapshot:
            init.CopyFrom(numpy_helper.from_array(snapshot[init.name].numpy(), init.name))
    return model


def loss_spec(net: SVPNetwork, index: int, feature_shape) -> LossSpec:
    objective = net.objectives[index]
    if not isinstance(objective.auxiliary, torch.nn.Identity):
        raise EdgeSVPError(
            "ONNX training artifacts project each block's own output: a network trained "
            "with svp.aux_blocks cannot be exported for training (export --inference can)"
        )
    # a structured R_l goes into the graph as the matrix it applies: the same step, in one
    # MatMul (ONNX has no Hadamard transform)
    projection = objective.projection.dense().numpy()
    # the reference is projected only when its width differs from this block's d0
    reference = objective.reference
    ref_weight = None if isinstance(reference, torch.nn.Identity) else reference.dense().numpy()
    ref_dim = ref_weight.shape[1] if ref_weight is not None else projection.shape[0]
    head = {f"head.{k}": v.detach().numpy() for k, v in objective.head.state_dict().items()}
    return LossSpec(
        feature_shape=tuple(feature_shape),
        ref_dim=ref_dim,
        divergence=objective.divergence_name,
        alignment=objective.alignment_name,
        beta=objective.beta,
        lam=objective.lam,
        temperature=objective.temperature,
        proj_dropout=objective.proj_dropout,
        pool_size=objective.pool_size,
        token_pool=objective.token_pool,
        head="linear" if isinstance(objective.head, torch.nn.Linear) else "mlp",
        projection=projection,
        reference_projection=ref_weight,
        head_parameters=head,
    )


def optimizer_block(config: RunConfig) -> tuple[object, dict]:
    """The ORT optimizer graph for the run's optimizer, or an error naming what differs."""
    optim = config.optim
    if optim.name == "sgd":
        if optim.momentum or optim.weight_decay:
            raise EdgeSVPError(
                "the ort backend's SGD has no momentum or weight decay; set optim.momentum=0 "
                "and optim.weight_decay=0, or use adam/adamw"
            )
        return onnxblock.optim.SGD(), {"ort_block": "SGD"}
    if optim.name == "adam" and optim.weight_decay:
        raise EdgeSVPError(
            "the ort backend has AdamW, not Adam with L2 weight decay; use optim.name=adamw"
        )
    # torch's default eps (ORT's default is 1e-6); ORT's AdamW places eps as HF does
    eps = 1e-8
    block = onnxblock.optim.AdamW(eps=eps, weight_decay=optim.weight_decay)
    return block, {"ort_block": "AdamW", "eps": eps, "betas": [0.9, 0.999]}


def generate(model, spec: LossSpec, trainable, frozen, optimizer, directory: Path, index: int):
    try:
        with quiet(2):
            artifacts.generate_artifacts(
                model,
                requires_grad=trainable,
                frozen_params=frozen,
                loss=SVPLoss(spec),
                optimizer=optimizer,
                artifact_directory=str(directory),
                loss_input_names=[OUTPUT],
                additional_output_names=[LOGITS, V_OUT, OUTPUT],
            )
    except RuntimeError as e:
        found = UNSUPPORTED_GRADIENT.search(str(e))
        if not found:
            raise
        op, node = found.groups()
        raise EdgeSVPError(
            f"block {index}: op {op} (node {node}) has no gradient in onnxruntime-training "
            f"{metadata.version('onnxruntime-training-cpu')}; replace the layer that makes it"
        ) from None


def export_block(net, index, shapes, config, directory: Path) -> Block:
    block, number = net.blocks[index], index + 1
    model = export_block_graph(block, shapes[index], number)
    applied = patches.prepare_for_training(model)
    initializers = {i.name for i in model.graph.initializer}
    parameters = [name for name, _ in block.named_parameters()]
    lost = [name for name in parameters if name not in initializers]
    if lost:  # such a parameter would silently stay frozen in ORT
        raise EdgeSVPError(f"block {number}: parameters {lost} are not ONNX initializers")
    buffers = [name for name in block.state_dict() if name not in parameters]
    spec = loss_spec(net, index, shapes[index + 1])
    trainable = parameters + list(spec.head_parameters)
    frozen = [name for name in buffers if name in initializers] + list(spec.frozen())
    optimizer, _ = optimizer_block(config)
    make_dir(directory)
    generate(model, spec, trainable, frozen, optimizer, directory, number)
    eval_path = directory / "eval_model.onnx"
    eval_model = onnx.load(str(eval_path))
    if patches.trim_eval_batchnorm(eval_model):
        applied["trim_eval_batchnorm"] = 1
        onnx.save(eval_model, str(eval_path))
    batch = ["batch"]
    return Block(
        index=number,
        directory=directory.name,
        training_model="training_model.onnx",
        eval_model="eval_model.onnx",
        optimizer_model="optimizer_model.onnx",
        checkpoint="checkpoint",
        trained_checkpoint="trained_checkpoint",
        inputs=[
            Tensor(INPUT, batch + list(shapes[index])),
            Tensor(V_REF, batch + [spec.ref_dim]),
            Tensor(LABELS, batch, "int64"),
        ],
        outputs=[
            Tensor(LOSS, []),
            Tensor(LOGITS, batch + [net.num_classes]),
            Tensor(V_OUT, batch + [spec.projection.shape[0]]),
            Tensor(OUTPUT, batch + list(shapes[index + 1])),
        ],
        trainable=trainable,
        frozen=frozen,
        patches=applied,
    )


def reference_model(net: SVPNetwork) -> onnx.ModelProto:
    """v_0 = R_0 pool(x) as a plain inference graph (SVPNetwork.reference)."""
    g = onnx.helper.make_graph([], "reference", [graph.float_input(INPUT,
                               ["batch", *net.input_shape])], [])  # fmt: skip
    w = graph.GraphWriter(g, "reference.")
    first = net.objectives[0]
    if net.flatten_input:
        z = graph.flatten(w, INPUT)
    else:
        z = graph.pool(w, INPUT, net.input_shape, first.pool_size, first.token_pool)
    matrix = net.input_projection.dense().numpy()
    graph.project(w, z, w.constant(matrix, "projection"), out=V_REF)
    g.output.append(graph.float_input(V_REF, ["batch", matrix.shape[0]]))
    return onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", graph.OPSET)])


def preprocessing(preprocess: Preprocess, input_dtype: torch.dtype) -> dict:
    return {
        "input_dtype": str(input_dtype).removeprefix("torch."),
        "scale": 1 / 255 if input_dtype == torch.uint8 else 1.0,  # as edge_svp.data._to_float
        "mean": list(preprocess.mean),
        "std": list(preprocess.std),
        "channel_axis": 1,
    }


def export_training(
    net: SVPNetwork,
    config: RunConfig,
    classes: list[str],
    preprocess: Preprocess,
    input_dtype: torch.dtype,
    out: str | Path,
    unfinished: str | None = None,
) -> Manifest:
    """Write ORT training artifacts for every block of `net` (its current weights) to `out`;
    `unfinished`: where the checkpoint of an unfinished run stands."""
    _, optimizer = optimizer_block(config)  # refuse an optimizer ORT lacks before any work
    out = make_dir(out)
    net = net.cpu()
    shapes = block_shapes(net)
    blocks = [export_block(net, i, shapes, config, out / f"block{i + 1}") for i in range(len(net))]
    onnx.save(reference_model(net), str(out / "reference.onnx"))
    raw = config_to_dict(config)
    manifest = Manifest(
        profile=config.profile,
        model=config.model.kind,
        input=Tensor(INPUT, ["batch", *net.input_shape]),
        reference_model="reference.onnx",
        blocks=blocks,
        svp=raw["svp"],
        optimizer={
            "name": config.optim.name,
            "lr": config.optim.lr,
            "weight_decay": config.optim.weight_decay,
            **optimizer,
        },  # fmt: skip
        schedule={
            "kind": Layerwise.name,
            "epochs": config.train.epochs,
            "batch_size": config.train.batch_size,
            "eval_batch_size": config.train.eval_batch_size,
            "lr_schedule": config.optim.lr_schedule,
            "seed": config.train.seed,
        },
        preprocessing=preprocessing(preprocess, input_dtype),
        classes=list(classes),
        versions=versions(),
        opset=graph.OPSET,
        unfinished=unfinished,
    )
    manifest.write(out)
    return manifest
