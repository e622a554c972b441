"""One clear message when the optional ONNX packages are missing."""

from edge_svp.errors import EdgeSVPError

INSTALL = "pip install 'edge-svp[ort]' (onnx<1.18 and onnxruntime-training-cpu)"


def missing(what: str, error: ImportError) -> EdgeSVPError:
    return EdgeSVPError(
        f"{what} needs the optional ONNX packages ({error.name} is missing): {INSTALL}"
    )
