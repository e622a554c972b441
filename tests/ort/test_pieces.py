"""Every divergence and alignment (edge_svp/svp/divergences, alignments) computes in ONNX what
it computes in torch, and a piece without an ONNX form is refused by the ort backend."""

import sys
import types

import numpy as np
import pytest
import torch

pytest.importorskip(
    "onnxruntime.training", reason="onnxruntime-training (the ort extra) is not installed"
)

import onnxruntime  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from edge_svp.config import RunConfig  # noqa: E402
from edge_svp.errors import EdgeSVPError  # noqa: E402
from edge_svp.ort import graph  # noqa: E402
from edge_svp.ort.schedule import OrtLayerwise  # noqa: E402
from edge_svp.registry import names, piece  # noqa: E402

TERMS = [(kind, name) for kind in ("divergence", "alignment") for name in names(kind)]


def onnx_value(kind: str, name: str, v: np.ndarray, v_ref: np.ndarray) -> float | None:
    """The piece's ONNX form, run by ONNX Runtime on (v, v_ref); None where it adds no term."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(v.shape))
              for n in ("v", "v_ref")]  # fmt: skip
    g = helper.make_graph([], "term", inputs, [])
    w = graph.GraphWriter(g)
    args = ("v", "v_ref", 1.5) if kind == "divergence" else ("v", "v_ref")
    out = graph.term(w, kind, name, *args)
    if out is None:
        return None
    g.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, []))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.OPSET)])
    model.ir_version = 8  # what onnxruntime 1.19 reads
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    return float(session.run(None, {"v": v, "v_ref": v_ref})[0])


@pytest.mark.parametrize("kind, name", TERMS)
def test_a_term_computes_the_same_in_onnx_as_in_torch(kind, name):
    g = torch.Generator().manual_seed(0)
    v, v_ref = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    args = (v, v_ref, 1.5) if kind == "divergence" else (v, v_ref)
    expected = float(piece(kind, name).loss(*args))
    got = onnx_value(kind, name, v.numpy(), v_ref.numpy())
    if got is None:  # the piece adds no term: its torch form is zero
        assert expected == 0.0
    else:
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_a_piece_without_an_onnx_form_is_refused(monkeypatch):
    package = "edge_svp.svp.divergences"
    fake = types.ModuleType(f"{package}.torch_only")
    fake.loss = lambda v, v_ref, temperature: v.new_zeros(())
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    config = RunConfig()
    config.train.schedule = "layerwise"
    config.svp.divergence = "torch_only"
    with pytest.raises(EdgeSVPError, match="no ONNX form of svp.divergence = 'torch_only'"):
        OrtLayerwise().check(config)


@pytest.mark.parametrize(
    "setting, value",
    [("svp.aux_blocks", 1), ("optim.state_precision", "bf16"), ("optim.state_on_host", "on"),
     ("train.block_epochs", [3, 1])],
)  # fmt: skip
def test_what_the_ort_step_has_no_form_of_is_refused_by_name(setting, value):
    config = RunConfig()
    section, key = setting.split(".")
    setattr(getattr(config, section), key, value)
    with pytest.raises(EdgeSVPError, match=f"the ort backend .*drop .*{setting}"):
        OrtLayerwise().check(config)


@pytest.mark.parametrize("kind", ["divergence", "alignment", "head", "token_pool"])
def test_every_registered_piece_has_an_onnx_form_or_is_refused(kind):
    for name in names(kind):
        config = RunConfig()
        config.train.schedule = "layerwise"
        setattr(config.svp, kind, name)
        if hasattr(piece(kind, name), "onnx"):
            OrtLayerwise().check(config)
        else:
            with pytest.raises(EdgeSVPError, match="no ONNX form"):
                OrtLayerwise().check(config)


@pytest.mark.parametrize("name", names("token_pool"))
def test_a_token_pool_computes_the_same_in_onnx_as_in_torch(name):
    h = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(1))
    inputs = [helper.make_tensor_value_info("h", TensorProto.FLOAT, [3, 5, 7])]
    g = helper.make_graph([], "pool", inputs, [])
    out = piece("token_pool", name).onnx(graph.GraphWriter(g), "h")
    g.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [3, 7]))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.OPSET)])
    model.ir_version = 8
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    (got,) = session.run(None, {"h": h.numpy()})
    np.testing.assert_allclose(got, piece("token_pool", name).pool(h).numpy(), rtol=1e-6)
