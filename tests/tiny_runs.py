"""What the resume, crash and hostile-input tests share: a tiny digits run and ways to
compare two runs exactly."""

import errno
import json
import os
import signal
from pathlib import Path

import torch

from edge_svp.checkpoint import CheckpointStore
from edge_svp.config import load_profile, override
from edge_svp.progress import Reporter

# A few hundred digits, two small blocks: about a second per run on a busy core. The one
# tiny run every test that trains starts from: `edge-svp fit` options (the `tiny_run`
# fixture, tests/conftest.py) ...
TINY_RUN = (
    "--set", "model.widths=[32, 32]", "--set", "svp.proj_dim=32", "--batch-size", "32",
    "--lr", "1e-2", "--epochs", "2", "--train-limit", "200",
)  # fmt: skip
# ... and, for the resume, crash and hostile-input tests, a configuration and its options
# that checkpoint within epochs
TINY = {
    "model.widths": [32, 32],
    "svp.proj_dim": 32,
    "train.batch_size": 32,
    "optim.lr": 1e-2,
    "train.epochs": 2,
    "data.train_limit": 200,
    "train.checkpoint_every": 3,
    "train.device": "cpu",  # exact equality is promised on CPU; forked runs must not use CUDA
}
TINY_ARGS = [*TINY_RUN, "--set", "train.checkpoint_every=3", "--device", "cpu"]


def tiny_config(**changes):
    return override(load_profile("digits-mlp"), **{**TINY, **changes})


def weights(run_dir: Path) -> dict:
    return CheckpointStore(run_dir).read()["state_dict"]


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall times, which differ between any two runs."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Bit for bit: the final weights, every epoch's metrics, the test accuracies."""
    ours, theirs = weights(run_dir), weights(reference)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert metrics(run_dir) == metrics(reference)
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    expected = json.loads((Path(reference) / "summary.json").read_text())
    assert summary["test_accuracy"] == expected["test_accuracy"]
    assert summary["per_block_accuracy"] == expected["per_block_accuracy"]


class CtrlCAt(Reporter):
    """Presses Ctrl-C while the batch `item` of the epoch labelled `label` trains."""

    def __init__(self, label: str, item: int):
        self.label, self.item = label, item

    def track(self, iterable, total, label):
        for k, item in enumerate(iterable):
            if label == self.label and k == self.item:
                signal.raise_signal(signal.SIGINT)
            yield item


class Warnings(Reporter):
    """Keeps the warnings a run gives (`lines`), in order."""

    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)


def full_disk_pwrite(fd, data, offset):
    """os.pwrite on a full disk: activation-cache writes fail with ENOSPC."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
