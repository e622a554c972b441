"""Device side: train an export directory layerwise with the ONNX Runtime training API alone.

Needs numpy and onnxruntime-training, never torch: on a device, copy the export directory and
run

    python -m edge_svp.ort.runtime EXPORT_DIR data.npz      # x_train, y_train, x_test, y_test

Block 1 trains for all epochs on the preprocessed input; then it is frozen, its eval graph
computes its outputs h and projections v on both splits once, and block 2 trains on that cache
(h as input, v as reference), and so on: the layerwise schedule of edge_svp/training/layerwise.py.
Each block's weights are saved to its trained_checkpoint after every epoch.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_svp.errors import EdgeSVPError
from edge_svp.ort.manifest import (
    INPUT,
    LABELS,
    LOGITS,
    LOSS,
    OUTPUT,
    V_OUT,
    V_REF,
    Block,
    Manifest,
)
from edge_svp.ort.requirements import missing
from edge_svp.progress import ConsoleReporter, Reporter


def ort_api():
    """(onnxruntime, onnxruntime.training.api), imported without torch.

    With torch installed, `import onnxruntime` (training build) imports torch while it
    validates the build (~220 MB), and onnxruntime/training/__init__.py imports it too. The
    training runtime API needs neither, so block torch while onnxruntime loads and reach the
    api subpackage through a bare package object that skips that __init__.
    """
    block_torch = "torch" not in sys.modules
    if block_torch:
        sys.modules["torch"] = None  # `import torch` now raises ImportError, which ORT expects
    try:
        import onnxruntime

        if "onnxruntime.training" not in sys.modules:
            package = types.ModuleType("onnxruntime.training")
            package.__path__ = [os.path.join(os.path.dirname(onnxruntime.__file__), "training")]
            sys.modules["onnxruntime.training"] = package
        from onnxruntime.training import api
    except ImportError as e:
        raise missing("ORT training", e) from None
    finally:
        if block_torch and sys.modules.get("torch", False) is None:
            del sys.modules["torch"]
    return onnxruntime, api


@dataclass
class Split:
    x: np.ndarray  # inputs as stored: uint8 images (N, C, H, W) or features (N, D)
    y: np.ndarray  # int64 class ids


class Preprocessor:
    """edge_svp.data.Preprocess without augmentation, from the manifest's constants."""

    def __init__(self, constants: dict):
        self.scale = np.float32(constants["scale"])
        self.mean = np.asarray(constants["mean"], np.float32)
        self.std = np.asarray(constants["std"], np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
        x = x.astype(np.float32) * self.scale
        return (x - self.mean.reshape(shape)) / self.std.reshape(shape)


def lr_factor(kind: str, step: int, total: int) -> float:
    """edge_svp.training.optim.make_lr_schedule, one value per optimizer step."""
    if kind == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def batches(n: int, size: int, rng: np.random.Generator | None = None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + size] for i in range(0, n, size)]


