"""manifest.json: what a device needs to know about an export directory (no torch, no onnx).

Written by export.py on the host, read by runtime.py on the device. The format is described
in docs/ort.md; FORMAT changes whenever a field changes meaning.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from edge_svp.errors import EdgeSVPError

FORMAT = "edge-svp-ort/1"
MANIFEST = "manifest.json"

# Tensor names of every block's training and eval graphs
INPUT, V_REF, LABELS = "x", "v_ref", "labels"  # block input, reference v_{l-1}, class ids
LOSS, LOGITS, V_OUT, OUTPUT = "loss", "logits", "v", "h"  # v: clean projection; h: block output


@dataclass
class Tensor:
    name: str
    shape: list  # "batch" marks the dynamic axis
    dtype: str = "float32"


@dataclass
class Block:
    index: int  # 1-based, as in metrics.jsonl
    directory: str  # relative to the export directory
    training_model: str
    eval_model: str
    optimizer_model: str
    checkpoint: str
    trained_checkpoint: str  # written by the runtime
    inputs: list[Tensor]  # training/eval graph inputs, in call order
    outputs: list[Tensor]  # loss first, then logits, v, h
    trainable: list[str]  # parameter names (torch state-dict names; head.* for the head)
    frozen: list[str]  # buffers updated or read by ORT (BatchNorm statistics, projections)
    patches: dict[str, int]  # graph patches applied, by name


@dataclass
class Manifest:
    profile: str
    model: str
    input: Tensor  # the network input after preprocessing
    reference_model: str  # v_0 = R_0 pool(x), a plain inference graph
    blocks: list[Block]
    svp: dict
    optimizer: dict  # name, ORT block, lr, weight_decay, eps, betas
    schedule: dict  # kind (layerwise), epochs, batch_size, lr_schedule, seed, eval_batch_size
    preprocessing: dict  # scale (1/255 for uint8 input, else 1), per-channel mean and std
    classes: list[str]
    versions: dict
    format: str = FORMAT
    opset: int = 20
    unfinished: str | None = None  # exported from an unfinished run: where its checkpoint stood

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise EdgeSVPError(
                f"{directory} is not an ORT export directory (no {MANIFEST})"
            ) from None
        except (OSError, json.JSONDecodeError) as e:
            raise EdgeSVPError(f"cannot read {path}: {e}") from None
        if raw.get("format") != FORMAT:
            raise EdgeSVPError(f"{path} has format {raw.get('format')!r}, expected {FORMAT!r}")
        raw["input"] = Tensor(**raw["input"])
        raw["blocks"] = [_block(b) for b in raw["blocks"]]
        return cls(**raw)


def _block(raw: dict) -> Block:
    raw = dict(raw)
    raw["inputs"] = [Tensor(**t) for t in raw["inputs"]]
    raw["outputs"] = [Tensor(**t) for t in raw["outputs"]]
    return Block(**raw)
