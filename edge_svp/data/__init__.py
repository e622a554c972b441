"""The data: datasets by name (registry.py), the Dataset and its preprocessing (dataset.py),
one loader per dataset, and readers of a user's own input files (inputs.py).

The names below load on first use: reading inputs for an ONNX Runtime prediction
(inputs.py, idx.py) needs numpy alone, and importing this package must not pull in torch
for it (`edge-svp predict --backend ort` on a device without torch)."""

import importlib

_HOMES = {
    "edge_svp.data.registry": ["DATASETS", "SHAPES", "load_data", "load_dataset",
                               "synthetic_data"],
    "edge_svp.data.dataset": ["Dataset", "Preprocess", "batches"],
}  # fmt: skip


def __getattr__(name: str):
    for module, names in _HOMES.items():
        if name in names:
            value = globals()[name] = getattr(importlib.import_module(module), name)
            return value
    raise AttributeError(f"module 'edge_svp.data' has no attribute {name!r}")


__all__ = [name for names in _HOMES.values() for name in names]
