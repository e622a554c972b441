"""Training under a memory budget, measured for real on the CPU."""

import json
import re
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from edge_svp.checkpoint import CheckpointStore
from edge_svp.cli import main

CNN = ["--set", 'model.kind="cnn"', "--set", "model.channels=[[64],[64]]", "--set",
       "svp.proj_dim=32", "--batch-size", "256", "--epochs", "1", "--schedule", "layerwise"]  # fmt: skip


def fit(tmp_path, *args):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", *CNN, *args, "--out", str(out)])
    return result, out


def test_tight_budget_micro_batches_and_measured_peak_stays_under(tmp_path):
    # its own process, as a user runs it: memory is measured for the process
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edge_svp", "fit", *CNN, "--mem-budget", "16MB",
           "--host-budget", "1MB", "--out", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    memory = json.loads((out / "summary.json").read_text())["memory"]
    assert memory["budget_bytes"] == 16_000_000
    assert memory["micro_batch"][0] < 256  # the planner had to split the batch
    assert memory["cache"] == ["disk", None]  # the host budget sent the cache to disk
    assert memory["within_budget"]
    assert memory["host_allocator"] == "exact"  # freed memory returned: what the probe saw
    assert 0 < max(memory["measured_peak_bytes"]) <= 16_000_000
    assert all(p <= 16_000_000 for p in memory["predicted_peak_bytes"])


def test_infeasible_budget_is_refused_before_training(tmp_path):
    result, out = fit(tmp_path, "--mem-budget", "1MB")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert re.search(r"block \d needs [\d.]+ [KMG]iB at micro-batch 1", line)
    assert "smallest budget that works" in line
    assert not out.exists()


@pytest.mark.parametrize("budget", ["12 parsecs", "-1GB", "MB"])
def test_malformed_budget_is_one_line(tmp_path, budget):
    result, out = fit(tmp_path, "--mem-budget", budget)
    assert result.exit_code == 2
    assert "memory size" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_plan_prints_a_table_and_the_smallest_budget():
    result = CliRunner().invoke(main, ["plan", *CNN, "--mem-budget", "64MB"])
    assert result.exit_code == 0, result.output
    assert "predicted peak" in result.output and "smallest budget that works" in result.output
    assert result.output.count("\n") >= 5
    assert re.search(r"optimizer +fp32 state\n", result.output)  # 64 MB needs no lever


def test_plan_json_matches_what_fit_follows(tmp_path):
    result = CliRunner().invoke(main, ["plan", *CNN, "--mem-budget", "20MB", "--json"])
    plan = json.loads(result.output)
    assert plan["budget"] == 20_000_000
    assert plan["min_budget"] <= plan["predicted_peak"] <= 20_000_000
    assert [b["block"] for b in plan["blocks"]] == [1, 2]


def test_an_allocation_failure_under_a_budget_is_one_line(tmp_path, monkeypatch):
    # on CUDA the memory fraction turns an overrun into an allocation failure
    import edge_svp.training

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")

    monkeypatch.setattr(edge_svp.training, "train", exhausted)
    result, out = fit(tmp_path, "--mem-budget", "64MB")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith("edge-svp: error: block 1 ran out of CUDA memory under the budget 64MB")
    assert (out / "config.toml").exists()  # the run directory stays, for a retry


