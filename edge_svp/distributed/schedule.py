"""The pipelined schedule: SVP's joint steps, the blocks split into stages across processes
(edge_svp/distributed/worker.py runs one rank)."""

from __future__ import annotations

from edge_svp.errors import EdgeSVPError
from edge_svp.training import Schedule, schedule_of


class Pipelined(Schedule):
    name = tag = "pipelined"
    method = "svp"
    label = "SVP pipelined"

    def check(self, config, backend: str = "torch") -> None:
        """A pipeline trains what a schedule that steps every block on every batch trains
        (Schedule.pipelines), with torch, in fp32."""
        selected = schedule_of(config.train)
        if not selected.pipelines:
            raise EdgeSVPError(
                f"a pipeline trains SVP's blocks on every batch, as SVP joint does; "
                f"{selected.label} runs in one process: drop --nproc, or train SVP joint"
            )
        if backend != "torch":
            raise EdgeSVPError("a pipeline trains with torch; --backend ort runs in one process")
        if config.train.block_epochs:
            raise EdgeSVPError(
                "a pipeline trains every block for train.epochs; drop train.block_epochs"
            )
        if config.train.precision != "fp32":
            raise EdgeSVPError("a pipeline trains in fp32; add --precision fp32")
        if levers := config.optim.explicit_levers():
            raise EdgeSVPError(
                "a pipeline's optimizers keep fp32 state on their device and step after "
                f"backward; drop {' and '.join(levers)}"
            )

    def measured_peaks(self, peaks, plan):
        return peaks  # one per stage, the most of its replicas'


PIPELINED = Pipelined()
