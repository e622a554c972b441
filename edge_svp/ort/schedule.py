"""`edge-svp fit --backend ort`: SVP layerwise with every block's step run by ONNX Runtime.
The freshly built network is exported (edge_svp/ort/export.py), trained by the torch-free
runtime (runtime.py), and its weights brought back after every epoch, so that the run
directory is the same as the torch backend's (plus the export itself in run_dir/ort)."""

from __future__ import annotations

from edge_svp.errors import EdgeSVPError
from edge_svp.ort import runtime
from edge_svp.ort.export import export_training
from edge_svp.ort.weights import load_trained_weights
from edge_svp.registry import KINDS, piece
from edge_svp.threads import choose_threads
from edge_svp.training.layerwise import Layerwise
from edge_svp.training.schedule import Schedule


class OrtLayerwise(Layerwise):
    backend = "ort"
    planned = False  # ONNX Runtime keeps float32 caches in host memory and plans no budget
    resumable = False  # its sessions keep no training state to go on from

    def check(self, config, backend: str = "ort") -> None:
        """What ONNX Runtime cannot train: a piece with no ONNX form, a budget, augmentation,
        low precision, the optimizer's levers, posteriors, auxiliary layers, per-block
        learning rates and epochs, and warm-up."""
        for kind in KINDS:  # a piece trains here only if it has an ONNX form
            name = getattr(config.svp, kind)
            if not hasattr(piece(kind, name), "onnx"):
                raise EdgeSVPError(
                    f"the ort backend has no ONNX form of svp.{kind} = {name!r}; train it "
                    "with --backend torch"
                )
        memory = config.memory
        if (
            memory.budget
            or memory.host_budget
            or memory.recompute
            or memory.cache_dtype != "float32"
        ):
            raise EdgeSVPError(
                "the ort backend keeps float32 caches in host memory and plans no budget; "
                "drop --mem-budget, --host-budget, --recompute and memory.cache_dtype"
            )
        if config.data.augment:
            raise EdgeSVPError(
                "the ort backend has no data augmentation; add --set data.augment=false"
            )
        if config.train.precision != "fp32":
            raise EdgeSVPError("the ort backend trains in fp32; drop --precision")
        if levers := config.optim.explicit_levers():
            raise EdgeSVPError(
                "the ort backend steps ONNX Runtime's optimizer, with fp32 state on its "
                f"device, after backward; drop {' and '.join(levers)}"
            )
        if (
            config.svp.divergence_on != "projection"
            or config.svp.aux_blocks
            or config.optim.warmup_epochs
            or config.optim.block_lr
            or config.train.block_epochs
        ):
            raise EdgeSVPError(
                "the ort backend projects each block's own output and compares projections, "
                "with one learning rate, no warm-up and the same epochs for every block; drop "
                "svp.divergence_on, svp.aux_blocks, optim.warmup_epochs, optim.block_lr and "
                "train.block_epochs"
            )

    def run_fit(self, fit, on_epoch) -> None:
        """Export fit.net, train it with ONNX Runtime, and bring its weights back after every
        epoch; fit.state gets the same records as the torch backend's."""
        config, net, dataset, export_dir = (
            fit.job.config,
            fit.net,
            fit.dataset,
            fit.job.run_dir / "ort",
        )
        export_training(net, config, dataset.classes, fit.preprocess, dataset.x_train.dtype,
                        export_dir)  # fmt: skip

        def epoch_done(records: list[dict]) -> None:
            load_trained_weights(net, export_dir, blocks={r["block"] for r in records})
            on_epoch(records)
            fit.save()  # a checkpoint of the weights: there is no training state to keep

        splits = [
            runtime.Split(dataset.x_train.numpy(), dataset.y_train.numpy()),
            runtime.Split(dataset.x_test.numpy(), dataset.y_test.numpy()),
        ]
        threads = choose_threads(config.train.threads)
        fit.state.records = runtime.train(export_dir, *splits, reporter=fit.reporter,
                                          on_epoch=epoch_done, threads=threads)  # fmt: skip


def on_ort(schedule: Schedule, config) -> Schedule:
    """The ort backend's form of `schedule`, or a one-line refusal of what it cannot train."""
    schedule.check(config, "ort")  # refuses a schedule with no ort form
    return OrtLayerwise()
