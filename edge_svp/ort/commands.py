"""What `edge-svp export` does, as a function: from a trained run or from a profile."""

from __future__ import annotations

from pathlib import Path

from edge_svp.config import RunConfig
from edge_svp.data import load_data
from edge_svp.errors import EdgeSVPError
from edge_svp.files import check_new_dir, staged_outputs
from edge_svp.network import build_network
from edge_svp.ort.manifest import MANIFEST, Manifest
from edge_svp.trained_run import load_run


def export(
    out: str | Path,
    run_dir: str | Path | None = None,
    config: RunConfig | None = None,
    inference: bool = False,
    reporter=None,
) -> Path:
    """Training artifacts (run_dir's weights, or a fresh network from `config`), or with
    `inference` the chained inference model of a trained run. Returns what was written. An
    unfinished run is exported with a warning to `reporter`, and the export records it."""
    if (run_dir is None) == (config is None):
        raise EdgeSVPError("export needs either a RUN_DIR or --profile, not both")
    check_new_dir(out)
    if run_dir is not None:
        run = load_run(run_dir, reporter)
        config, net, preprocess = run.config, run.net, run.preprocess
        classes, input_dtype, unfinished = run.classes, run.input_dtype, run.unfinished
    elif inference:
        raise EdgeSVPError("--inference needs a trained RUN_DIR, not a profile")
    else:
        dataset, preprocess = load_data(config.data)
        net = build_network(config, dataset.input_shape, dataset.num_classes)
        classes, input_dtype, unfinished = dataset.classes, dataset.x_train.dtype, None
    check_export_dir(Path(out), config, net)
    with staged_outputs(out) as staging:  # whole or not at all
        if inference:
            from edge_svp.ort.inference import export_inference

            written = export_inference(net, preprocess, classes, input_dtype, staging, unfinished)
        else:
            from edge_svp.ort.export import export_training

            export_training(net, config, classes, preprocess, input_dtype, staging, unfinished)
            written = staging / MANIFEST
    return Path(out) / written.name


def check_export_dir(out: Path, config: RunConfig, net) -> None:
    """Refuse to write over the export of another network; nothing is written then."""
    if not (out / MANIFEST).exists():
        return
    old = Manifest.read(out)
    theirs = (old.profile, old.model, len(old.blocks), list(old.input.shape[1:]))
    ours = (config.profile, config.model.kind, len(net), list(net.input_shape))
    if theirs != ours:
        raise EdgeSVPError(
            f"{out} holds an export of profile {old.profile} ({old.model}, {len(old.blocks)} "
            f"blocks, input {theirs[3]}), not of {config.profile} ({config.model.kind}, "
            f"{len(net)} blocks, input {ours[3]}); choose another --out"
        )