class BlockSession:
    """One block in an ONNX Runtime training session: its checkpoint state, its training
    and eval modules and its optimizer (the counterpart of training/step.py's BlockTrainer)."""

    def __init__(self, export_dir: Path, block: Block, threads: int | None = None):
        onnxruntime, api = ort_api()
        directory = Path(export_dir) / block.directory
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # not the warnings about unused Dropout constants
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.state = api.CheckpointState.load_checkpoint(str(directory / block.checkpoint))
        self.module = api.Module(
            str(directory / block.training_model),
            self.state,
            str(directory / block.eval_model),
            device="cpu",
            session_options=options,
        )
        self.optimizer = api.Optimizer(str(directory / block.optimizer_model), self.module)
        self.trained_path = directory / block.trained_checkpoint
        self.api = api

    def forward(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph of the current mode (train() or eval()); gradients accumulate."""
        outputs = self.module(*[feeds[name] for name in self.module.input_names()])
        return dict(zip(self.module.output_names(), outputs, strict=True))

    def step(self, feeds: dict[str, np.ndarray], lr: float) -> dict[str, np.ndarray]:
        """One forward, backward and optimizer step; returns the training graph's outputs."""
        self.module.train()
        self.optimizer.set_learning_rate(lr)
        out = self.forward(feeds)
        self.optimizer.step()
        self.module.lazy_reset_grad()
        return out

    def evaluate(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.module.eval()
        return self.forward(feeds)

    def save(self) -> Path:
        self.api.CheckpointState.save_checkpoint(self.state, str(self.trained_path))
        return self.trained_path


class Inputs:
    """The (x, v_ref) a block sees for a split: live preprocessed data for block 1, the
    frozen previous block's cached outputs after that."""

    def __init__(self, split: Split, preprocess: Preprocessor, reference):
        self.split, self.preprocess, self.reference = split, preprocess, reference
        self.cache: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        if self.cache is not None:
            x, v_ref = self.cache[0][idx], self.cache[1][idx]
        else:
            x = self.preprocess(self.split.x[idx])
            (v_ref,) = self.reference.run(None, {self.reference.get_inputs()[0].name: x})
        return {INPUT: x, V_REF: v_ref, LABELS: self.split.y[idx].astype(np.int64)}

    def advance(self, trainer: BlockSession, batch_size: int) -> None:
        """Replace the inputs with the outputs of the block `trainer` (now frozen)."""
        n = len(self.split.y)
        h = v = None  # filled in place: concatenating batches would briefly hold it twice
        for idx in batches(n, batch_size):
            out = trainer.evaluate(self(idx))
            if h is None:
                h = np.empty((n, *out[OUTPUT].shape[1:]), np.float32)
                v = np.empty((n, *out[V_OUT].shape[1:]), np.float32)
            h[idx], v[idx] = out[OUTPUT], out[V_OUT]
        self.cache = (h, v)


def accuracy(trainer: BlockSession, inputs: Inputs, batch_size: int) -> float:
    correct = 0
    for idx in batches(len(inputs.split.y), batch_size):
        logits = trainer.evaluate(inputs(idx))[LOGITS]
        correct += int((logits.argmax(-1) == inputs.split.y[idx]).sum())
    return correct / len(inputs.split.y)


class LearningRate:
    """The learning rate of each optimizer step in turn, as the torch schedule gives it."""

    def __init__(self, lr: float, kind: str, total_steps: int):
        self.lr, self.kind, self.total, self.step = lr, kind, total_steps, 0

    @property
    def now(self) -> float:
        return self.lr * lr_factor(self.kind, self.step, self.total)

    def take(self) -> float:
        """The rate of the next step, which is then taken."""
        rate = self.now
        self.step += 1
        return rate


def train_epoch(trainer: BlockSession, inputs: Inputs, index_batches, lr: LearningRate):
    """(summed loss, correct predictions) of one epoch of `trainer` over `index_batches`."""
    loss_sum, correct = 0.0, 0
    for idx in index_batches:
        feeds = inputs(idx)
        out = trainer.step(feeds, lr.take())
        loss = float(out[LOSS])
        if not math.isfinite(loss):
            raise EdgeSVPError(
                "the loss became NaN or inf; lower the learning rate (--lr) and try again"
            )
        loss_sum += loss * len(idx)
        correct += int((out[LOGITS].argmax(-1) == feeds[LABELS]).sum())
    return loss_sum, correct


def train(
    export_dir: str | Path,
    train_split: Split,
    test_split: Split,
    reporter: Reporter | None = None,
    on_epoch: Callable[[list[dict]], None] | None = None,
    threads: int | None = None,
) -> list[dict]:
    """Train every block of `export_dir` in order; returns one record per block per epoch,
    the same records as the torch layerwise schedule."""
    export_dir = Path(export_dir)
    manifest = Manifest.read(export_dir)
    onnxruntime, _ = ort_api()
    reporter = reporter or Reporter()
    schedule = manifest.schedule
    preprocess = Preprocessor(manifest.preprocessing)
    reference = onnxruntime.InferenceSession(
        str(export_dir / manifest.reference_model), providers=["CPUExecutionProvider"]
    )
    inputs = {name: Inputs(split, preprocess, reference)
              for name, split in (("train", train_split), ("test", test_split))}  # fmt: skip
    epochs, batch_size, n = schedule["epochs"], schedule["batch_size"], len(train_split.y)
    steps = -(-n // batch_size)
    order = np.random.default_rng(schedule["seed"])
    records: list[dict] = []
    for block in manifest.blocks:
        trainer = BlockSession(export_dir, block, threads)
        lr = LearningRate(manifest.optimizer["lr"], schedule["lr_schedule"], steps * epochs)
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            label = f"block {block.index} epoch {epoch}"
            index_batches = reporter.track(batches(n, batch_size, order), steps, label)
            loss_sum, correct = train_epoch(trainer, inputs["train"], index_batches, lr)
            test = accuracy(trainer, inputs["test"], schedule["eval_batch_size"])
            trainer.save()
            record = {"block": block.index, "epoch": epoch, "test_accuracy": test,
                      "seconds": time.perf_counter() - start, "lr": lr.now,
                      "loss": loss_sum / n, "train_accuracy": correct / n}  # fmt: skip
            records.append(record)
            reporter.epoch([record])
            if on_epoch:
                on_epoch([record])
        if block is not manifest.blocks[-1]:
            for split_inputs in inputs.values():
                split_inputs.advance(trainer, schedule["eval_batch_size"])
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train an edge-svp ORT export directory.")
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("data", type=Path, help=".npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--threads", type=int, help="ORT intra-op threads (default: all cores)")
    args = parser.parse_args(argv)
    try:
        with np.load(args.data) as data:
            splits = [Split(data[f"x_{s}"], data[f"y_{s}"]) for s in ("train", "test")]
        epochs = Manifest.read(args.export_dir).schedule["epochs"]
        records = train(args.export_dir, *splits, ConsoleReporter(epochs), threads=args.threads)
    except (EdgeSVPError, OSError, KeyError) as e:
        sys.exit(f"edge-svp runtime: error: {e}")
    print(f"test accuracy {100 * records[-1]['test_accuracy']:.2f}%")


if __name__ == "__main__":
    main()
