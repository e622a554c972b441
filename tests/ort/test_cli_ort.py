"""`edge-svp fit --backend ort`, `edge-svp eval` on its run, and `edge-svp export`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip(
    "onnxruntime.training", reason="onnxruntime-training (the ort extra) is not installed"
)

from edge_svp.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def ort_run(tmp_path_factory, tiny_run):
    out = tmp_path_factory.mktemp("runs") / "ort"
    args = ["fit", *tiny_run, "--backend", "ort", "--schedule", "layerwise", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_ort_fit_writes_the_same_run_directory(ort_run):
    out, output = ort_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "ort" and summary["schedule"] == "layerwise"
    assert len(summary["per_block_accuracy"]) == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2 * 2
    assert (out / "checkpoint.pt").exists() and (out / "config.toml").exists()
    assert (out / "ort" / "manifest.json").exists()
    assert "block 2  epoch   2/2" in output and "test accuracy" in output


def test_eval_of_an_ort_run_reproduces_its_accuracy(ort_run, evaluate_run):
    out, _ = ort_run
    evaluated, summary = evaluate_run(out)
    assert evaluated["per_block_accuracy"] == summary["per_block_accuracy"]


def test_export_inference_of_an_ort_run(ort_run, tmp_path):
    import onnxruntime

    from edge_svp.trained_run import load_run

    out, _ = ort_run
    result = CliRunner().invoke(main, ["export", str(out), "--inference", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    dataset = load_run(out).dataset()
    pixels = dataset.x_test.permute(0, 2, 3, 1).contiguous().numpy()  # raw, as images decode
    (logits,) = session.run(None, {"x": pixels})
    accuracy = float(np.mean(logits.argmax(1) == dataset.y_test.numpy()))
    summary = json.loads((out / "summary.json").read_text())
    assert accuracy == pytest.approx(summary["test_accuracy"])


def test_export_training_artifacts_from_a_run_and_from_a_profile(ort_run, tmp_path):
    out, _ = ort_run
    for source in ([str(out)], ["--profile", "digits-mlp", "--set", "model.widths=[8]"]):
        target = tmp_path / str(len(source))
        result = CliRunner().invoke(main, ["export", *source, "--out", str(target)])
        assert result.exit_code == 0, result.output
        assert (target / "manifest.json").exists() and (target / "block1" / "checkpoint").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "--backend", "ort", "--schedule", "joint"], "trains SVP layerwise"),
        (
            ["fit", "--backend", "ort", "--schedule", "layerwise", "--mem-budget", "64MB"],
            "plans no budget",
        ),
        (["export", "--out", "x"], "either a RUN_DIR or --profile"),
        (["export", "--profile", "digits-mlp", "--inference", "--out", "x"], "trained RUN_DIR"),
    ],
)
def test_bad_ort_input_is_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
