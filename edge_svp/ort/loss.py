"""The SVP local objective of one block as an onnxblock loss (the graph ORT differentiates).

Same definition and numbers as edge_svp.svp.objective.LocalObjective:

    v_clean = R_l pool(h)          v = dropout(v_clean, p)        ref = R_ref v_ref (if widths differ)
    loss = CE(g_l(v), y) + beta * D(softmax(v/T) || softmax(ref/T)) + lam * A(v, ref)

v_ref, the previous block's clean projection, is a graph input: the runtime feeds it from the
frozen block before. The graph also outputs the head's logits, v_clean (the next block's
reference) and the block output h (the next block's input).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper
from onnxruntime.training import onnxblock

from edge_svp.ort import graph
from edge_svp.ort.manifest import LABELS, LOGITS, LOSS, V_OUT, V_REF

PROJECTION, REFERENCE_PROJECTION = "svp.projection", "svp.reference_projection"


@dataclass
class LossSpec:
    """Everything the loss graph of one block needs, taken from its LocalObjective."""

    feature_shape: tuple[int, ...]  # block output per example
    ref_dim: int  # width of v_ref
    divergence: str
    alignment: str
    beta: float
    lam: float
    temperature: float
    proj_dropout: float
    pool_size: int
    token_pool: str
    head: str  # linear | mlp
    projection: np.ndarray  # R_l, (d0, pooled width)
    reference_projection: np.ndarray | None  # (d0, ref_dim) when ref_dim != d0
    head_parameters: dict[str, np.ndarray]  # "head.<torch name>" -> initial value

    def frozen(self) -> dict[str, np.ndarray]:
        out = {PROJECTION: self.projection}
        if self.reference_projection is not None:
            out[REFERENCE_PROJECTION] = self.reference_projection
        return out


class SVPLoss(onnxblock.Block):
    def __init__(self, spec: LossSpec):
        super().__init__()
        self.spec = spec

    def build(self, h: str) -> str:
        spec, g = self.spec, self.base.graph
        w = graph.GraphWriter(g, "svp.loss.")
        for name, array in {**spec.frozen(), **spec.head_parameters}.items():
            w.add_initializer(name, array.astype(np.float32))
        g.input.append(graph.float_input(V_REF, ["batch", spec.ref_dim]))
        g.input.append(helper.make_tensor_value_info(LABELS, TensorProto.INT64, ["batch"]))

        pooled = graph.pool(w, h, spec.feature_shape, spec.pool_size, spec.token_pool)
        v_clean = graph.project(w, pooled, PROJECTION, out=V_OUT)
        v = v_clean
        if spec.proj_dropout:
            # training_mode is an input: generate_artifacts drops it from the eval graph
            ratio = w.scalar(spec.proj_dropout)
            training = w.constant(np.array(True), "training")
            v = w.node("Dropout", [v_clean, ratio, training], outputs=2)[0]
        logits = graph.head(w, v, spec.head)
        logits = w.node("Identity", [logits], out=LOGITS)
        # ORT's gradient builder reads the second output (log_prob); it must exist
        ce = w.node("SoftmaxCrossEntropyLoss", [logits, LABELS], outputs=2, reduction="mean")[0]
        ref = V_REF
        if spec.reference_projection is not None:
            ref = graph.project(w, V_REF, REFERENCE_PROJECTION)
        loss = ce
        terms = [(spec.beta, "divergence", spec.divergence, (v, ref, spec.temperature)),
                 (spec.lam, "alignment", spec.alignment, (v, ref))]  # fmt: skip
        for weight, kind, name, args in terms:
            value = graph.term(w, kind, name, *args) if weight else None
            if value is not None:
                loss = w.node("Add", [loss, w.node("Mul", [value, w.scalar(weight)])])
        return w.node("Identity", [loss], out=LOSS)
