"""ONNX Runtime on-device training for SVP networks (the optional `ort` extra).

  export.py    host side: per-block ORT training artifacts and manifest.json (needs torch)
  runtime.py   device side: layerwise training from an export directory (no torch)
  inference.py one chained ONNX model of all blocks and the final head
  weights.py   ORT-trained weights back into the torch network
  backend.py   `edge-svp fit --backend ort`: export, train with the runtime, load back

Nothing here is imported by the rest of the package, so edge-svp works without onnx and
onnxruntime-training; each module that needs them says so with an EdgeSVPError.
"""
