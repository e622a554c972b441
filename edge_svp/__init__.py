"""edge-svp: block-local, backprop-free training (Stochastic Variational Propagation).

The Python API, as used from a notebook:

    import edge_svp as es
    data = es.load_dataset("digits")
    net = es.SVPNetwork.from_sequential(my_sequential, boundaries=[2, 4],
                                        input_shape=data.input_shape,
                                        num_classes=data.num_classes)
    es.train(net, data, es.TrainConfig(epochs=10))
    es.block_accuracies(net, data, es.Preprocess.fit(data.x_train, True, False))
    net.save("net.pt")

or, from a profile, the same path `edge-svp fit` takes:

    summary = es.fit(es.load_profile("digits-mlp"), out="runs/digits")
"""

from edge_svp.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SVPConfig,
    TrainConfig,
    load_profile,
    override,
)
from edge_svp.data import Dataset, Preprocess, load_dataset
from edge_svp.errors import EdgeSVPError
from edge_svp.network import SVPNetwork
from edge_svp.run import build_network, evaluate_run, fit, load_run
from edge_svp.train import block_accuracies, train

__all__ = [
    "DataConfig",
    "Dataset",
    "EdgeSVPError",
    "ModelConfig",
    "OptimConfig",
    "Preprocess",
    "RunConfig",
    "SVPConfig",
    "SVPNetwork",
    "TrainConfig",
    "block_accuracies",
    "build_network",
    "evaluate_run",
    "fit",
    "load_dataset",
    "load_profile",
    "load_run",
    "override",
    "train",
]