def plan_json(*args) -> dict:
    """`edge-svp plan` in its own process, as fit will probe: memory is the process's."""
    cmd = [sys.executable, "-m", "edge_svp", "plan", *CNN, *args, "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_backprop_under_a_budget_micro_batches_and_stays_under(tmp_path):
    """Backprop planned like SVP: the budget between its smallest and its whole-batch peak
    makes it accumulate gradients over micro-batches, measured in its own process."""
    whole = plan_json("--method", "bp")["predicted_peak"]
    smallest = plan_json("--method", "bp", "--mem-budget", str(whole))["min_budget"]
    budget = (whole + smallest) // 2
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edge_svp", "fit", *CNN, "--method", "bp", "--mem-budget",
           str(budget), "--out", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    memory = json.loads((out / "summary.json").read_text())["memory"]
    (micro_batch,) = memory["micro_batch"]
    assert micro_batch < 256 and memory["recompute_activations"] in ([True], [False])
    assert memory["normalization_batch"] == [micro_batch]  # BatchNorm sees each micro-batch
    assert memory["within_budget"] and max(memory["measured_peak_bytes"]) <= budget


def test_backprop_below_its_minimum_names_both_methods_minimums(tmp_path):
    result, out = fit(tmp_path, "--method", "bp", "--mem-budget", "1MB")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert re.search(r"smallest budget that works for backprop is [\d.]+ [KMG]iB", line)
    assert re.search(r"SVP layerwise trains this profile from [\d.]+ [KMG]iB", line)
    assert not out.exists()


def test_layerwise_holds_one_block_and_never_the_frozen_ones(tmp_path):
    """Twelve 1024-wide blocks: one block trains (its weights, gradients, Adam state and
    Adam's temporaries: about 27 MiB, as planned), while the other eleven blocks' weights
    (44 MiB) wait on disk, as do the activation caches; with the blocks in memory every
    block's peak would be above the whole network's weights."""
    deep = ["--set", f"model.widths={[1024] * 12}", "--set", "svp.proj_dim=32",
            "--schedule", "layerwise", "--epochs", "1", "--host-budget", "1"]  # fmt: skip
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edge_svp", "fit", *deep, "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    weights = 4 * (64 * 1024 + 11 * 1024 * 1024)
    assert max(summary["memory"]["measured_peak_bytes"]) < weights
    assert summary["test_accuracy"] > 0.5  # and the whole network came back to predict


@pytest.mark.parametrize("method", [["--schedule", "layerwise"], ["--method", "bp"]])
def test_fit_accepts_the_smallest_budget_plan_prints(tmp_path, method):
    """Each in its own process, as a user runs them: fit probes again, and its probe may
    differ from plan's by a little; the smallest budget plan prints leaves room for that."""
    args = ["--epochs", "1", "--train-limit", "200", *method]
    plan = subprocess.run([sys.executable, "-m", "edge_svp", "plan", *args, "--mem-budget",
                           "1TB", "--json"], capture_output=True, text=True)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    smallest = json.loads(plan.stdout)["min_budget"]
    out = tmp_path / "run"
    fit = subprocess.run([sys.executable, "-m", "edge_svp", "fit", *args, "--mem-budget",
                          str(smallest), "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    assert json.loads((out / "summary.json").read_text())["memory"]["within_budget"]


@pytest.mark.parametrize(("args", "allocator"), [
    ([], "reuse"),  # no budget: freed memory kept for the next step, which is faster
    (["--set", 'memory.host_allocator="exact"'], "exact"),
])  # fmt: skip
def test_training_without_a_budget_reuses_freed_host_memory_unless_asked_not_to(
    tmp_path, args, allocator
):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", "--epochs", "1", "--train-limit", "200", *args,
                                       "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    memory = json.loads((out / "summary.json").read_text())["memory"]
    assert memory["host_allocator"] == allocator
    assert json.loads((out / "plan.json").read_text())["host_allocator"] == allocator


def test_below_its_plain_floor_backprop_holds_less_optimizer_memory_and_stays_under(tmp_path):
    """Two 1024-wide layers: Adam's state (9 MB) outweighs the activations. Below the
    smallest budget of fp32 state stepped after backward, the plan reaches for the
    optimizer's levers, summary.json says which, and the run stays within the budget."""
    wide = ["--set", "model.widths=[1024, 1024]", "--epochs", "1", "--method", "bp"]

    def run(command, *args):
        cmd = [sys.executable, "-m", "edge_svp", command, *wide, *args]
        return subprocess.run(cmd, capture_output=True, text=True)

    fixed = ["--set", "optim.state_precision=fp32", "--set", "optim.step_in_backward=off"]
    roomy = run("plan", *fixed, "--mem-budget", "1TB", "--json")
    assert roomy.returncode == 0, roomy.stderr
    plain = json.loads(roomy.stdout)
    assert (plain["state_precision"], plain["step_in_backward"]) == ("fp32", False)
    budget = plain["min_budget"] - 2_000_000
    out = tmp_path / "run"
    fit = run("fit", "--mem-budget", str(budget), "--out", str(out))
    assert fit.returncode == 0, fit.stderr
    memory = json.loads((out / "summary.json").read_text())["memory"]
    assert memory["optimizer_state"] != "fp32" or memory["step_in_backward"]
    assert memory["within_budget"] and max(memory["measured_peak_bytes"]) <= budget


def test_below_the_floor_of_its_projections_svp_lets_them_go_and_stays_under(tmp_path):
    """R_1 and R_2 are 4 MiB each (1024 x 1024). Below the smallest budget with them held,
    the plan draws them from their seeds instead; summary.json says so, the run stays within
    the budget, its checkpoint holds no projection, and it evaluates as trained."""
    wide = ["--set", "model.widths=[1024, 1024]", "--set", "svp.proj_dim=1024", "--epochs",
            "1", "--schedule", "layerwise", "--train-limit", "300"]  # fmt: skip

    def run(command, *args):
        cmd = [sys.executable, "-m", "edge_svp", command, *args]
        return subprocess.run(cmd, capture_output=True, text=True)

    held = run("plan", *wide, "--set", "svp.store_projection=true", "--mem-budget", "1TB", "--json")
    assert held.returncode == 0, held.stderr
    budget = json.loads(held.stdout)["min_budget"] - 4 * 2**20
    out = tmp_path / "run"
    fit = run("fit", *wide, "--mem-budget", str(budget), "--out", str(out))
    assert fit.returncode == 0, fit.stderr
    summary = json.loads((out / "summary.json").read_text())
    memory = summary["memory"]
    assert memory["projections_stored"] is False
    assert memory["within_budget"] and max(memory["measured_peak_bytes"]) <= budget
    assert not [k for k in CheckpointStore(out).read()["state_dict"] if "projection" in k]
    evaluated = run("eval", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{100 * summary['test_accuracy']:.2f}" in evaluated.stdout
