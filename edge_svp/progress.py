"""Progress reporting for training loops, and what the console shows of a run.

The training code calls a Reporter; the default one is silent (for notebooks and tests),
ConsoleReporter prints one line per epoch and a batch progress bar on a terminal, and the
lines before and after a run (`edge-svp fit`, `eval`, `plan`).
"""

import sys
import time

import click

from edge_svp.memory.size import format_bytes, parse_size

LOGGED_PROBING_SECONDS = 10  # off a terminal, probing that took longer is written to the log


class Reporter:
    def run_started(self, config, what: str, backend: str, resume=None) -> None:
        """Training of `what` (a schedule's label) is about to begin: the input, the data
        and the plan are good."""

    def track(self, iterable, total: int, label: str):
        return iterable

    def probing(self, iterable, total: int, label: str):
        """Like track, for the planner's probes of `total` blocks (seconds each, before
        anything trains)."""
        return self.track(iterable, total, label)

    def epoch(self, records: list[dict]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        pass


class ConsoleReporter(Reporter):
    def __init__(self, epochs: int = 0):
        self.epochs = epochs  # shown as "epoch k/epochs"
        self.train = None  # a run's TrainConfig, once it starts: each block's epochs

    def track(self, iterable, total: int, label: str):
        if not sys.stderr.isatty():
            return iterable
        return _Bar(iterable, total, label)

    def probing(self, iterable, total: int, label: str):
        if sys.stderr.isatty():
            return _Bar(iterable, total, label)
        return _logged(iterable, total, label)

    def epoch(self, records: list[dict]) -> None:
        first = records[0]
        blocks = ",".join(str(r["block"]) for r in records)
        loss = " ".join(f"{r['loss']:.4f}" for r in records)
        train = " ".join(f"{100 * r['train_accuracy']:5.1f}" for r in records)
        test = " ".join(f"{100 * r['test_accuracy']:5.1f}" for r in records)
        epochs = (
            max(self.train.epochs_of(r["block"]) for r in records) if self.train else self.epochs
        )
        click.echo(
            f"block {blocks}  epoch {first['epoch']:>3}/{epochs}  "
            f"loss {loss}  train% {train}  test% {test}  {first['seconds']:.1f}s"
        )

    def message(self, text: str) -> None:
        click.echo(text)

    def warning(self, text: str) -> None:
        click.echo(f"edge-svp: warning: {text}", err=True)

    def run_started(self, config, what: str, backend: str, resume=None) -> None:
        """One line: what (a schedule's label) is about to train, on what (after the input
        was checked, so that a refusal is the only line)."""
        train = self.train = config.train
        budget = f" | budget {_size(config.memory.budget)}" if config.memory.budget else ""
        target = f" | target {config.target}" if config.target else ""
        precision = f" | {train.precision}" if train.precision != "fp32" else ""
        click.echo(
            (f"resuming {resume}: " if resume else "")
            + f"{what} ({backend}) | profile {config.profile} | dataset {config.data.dataset} | "
            f"{config.model.kind} | {_epochs(train)}, batch {train.batch_size}"
            f"{budget}{precision}{target}"
        )

    def run_finished(self, summary: dict) -> None:
        """Accuracies, memory against the budget, wall time and where the run is."""
        print_accuracy(summary)
        if summary.get("bad_batches"):
            click.echo(f"bad batches skipped      {summary['bad_batches']} (NaN or inf)")
        memory = summary["memory"]
        measured = max(memory["measured_peak_bytes"], default=None)
        if measured is not None:
            budget, predicted = memory["budget_bytes"], memory["predicted_peak_bytes"]
            # the prediction counts live memory; resident memory also holds what was freed
            reused = memory.get("host_allocator") == "reuse" and memory["kind"] != "cuda_allocator"
            click.echo(
                f"training memory          {format_bytes(measured)} measured"
                + (f", predicted {format_bytes(max(predicted))}" if predicted else "")
                + (f", budget {format_bytes(budget)}" if budget else "")
                + f" ({memory['kind'].replace('_', ' ')}"
                + (", freed memory kept for reuse" if reused else "")
                + ")"
            )
        click.echo(
            f"peak memory              {format_bytes(summary['peak_memory_bytes'])} "
            f"({summary['peak_memory_kind'].replace('_', ' ')})"
        )
        click.echo(f"wall time                {summary['wall_seconds']:.1f} s")
        if "pipeline" in summary:
            pipe = summary["pipeline"]
            click.echo(f"pipeline                 {pipe['train_samples_per_second']:.0f} samples/s; "
                       f"per step {format_bytes(pipe['activation_bytes_per_step'])} sent forward, "
                       f"{format_bytes(pipe['allreduce_bytes_per_step'])} all-reduced")  # fmt: skip
        click.echo(f"saved to                 {summary['run_dir']}")


def _percent(x) -> str:
    return "  -  " if x is None else f"{100 * x:.2f}%"


def _size(text: str) -> str:
    return format_bytes(parse_size(text))


def print_accuracy(result: dict) -> None:
    """Every head's test accuracy, and the network's."""
    heads = "  ".join(f"{i + 1}: {_percent(a)}" for i, a in enumerate(result["per_block_accuracy"]))
    click.echo(f"per-block test accuracy  {heads}")
    click.echo(f"test accuracy            {_percent(result['test_accuracy'])}")


def print_plan(plan, config, what: str) -> None:
    """A MemoryPlan of `what` (a schedule's label) as `edge-svp plan` shows it: what it is
    for, per block, the footer."""
    budget = format_bytes(plan.budget) if plan.budget else "none"
    unified = ", unified memory" if plan.unified_memory else ""
    target = f" (target {config.target})" if config.target else ""
    click.echo(f"{config.profile}: {what} for {plan.device}{unified}{target}, "
               f"{plan.precision}, batch {plan.batch_size}, budget {budget}")  # fmt: skip
    if plan.probed_on:
        click.echo(f"probed with {plan.probed_on}")
    if plan.probe_device != plan.device:
        click.echo(f"costs probed on this machine's {plan.probe_device}: estimates of "
                   f"the {plan.device} device's until run there")  # fmt: skip
    click.echo(plan.table())
    click.echo(f"{'optimizer':<28}{plan.optimizer_memory}")
    if plan.projections_stored is not None:
        held = "held" if plan.projections_stored else "drawn from their seeds at every use"
        click.echo(f"{'fixed projections':<28}{held}")
    footer = {"predicted peak": plan.predicted_peak}
    if plan.margin:
        footer["kept free below the budget"] = plan.margin
    footer["smallest budget that works"] = plan.min_budget
    for label, size in footer.items():
        click.echo(f"{label:<28}{format_bytes(size)}")


class _Bar:
    """A click progress bar written to stderr, so that stdout stays one line per epoch."""

    def __init__(self, iterable, total, label):
        self.bar = click.progressbar(
            iterable, length=total, label=label, file=sys.stderr, show_eta=True, width=30
        )

    def __iter__(self):
        with self.bar as items:
            yield from items


def _logged(iterable, total: int, label: str):
    """Off a terminal (a log, CI), a line for each probing that took a while, so that the
    minutes a deep network's plan takes show; a quick refusal stays one line."""
    start = time.perf_counter()
    yield from iterable
    seconds = time.perf_counter() - start
    if seconds >= LOGGED_PROBING_SECONDS:
        click.echo(f"{label}: {total} blocks in {seconds:.0f} s", err=True)


def _epochs(train) -> str:
    """'10 epochs', or a layerwise run's epochs per block: '10/5/3 epochs per block'."""
    if train.block_epochs:
        return f"{'/'.join(map(str, train.block_epochs))} epochs per block"
    return f"{train.epochs} epochs"
