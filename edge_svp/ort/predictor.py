"""Predictions from an exported inference model (`edge-svp export RUN --inference`) with
ONNX Runtime alone: raw inputs in, class probabilities out; no torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_svp.errors import EdgeSVPError
from edge_svp.ort.requirements import missing

MODEL, INFO = "model.onnx", "inference.json"


class InferenceModel:
    def __init__(self, export_dir: str | Path, threads: int | None = None):
        directory = Path(export_dir)
        if not (directory / MODEL).is_file() or not (directory / INFO).is_file():
            raise EdgeSVPError(
                f"{directory} is not an inference export (no {MODEL} and {INFO}); make one "
                "with: edge-svp export RUN_DIR --inference --out DIR"
            )
        try:
            import onnxruntime
        except ImportError as e:
            raise missing("ONNX Runtime inference", e) from None
        self.info = json.loads((directory / INFO).read_text())
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(directory / MODEL), options, providers=["CPUExecutionProvider"]
        )

    @property
    def classes(self) -> list[str]:
        return self.info["classes"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input as the network takes it, (C, H, W) for images."""
        shape = tuple(self.info["input"]["shape"][1:])
        return (shape[-1], *shape[:-1]) if self.info["input"]["layout"] == "NHWC" else shape

    def predict(self, pixels: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities of raw inputs, uint8 images (N, H, W, C) as they decode."""
        name, dtype = self.info["input"]["name"], self.info["input"]["dtype"]
        x = np.ascontiguousarray(pixels, dtype=dtype)
        logits = np.concatenate([self.session.run(None, {name: x[i : i + batch_size]})[0]
                                 for i in range(0, len(x), batch_size)])  # fmt: skip
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)
