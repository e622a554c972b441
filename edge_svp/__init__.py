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

import importlib
import os

# MKL caches the buffers of its kernels and keeps them resident, by amounts that differ from
# run to run; this makes it free them. MKL reads it when torch loads it, so it is set here,
# before torch is imported (edge_svp/memory/meter.py, set_host_allocator).
os.environ.setdefault("MKL_DISABLE_FAST_MM", "1")
# oneDNN (and PyTorch's cache in front of it) keeps each convolution's compiled kernel for
# every input shape it has seen: a layerwise run meets new shapes at every block (its
# micro-batch, the epoch's last micro-batch, evaluation), and the kept kernels grew the
# 12-block CNN's resident memory by 5 MiB over a budget its plan met. Kept: none (the ideep
# cache crashes at 0, so 1); the kernels are built again at every call: 1.02 times a CNN's CPU
# time without a budget, 1.13 at a budget's small micro-batches (docs/memory.md).
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
os.environ.setdefault("LRU_CACHE_CAPACITY", "1")

# The API below is imported on first use rather than here, so that the torch-free ORT
# runtime (`import edge_svp.ort.runtime` on a device without torch) does not pull in torch
# through this __init__. The first access imports all of it, as an eager import did, and
# binds every name.
_EXPORTS = {
    "edge_svp.config": ["DataConfig", "MemoryConfig", "ModelConfig", "OptimConfig", "RunConfig",
                        "SVPConfig", "TrainConfig", "load_profile", "override"],
    "edge_svp.data": ["Dataset", "Preprocess", "load_dataset"],
    "edge_svp.errors": ["EdgeSVPError"],
    "edge_svp.network": ["SVPNetwork", "build_network"],
    "edge_svp.run": ["evaluate_run", "fit"],
    "edge_svp.trained_run": ["load_run"],
    "edge_svp.training": ["block_accuracies", "train"],
}  # fmt: skip


def __getattr__(name: str):
    if not any(name in names for names in _EXPORTS.values()):
        raise AttributeError(f"module 'edge_svp' has no attribute {name!r}")
    modules = {module: importlib.import_module(module) for module in _EXPORTS}
    for module, names in _EXPORTS.items():
        globals().update({n: getattr(modules[module], n) for n in names})
    return globals()[name]


__all__ = [
    "DataConfig",
    "Dataset",
    "EdgeSVPError",
    "MemoryConfig",
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
