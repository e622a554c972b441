import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx (the ort extra) is not installed")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_svp.ort import patches  # noqa: E402


def model_of(*nodes, initializers=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph(list(nodes), "g", [x], [y], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def test_layernorm_gets_mean_and_invstddev_outputs():
    ln = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"])
    model = model_of(ln, initializers=[const("s", np.ones(4, np.float32)),
                                       const("b", np.zeros(4, np.float32))])  # fmt: skip
    assert patches.add_layernorm_outputs(model) == 1
    assert len(model.graph.node[0].output) == 3
    assert patches.add_layernorm_outputs(model) == 0  # already patched: no-op


def test_dropout_gets_a_mask_output():
    model = model_of(helper.make_node("Dropout", ["x"], ["y"]))
    assert patches.add_dropout_masks(model) == 1
    assert len(model.graph.node[0].output) == 2


def test_castlike_becomes_cast_to_the_second_inputs_type():
    like = const("like", np.zeros(1, np.float64))
    model = model_of(helper.make_node("CastLike", ["x", "like"], ["y"]), initializers=[like])
    assert patches.castlike_to_cast(model) == 1
    node = model.graph.node[0]
    assert node.op_type == "Cast" and list(node.input) == ["x"]
    assert helper.get_attribute_value(node.attribute[0]) == TensorProto.DOUBLE


def batchnorm_model(**attrs):
    values = [const(n, np.ones(4, np.float32)) for n in ("s", "b", "m", "v")]
    bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], **attrs)
    return model_of(bn, initializers=values)


def test_eval_mode_batchnorm_is_switched_to_training_mode():
    model = batchnorm_model(training_mode=0)
    assert patches.batchnorm_training_mode(model) == 1
    node = model.graph.node[0]
    assert len(node.output) == 3
    assert [helper.get_attribute_value(a) for a in node.attribute if a.name == "training_mode"] == [
        1
    ]


def test_eval_graph_batchnorm_is_trimmed_to_one_output():
    model = batchnorm_model(training_mode=0)
    model.graph.node[0].output.extend(["mean_out", "var_out"])
    assert patches.trim_eval_batchnorm(model) == 1
    assert list(model.graph.node[0].output) == ["y"]
    onnx.checker.check_model(model, full_check=True)


def test_training_mode_batchnorm_is_not_trimmed():
    model = batchnorm_model(training_mode=1)
    model.graph.node[0].output.extend(["mean_out", "var_out"])
    assert patches.trim_eval_batchnorm(model) == 0


def test_prepare_for_training_reports_what_it_changed():
    nodes = [helper.make_node("Dropout", ["x"], ["d"]), helper.make_node("Relu", ["d"], ["y"])]
    assert patches.prepare_for_training(model_of(*nodes)) == {"add_dropout_masks": 1}
    assert patches.prepare_for_training(model_of(helper.make_node("Relu", ["x"], ["y"]))) == {}
