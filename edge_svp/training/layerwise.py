"""Layerwise schedule, run as a MemoryPlan says: train block 1 to completion, freeze it,
cache its outputs, train block 2 on the cache, and so on.

Only the block in training (with its head, its optimizer and one micro-batch) and what makes
its reference are in memory, on the device; every other block waits on disk, frozen or not
yet trained (memory/offload.py), so that no budget pays for depth. Each block's outputs go
to an ActivationCache on
the device, in host RAM or on disk, and stream back with a prefetching thread. With
`recompute`, the frozen prefix runs again on every batch instead, which keeps data
augmentation live for every block. Memory is released between blocks, and each block's
peak is measured.

A resumed run (training/state.py) skips the finished blocks. The block it goes on with
reopens its input caches if they were kept on disk and pass their checksums; otherwise the
finished blocks fill them again.
"""

import torch

from edge_svp.data import batches
from edge_svp.memory.activation_cache import LOCATIONS, ActivationCache, damaged
from edge_svp.memory.meter import release_memory
from edge_svp.memory.offload import OffloadedModules, weights_dir
from edge_svp.training.schedule import Schedule

# where a block's inputs come straight from the data at every batch (augmentation applies),
# rather than from a cache of the block before's outputs
LIVE_INPUTS = ("data", "recompute")


