"""Local heads g_l, trainable classifiers from the projection v_l to class logits: one module
per head (edge_svp/registry.py), each with

    build(proj_dim, num_classes) -> nn.Module
    onnx(w, v, prefix) -> node name     its layers in ONNX, reading parameters named as in
                                        its torch state dict (after `prefix`)
"""
