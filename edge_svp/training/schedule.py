"""What a schedule is: one way of training a network's blocks, and everything that follows
from it, in one object.

A schedule owns what it accepts (`check`, one-line refusals), how it is planned (`plan`),
its training loop (`train`, over the epoch skeleton TrainContext.run_epochs), its label and
its memory accounting (`measured_peaks`, `planned_modules`). The rest of the package asks
its schedule instead of comparing names; adding a schedule is one new module and one line
in the registry (edge_svp/training/__init__.py).
"""

from __future__ import annotations

from edge_svp.errors import EdgeSVPError


class Schedule:
    name: str  # in summary.json ("schedule") and plan.json
    tag: str  # in the names of run directories
    method: str  # the configuration's train.method that selects it: svp | bp
    label: str  # what progress lines, plans and reports call it
    per_block: bool = False  # trains one block after another; a position names its block
    backend: str = "torch"  # what runs its steps
    backends: tuple[str, ...] = ("torch",)  # the backends that have a schedule of this kind
    planned: bool = True  # follows a MemoryPlan
    resumable: bool = True  # keeps a training state that --resume goes on from
    follows_budget: bool = True  # a target's memory budget applies to it
    pipelines: bool = False  # stages on several processes can train it (distributed/)
    local: bool = True  # every block learns from its own head's loss
    shared_peak: bool = False  # one measured peak stands for every block's

    def check(self, config, backend: str = "torch") -> None:
        """Refuse, in one line, what this schedule cannot train."""
        if backend not in self.backends:
            raise EdgeSVPError(
                f"the {backend} backend does not train {self.label}; "
                f"it trains {backend_schedules(backend)}"
            )

    def classifier(self, train) -> bool:
        """Does the network get the standard classifier (SVPNetwork.classifier)?"""
        return False

    def probe_copies_every_block(self) -> bool:
        """Does training hold every block's gradients and optimizer state at once?"""
        return False

    def plan(self, planner, net) -> object:
        """The MemoryPlan of `net` under this schedule (planner: training/probe_plan.Planner)."""
        raise NotImplementedError

    def train(self, ctx) -> None:
        """Train ctx.net in place as ctx.plan says (ctx: training/context.TrainContext)."""
        raise NotImplementedError

    def run_fit(self, fit, on_epoch) -> None:
        """Train a fit's network (run.Fit), `on_epoch` called with each epoch's records."""
        import edge_svp.training as training  # the schedules are part of it

        config = fit.job.config
        training.train(fit.net, fit.dataset, config.train, config.optim, fit.preprocess,
                       fit.reporter, on_epoch, config.memory, fit.plan, fit.meter, fit.state)  # fmt: skip

    def on_device_throughout(self) -> bool:
        """Is the whole network on the training device while it trains?"""
        return True

    def trained_heads(self, accuracies: list) -> list:
        """The heads' test accuracies, None for each head this schedule does not train."""
        return accuracies

    def measured_peaks(self, peaks: list[int], plan) -> list[int]:
        """One measured peak per planned block, from the meter's sections."""
        return peaks

    def planned_modules(self, net) -> list:
        """The module each plan entry trains (its BatchNorm sees the micro-batch alone)."""
        return list(net.blocks)

    def training_where(self, trained_blocks: int, plan) -> tuple[str, int | None]:
        """(what was training, its predicted peak) when memory ran out after
        `trained_blocks` blocks had finished."""
        return "training", plan.predicted_peak if plan else None


def backend_schedules(backend: str) -> str:
    from edge_svp.training import SCHEDULES

    names = [s.label for s in SCHEDULES.values() if backend in s.backends]
    return " and ".join(names)
