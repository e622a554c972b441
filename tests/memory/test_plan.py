from dataclasses import replace

import pytest

from edge_svp.errors import EdgeSVPError
from edge_svp.memory.plan import (
    PLAN_MARGIN,
    RUNTIME_OVERHEAD,
    BlockCost,
    BudgetTooSmall,
    MemoryPlan,
    micro_batches,
    plan_backprop,
    plan_blocks,
    smallest_budget,
)

MB = 10**6
RESERVE = RUNTIME_OVERHEAD["cuda"]  # plan() plans for CUDA unless told otherwise
CPU_OVERHEAD = int(RUNTIME_OVERHEAD["cpu"])


def toy_cost(input_shape=(1000,)) -> BlockCost:
    """Params 1 MB (and 1 MB of gradients), optimizer state 1 MB, 0.1 MB per example;
    outputs of 1000 floats."""
    return BlockCost(input_shape, (1000,), 1 * MB, 0, 1 * MB, [(1, step(1)), (64, step(64))])


def step(m: int) -> int:
    return 2 * MB + m * 100_000


def toy_costs():
    return [toy_cost((10,)), toy_cost(), toy_cost()]


def plan(schedule="layerwise", device="cuda", budget=None, batch_size=64, **kw):
    kw.setdefault("num_examples", 1000)  # each cache: 1000 x 1000 x 4 B = 4 MB
    return plan_blocks(toy_costs(), schedule == "joint", device, batch_size, budget=budget, **kw)


def test_micro_batch_candidates():
    assert micro_batches(8) == [8, 4, 3, 2, 1]
    assert micro_batches(1) == [1]


def test_cuda_layerwise_arithmetic_with_device_caches():
    p = plan(budget=100 * MB)
    b2 = p.blocks[1]
    assert b2.micro_batch == 64 and b2.accumulation == 1
    assert (b2.input_source, b2.output_cache) == ("device", "device")
    # training: params + optimizer + gradients + 64 examples + the input cache (4 MB)
    training = RESERVE + 1 * MB + 2 * MB + 64 * 100_000 + 4 * MB
    # writing the next cache: no gradients, both caches on the device
    caching = RESERVE + 1 * MB + 1 * MB + 64 * 100_000 + 4 * MB + 4 * MB
    assert b2.predicted_peak == max(training, caching)


def test_tight_budget_shrinks_the_micro_batch_and_keeps_the_batch():
    budget = RESERVE + 5 * MB
    p = plan(budget=budget)
    for b in p.blocks:
        assert b.micro_batch < 64
        assert b.micro_batch * b.accumulation >= 64
        assert b.predicted_peak <= budget
    # device caches do not fit next to the block: they move off the device
    assert p.blocks[0].output_cache in ("host", "disk")


def test_host_budget_sends_caches_to_disk():
    p = plan(budget=RESERVE + 5 * MB, host_budget=1 * MB)
    assert [b.output_cache for b in p.blocks] == ["disk", "disk", None]
    assert p.blocks[1].input_source == "disk"


def test_cpu_counts_host_caches_but_no_block_waiting_on_disk():
    p = plan(device="cpu", budget=100 * MB)
    b2 = p.blocks[1]
    assert b2.resident_bytes == CPU_OVERHEAD + 1 * MB  # the block; the others wait on disk
    assert b2.cache_bytes == 8 * MB  # host caches are in budgeted memory on CPU


