"""Layerwise training from an export directory, the manifest, and weights back into torch."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip(
    "onnxruntime.training", reason="onnxruntime-training (the ort extra) is not installed"
)

from ort_helpers import (  # noqa: E402  # noqa: E402
    CLASSES,
    INPUT_SHAPES,
    export,
    identity_preprocess,
    learnable_data,
    tiny_config,
    tiny_network,
)

from edge_svp.config import override  # noqa: E402
from edge_svp.data import Dataset, Preprocess  # noqa: E402
from edge_svp.ort import runtime  # noqa: E402
from edge_svp.ort.inference import export_inference  # noqa: E402
from edge_svp.ort.manifest import Manifest  # noqa: E402
from edge_svp.ort.weights import load_trained_weights  # noqa: E402
from edge_svp.training import block_accuracies  # noqa: E402


def splits(kind):
    x, y = learnable_data(kind, 320)
    return runtime.Split(x[:256], y[:256]), runtime.Split(x[256:], y[256:])


@pytest.fixture(scope="module", params=["mlp", "cnn", "vit"])
def trained(request, tmp_path_factory):
    """A tiny network of each kind, exported and trained by the ORT runtime for 4 epochs."""
    kind = request.param
    tmp_path = tmp_path_factory.mktemp(kind)
    config = tiny_config(kind, epochs=4, divergence="kl", beta=0.1, alignment="mse", lam=0.1)
    net = tiny_network(config)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    export(tmp_path, config, net)
    train, test = splits(kind)
    records = runtime.train(tmp_path / "export", train, test)
    return kind, net, initial, tmp_path / "export", records, (train, test)


def test_every_block_trains_and_its_loss_goes_down(trained):
    _, net, _, export_dir, records, _ = trained
    assert [(r["block"], r["epoch"]) for r in records] == [
        (b, e) for b in (1, 2) for e in range(1, 5)
    ]
    for block in (1, 2):
        losses = [r["loss"] for r in records if r["block"] == block]
        assert losses[-1] < losses[0]
        assert (export_dir / f"block{block}" / "trained_checkpoint").exists()
    assert set(records[0]) == {"block", "epoch", "loss", "train_accuracy", "test_accuracy",
                               "seconds", "lr"}  # fmt: skip


def test_trained_weights_load_back_into_torch(trained):
    kind, net, initial, export_dir, records, (_, test) = trained
    load_trained_weights(net, export_dir)
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, initial[k])]
    assert any(k.startswith("blocks.0.") for k in changed)
    assert any(k.startswith("objectives.1.head.") for k in changed)
    if kind == "cnn":  # ORT moved the BatchNorm statistics, and they came back
        assert "blocks.0.1.running_mean" in changed
    # the torch network now predicts what ORT's eval graphs predicted after training
    dataset = Dataset("t", torch.from_numpy(test.x), torch.from_numpy(test.y),
                      torch.from_numpy(test.x), torch.from_numpy(test.y), CLASSES)  # fmt: skip
    torch_accuracy = block_accuracies(net, dataset, identity_preprocess(kind))
    ort_accuracy = [r["test_accuracy"] for r in records if r["epoch"] == 4]
    assert torch_accuracy == pytest.approx(ort_accuracy)


def test_inference_model_runs_in_a_plain_session(trained, tmp_path):
    import onnxruntime

    kind, net, _, export_dir, _, (_, test) = trained
    load_trained_weights(net, export_dir)
    preprocess = Preprocess(
        [0.5] * (3 if kind != "mlp" else 1), [2.0] * (3 if kind != "mlp" else 1)
    )
    path = export_inference(net, preprocess, CLASSES, torch.float32, tmp_path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = kind != "mlp"
    for batch in (test.x[:7], test.x[:64]):  # the batch axis is dynamic
        raw = np.moveaxis(batch, 1, -1) if image else batch  # images as they decode: NHWC
        (logits,) = session.run(None, {"x": np.ascontiguousarray(raw)})
        with torch.no_grad():
            expected = net.eval()(preprocess(torch.from_numpy(batch))).numpy()
        assert np.abs(logits - expected).max() < 1e-4  # the preprocessing is in the graph
    info = json.loads((tmp_path / "inference.json").read_text())
    assert info["classes"] == CLASSES and info["input"]["shape"][0] == "batch"
    assert info["input"]["layout"] == ("NHWC" if image else "ND")


def test_manifest_describes_the_export(trained):
    kind, net, _, export_dir, _, _ = trained
    manifest = Manifest.read(export_dir)
    assert manifest.model == kind and len(manifest.blocks) == len(net)
    assert [b.index for b in manifest.blocks] == [1, 2]
    first = manifest.blocks[0]
    assert [t.name for t in first.inputs] == ["x", "v_ref", "labels"]
    assert [t.name for t in first.outputs] == ["loss", "logits", "v", "h"]
    assert all(t.shape[0] == "batch" for t in first.inputs + first.outputs[1:])
    assert first.inputs[0].shape[1:] == list(net.input_shape)
    assert first.outputs[3].shape[1:] == list(manifest.blocks[1].inputs[0].shape[1:])
    assert first.inputs[2].dtype == "int64"
    assert "head.weight" in first.trainable
    assert manifest.svp["divergence"] == "kl" and manifest.svp["proj_dim"] == 8
    assert manifest.optimizer["ort_block"] == "AdamW" and manifest.optimizer["lr"] == 0.003
    assert manifest.schedule["kind"] == "layerwise" and manifest.schedule["epochs"] == 4
    assert manifest.classes == CLASSES and manifest.preprocessing["mean"]
    assert manifest.versions["onnxruntime-training-cpu"]
    if kind == "cnn":
        assert "1.running_mean" in first.frozen
        assert first.patches == {"trim_eval_batchnorm": 1}
    if kind == "vit":
        assert first.patches == {"add_layernorm_outputs": 2}


def test_runtime_trains_in_a_process_without_torch(tmp_path):
    config = tiny_config("mlp", epochs=1)
    export(tmp_path, config, tiny_network(config))
    x, y = learnable_data("mlp", 64)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_test=x[:16], y_test=y[:16])
    script = (
        "import sys\n"
        "from edge_svp.ort import runtime\n"
        "assert 'torch' not in sys.modules, 'import'\n"
        f"runtime.main([{str(tmp_path / 'export')!r}, {str(tmp_path / 'data.npz')!r}])\n"
        "assert 'torch' not in sys.modules, 'training'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "block 2  epoch   1/1" in result.stdout and "test accuracy" in result.stdout


@pytest.mark.parametrize("kind", ["mlp", "cnn", "vit"])
def test_inference_model_of_a_backprop_network_uses_its_classifier(kind, tmp_path):
    import onnxruntime

    config = override(tiny_config(kind), **{"train.method": "bp"})
    net = tiny_network(config)
    assert net.classifier is not None
    path = export_inference(net, identity_preprocess(kind), CLASSES, torch.float32, tmp_path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.randn(5, *INPUT_SHAPES[kind])
    raw = batch.permute(0, 2, 3, 1) if kind != "mlp" else batch  # images: NHWC
    (logits,) = session.run(None, {"x": raw.contiguous().numpy()})
    with torch.no_grad():
        expected = net.classifier(nn.Sequential(*net.blocks).eval()(batch)).numpy()
    assert np.abs(logits - expected).max() < 1e-4
    assert len(net.objectives) == 0 and net.input_projection is None  # no SVP head to use
