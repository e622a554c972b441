"""Choosing the memory levers: the optimizer's, and the fixed projections held or not
(edge_svp/training/probe_plan.py)."""

import pytest
import torch
from tiny_runs import tiny_config

from edge_svp.config import MemoryConfig, MLPOptions, OptimConfig, SVPConfig, TrainConfig
from edge_svp.data.dataset import Dataset, Preprocess
from edge_svp.memory.plan import BlockPlan, BudgetTooSmall, MemoryPlan
from edge_svp.memory.probe import Probe
from edge_svp.models import build_blocks
from edge_svp.network import SVPNetwork
from edge_svp.progress import Reporter
from edge_svp.run import plan_run
from edge_svp.training import plan_training, schedule_of
from edge_svp.training.optim import OptimizerLevers
from edge_svp.training.probe_plan import Planner, _with_levers, network_probe

LEVERS = [OptimizerLevers("fp32"), OptimizerLevers("fp32", True), OptimizerLevers("bf16")]
OPTIONS = [(levers, None) for levers in LEVERS]  # a network without adjustable projections


def planner(micro_batches: dict):
    """plan_with for _with_levers: under each levers, a plan whose blocks train at the given
    micro-batches of a batch of 64 (None: the budget is too small, below `min_budget`); and
    the options planned, in order."""
    tried = []

    def plan_with(levers, keep):
        tried.append((levers, keep))
        sizes, min_budget = micro_batches[levers, keep]
        if sizes is None:
            raise BudgetTooSmall(f"too small for {levers}", min_budget)
        blocks = [BlockPlan(i + 1, m, -(-64 // m), "data", None, 0, 0, 0, 0, 0, 0)
                  for i, m in enumerate(sizes)]  # fmt: skip
        return MemoryPlan("layerwise", "cpu", 1, None, 64, "float32", min_budget, blocks)

    return plan_with, tried


def test_levers_are_reached_for_only_when_the_budget_needs_them():
    plan_with, tried = planner({o: ([64, 64], 1) for o in OPTIONS})
    plan = _with_levers(OPTIONS, plan_with)
    assert tried == OPTIONS[:1]  # the whole batch fits as it is: nothing else is probed
    assert (plan.state_precision, plan.step_in_backward) == ("fp32", False)


def test_planning_every_lever_quotes_the_smallest_budget_of_any_and_chooses_alike():
    budgets = {OPTIONS[0]: ([64, 64], 9), OPTIONS[1]: (None, 7), OPTIONS[2]: ([64, 64], 5)}
    plan_with, tried = planner(budgets)
    assert _with_levers(OPTIONS, plan_with).min_budget == 9
    plan_with, tried = planner(budgets)
    floors_asked = []

    def smallest_budget_with(levers, keep):  # the options after the chosen one: floors only
        floors_asked.append((levers, keep))
        return budgets[levers, keep][1]

    plan = _with_levers(OPTIONS, plan_with, smallest_budget_with)
    assert tried == OPTIONS[:1] and floors_asked == OPTIONS[1:] and plan.min_budget == 5
    assert (plan.state_precision, plan.step_in_backward) == ("fp32", False)
    # with no option at the whole batch, every option is planned in full
    plan_with, tried = planner({o: ([64, 16], 9 - i) for i, o in enumerate(OPTIONS)})
    plan = _with_levers(OPTIONS, plan_with, smallest_budget_with)
    assert tried == OPTIONS and floors_asked == OPTIONS[1:] and plan.min_budget == 7


def test_the_levers_that_fit_the_largest_micro_batch_win_and_record_themselves():
    plan_with, tried = planner({OPTIONS[0]: ([64, 16], 1), OPTIONS[1]: (None, 5),
                                OPTIONS[2]: ([32, 64], 2)})  # fmt: skip
    plan = _with_levers(OPTIONS, plan_with)
    assert tried == OPTIONS
    assert (plan.state_precision, plan.step_in_backward) == ("bf16", False)
    # on a tie, the earlier (cheaper) levers
    plan_with, _ = planner({OPTIONS[0]: ([16], 1), OPTIONS[1]: (None, 5), OPTIONS[2]: ([16], 2)})
    assert _with_levers(OPTIONS, plan_with).state_precision == "fp32"


def test_with_no_levers_fitting_the_refusal_quotes_the_smallest_budget_of_any():
    plan_with, _ = planner({OPTIONS[0]: (None, 9), OPTIONS[1]: (None, 7), OPTIONS[2]: (None, 8)})
    with pytest.raises(BudgetTooSmall) as refusal:
        _with_levers(OPTIONS, plan_with)
    assert refusal.value.min_budget == 7 and "step_in_backward=True" in str(refusal.value)


def test_projections_are_let_go_after_every_optimizer_lever_and_the_plan_says_so():
    options = [(levers, True) for levers in LEVERS] + [(levers, False) for levers in LEVERS]
    fits = {o: (None, 9) for o in options[:3]} | {o: ([64, 64], 5) for o in options[3:]}
    plan_with, tried = planner(fits)
    plan = _with_levers(options, plan_with)
    assert tried == options[:4]
    assert (plan.state_precision, plan.projections_stored) == ("fp32", False)


def plan_of(budget, store="auto"):
    """The layerwise plan (plan_run: every lever planned) of a digits MLP whose fixed
    projections R_1, R_2 (1024 x 1024) are 8 MiB."""
    config = tiny_config(**{"model.widths": [1024, 1024], "svp.proj_dim": 1024,
                            "svp.store_projection": store, "train.schedule": "layerwise",
                            "memory.budget": budget})  # fmt: skip
    return plan_run(config)


def test_a_budget_lets_the_adjustable_projections_go_and_says_so():
    held_floor = plan_of("1TB", store=True).min_budget
    assert plan_of("1TB").min_budget < held_floor - 5 * 2**20  # the smallest with any lever
    assert plan_of("1TB").projections_stored is True  # room: held
    below = f"{held_floor - 4 * 2**20}B"  # a quoted floor is safe by a MiB or so
    assert plan_of(below).projections_stored is False
    with pytest.raises(BudgetTooSmall):
        plan_of(below, store=True)
    assert plan_of(None).projections_stored is True
    assert plan_of(None, store=False).projections_stored is None  # nothing left to the plan


def test_planning_leaves_the_network_s_projections_as_the_plan_has_them():
    blocks = build_blocks("mlp", MLPOptions(widths=[1024, 1024]), (64,))
    net = SVPNetwork(blocks, (64,), 10, SVPConfig(proj_dim=2048, store_projection="auto"))
    x, y = torch.rand(64, 64), torch.randint(0, 10, (64,))
    data = Dataset("random", x, y, x[:16], y[:16])
    train = TrainConfig(schedule="layerwise", batch_size=64, device="cpu")

    def plan(budget, every_lever=False):
        return plan_training(net, data, Preprocess.fit(x, False, False), train, OptimConfig(),
                             MemoryConfig(budget=budget), every_lever=every_lever)  # fmt: skip

    floor = plan("1TB", every_lever=True).min_budget  # without R_1, R_2 (16 MiB)
    assert all(p.stored for p in net.adjustable_projections())
    # halfway to the floor with them held: a probe on a busy machine has measured a step a
    # few MiB off the one before it
    assert plan(f"{floor + 8 * 2**20}B").projections_stored is False
    assert not any(p.stored for p in net.adjustable_projections())


def test_a_smallest_budget_alone_is_probed_at_the_micro_batch_it_is_quoted_at(monkeypatch):
    """Planner.smallest_budget, for the lever options after the chosen one: one probe per
    block, at micro-batch 1 (stepping in backward: the whole batch), quoting what a whole
    plan quotes."""
    blocks = build_blocks("mlp", MLPOptions(widths=[256, 256]), (64,))
    net = SVPNetwork(blocks, (64,), 10, SVPConfig(proj_dim=256))
    x, y = torch.rand(64, 64), torch.randint(0, 10, (64,))
    data, preprocess = Dataset("random", x, y, x[:16], y[:16]), Preprocess.fit(x, False, False)
    train, optim = TrainConfig(schedule="layerwise", batch_size=64, device="cpu"), OptimConfig()
    schedule = schedule_of(train)
    probe = network_probe(net, data, preprocess, train, optim)
    planner = Planner(probe, data, preprocess, train, optim, MemoryConfig(budget="1TB"),
                      device_type="cpu", unified=False)  # fmt: skip
    probed, probe_block = [], Probe.block

    def block(self, i, sizes):
        probed.append(sizes)
        return probe_block(self, i, sizes)

    monkeypatch.setattr(Probe, "block", block)
    whole = schedule.plan(planner, net).min_budget
    assert probed == [[1, 16, 64]] * 2
    probed.clear()
    floor = planner.smallest_budget(schedule, net)
    assert probed == [[1]] * 2
    assert abs(floor - whole) < 0.05 * whole  # the same step, measured again
    probed.clear()
    planner.with_levers(OptimizerLevers("fp32", True)).smallest_budget(schedule, net)
    assert probed == [[64]] * 2


def test_planning_shows_each_lever_option_it_probes_block_by_block():
    shown = []

    class Shown(Reporter):
        def track(self, iterable, total, label):
            shown.append((label, total))
            return iterable

    config = tiny_config(**{"train.schedule": "layerwise", "memory.budget": "1TB"})
    plan_run(config, Shown())
    blocks = len(config.model.options.widths)  # a block per hidden layer
    assert shown[0] == ("probing (fp32 state)", blocks)  # the option chosen, planned in full
    assert ("probing (bf16 state, step in backward, projections drawn)", blocks) in shown
    assert all(total == blocks for _, total in shown)
