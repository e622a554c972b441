"""Where training stands, and everything needed to continue from there.

The schedules walk through stages (one per block for layerwise, a single one for joint and
for backprop), epochs and batches, and tell a TrainState about each. It

- counts every batch (`end_batch`, after the blocks stepped or skipped it: step.py) and the
  batches skipped for NaN or inf;
- hands a snapshot to `save` every train.checkpoint_every steps, at every epoch end, at
  every block boundary, and after the step during which Ctrl-C was pressed or SIGTERM
  arrived (then stops with Interrupted);
- started from such a snapshot, skips the stages, epochs and batches already done and
  restores the blocks' optimizers, learning-rate schedules and gradient scalers, the data
  order, RNG states and the epoch's running statistics, so that the run goes on exactly as
  if it had not stopped.

Data order: each schedule draws one permutation per epoch from its own generator. The
snapshot keeps that generator's state at the start of the epoch in progress (to draw the
same permutation again and skip the batches done) and its current state (for the next
epoch).
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edge_svp.errors import Interrupted, NumericalFault
from edge_svp.faults import kill_point

# The signals that stop training at the end of the step, and the exit code each ends with.
STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class Position:
    stage: int = 0  # layerwise: the block in training (0-based); joint and backprop: 0
    epoch: int = 0  # epochs finished in this stage
    step: int = 0  # batches finished in the epoch after those


def describe_position(position: Position, per_block: bool, block: int | None = None) -> str:
    """'block 2, epoch 3, step 5', 'end of epoch 3', 'end of block 1', ... (`per_block`: a
    layerwise run, whose position names its block)."""
    if position.step:
        at = f"epoch {position.epoch + 1}, step {position.step}"
    elif position.epoch:
        at = f"end of epoch {position.epoch}"
    elif position.stage:
        return f"end of block {position.stage}"
    else:
        at = "the start"
    if block is None and per_block:
        block = position.stage + 1
    return at if block is None else f"block {block}, {at}"


def rng_states() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
        "python": random.getstate(),
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(states["python"])


class TrainState:
    def __init__(
        self,
        train,
        save: Callable[[dict], None] | None = None,
        resume: dict | None = None,
        cache_dir: Path | None = None,
        per_block: bool = False,
    ):
        """`train` is a TrainConfig; `save` persists a snapshot (None: no checkpoints);
        `resume` is a snapshot to continue from; disk caches go to `cache_dir` if given;
        `per_block`: the schedule trains block after block (Schedule.per_block)."""
        self.save = save
        self.checkpoint_every = train.checkpoint_every if save else 0
        self.per_block = per_block
        self.cache_dir = cache_dir
        snapshot = resume or {}
        self.position = Position(**snapshot.get("position", {}))
        self.resumed_from = replace(self.position) if resume else None
        self.saved = self.resumed_from  # where the last checkpoint stands
        self.global_step = snapshot.get("global_step", 0)
        self.bad_batches = snapshot.get("bad_batches", 0)
        self.records: list[dict] = list(snapshot.get("records", []))
        self.caches: list[dict] = list(snapshot.get("caches", []))  # activation-cache manifest
        self.offloaded: list[dict] = []  # parts of the network on disk (memory/offload.py)
        self.interrupted: int | None = None  # the signal that asked training to stop
        self._resume = resume
        self._done_steps, self._saved_stats = 0, []
        # the stage in progress: its BlockTrainers (training/step.py) and data order
        self.trainers: list = []
        self.order: torch.Generator | None = None
        self.epoch_order: torch.Tensor | None = None

    # --- what the schedules call ---------------------------------------------------------

    def epochs(self, stage: int, epochs: int, order, trainers) -> Iterator[int]:
        """The epochs of `stage` still to run, each with fresh running statistics in its
        `trainers`. On the stage where a resumed run stopped, first restores the trainers'
        optimizers, schedules and scalers, the data order and RNG states."""
        if stage < self.position.stage:
            return
        self.trainers, self.order = trainers, order
        if stage > self.position.stage:
            self.position = Position(stage)
        if self._resume is not None:
            self._restore(self._resume)
            self._resume = None
        for epoch in range(self.position.epoch + 1, epochs + 1):
            self.epoch_order = order.get_state()
            for trainer in trainers:
                trainer.new_epoch()
            yield epoch

    def remaining(self, steps):
        """This epoch's micro-steps (training/batches.MicroSteps), less the batches done
        before a resume, whose running statistics are restored into the trainers."""
        done, self._done_steps = self._done_steps, 0
        if not done:
            return steps
        for trainer, saved in zip(self.trainers, self._saved_stats, strict=True):
            trainer.stats.load(saved)
        return steps.after(done)

    def numerical_fault(self, block: int, what: str) -> NumericalFault:
        """The fault that stops a run whose `what` (loss, gradients) of `block` went NaN or
        inf in the batch in progress."""
        at = self.describe(replace(self.position, step=self.position.step + 1), block)
        kept = (
            f"the last checkpoint ({self.describe(self.saved)}) is kept"
            if self.saved
            else "no checkpoint was written before it"
        )
        return NumericalFault(
            f"NaN or inf in the {what} at {at}; training stopped and {kept}; lower the "
            "learning rate (--lr) or skip such batches with --skip-bad-batches"
        )

    def end_batch(self, skipped: bool = False) -> None:
        """A batch is done (the blocks stepped, or `skipped` it): count it, and checkpoint
        when due."""
        self.bad_batches += skipped
        self.position.step += 1
        self.global_step += 1
        kill_point("step")
        due = self.checkpoint_every and self.global_step % self.checkpoint_every == 0
        if due or self.interrupted:
            self.checkpoint()

    def end_epoch(self, records: list[dict]) -> None:
        kill_point("epoch")
        self.records.extend(records)
        self.position = Position(self.position.stage, self.position.epoch + 1)
        self.checkpoint()

    def end_stage(self, stage: int) -> None:
        """A block boundary (layerwise): the block is frozen and its outputs are cached."""
        if stage < self.position.stage:  # finished before a resume; its checkpoint exists
            return
        self.position = Position(stage + 1)
        self.checkpoint()
        kill_point("stage")

    def stage_done(self, stage: int) -> bool:
        """Whether `stage` finished before the run was resumed."""
        return stage < self.position.stage

    # --- checkpoints and Ctrl-C ---------------------------------------------------------

    def snapshot(self) -> dict:
        started = bool(self.position.epoch or self.position.step)
        return {
            "position": asdict(self.position),
            "global_step": self.global_step,
            "bad_batches": self.bad_batches,
            "records": list(self.records),
            "trainers": [t.state_dict() for t in self.trainers] if started else [],
            "stats": [t.stats.state() for t in self.trainers] if self.position.step else [],
            "order": self.order.get_state() if self.order is not None else None,
            "order_epoch_start": self.epoch_order,
            "rng": rng_states(),
            "caches": list(self.caches),
            "offloaded": list(self.offloaded),
        }

    def _restore(self, snapshot: dict) -> None:
        for trainer, saved in zip(self.trainers, snapshot["trainers"], strict=False):
            trainer.load_state_dict(saved)
        order = snapshot["order_epoch_start"] if self.position.step else snapshot["order"]
        if order is not None:
            self.order.set_state(order)
        set_rng_states(snapshot["rng"])
        self._done_steps, self._saved_stats = self.position.step, snapshot["stats"]

    def checkpoint(self) -> None:
        """A checkpoint now, where training stands; then, after Ctrl-C or SIGTERM, stop."""
        if self.save:
            self.save(self.snapshot())
            self.saved = replace(self.position)
        if self.interrupted:
            by = "" if self.interrupted == signal.SIGINT else f"by {self.interrupted.name} "
            raise Interrupted(
                f"stopped {by}at {self.describe(self.saved)}; checkpoint saved",
                STOP_SIGNALS[self.interrupted],
            )

    @contextmanager
    def interruptible(self):
        """Ctrl-C, or SIGTERM (what systemd, Docker and job schedulers send), lets the step
        in progress finish, then checkpoints and stops; a second one stops at once."""
        if self.save is None or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {}

        def on_signal(signum, frame):
            self.interrupted = signal.Signals(signum)
            for sig, handler in previous.items():  # a second signal: as if none were caught
                signal.signal(sig, handler)

        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, on_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # --- helpers ---------------------------------------------------------------------------

    def describe(self, position: Position, block: int | None = None) -> str:
        return describe_position(position, self.per_block, block)

    def cache_path(self, block: int, split: str) -> Path | None:
        """Where block `block`'s (1-based) output cache for `split` goes on disk, if the
        run keeps its caches (so that a resumed run can reload them)."""
        return self.cache_dir / f"block{block}-{split}.bin" if self.cache_dir else None
