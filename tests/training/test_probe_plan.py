"""Choosing the optimizer's memory levers (edge_svp/training/probe_plan.py)."""

import pytest

from edge_svp.memory.plan import BlockPlan, BudgetTooSmall, MemoryPlan
from edge_svp.training.optim import OptimizerLevers
from edge_svp.training.probe_plan import _with_levers

OPTIONS = [OptimizerLevers("fp32"), OptimizerLevers("fp32", True), OptimizerLevers("bf16")]


def planner(micro_batches: dict):
    """plan_with for _with_levers: under each levers, a plan whose blocks train at the given
    micro-batches of a batch of 64 (None: the budget is too small, below `min_budget`)."""
    tried = []

    def plan_with(levers):
        tried.append(levers)
        sizes, min_budget = micro_batches[levers]
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
    plan = _with_levers(OPTIONS, plan_with, every=True)
    assert tried == OPTIONS and plan.min_budget == 5
    assert (plan.state_precision, plan.step_in_backward) == ("fp32", False)


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
