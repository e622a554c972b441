"""Progress reporting for training loops.

The training code calls a Reporter; the default one is silent (for notebooks and tests),
ConsoleReporter prints one line per epoch and a batch progress bar on a terminal.
"""

import sys

import click


class Reporter:
    def track(self, iterable, total: int, label: str):
        return iterable

    def epoch(self, records: list[dict]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        pass


class ConsoleReporter(Reporter):
    def __init__(self, epochs: int):
        self.epochs = epochs

    def track(self, iterable, total: int, label: str):
        if not sys.stderr.isatty():
            return iterable
        return _Bar(iterable, total, label)

    def epoch(self, records: list[dict]) -> None:
        first = records[0]
        blocks = ",".join(str(r["block"]) for r in records)
        loss = " ".join(f"{r['loss']:.4f}" for r in records)
        train = " ".join(f"{100 * r['train_accuracy']:5.1f}" for r in records)
        test = " ".join(f"{100 * r['test_accuracy']:5.1f}" for r in records)
        click.echo(
            f"block {blocks}  epoch {first['epoch']:>3}/{self.epochs}  "
            f"loss {loss}  train% {train}  test% {test}  {first['seconds']:.1f}s"
        )

    def message(self, text: str) -> None:
        click.echo(text)

    def warning(self, text: str) -> None:
        click.echo(f"edge-svp: warning: {text}", err=True)


class _Bar:
    """A click progress bar written to stderr, so that stdout stays one line per epoch."""

    def __init__(self, iterable, total, label):
        self.bar = click.progressbar(
            iterable, length=total, label=label, file=sys.stderr, show_eta=True, width=30
        )

    def __iter__(self):
        with self.bar as items:
            yield from items
