"""`edge-svp fit --backend ort`: export the freshly built network, train it with the torch-free
runtime, and bring the weights back, so the run directory is the same as the torch backend's
(plus the export itself in run_dir/ort)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge_svp.config import RunConfig
from edge_svp.data import Dataset, Preprocess
from edge_svp.errors import EdgeSVPError
from edge_svp.network import SVPNetwork
from edge_svp.ort import runtime
from edge_svp.ort.export import export_training
from edge_svp.ort.weights import load_trained_weights
from edge_svp.progress import Reporter
from edge_svp.registry import KINDS, piece
from edge_svp.threads import choose_threads


def check_supported(config: RunConfig) -> None:
    """What the ort backend cannot do beyond its schedule's refusal (Schedule.check)."""
    for kind in KINDS:  # a piece trains here only if it has an ONNX form
        name = getattr(config.svp, kind)
        if not hasattr(piece(kind, name), "onnx"):
            raise EdgeSVPError(
                f"the ort backend has no ONNX form of svp.{kind} = {name!r}; train it with "
                "--backend torch"
            )
    memory = config.memory
    if memory.budget or memory.host_budget or memory.recompute or memory.cache_dtype != "float32":
        raise EdgeSVPError(
            "the ort backend keeps float32 caches in host memory and plans no budget; "
            "drop --mem-budget, --host-budget, --recompute and memory.cache_dtype"
        )
    if config.data.augment:
        raise EdgeSVPError("the ort backend has no data augmentation; add --set data.augment=false")
    if config.train.precision != "fp32":
        raise EdgeSVPError("the ort backend trains in fp32; drop --precision")
    if (
        config.svp.divergence_on != "projection"
        or config.optim.warmup_epochs
        or config.optim.block_lr
    ):
        raise EdgeSVPError(
            "the ort backend compares projections, with one learning rate and no warm-up; "
            "drop svp.divergence_on, optim.warmup_epochs and optim.block_lr"
        )


def train_ort(
    net: SVPNetwork,
    dataset: Dataset,
    config: RunConfig,
    preprocess: Preprocess,
    export_dir: Path,
    reporter: Reporter | None = None,
    on_epoch: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Train `net` in place with ONNX Runtime; returns the same records as the torch backend."""
    check_supported(config)
    export_training(net, config, dataset.classes, preprocess, dataset.x_train.dtype, export_dir)

    def collect(records: list[dict]) -> None:
        load_trained_weights(net, export_dir, blocks={r["block"] for r in records})
        if on_epoch:
            on_epoch(records)

    splits = [
        runtime.Split(dataset.x_train.numpy(), dataset.y_train.numpy()),
        runtime.Split(dataset.x_test.numpy(), dataset.y_test.numpy()),
    ]
    threads = choose_threads(config.train.threads)
    return runtime.train(export_dir, *splits, reporter=reporter, on_epoch=collect, threads=threads)
