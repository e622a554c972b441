"""SVP layerwise with every block's step run by ONNX Runtime from exported training artifacts
(`edge-svp fit --backend ort`): what it accepts, and its training."""

from __future__ import annotations

from edge_svp.training.layerwise import Layerwise
from edge_svp.training.schedule import Schedule


class OrtLayerwise(Layerwise):
    backend = "ort"
    planned = False  # ONNX Runtime keeps float32 caches in host memory and plans no budget
    resumable = False  # its sessions keep no training state to go on from

    def check(self, config, backend: str = "ort") -> None:
        from edge_svp.ort.backend import check_supported

        check_supported(config)

    def run_fit(self, fit, on_epoch) -> None:
        from edge_svp.ort.backend import train_ort

        def epoch_done(records: list[dict]) -> None:
            on_epoch(records)
            fit.save()  # a checkpoint of the weights: there is no training state to keep

        job = fit.job
        fit.state.records = train_ort(fit.net, fit.dataset, job.config, fit.preprocess,
                                      job.run_dir / "ort", fit.reporter, epoch_done)  # fmt: skip


def on_ort(schedule: Schedule, config) -> Schedule:
    """The ort backend's form of `schedule`, or a one-line refusal of what it cannot train."""
    schedule.check(config, "ort")  # refuses a schedule with no ort form
    return OrtLayerwise()