class BlockInputs:
    """Inputs, references and labels for block `index`, from wherever the plan put them."""

    def __init__(self, net, data, index: int, source: str, caches: dict):
        self.net, self.data, self.index = net, data, index
        self.source, self.caches = source, caches

    @torch.no_grad()
    def _prefix(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.net.blocks[: self.index]:
            x = block(x)
        return x

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.index == 0:
                return self.net.reference(x)
            return self.net.objectives[self.index - 1].reference_of(x)

    def stream(self, split: str, chunks: list[torch.Tensor], train: bool):
        """(x, v_ref, y) for each index chunk, in order."""
        labels = getattr(self.data.dataset, f"y_{split}")
        if self.source in LIVE_INPUTS:
            for idx in chunks:
                x, y = self.data.batch(split, idx, train=train)
                x = self._prefix(x) if self.source == "recompute" else x
                yield x, self._reference(x), y
            return
        for idx, x in self.caches[split].stream(chunks):
            yield x, self._reference(x), labels[idx].to(self.data.device)


@torch.no_grad()
def _fill_cache(ctx, i: int, inputs: BlockInputs, split: str) -> ActivationCache:
    """Block i's (0-based) outputs on `split`, in the cache its plan says, written at its
    micro-batch."""
    block_plan, memory = ctx.plan.blocks[i], ctx.memory
    n = len(getattr(inputs.data.dataset, f"y_{split}"))
    cache = ActivationCache(
        n, ctx.plan.costs[i].output_shape, block_plan.output_cache, memory.cache_dtype,
        ctx.data.device, memory.cache_dir, ctx.state.cache_path(i + 1, split),
    )  # fmt: skip
    chunks = batches(n, block_plan.micro_batch, shuffle=False)
    start = 0
    for x, _, _ in inputs.stream(split, chunks, train=False):
        out = ctx.net.blocks[i](x)
        cache.write(start, out)
        start += len(out)
    return cache


def _resumed_caches(plan, state, device, reporter) -> tuple[dict, bool]:
    """(caches, rebuild) for the block a resumed run goes on with: its input caches, if
    they were kept on disk and pass their checksums; else rebuild them by running the
    finished blocks again (the same weights, inputs and micro-batches: the same values)."""
    stage = state.position.stage
    if not 0 < stage < len(plan.blocks) or plan.blocks[stage].input_source not in LOCATIONS:
        return {}, False
    rebuilding = f"rebuilding the input caches of block {stage + 1} from the finished blocks"
    if plan.blocks[stage].input_source != "disk" or state.cache_dir is None:
        reporter.message(rebuilding)
        return {}, True
    entries = {e["split"]: e for e in state.caches if e["block"] == stage}
    problems = []
    for split in ("train", "test"):
        if split not in entries:
            problems.append(f"the checkpoint lists no {split} cache")
        elif problem := damaged(entries[split], state.cache_path(stage, split)):
            problems.append(problem)
    if problems:
        reporter.warning(f"activation cache {'; '.join(problems)}; {rebuilding}")
        return {}, True
    caches = {
        split: ActivationCache(
            entry["rows"], entry["row_shape"], "disk", entry["dtype"], device,
            path=state.cache_path(stage, split), reopen=True,
        )
        for split, entry in entries.items()
    }  # fmt: skip
    return caches, False


def _augmentation_lost(cached: list[int]) -> str:
    """What a user who asked for augmentation is told when blocks `cached` (1-based) train on
    cached outputs: one pass over the unaugmented images, the same at every epoch (a deep
    network's later blocks overfit it: docs/svp.md, "Deep networks")."""
    blocks = f"block {cached[0]}" if len(cached) == 1 else f"blocks {cached[0]}-{cached[-1]}"
    return (
        f"data augmentation does not reach {blocks}, trained on outputs cached once from the "
        "unaugmented images; --recompute keeps it live (the frozen blocks run again on every "
        "batch, at more time per epoch)"
    )


def _freeze(block) -> None:
    block.requires_grad_(False)
    block.eval()


@torch.no_grad()
def _head_accuracy(net, index, inputs: BlockInputs, micro_batch: int) -> float:
    n = len(inputs.data.dataset.y_test)
    correct = 0
    for x, _, y in inputs.stream("test", batches(n, micro_batch, False), train=False):
        logits = net.objectives[index].classify(net.blocks[index](x))
        correct += int((logits.argmax(-1) == y).sum())
    return correct / n


class Layerwise(Schedule):
    name = tag = "layerwise"
    method = "svp"
    label = "SVP layerwise"
    per_block = True
    backends = ("torch", "ort")

    def plan(self, planner, net):
        return planner.plan_svp(net, all_resident=False)

    def on_device_throughout(self) -> bool:
        return False  # blocks wait on disk until their turn (memory/offload.py)

    def training_where(self, trained_blocks, plan):
        if plan is None:
            return super().training_where(trained_blocks, plan)
        block = min(trained_blocks + 1, len(plan.blocks))  # the block being trained
        return f"block {block}", plan.blocks[block - 1].predicted_peak

    def train(self, ctx) -> None:
        net, plan, state, device = ctx.net, ctx.plan, ctx.state, ctx.data.device
        cached = [b.block for b in plan.blocks if b.input_source not in LIVE_INPUTS]
        if cached and ctx.data.preprocess.augment:
            ctx.reporter.warning(_augmentation_lost(cached))
        parts = OffloadedModules(net, weights_dir(state.cache_dir) if state.cache_dir else None)
        caches, rebuild = _resumed_caches(plan, state, device, ctx.reporter)
        for i, block_plan in enumerate(plan.blocks):
            block = net.blocks[i]
            done = state.stage_done(i)  # trained before a resume
            skipped = done and not (rebuild and block_plan.output_cache)
            if not skipped:  # what goes to disk here is not charged to this block's peak
                parts.keep_only(_resident(net, i, block_plan), device)
                state.offloaded = parts.manifest()
                release_memory(device)
            with ctx.meter.section():
                if skipped:
                    _freeze(block)
                    continue
                inputs = BlockInputs(net, ctx.data, i, block_plan.input_source, caches)
                if not done:
                    _train_block(ctx, i, inputs, block_plan.micro_batch)
                _freeze(block)  # frozen from here on
                if block_plan.output_cache:
                    new = {split: _fill_cache(ctx, i, inputs, split) for split in ("train", "test")}
                    state.caches = [
                        {"block": i + 1, "split": k, **c.seal()} for k, c in new.items()
                    ]
                    state.end_stage(i)  # the checkpoint lists the new caches before the old go
                    for cache in caches.values():
                        cache.close()
                    caches = new
                else:
                    state.end_stage(i)
                del inputs
        for cache in caches.values():
            cache.close()
        parts.bring_all_back(device)
        state.offloaded = []
        state.checkpoint()  # of the whole network: the files on disk go with the run's caches
        net.requires_grad_(True)


def _resident(net, i: int, block_plan) -> set[str]:
    """What block i (0-based) trains with: itself, its objective, and what makes its
    reference (the input projection, or R_{i-1} of the objective before: reference_parts);
    with `recompute`, the frozen blocks before it too."""
    names = {f"blocks.{i}", f"objectives.{i}"}
    if i == 0:
        names.add("input_projection")
    else:
        names |= {f"objectives.{i - 1}.{part}" for part in net.objectives[i - 1].reference_parts()}
    if block_plan.input_source == "recompute":
        names |= {f"blocks.{j}" for j in range(i)}
    return names


def _train_block(ctx, i: int, inputs: BlockInputs, micro_batch: int) -> None:
    trainer = ctx.block_trainer(i)

    def feed(steps):
        stream = inputs.stream("train", (idx for idx, _, _ in steps), train=True)
        return (((x, v_ref, y), share, last)
                for (x, v_ref, y), (_, share, last) in zip(stream, steps, strict=True))  # fmt: skip

    def micro_step(batch, share) -> None:
        trainer.micro_step(*batch, share)

    def test() -> list:
        return [_head_accuracy(ctx.net, i, inputs, ctx.eval_batch(micro_batch))]

    ctx.run_epochs([trainer], micro_batch, micro_step, test, stage=i, feed=feed,
                   label=f"block {i + 1} epoch")  # fmt: skip
