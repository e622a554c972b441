"""SVPNetwork: a list of blocks, each with its own local objective.

This is the object a user builds in a notebook, from a list of modules or from an
nn.Sequential and block boundaries:

    net = SVPNetwork.from_sequential(seq, boundaries=[2, 4], input_shape=(1, 28, 28),
                                     num_classes=10)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import psutil
import torch
from torch import nn

from edge_svp.checkpoint import read_checkpoint
from edge_svp.config import RunConfig, SVPConfig
from edge_svp.errors import EdgeSVPError
from edge_svp.files import atomic_write
from edge_svp.memory.offload import read_offloaded
from edge_svp.memory.size import format_bytes
from edge_svp.models import build_blocks
from edge_svp.models.classifier import StandardHead
from edge_svp.svp import LocalObjective, RandomProjection, make_projection, pool, pooled_dim


def projection_seed(seed: int, index: int) -> int:
    """Seed of R_index (index 0 is the input projection R_0)."""
    return seed * 1009 + index


class SVPNetwork(nn.Module):
    def __init__(
        self,
        blocks: Sequence[nn.Module],
        input_shape: Sequence[int],
        num_classes: int,
        svp: SVPConfig | Sequence[SVPConfig] | None = None,
        seed: int = 0,
        classifier: bool = False,
    ):
        """`classifier`: give the network a StandardHead on its last block, the prediction
        of a network trained end to end by backprop (edge_svp/training/backprop.py)."""
        super().__init__()
        if not blocks:
            raise EdgeSVPError("a network needs at least one block")
        svps = list(svp) if isinstance(svp, Sequence) else [svp or SVPConfig()] * len(blocks)
        if len(svps) != len(blocks):
            raise EdgeSVPError(f"got {len(svps)} SVP configurations for {len(blocks)} blocks")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.svp, self.seed = svps, seed
        self.blocks = nn.ModuleList(blocks)
        shapes = self._output_shapes()
        # An MLP sees its input flattened, so its reference v_0 does too; conv and
        # transformer models see images, whose reference is the pooled image.
        self.flatten_input = len(shapes[0]) == 1
        input_dim = (
            torch.Size(self.input_shape).numel()
            if self.flatten_input
            else pooled_dim(self.input_shape, svps[0].pool_size)
        )
        self.input_projection = make_projection(
            svps[0].projection, input_dim, svps[0].proj_dim, projection_seed(seed, 0),
            svps[0].store_projection,
        )  # fmt: skip
        self.objectives = nn.ModuleList()
        ref_dim = svps[0].proj_dim
        for i, (shape, cfg) in enumerate(zip(shapes, svps, strict=True)):
            auxiliary = auxiliary_layers(self.blocks, i, cfg.aux_blocks)
            objective = LocalObjective(
                shapes[i + len(auxiliary)] if auxiliary else shape, ref_dim, num_classes, cfg,
                projection_seed(seed, i + 1),
                # no posterior before the first block
                compare=not (cfg.divergence_on == "posterior" and i == 0),
                auxiliary=auxiliary,
            )  # fmt: skip
            self.objectives.append(objective)
            ref_dim = objective.output_width  # the next block's reference
        self.classifier = StandardHead(shapes[-1], num_classes) if classifier else None
        if classifier:
            # Trained end to end, the network predicts through its classifier alone: the SVP
            # objectives would be dead weight in backprop's memory. They are drawn all the
            # same, then let go, because the classifier's initial weights follow theirs in
            # the seed's random stream.
            self.objectives, self.input_projection = nn.ModuleList(), None

    @classmethod
    def from_sequential(
        cls, model: nn.Sequential, boundaries: Sequence[int], input_shape, num_classes, **kw
    ) -> SVPNetwork:
        """Split `model` before each index in `boundaries` (e.g. [2, 4] gives 3 blocks)."""
        cuts = [0, *boundaries, len(model)]
        if any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
            raise EdgeSVPError(
                f"block boundaries {list(boundaries)} must increase strictly within "
                f"1..{len(model) - 1}"
            )
        blocks = [model[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
        return cls(blocks, input_shape, num_classes, **kw)

    def _output_shapes(self) -> list[tuple[int, ...]]:
        was_training = self.training
        self.eval()  # a probe must not move BatchNorm running statistics
        shapes, h = [], torch.zeros(2, *self.input_shape)
        try:
            with torch.no_grad():
                for i, block in enumerate(self.blocks):
                    try:
                        h = block(h)
                    except RuntimeError as e:
                        raise EdgeSVPError(
                            f"block {i + 1} cannot take input of shape {tuple(h.shape[1:])}: "
                            f"{str(e).splitlines()[0]}"
                        ) from None
                    shapes.append(tuple(h.shape[1:]))
        finally:
            self.train(was_training)
        return shapes

    def __len__(self) -> int:
        return len(self.blocks)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """v_0 = R_0 pool(x): the reference of the first block."""
        first = self.objectives[0]
        z = x.flatten(1) if self.flatten_input else pool(x, first.pool_size, first.token_pool)
        return self.input_projection(z)

    def trainable_parameters(self, index: int) -> list[nn.Parameter]:
        """Block `index`, its head and auxiliary layers: everything its local loss trains."""
        return [*self.blocks[index].parameters(), *self.objectives[index].trained()]

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """The network's prediction from its last block's output: its classifier, if it has
        one, else the last block's head."""
        return (
            self.classifier(h) if self.classifier is not None else self.objectives[-1].classify(h)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the network's prediction."""
        for block in self.blocks:
            x = block(x)
        return self.classify(x)

    def all_logits(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        """Logits of every block's head, in block order, the last being the network's
        prediction. A network with a classifier (trained end to end) has no trained heads
        before it: None for those."""
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.classifier is None:
                out.append(self.objectives[i].classify(x))
            else:
                out.append(self.classifier(x) if i == len(self) - 1 else None)
        return out

    def svp_counterpart(self) -> SVPNetwork:
        """The same blocks (copied) with SVP objectives: what SVP would train in place of a
        network trained end to end."""
        blocks = copy.deepcopy(list(self.blocks))
        return SVPNetwork(blocks, self.input_shape, self.num_classes, self.svp, seed=self.seed)

    def adjustable_projections(self) -> list[RandomProjection]:
        """The fixed Gaussian projections that svp.store_projection = auto leaves to the
        memory planner: held, or drawn from their seeds at every use where a budget needs it."""
        return [m for m in self.modules() if isinstance(m, RandomProjection) and m.adjustable]

    def store_projections(self, stored: bool) -> None:
        """Hold the adjustable projections, or let them go (the same outputs either way)."""
        for projection in self.adjustable_projections():
            projection.keep(stored)

    def save(self, path: str | Path, **extra) -> None:
        """Write the state dict (weights and projection buffers) atomically."""
        atomic_write(path, lambda f: torch.save({"state_dict": self.state_dict(), **extra}, f))

    def load(self, path: str | Path) -> dict:
        """Load weights saved by `save`; returns the checkpoint dict."""
        return self.restore(read_checkpoint(path), path)

    def restore(self, checkpoint: dict, source: str | Path, weights: Path | None = None) -> dict:
        """Load the weights of a checkpoint read from `source` (named in errors); parts of
        the network that a layerwise run kept on disk meanwhile are read from `weights`."""
        state = checkpoint["state_dict"]
        offloaded = (checkpoint.get("training") or {}).get("offloaded")
        if offloaded:
            state = read_offloaded(state, offloaded, weights)
        state = self._projections_as_held(state)
        try:
            self.load_state_dict(state)
        except RuntimeError as e:
            raise EdgeSVPError(
                f"checkpoint {source} does not match this network: {str(e).splitlines()[0]}"
            ) from None
        return checkpoint

    def _projections_as_held(self, state: dict) -> dict:
        """`state` with the fixed Gaussian projections as this network holds them: a run
        whose plan let them go saved none, and one that held them saved what the seeds give
        again (svp.store_projection), so either checkpoint loads into either network."""
        state = dict(state)
        for name, module in self.named_modules():
            if isinstance(module, RandomProjection):
                key = f"{name}.weight"
                if module.stored:
                    state.setdefault(key, module.weight)
                else:
                    state.pop(key, None)
        return state


def auxiliary_layers(blocks, index: int, count: int) -> nn.Sequential | None:
    """a_l of block `index`: copies of the `count` blocks after it (as many as there are),
    each starting from that block's initial weights, to train on their own; None for none.
    Copies take no draws from the random stream, so the rest of the network is initialised
    as without them."""
    following = blocks[index + 1 : index + 1 + count]
    return nn.Sequential(*map(copy.deepcopy, following)) if len(following) else None


def build_network(config: RunConfig, input_shape, num_classes: int) -> SVPNetwork:
    """The network a run configuration describes, its weights drawn from train.seed; a
    one-line error for one this machine cannot hold."""
    from edge_svp.training import schedule_of  # the schedules build on networks

    schedule = schedule_of(config.train)
    check_fits_in_memory(config, input_shape, schedule.probe_copies_every_block())
    torch.manual_seed(config.train.seed)  # weight initialisation
    classifier = schedule.classifier(config.train)
    try:
        blocks = build_blocks(config.model.kind, config.model.options, input_shape)
        return SVPNetwork(blocks, input_shape, num_classes, config.svp, seed=config.train.seed,
                          classifier=classifier)  # fmt: skip
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        raise EdgeSVPError(f"cannot allocate the network: {str(e).splitlines()[0]}") from None


def check_fits_in_memory(config: RunConfig, input_shape, every_block: bool) -> None:
    """Refuse, in one line, a network that cannot train in the memory this machine has free:
    its float32 weights and fixed projections, the gradients, optimizer state and the
    probe's copy of what trains at once (a block for SVP, or `every_block`), and a
    block's output at the whole batch; counted on the meta device, nothing allocated. A
    lower bound: what passes may still be refused by the planner under a budget."""
    with torch.device("meta"):
        blocks = build_blocks(config.model.kind, config.model.options, input_shape)
        h = torch.zeros(2, *input_shape)
        shapes = []
        for block in blocks:
            h = block(h)
            shapes.append(tuple(h.shape[1:]))
    sizes = [sum(p.numel() for p in block.parameters()) for block in blocks]
    svp = config.svp
    first = (
        math.prod(input_shape) if len(shapes[0]) == 1 else pooled_dim(input_shape, svp.pool_size)
    )
    projection = [svp.proj_dim * pooled_dim(shape, svp.pool_size) for shape in shapes]
    # else drawn at every use, as a budget may have them ("auto")
    held = svp.store_projection is True or svp.projection != "gaussian"
    weights = sum(sizes) + (svp.proj_dim * first + sum(projection) if held else 0)
    if every_block:  # every block: a copy (the probe's), gradients, Adam
        trained = 4 * sum(sizes)
    else:  # one block at a time, and its projection
        trained = max(4 * n + p for n, p in zip(sizes, projection, strict=True))
    # the probe steps at the whole batch: a block's output and its gradient, at least
    activations = 2 * config.train.batch_size * max(math.prod(shape) for shape in shapes)
    need = 4 * (weights + trained + activations)
    available = psutil.virtual_memory().available
    if need > available:
        raise EdgeSVPError(
            f"training this network needs at least {format_bytes(need)} ({sum(sizes):,} "
            f"parameters, fixed projections of {weights - sum(sizes):,} numbers, gradients, "
            f"optimizer state, a batch of outputs), more than the {format_bytes(available)} "
            "this machine has free; make the model, svp.proj_dim or the batch smaller"
        )
