"""Predictions on new inputs: `edge-svp predict` from a run (torch) and from an inference
export (ONNX Runtime), and `load_run(...).predict` in Python."""

import csv
import gzip
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import edge_svp as es
from edge_svp.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_run):
    out = tmp_path_factory.mktemp("runs") / "digits"
    result = CliRunner().invoke(main, ["fit", *tiny_run, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Ten test digits, as a user may have them: PNG files in a folder, an .npy array of
    (N, C, H, W), one of (N, H, W) and a gzipped IDX file."""
    root = tmp_path_factory.mktemp("inputs")
    pixels = es.load_dataset("digits").x_test[:10].numpy()  # (10, 1, 8, 8) uint8
    (root / "pngs").mkdir()
    for i, image in enumerate(pixels[:4]):
        Image.fromarray(image[0]).save(root / "pngs" / f"{i}.png")
    np.save(root / "nchw.npy", pixels[4:6])
    np.save(root / "nhw.npy", pixels[6:8, 0])
    header = b"\0\0\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (2, 8, 8))
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + pixels[8:].tobytes()))
    files = [root / "pngs", root / "nchw.npy", root / "nhw.npy", root / "t10k-images-idx3-ubyte.gz"]
    return [str(f) for f in files], pixels


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_reads_every_kind_of_input_and_matches_the_network(run, inputs):
    files, pixels = inputs
    result = CliRunner().invoke(main, ["predict", str(run), *files])
    assert result.exit_code == 0, result.output
    out = rows(result.stdout)
    assert len(out) == 10 and list(out[0])[:3] == ["input", "class", "0"]
    assert out[0]["input"].endswith("0.png") and out[4]["input"].endswith("nchw.npy[0]")
    expected = es.load_run(run).predict(pixels)  # the same digits, in the dataset's layout
    assert [r["class"] for r in out] == [str(int(c)) for c in expected.argmax(1)]
    got = np.array([[float(r[str(c)]) for c in range(10)] for r in out])
    assert np.allclose(got, expected.numpy(), atol=1e-6)


def test_the_python_api_takes_either_layout(run, inputs):
    _, pixels = inputs
    trained = es.load_run(run)
    nchw = trained.predict(pixels)
    assert torch.equal(nchw, trained.predict(np.moveaxis(pixels, 1, -1)))  # as images decode
    assert torch.allclose(nchw.sum(1), torch.ones(10)) and trained.classes[0] == "0"


def test_ort_predicts_without_torch_from_the_inference_export_as_torch_does(run, inputs, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime (the ort extra) is not installed")
    files, _ = inputs
    export = tmp_path / "export"
    assert (
        CliRunner()
        .invoke(main, ["export", str(run), "--inference", "--out", str(export)])
        .exit_code
        == 0
    )
    torch_rows = rows(CliRunner().invoke(main, ["predict", str(run), *files]).stdout)
    out = tmp_path / "predictions.jsonl"
    args = ["predict", str(export), *files, "--backend", "ort", "--out", str(out)]
    # as on a device with ONNX Runtime and no torch: importing torch fails in this process
    without_torch = (
        f"import sys; sys.modules['torch'] = None; from edge_svp.cli import main; main({args!r})"
    )
    result = subprocess.run([sys.executable, "-c", without_torch], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["class"] for line in lines] == [r["class"] for r in torch_rows]
    for line, row in zip(lines, torch_rows, strict=True):
        assert line["probabilities"]["3"] == pytest.approx(float(row["3"]), abs=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: Image.new("L", (9, 8)).save(d / "wide.png") or d / "wide.png", "the network takes 8x8"),
        (lambda d: np.save(d / "f.npy", np.zeros((2, 8, 8), np.float32)) or d / "f.npy", "give raw uint8 pixels"),
        (lambda d: np.save(d / "s.npy", np.zeros((2, 7, 8), np.uint8)) or d / "s.npy", "of shape (2, 7, 8)"),
        (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "give image files, folders"),
        (lambda d: (d / "bad.png").write_bytes(b"\x89PNG no") and d / "bad.png", "cannot decode image"),
        (lambda d: d / "missing.png", "missing.png does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "holds no image files"),
    ],
)  # fmt: skip
def test_inputs_it_cannot_take_are_one_line(run, tmp_path, make, message):
    result = CliRunner().invoke(main, ["predict", str(run), str(make(tmp_path))])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("edge-svp: error: ") and message in line, line
    assert result.stdout == ""


def test_predict_refuses_an_output_it_cannot_write_before_any_work(run, inputs):
    files, _ = inputs
    result = CliRunner().invoke(main, ["predict", str(run), *files, "--out", "/proc/x/p.csv"])
    assert result.exit_code == 2 and "cannot" in result.stderr
