"""Where training stands, and everything needed to continue from there.

The schedules walk through stages (one per block for layerwise, a single one for joint and
for backprop), epochs and batches, and tell a TrainState about each. It

- ends every batch (`step`): checks the batch's losses and gradients for NaN and inf, then
  steps the optimizers, or skips the batch and counts it (train.skip_bad_batches), or
  stops with a NumericalFault naming the block and the step;
- hands a snapshot to `save` every train.checkpoint_every steps, at every epoch end, at
  every block boundary, and after the step during which Ctrl-C was pressed (then stops
  with Interrupted);
- started from such a snapshot, skips the stages, epochs and batches already done and
  restores optimizers, learning-rate schedules, the data order, RNG states and the
  epoch's running statistics, so that the run goes on exactly as if it had not stopped.

Data order: each schedule draws one permutation per epoch from its own generator. The
snapshot keeps that generator's state at the start of the epoch in progress (to draw the
same permutation again and skip the batches done) and its current state (for the next
epoch).
"""

from __future__ import annotations

import random
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edge_svp.errors import Interrupted, NumericalFault
from edge_svp.faults import kill_point


@dataclass
class Position:
    stage: int = 0  # layerwise: the block in training (0-based); joint and backprop: 0
    epoch: int = 0  # epochs finished in this stage
    step: int = 0  # batches finished in the epoch after those


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
    ):
        """`train` is a TrainConfig; `save` persists a snapshot (None: no checkpoints);
        `resume` is a snapshot to continue from; disk caches go to `cache_dir` if given."""
        self.save = save
        self.checkpoint_every = train.checkpoint_every if save else 0
        self.skip_bad_batches = train.skip_bad_batches
        self.per_block = train.method == "svp" and train.schedule == "layerwise"
        self.cache_dir = cache_dir
        snapshot = resume or {}
        self.position = Position(**snapshot.get("position", {}))
        self.resumed_from = replace(self.position) if resume else None
        self.saved = self.resumed_from  # where the last checkpoint stands
        self.global_step = snapshot.get("global_step", 0)
        self.bad_batches = snapshot.get("bad_batches", 0)
        self.records: list[dict] = list(snapshot.get("records", []))
        self.caches: list[dict] = list(snapshot.get("caches", []))  # activation-cache manifest
        self.interrupted = False
        self._resume = resume
        self._done_steps, self._saved_stats = 0, []
        # the stage in progress: its blocks (1-based), optimizers, schedules, gradient
        # scalers (mixed precision), data order
        self.blocks, self.optimizers, self.schedules, self.scalers = [], [], [], []
        self.stats: list = []
        self.order: torch.Generator | None = None
        self.epoch_order: torch.Tensor | None = None

    # --- what the schedules call ---------------------------------------------------------

    def epochs(
        self, stage: int, epochs: int, order, optimizers, schedules, blocks, scalers=None
    ) -> Iterator[int]:
        """The epochs of `stage` still to run. On the stage where a resumed run stopped,
        first restores its optimizers, schedules, scalers, data order and RNG states.
        `scalers` (one per optimizer, fp16) step their optimizers; none: plain steps."""
        if stage < self.position.stage:
            return
        self.blocks, self.optimizers, self.schedules = blocks, optimizers, schedules
        self.scalers = scalers or [torch.amp.GradScaler("cpu", enabled=False) for _ in optimizers]
        self.order, self.stats = order, []
        if stage > self.position.stage:
            self.position = Position(stage)
        if self._resume is not None:
            self._restore(self._resume)
            self._resume = None
        for epoch in range(self.position.epoch + 1, epochs + 1):
            self.epoch_order = order.get_state()
            yield epoch

    def remaining(self, steps: list, stats: list) -> list:
        """This epoch's micro-steps (idx, share, last of its batch), less the batches done
        before a resume; `stats` are the epoch's running statistics, one per block."""
        self.stats = stats
        done, self._done_steps = self._done_steps, 0
        if not done:
            return steps
        for s, saved in zip(stats, self._saved_stats, strict=True):
            s.load(saved)
        ends = [k for k, (_, _, last) in enumerate(steps) if last]
        return steps[ends[done - 1] + 1 :]

    def step(self) -> None:
        """End of a batch: step the optimizers (or skip the batch, or stop on NaN/inf),
        advance the schedules, and checkpoint when due."""
        bad = self._nonfinite()
        for s in self.stats:
            s.nonfinite = False
        if bad and not self.skip_bad_batches:
            block, what = bad
            at = self.describe(replace(self.position, step=self.position.step + 1), block)
            kept = (
                f"the last checkpoint ({self.describe(self.saved)}) is kept"
                if self.saved
                else "no checkpoint was written before it"
            )
            raise NumericalFault(
                f"NaN or inf in the {what} at {at}; training stopped and {kept}; lower the "
                "learning rate (--lr) or skip such batches with --skip-bad-batches"
            )
        if bad:
            self.bad_batches += 1
        else:
            for optimizer, scaler in zip(self.optimizers, self.scalers, strict=True):
                scaler.step(optimizer)  # fp16: unscaled, and skipped if its gradients overflowed
                scaler.update()
        with warnings.catch_warnings():
            # a skipped step (fp16 overflow, bad batch) leaves torch thinking the order is wrong
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            for schedule in self.schedules:
                schedule.step()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.position.step += 1
        self.global_step += 1
        kill_point("step")
        due = self.checkpoint_every and self.global_step % self.checkpoint_every == 0
        if due or self.interrupted:
            self._checkpoint()

    def end_epoch(self, records: list[dict]) -> None:
        kill_point("epoch")
        self.records.extend(records)
        self.position = Position(self.position.stage, self.position.epoch + 1)
        self._checkpoint()

    def end_stage(self, stage: int) -> None:
        """A block boundary (layerwise): the block is frozen and its outputs are cached."""
        if stage < self.position.stage:  # finished before a resume; its checkpoint exists
            return
        self.position = Position(stage + 1)
        self._checkpoint()
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
            "optimizers": [o.state_dict() for o in self.optimizers] if started else [],
            "schedules": [s.state_dict() for s in self.schedules] if started else [],
            "scalers": [s.state_dict() for s in self.scalers] if started else [],
            "stats": [s.state() for s in self.stats] if self.position.step else [],
            "order": self.order.get_state() if self.order is not None else None,
            "order_epoch_start": self.epoch_order,
            "rng": rng_states(),
            "caches": list(self.caches),
        }

    def _restore(self, snapshot: dict) -> None:
        for optimizer, saved in zip(self.optimizers, snapshot["optimizers"], strict=False):
            optimizer.load_state_dict(saved)
        for schedule, saved in zip(self.schedules, snapshot["schedules"], strict=False):
            schedule.load_state_dict(saved)
        for scaler, saved in zip(self.scalers, snapshot.get("scalers", []), strict=False):
            if saved:  # a disabled scaler saves an empty state
                scaler.load_state_dict(saved)
        order = snapshot["order_epoch_start"] if self.position.step else snapshot["order"]
        if order is not None:
            self.order.set_state(order)
        set_rng_states(snapshot["rng"])
        self._done_steps, self._saved_stats = self.position.step, snapshot["stats"]

    def _checkpoint(self) -> None:
        if self.save:
            self.save(self.snapshot())
            self.saved = replace(self.position)
        if self.interrupted:
            raise Interrupted(f"stopped at {self.describe(self.saved)}; checkpoint saved")

    @contextmanager
    def interruptible(self):
        """Ctrl-C lets the step in progress finish, then checkpoints and stops; a second
        Ctrl-C stops at once."""
        if self.save is None or threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum, frame):
            self.interrupted = True
            signal.signal(signal.SIGINT, previous)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # --- helpers ---------------------------------------------------------------------------

    def describe(self, position: Position, block: int | None = None) -> str:
        """'block 2, epoch 3, step 5', 'end of epoch 3', 'end of block 1', ..."""
        if position.step:
            at = f"epoch {position.epoch + 1}, step {position.step}"
        elif position.epoch:
            at = f"end of epoch {position.epoch}"
        elif position.stage:
            return f"end of block {position.stage}"
        else:
            at = "the start"
        if block is None and self.per_block:
            block = position.stage + 1
        return at if block is None else f"block {block}, {at}"

    def _nonfinite(self) -> tuple[int, str] | None:
        """(block, 'loss' or 'gradients') of the first block whose batch went non-finite."""
        for block, stats in zip(self.blocks, self.stats, strict=True):
            if stats.nonfinite:
                return block, "loss"
        # a NaN or inf anywhere makes a sum non-finite: one sum per block, one sync in all
        # fp16 gradients are scaled and overflow by design now and then: their scaler skips
        # such a step and lowers its scale, so they are not checked here
        sums = []
        for optimizer, scaler in zip(self.optimizers, self.scalers, strict=True):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            grads = [p.grad.sum() for p in params if p.grad is not None and not scaler.is_enabled()]
            sums.append(torch.stack(grads).sum() if grads else params[0].new_zeros(()))
        finite = torch.isfinite(torch.stack(sums)).tolist()
        bad = [block for block, ok in zip(self.blocks, finite, strict=True) if not ok]
        return (bad[0], "gradients") if bad else None

    def cache_path(self, block: int, split: str) -> Path | None:
        """Where block `block`'s (1-based) output cache for `split` goes on disk, if the
        run keeps its caches (so that a resumed run can reload them)."""
        return self.cache_dir / f"block{block}-{split}.bin" if self.cache_dir else None
