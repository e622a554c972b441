"""Predictions on new inputs, as `edge-svp predict` makes them: from a run directory with
torch, or from an inference export with ONNX Runtime.

    names, probabilities, classes = predict_files("runs/cifar10", ["cat.png", "photos/"])
    print(predictions_text(names, probabilities, classes, "csv"))

In a notebook, `edge_svp.load_run(run_dir).predict(pixels)` gives the probabilities of
arrays already in memory.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from edge_svp.data.inputs import read_inputs

FORMATS = ("csv", "jsonl")


def predict_files(
    source: str | Path, inputs: list[str], backend: str = "torch", threads: int = 0, reporter=None
) -> tuple[list[str], np.ndarray, list[str]]:
    """(input names, class probabilities (N, classes), class names) of every input file:
    `source` is a run directory (backend torch; `reporter` is warned if it is unfinished)
    or an inference export (backend ort)."""
    from edge_svp.threads import choose_threads

    if backend == "ort":
        from edge_svp.ort.predictor import InferenceModel

        model = InferenceModel(source, choose_threads(threads))
        names, pixels = read_inputs(inputs, model.input_shape)
        return names, model.predict(pixels), model.classes
    import torch

    from edge_svp.trained_run import load_run

    torch.set_num_threads(choose_threads(threads))
    run = load_run(source, reporter)
    names, pixels = read_inputs(inputs, run.input_shape)
    return names, run.predict(pixels).numpy(), run.classes


def predictions_text(names: list[str], probabilities: np.ndarray, classes: list[str],
                     fmt: str) -> str:  # fmt: skip
    """One line per input: its name, the predicted class and every class's probability; as
    CSV (with a header) or JSON lines."""
    best = [classes[i] for i in probabilities.argmax(axis=1)]
    if fmt == "jsonl":
        return "".join(
            json.dumps({"input": name, "class": cls,
                        "probabilities": dict(zip(classes, map(float, p), strict=True))}) + "\n"
            for name, cls, p in zip(names, best, probabilities, strict=True)
        )  # fmt: skip
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["input", "class", *classes])
    for name, cls, p in zip(names, best, probabilities, strict=True):
        writer.writerow([name, cls, *(f"{v:.6f}" for v in p)])
    return out.getvalue()


def output_format(out: str | Path | None, fmt: str | None) -> str:
    """The format asked for, or the one the output file's suffix names (CSV by default)."""
    if fmt:
        return fmt
    return "jsonl" if out and Path(out).suffix in (".jsonl", ".json") else "csv"
