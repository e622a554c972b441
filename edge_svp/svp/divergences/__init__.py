"""Divergence terms D(softmax(v/T) || softmax(v_ref/T)), averaged over the batch: one module
per divergence (edge_svp/registry.py), each with

    loss(v, v_ref, temperature) -> scalar tensor     v_ref is already detached
    onnx(w, v, v_ref, temperature) -> node name      the same in ONNX (ort/graph.GraphWriter
                                                     w), or None where there is no term
"""