def test_layerwise_smallest_budget_does_not_grow_with_depth():
    shallow = plan_blocks([toy_cost((10,))] + [toy_cost()] * 3, False, "cpu", 64,
                          num_examples=1000)  # fmt: skip
    deep = plan_blocks([toy_cost((10,))] + [toy_cost()] * 15, False, "cpu", 64,
                       num_examples=1000)  # fmt: skip
    assert deep.min_budget == shallow.min_budget


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_min_budget_is_the_feasibility_line_with_room_for_another_probe(device):
    p = plan(device=device, budget=100 * MB)
    plan(device=device, budget=p.min_budget)  # the number plan prints is accepted
    # the line itself: the largest block at micro-batch 1 with disk caches, and the margin
    one = plan(device=device, batch_size=1, host_budget=1)
    peak = max(b.predicted_peak for b in one.blocks)
    assert p.min_budget == smallest_budget(peak, device) >= peak + PLAN_MARGIN[device]
    plan(device=device, budget=peak + PLAN_MARGIN[device])
    with pytest.raises(EdgeSVPError) as error:
        plan(device=device, budget=peak + PLAN_MARGIN[device] - 1)
    message = str(error.value)
    assert message.startswith("block ")
    assert "at micro-batch 1" in message and "smallest budget that works" in message


def test_cpu_plans_keep_their_margin_below_the_budget():
    """The predicted peak is the planner's best estimate; on CPU the plan leaves PLAN_MARGIN
    between it and the budget for what resident memory varies by."""
    budget = CPU_OVERHEAD + 12 * MB
    p = plan(device="cpu", budget=budget, host_budget=1)
    assert all(b.predicted_peak + PLAN_MARGIN["cpu"] <= budget for b in p.blocks)
    # one micro-batch more would have eaten into the margin
    m = p.blocks[2].micro_batch
    larger = [c for c in micro_batches(64) if c > m][-1]
    bigger = plan(device="cpu", budget=10**9, host_budget=1, batch_size=larger)
    assert bigger.blocks[2].predicted_peak + PLAN_MARGIN["cpu"] > budget


def test_joint_plan_keeps_every_block_resident():
    p = plan("joint", budget=100 * MB)
    resident = RESERVE + 3 * MB
    # every block keeps its optimizer state and gradients; one block's activations at a time
    assert all(b.resident_bytes == resident for b in p.blocks)
    assert all(b.optimizer_bytes == 3 * MB and b.gradient_bytes == 3 * MB for b in p.blocks)
    assert all(b.micro_batch == 64 for b in p.blocks)
    assert p.predicted_peak == resident + 6 * MB + 64 * 100_000


def test_joint_refuses_when_parameters_and_states_do_not_fit():
    with pytest.raises(EdgeSVPError, match="--schedule layerwise"):
        plan("joint", budget=RESERVE + 5 * MB)  # 3 MB of parameters, 3 MB of optimizer state


def test_recompute_keeps_the_prefix_resident_and_caches_nothing():
    p = plan(budget=100 * MB, recompute=True)
    assert [b.input_source for b in p.blocks] == ["data", "recompute", "recompute"]
    assert all(b.output_cache is None for b in p.blocks)
    assert p.blocks[2].resident_bytes == RESERVE + 3 * MB


def test_recompute_holds_the_frozen_blocks_without_their_objectives():
    # each block's 1 MB of trained parameters: 0.6 MB of block, 0.4 MB of head and R_l
    costs = [replace(c, objective_bytes=400_000, reference_bytes=100_000) for c in toy_costs()]
    p = plan_blocks(costs, False, "cuda", 64, num_examples=1000, budget=100 * MB, recompute=True)
    # block 3: itself with its objective, R_2 for its reference, blocks 1 and 2 alone
    assert p.blocks[2].resident_bytes == RESERVE + 1 * MB + 100_000 + 2 * 600_000


def test_no_budget_keeps_the_whole_batch_in_host_caches():
    p = plan()
    assert all(b.micro_batch == 64 for b in p.blocks)
    assert [b.output_cache for b in p.blocks] == ["host", "host", None]


def test_fp16_cache_halves_cache_bytes():
    fp32 = plan(device="cpu").blocks[1].cache_bytes
    fp16 = plan(device="cpu", cache_dtype="float16").blocks[1].cache_bytes
    assert fp16 * 2 == fp32


