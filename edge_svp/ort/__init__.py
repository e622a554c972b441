"""ONNX Runtime on-device training for SVP networks (the optional `ort` extra); docs/ort.md.

Host side (torch, onnx, onnxruntime-training):
  export.py     per-block ORT training artifacts and manifest.json
  loss.py       the SVP local objective as an onnxblock loss, built from graph.py
  patches.py    the graph patches onnxruntime-training 1.19.2 needs
  inference.py  one chained inference model of all blocks and the final head
  weights.py    ORT-trained weights back into the torch network
  schedule.py   `edge-svp fit --backend ort`: its schedule; commands.py: `edge-svp export`
  parity.py     ORT's first training step against torch's

Device side (numpy and onnxruntime-training only, never torch):
  runtime.py    layerwise training from an export directory; manifest.py reads it

Nothing outside this package imports it, so edge-svp works without onnx and
onnxruntime-training; a module that needs them says so with an EdgeSVPError.
"""
