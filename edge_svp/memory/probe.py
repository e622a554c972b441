"""Probing: the measured costs of each block's training step, on a throwaway copy.

A step's cost is measured, never estimated: the optimizer's state after a first step, and
the peak of a micro-batch that accumulates onto the gradients of the one before it, above
the memory in use before the optimizer existed. Probed at a small micro-batch and at the
whole batch (probe_sizes); the plan (plan.py) interpolates in between.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import torch

from edge_svp.memory.meter import MemoryMeter, release_memory
from edge_svp.memory.plan import BlockCost

SMALL_PROBE = 16  # a small probe micro-batch; the others are 1 and the batch itself
FALLBACK_PROBE = 64  # the larger one, when a step at the whole batch does not fit the device


# --- measuring --------------------------------------------------------------------------


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class Probe:
    """Measured training steps of a network's blocks, each on a throwaway copy on `device`.

    `first_input(m)` makes a batch for the first block exactly as training will (for example
    uint8 images through preprocessing), so its temporaries are measured too. `autocast()`
    is the context the training forward runs in (mixed precision). `stepping_in_backward`,
    if given, is training/optim.py's: the optimizer steps inside backward, and no gradients
    are held between micro-batches. `track(iterable, total, label)`, if given, shows the
    blocks as they are probed (edge_svp/progress.py's Reporter.track): planning a deep
    network takes a minute or more.
    """

    def __init__(
        self,
        net,
        optimizer_factory: Callable,
        device: torch.device,
        first_input: Callable[[int], torch.Tensor],
        autocast: Callable = contextlib.nullcontext,
        stepping_in_backward: Callable | None = None,
        track: Callable | None = None,
    ):
        self.net, self.optimizer_factory, self.device = net, optimizer_factory, device
        self.stepping_in_backward = stepping_in_backward
        self.track = track or (lambda iterable, total, label: iterable)
        self.first_input, self.autocast = first_input, autocast
        self.shapes = [tuple(net.input_shape)] + _output_shapes(net)

    def measure(self, module, objective, params, make_input, sizes) -> tuple[int, list]:
        """(optimizer bytes, [(m, step bytes)]) of training `params` of `module` under its
        local `objective` (module, objective and params copied: the originals stay as they
        are) at each micro-batch m; make_input(m) gives the module's input and reference on
        the device (see _Steps.measure)."""
        steps = _Steps(self, module, objective, params, make_input)
        measured = steps.measure(sizes)
        del steps
        release_memory(self.device)
        return measured

    def block(self, i: int, sizes: list[int]) -> tuple[int, list[tuple[int, int]]]:
        """(optimizer bytes, [(m, step bytes)]) of SVP block i (0-based), fed as training
        feeds it."""
        objective = self.net.objectives[i]

        def make_input(m: int):
            if i == 0:
                x = self.first_input(m).to(self.device)
            else:
                x = torch.randn(m, *self.shapes[i], device=self.device)
            return x, torch.randn(m, objective.reference_dim, device=self.device)

        params = self.net.trainable_parameters(i)
        return self.measure(self.net.blocks[i], objective, params, make_input, sizes)

    def costs(self, sizes: list[int], label: str = "probing blocks") -> list[BlockCost]:
        """Every block's BlockCost, probed at micro-batches `sizes` (probe_sizes); `label`
        names them on the progress bar."""
        costs, n = [], len(self.net)
        for i in self.track(range(n), n, label):
            optimizer_bytes, steps = self.block(i, sizes)
            block, objective = self.net.blocks[i], self.net.objectives[i]
            costs.append(
                BlockCost(
                    input_shape=self.shapes[i],
                    output_shape=self.shapes[i + 1],
                    param_bytes=tensor_bytes(self.net.trainable_parameters(i)),
                    buffer_bytes=tensor_bytes([*block.buffers(), *objective.buffers()]),
                    optimizer_bytes=optimizer_bytes,
                    steps=steps,
                    step_in_backward=self.stepping_in_backward is not None,
                    objective_bytes=tensor_bytes([*objective.parameters(), *objective.buffers()]),
                    reference_bytes=sum(
                        tensor_bytes([*part.parameters(), *part.buffers()])
                        for part in map(objective.get_submodule, objective.reference_parts())
                    ),
                )
            )
        return costs


class _Steps:
    """Training steps of a throwaway copy of a module and its objective, as Probe measures
    them."""

    def __init__(self, probe: Probe, module, objective, params, make_input):
        self.probe, self.make_input = probe, make_input
        copies = {}  # one copy of what module and objective share, and of the params
        self.module = copy.deepcopy(module, copies).to(probe.device).train()
        self.objective = copy.deepcopy(objective, copies).to(probe.device).train()
        self.params = [copies[id(p)] for p in params]
        self.stepped = set()  # the micro-batches stepped at: their kernels are set up

    def backward(self, m: int) -> None:
        x, v_ref = self.make_input(m)
        y = torch.randint(0, self.probe.net.num_classes, (m,), device=self.probe.device)
        with self.probe.autocast():  # the training precision: its activations are what it keeps
            self.objective(self.module(x), v_ref, y).loss.backward()

    def step(self, optimizer, m: int) -> None:
        if self.probe.stepping_in_backward:
            with self.probe.stepping_in_backward(optimizer, self.params):
                self.backward(m)
        else:
            self.backward(m)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.stepped.add(m)

    def accumulating_peak(self, optimizer, m: int) -> int:
        """The peak of a micro-batch and optimizer step above the memory in use when it
        starts, with the gradients of a micro-batch before it alive (stepping in backward:
        none are)."""
        if not self.probe.stepping_in_backward:
            self.backward(m)  # the micro-batch before; the first at m also sets kernels up
        elif m not in self.stepped:
            self.step(optimizer, m)  # the kernels at m; no gradients are held between steps
        accumulating = MemoryMeter(self.probe.device)
        with accumulating.section() as section:
            self.step(optimizer, m)
        return section.peak

    def measure(self, sizes: list[int]) -> tuple[int, list[tuple[int, int]]]:
        """(optimizer bytes, [(m, step bytes)]) at each micro-batch m.

        A step's bytes are what training the block adds to its parameters at the peak of a
        micro-batch that accumulates onto the gradients of the one before it: the optimizer's
        state, the gradients, and the activations, input and workspace of the micro-batch.
        A micro-batch that does not fit the device is measured at FALLBACK_PROBE instead."""
        device = self.probe.device
        make_optimizer = self.probe.optimizer_factory
        self.step(make_optimizer(self.params), sizes[0])  # one-time kernel set-up: not per step
        meter = MemoryMeter(device)
        optimizer = make_optimizer(self.params)
        self.step(optimizer, sizes[0])  # the optimizer's state appears with its first step
        release_memory(device)
        optimizer_bytes = max(meter.in_use() - meter.baseline, 0)
        held = optimizer_bytes  # and the gradients, unless the optimizer steps in backward
        held += 0 if self.probe.stepping_in_backward else tensor_bytes(self.params)
        steps = []
        for m in sizes:
            try:
                peak = self.accumulating_peak(optimizer, m)
            except torch.OutOfMemoryError:  # the device cannot take m examples at once
                if m <= FALLBACK_PROBE:
                    raise
                peak = None  # retried outside the handler, whose traceback holds the tensors
            if peak is None:
                optimizer.zero_grad(set_to_none=True)
                release_memory(device)
                m = FALLBACK_PROBE
                peak = self.accumulating_peak(optimizer, m)
            steps.append((m, held + peak))
        return optimizer_bytes, steps


def probe_sizes(batch_size: int) -> list[int]:
    """The micro-batches to probe: 1 (where a smallest budget is quoted), a small one and the
    whole batch, so that every candidate micro-batch lies between measured ones (kernels
    pick other algorithms and workspaces at other sizes, which a straight line only follows
    between points it was measured at; and the line from 16 and 128 down to 1 multiplies
    their measurement noise)."""
    large = max(batch_size, 2)
    return sorted({1, min(SMALL_PROBE, large // 2), large})


@torch.no_grad()
def _output_shapes(net) -> list[tuple[int, ...]]:
    was_training = net.training
    net.eval()
    h, shapes = torch.zeros(1, *net.input_shape), []
    for block in net.blocks:
        h = block(h)
        shapes.append(tuple(h.shape[1:]))
    net.train(was_training)
    return shapes