def test_unified_memory_charges_host_caches_to_the_budget():
    dedicated = plan(budget=100 * MB, host_budget=100 * MB)
    unified = plan(budget=100 * MB, host_budget=100 * MB, unified=True)
    assert unified.unified_memory and unified.device == "cuda"
    b2 = unified.blocks[1]
    # the runtime's host memory is budgeted too; frozen blocks wait on disk
    assert b2.resident_bytes == CPU_OVERHEAD + 1 * MB
    assert dedicated.blocks[1].resident_bytes == RESERVE + 1 * MB
    # host and device are one memory: caches go to the device or, when tight, to disk
    assert all(b.output_cache in ("device", None) for b in unified.blocks)
    tight = plan(budget=CPU_OVERHEAD + PLAN_MARGIN["cpu"] + 8 * MB, unified=True)
    # the same budget on a dedicated GPU keeps the caches in host RAM, outside the budget
    assert [b.output_cache for b in plan(budget=CPU_OVERHEAD + PLAN_MARGIN["cpu"] + 8 * MB).blocks][
        :2
    ] == [
        "host",
        "host",
    ]
    assert [b.output_cache for b in tight.blocks] == ["disk", "disk", None]
    assert all(b.predicted_peak <= CPU_OVERHEAD + PLAN_MARGIN["cpu"] + 8 * MB for b in tight.blocks)


def test_cuda_layerwise_keeps_the_reference_makers_on_the_device():
    # the input projection (block 1's reference) and the previous block's objective (the
    # reference of every later block) sit on the device next to the block in training
    costs = toy_costs()
    for c in costs:
        c.objective_bytes = 300_000
    p = plan_blocks(costs, False, "cuda", 64, 1000, input_projection_bytes=200_000)
    assert p.blocks[0].resident_bytes == RESERVE + 1 * MB + 200_000
    assert p.blocks[1].resident_bytes == RESERVE + 1 * MB + 300_000


def test_step_bytes_are_measured_where_probed_and_interpolated_between():
    cost = BlockCost((10,), (10,), 1000, 0, 3000, [(16, 10_000), (128, 66_000), (64, 30_000)])
    assert cost.steps == [(16, 10_000), (64, 30_000), (128, 66_000)]
    assert cost.step_bytes(64) == 30_000  # measured
    assert cost.step_bytes(40) == 20_000  # halfway between the measured 16 and 64
    assert cost.step_bytes(96) == 48_000  # halfway between 64 and 128, not on the 16-128 line
    assert cost.step_bytes(8) == 6_667  # below 16: the line through 16 and 64
    # 3,750 on that line, but never below the optimizer state and gradients
    assert cost.step_bytes(1) == 4_000
    assert cost.measured_at(64) and not cost.measured_at(40)


def test_a_probed_micro_batch_above_the_interpolation_shrinks_the_plan():
    costs = toy_costs()
    first = plan_blocks(costs, False, "cuda", 64, 1000, budget=6 * MB)
    m = first.blocks[2].micro_batch
    assert first.blocks[2].predicted_peak <= 6 * MB
    costs[2].add_step(m, step(m) + 1 * MB)  # the real step at m costs 1 MB more
    second = plan_blocks(costs, False, "cuda", 64, 1000, budget=6 * MB)
    assert second.blocks[2].micro_batch < m
    assert second.blocks[2].predicted_peak <= 6 * MB


def recomputing_cost() -> BlockCost:
    """Backprop recomputing its activations: a tenth of the activations per example, plus
    the recomputation's own 0.5 MB."""
    return BlockCost((10,), (10,), 1 * MB, 0, 1 * MB,
                     [(1, 2 * MB + 500_000 + 10_000), (64, 2 * MB + 500_000 + 640_000)])  # fmt: skip


def bp_plan(budget=None, costs=None):
    costs = costs or {False: toy_cost((10,)), True: recomputing_cost()}
    return plan_backprop(costs, "cuda", 64, resident_bytes=3 * MB, budget=budget)


def test_backprop_without_a_budget_steps_on_the_whole_batch():
    p = bp_plan(costs={False: toy_cost((10,))})
    (b,) = p.blocks
    assert (b.micro_batch, b.accumulation, b.recompute_activations) == (64, 1, False)
    assert b.predicted_peak == 3 * MB + step(64) and p.schedule == "end-to-end"


