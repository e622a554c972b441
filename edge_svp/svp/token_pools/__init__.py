"""How a transformer block's tokens (B, N, D) become one vector per example before the
projection (svp.token_pool): one module per pool (edge_svp/registry.py), each with

    pool(h) -> (B, D)
    onnx(w, h) -> node name     the same in ONNX
"""
