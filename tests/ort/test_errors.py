"""What cannot run on ORT fails with one EdgeSVPError naming the op and the block."""

import pytest
import torch
from torch import nn

pytest.importorskip(
    "onnxruntime.training", reason="onnxruntime-training (the ort extra) is not installed"
)

from ort_helpers import CLASSES, identity_preprocess, tiny_config  # noqa: E402

from edge_svp.errors import EdgeSVPError  # noqa: E402
from edge_svp.network import SVPNetwork  # noqa: E402
from edge_svp.ort.export import export_training  # noqa: E402


class Then(nn.Module):
    """A Linear layer followed by `op`."""

    def __init__(self, op):
        super().__init__()
        self.linear = nn.Linear(20, 20)
        self.op = op

    def forward(self, x):
        return self.op(self.linear(x))


@pytest.mark.parametrize(
    "op, message",
    [
        (torch.atan, "block 2: op Atan (node /Atan) has no gradient in onnxruntime-training"),
        (torch.sinh, "block 2: op aten::sinh cannot be exported to ONNX"),
    ],
)
def test_unsupported_op_names_the_op_and_the_block(tmp_path, capfd, op, message):
    net = SVPNetwork([nn.Sequential(nn.Linear(20, 20)), Then(op)], (20,), len(CLASSES))
    with pytest.raises(EdgeSVPError) as error:
        export_training(net, tiny_config("mlp"), CLASSES, identity_preprocess("mlp"),
                        torch.float32, tmp_path)  # fmt: skip
    assert str(error.value).startswith(message)
    assert len(str(error.value).splitlines()) == 1
    out, err = capfd.readouterr()
    assert "graph" not in out and "Traceback" not in err  # no exporter or ORT dumps


@pytest.mark.parametrize(
    "optim, message",
    [
        ({"optim.name": "sgd"}, "SGD has no momentum"),
        ({"optim.name": "adam", "optim.weight_decay": 0.1}, "use optim.name=adamw"),
    ],
)
def test_optimizers_ort_cannot_match_are_refused(tmp_path, optim, message):
    from edge_svp.config import override
    from edge_svp.network import build_network

    config = override(tiny_config("mlp"), **optim)
    net = build_network(config, (20,), len(CLASSES))
    with pytest.raises(EdgeSVPError, match=message):
        export_training(net, config, CLASSES, identity_preprocess("mlp"), torch.float32, tmp_path)
