"""Alignment terms A(v, v_ref) between a block's projection and its detached reference,
averaged over the batch: one module per alignment (edge_svp/registry.py), each with

    loss(v, v_ref) -> scalar tensor
    onnx(w, v, v_ref) -> node name      the same in ONNX, or None where there is no term
"""
