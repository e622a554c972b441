"""Predictions from an exported inference model (`edge-svp export RUN --inference`) with
ONNX Runtime alone: raw inputs in, class probabilities out; no torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_svp.errors import EdgeSVPError
from edge_svp.ort.requirements import missing

MODEL, INFO = "model.onnx", "inference.json"


def read_info(path: Path) -> dict:
    """inference.json, with what predictions need (the input and the classes)."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EdgeSVPError(f"cannot read {path}: {e}") from None
    if not isinstance(info, dict) or not {"input", "classes"} <= info.keys():
        raise EdgeSVPError(f"{path} does not describe an inference export (no input or classes)")
    return info


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
        self.info = read_info(directory / INFO)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(directory / MODEL), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # ONNX Runtime raises its own kinds for a damaged model
            text = (str(e).splitlines() or [type(e).__name__])[0]
            # its own words, after the C++ location: "... failed:<where>) ModelProto ..."
            reason = text.rpartition("failed:")[2].rpartition(") ")[2].strip() or text
            raise EdgeSVPError(f"cannot load {directory / MODEL}: {reason}") from None

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