def test_backprop_recomputes_only_where_that_fits_a_larger_micro_batch():
    roomy = bp_plan(budget=3 * MB + step(64))  # everything fits: no recomputation
    assert (roomy.blocks[0].micro_batch, roomy.blocks[0].recompute_activations) == (64, False)
    tight = bp_plan(budget=3 * MB + step(16))  # plain: micro-batch 16; recomputing: 64
    assert (tight.blocks[0].micro_batch, tight.blocks[0].recompute_activations) == (64, True)
    assert tight.blocks[0].predicted_peak <= 3 * MB + step(16)
    tighter = bp_plan(budget=3 * MB + step(4))  # recomputing cannot beat 4 examples here
    assert (tighter.blocks[0].micro_batch, tighter.blocks[0].recompute_activations) == (4, False)


def test_a_plan_written_before_the_rename_reads_its_recomputation():
    raw = bp_plan(budget=3 * MB + step(16)).to_dict()
    for block in raw["blocks"]:  # as a checkpoint of an earlier version holds it
        block["checkpointing"] = block.pop("recompute_activations")
    assert MemoryPlan.from_dict(raw).blocks[0].recompute_activations is True


def test_backprop_refuses_below_its_minimum_and_names_it():
    p = bp_plan(budget=100 * MB)
    assert p.min_budget == 3 * MB + step(1)  # micro-batch 1, cheaper without recomputing
    bp_plan(budget=p.min_budget)  # feasible
    with pytest.raises(BudgetTooSmall, match="smallest budget that works for backprop") as e:
        bp_plan(budget=p.min_budget - 1)
    assert e.value.min_budget == p.min_budget  # on CUDA, which a step measures exactly


def in_backward(cost: BlockCost) -> BlockCost:
    """`cost` with its optimizer stepping inside backward: the same steps without the
    gradients held between micro-batches."""
    held = cost.param_bytes
    return replace(cost, steps=[(m, b - held) for m, b in cost.steps], step_in_backward=True)


def test_stepping_in_backward_holds_no_gradients_and_only_the_whole_batch():
    costs = [in_backward(c) for c in toy_costs()]
    p = plan_blocks(costs, False, "cuda", 64, num_examples=1000, budget=100 * MB)
    assert all(b.micro_batch == 64 and b.gradient_bytes == 0 for b in p.blocks)
    last = plan(budget=100 * MB).blocks[-1]  # writes no cache: its peak is the training step's
    assert p.blocks[-1].predicted_peak == last.predicted_peak - MB
    # the smallest budget is the whole batch's: there is no micro-batch to fall back on
    assert p.min_budget == plan_blocks(costs, False, "cuda", 64, num_examples=1000).min_budget
    with pytest.raises(BudgetTooSmall, match="at micro-batch 64"):
        plan_blocks(costs, False, "cuda", 64, num_examples=1000, budget=p.min_budget - 1)
    joint = plan_blocks(costs, True, "cuda", 64, num_examples=1000, budget=100 * MB)
    assert joint.blocks[0].gradient_bytes == 0
    stepped = bp_plan(costs={False: in_backward(toy_cost((10,)))})
    assert stepped.min_budget == 2 * MB + step(64)  # params and the step: no gradients held


def test_a_plan_names_its_levers_and_an_older_plan_reads_without_them():
    plan = bp_plan(budget=3 * MB + step(64))
    assert plan.optimizer_memory == "fp32 state"
    plan.state_on_host = True
    assert plan.optimizer_memory == "fp32 state in host RAM"
    assert MemoryPlan.from_dict(plan.to_dict()).state_on_host is True
    plan.projections_stored = False
    assert MemoryPlan.from_dict(plan.to_dict()).projections_stored is False
    raw = plan.to_dict()
    del raw["state_on_host"], raw["projections_stored"]  # as an earlier version's checkpoint
    old = MemoryPlan.from_dict(raw)
    assert old.optimizer_memory == "fp32 state" and old.projections_stored is None
