"""What `edge-svp export` does, as a function: from a trained run or from a profile."""

from __future__ import annotations

from pathlib import Path

from edge_svp.config import RunConfig
from edge_svp.errors import EdgeSVPError
from edge_svp.ort.manifest import MANIFEST
from edge_svp.run import build_network, load_data, load_run


def export(
    out: str | Path,
    run_dir: str | Path | None = None,
    config: RunConfig | None = None,
    inference: bool = False,
    data_dir: str | None = None,
) -> Path:
    """Training artifacts (run_dir's weights, or a fresh network from `config`), or with
    `inference` the chained inference model of a trained run. Returns what was written."""
    if (run_dir is None) == (config is None):
        raise EdgeSVPError("export needs either a RUN_DIR or --profile, not both")
    if run_dir is not None:
        config, net, dataset, preprocess = load_run(run_dir, data_dir)
    elif inference:
        raise EdgeSVPError("--inference needs a trained RUN_DIR, not a profile")
    else:
        dataset, preprocess = load_data(config)
        net = build_network(config, dataset.input_shape, dataset.num_classes)
    if inference:
        from edge_svp.ort.inference import export_inference

        return export_inference(net, preprocess, dataset.classes, dataset.x_train.dtype, out)
    from edge_svp.ort.export import export_training

    export_training(net, config, dataset.classes, preprocess, dataset.x_train.dtype, out)
    return Path(out) / MANIFEST
