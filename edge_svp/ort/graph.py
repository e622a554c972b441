"""The SVP read-out written as ONNX nodes: pool, fixed projection, and the ONNX forms of the
heads, divergences and alignments (each kept beside its torch form in edge_svp/svp/). Each
function mirrors its torch counterpart and appends nodes to an existing graph, so the loss graph, the reference graph and the inference graph share one
definition. Needs onnx, not torch or onnxruntime.

Nodes use opset 18+ conventions (reduction axes as inputs), matching OPSET below.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import GraphProto, TensorProto, helper, numpy_helper

from edge_svp.registry import piece

OPSET = 20  # the legacy exporter's default; onnxruntime-training 1.19.2 supports up to 21


class GraphWriter:
    """Appends uniquely named nodes and constants to `graph`; every name starts with `prefix`."""

    def __init__(self, graph: GraphProto, prefix: str = "svp."):
        self.graph = graph
        self.prefix = prefix
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}{hint}_{self.count}"

    def constant(self, array, hint: str = "const") -> str:
        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        """A named initializer: trainable and frozen parameters keep their torch names."""
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int = 1, out: str | None = None, **attrs):
        names = [out or self.name(op.lower())] + [self.name(op.lower()) for _ in range(outputs - 1)]
        self.graph.node.append(helper.make_node(op, inputs, names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names

    def axes(self, *axes: int) -> str:
        return self.constant(np.array(axes, np.int64), "axes")

    def scalar(self, value: float) -> str:
        return self.constant(np.array(value, np.float32), "scalar")


def adaptive_pool_matrix(height: int, width: int, size: int) -> np.ndarray:
    """(H*W, size*size) matrix M with flatten(x) @ M == adaptive_avg_pool2d(x, size).flatten.

    Uses torch's bins: output i covers [floor(i*H/s), ceil((i+1)*H/s)), which overlap when H
    is not a multiple of s, so a plain AveragePool node cannot express it in general.
    """
    matrix = np.zeros((height * width, size * size), np.float32)
    for i in range(size):
        r0, r1 = (i * height) // size, math.ceil((i + 1) * height / size)
        for j in range(size):
            c0, c1 = (j * width) // size, math.ceil((j + 1) * width / size)
            cells = [r * width + c for r in range(r0, r1) for c in range(c0, c1)]
            matrix[cells, i * size + j] = 1.0 / len(cells)
    return matrix


def pool(w: GraphWriter, h: str, shape: tuple[int, ...], size: int, token_pool: str) -> str:
    """edge_svp.svp.pool for one example shape `shape` (no batch axis)."""
    if len(shape) == 1:
        return h
    if len(shape) == 2:
        return piece("token_pool", token_pool).onnx(w, h)
    if len(shape) == 3:
        c, height, width = shape
        flat = w.node("Reshape", [h, w.constant(np.array([0, c, height * width], np.int64))])
        pooled = w.node("MatMul", [flat, w.constant(adaptive_pool_matrix(height, width, size))])
        return w.node("Reshape", [pooled, w.constant(np.array([0, c * size * size], np.int64))])
    raise ValueError(f"cannot pool a tensor of shape {shape}")


def flatten(w: GraphWriter, x: str) -> str:
    return w.node("Flatten", [x], axis=1)


def project(w: GraphWriter, z: str, weight: str, out: str | None = None) -> str:
    """z @ R^T for a (out_dim, in_dim) initializer R, as RandomProjection does."""
    return w.node("Gemm", [z, weight], out=out, transB=1)


def linear(w: GraphWriter, x: str, weight: str, bias: str) -> str:
    return w.node("Gemm", [x, weight, bias], transB=1)


def log_softmax(w: GraphWriter, v: str, temperature: float) -> str:
    scaled = w.node("Div", [v, w.scalar(temperature)])
    return w.node("LogSoftmax", [scaled], axis=-1)


def batch_mean(w: GraphWriter, x: str) -> str:
    return w.node("ReduceMean", [x], keepdims=0)


def head(w: GraphWriter, v: str, kind: str, prefix: str = "head.") -> str:
    """The head's layers (its ONNX form, edge_svp/svp/heads), reading parameters named as in
    its torch state dict."""
    return piece("head", kind).onnx(w, v, prefix)


def term(w: GraphWriter, kind: str, name: str, *args) -> str | None:
    """The ONNX form of divergence or alignment `name` (edge_svp/svp/divergences,
    alignments); None where the piece adds no term."""
    return piece(kind, name).onnx(w, *args)


def float_input(name: str, shape: list) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
