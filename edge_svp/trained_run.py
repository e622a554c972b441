"""A trained run, loaded from its directory for eval, export and predict: the network with
its preprocessing and class names, ready to predict on new inputs.

    run = load_run("runs/cifar10")
    probabilities = run.predict(pixels)     # (N, classes)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from edge_svp.checkpoint import LATEST
from edge_svp.config import RunConfig
from edge_svp.data import Dataset, Preprocess, load_data
from edge_svp.errors import EdgeSVPError
from edge_svp.network import SVPNetwork, build_network
from edge_svp.rundir import SUMMARY, RunDir


@dataclass
class TrainedRun:
    """A trained network as a run directory keeps it: ready to predict on new inputs, with
    the preprocessing and class names it was trained with; its dataset loads on demand."""

    config: RunConfig
    net: SVPNetwork
    preprocess: Preprocess
    classes: list[str]
    input_dtype: torch.dtype  # of the raw inputs: uint8 pixels for every image dataset
    unfinished: str | None = None  # where an unfinished run's checkpoint stands; None: done

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.net.input_shape

    @torch.no_grad()
    def predict(self, x, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities (N, classes) of raw inputs `x` (numpy or torch), as the
        dataset stores them ((N, C, H, W) uint8 pixels) or as images decode ((N, H, W, C));
        preprocessed as in training, on the device the network is on."""
        x = torch.as_tensor(x)
        shape = self.input_shape
        if len(shape) == 3 and tuple(x.shape[1:]) != shape:
            if tuple(x.shape[1:]) != (*shape[1:], shape[0]):
                raise EdgeSVPError(
                    f"inputs of shape {tuple(x.shape)}; the network takes (N, C, H, W) = "
                    f"(N, {', '.join(map(str, shape))}) or (N, H, W, C)"
                )
            x = x.permute(0, 3, 1, 2)  # (N, H, W, C) as decoded: the dataset's layout
        self.net.eval()
        device = next(self.net.parameters()).device
        chunks = [self.net(self.preprocess(x[i : i + batch_size]).to(device)).softmax(-1).cpu()
                  for i in range(0, len(x), batch_size)]  # fmt: skip
        return torch.cat(chunks)

    def dataset(self, data_dir: str | None = None) -> Dataset:
        """The run's dataset (from `data_dir` if it moved since training)."""
        data = self.config.data
        if data_dir:
            data.data_dir = data_dir
        return load_data(data)[0]


def load_run(run_dir: str | Path, reporter=None) -> TrainedRun:
    """A run's network, rebuilt from its directory and its latest good checkpoint; no
    dataset is needed. An unfinished run (killed, stopped, or training now) loads too: its
    `unfinished` says where its checkpoint stands, and `reporter` is warned."""
    run = RunDir(run_dir)
    config = run.config()
    alone = run.lock(shared=True)  # no fit may start over it while it is read
    try:
        checkpoint = run.checkpoints.read(reporter.warning if reporter else None)
        if checkpoint is None:
            raise EdgeSVPError(f"{run} has no checkpoint yet")
        classes = checkpoint["classes"]
        net = build_network(config, tuple(checkpoint["input_shape"]), len(classes))
        net.restore(checkpoint, run / LATEST, run.weights_dir(config))
    finally:
        run.unlock()
    unfinished = None
    if not (run / SUMMARY).exists():
        unfinished = unfinished_at(config, checkpoint, training_now=not alone)
        if reporter:
            reporter.warning(f"{run} is unfinished: {unfinished}")
    dtype = getattr(torch, checkpoint.get("input_dtype", "uint8"))
    return TrainedRun(config, net, Preprocess(**checkpoint["preprocess"]), classes, dtype,
                      unfinished)  # fmt: skip


def unfinished_at(config: RunConfig, checkpoint: dict, training_now: bool) -> str:
    """Where an unfinished run's checkpoint stands, in words."""
    from edge_svp.training import schedule_of
    from edge_svp.training.state import Position, describe_position

    training = checkpoint.get("training")
    if training is None:  # a pipeline of an earlier version kept no position
        at = "its last checkpoint"
    else:
        per_block = schedule_of(config.train).per_block
        at = f"the checkpoint at {describe_position(Position(**training['position']), per_block)}"
    state = "it is training now" if training_now else "it stopped before its end"
    return f"{state}; these are the weights of {at}, of {config.train.epochs} epochs"
