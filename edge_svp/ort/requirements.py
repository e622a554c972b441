"""One clear message when the optional ONNX packages are missing."""

from edge_svp.errors import EdgeSVPError

# as the README says it: the extra, pinned by constraints.txt in a source checkout
INSTALL = (
    "the ort extra: pip install -c constraints.txt -e '.[ort]' in a source checkout (onnx "
    "1.17 and onnxruntime-training-cpu, Python 3.11 and older), or pip install 'edge-svp[ort]'"
)


def missing(what: str, error: ImportError) -> EdgeSVPError:
    return EdgeSVPError(
        f"{what} needs the optional ONNX packages ({error.name} is missing): {INSTALL}"
    )
