import json
import os

import pytest
from click.testing import CliRunner

from edge_svp.cli import main
from edge_svp.config import load_profile, override, tomllib
from edge_svp.errors import EdgeSVPError
from edge_svp.target import (
    apply_target,
    detect_target,
    load_target,
    target_from_dict,
    target_names,
    target_toml,
)

SHIPPED = {"jetson-orin-nano-8gb", "jetson-nano-4gb", "laptop-rtx4060-8gb", "cpu-x86",
           "raspberry-pi-5-8gb"}  # fmt: skip


def test_every_shipped_target_loads_and_round_trips_through_toml():
    assert SHIPPED <= set(target_names())
    for name in target_names():
        target = load_target(name)
        assert target.name == name
        assert 0 < target.budget_bytes < target.memory_bytes
        assert target.precision in target.precisions
        again = target_from_dict(tomllib.loads(target_toml(target)), name)
        assert again == target


def test_unified_memory_is_where_cpu_and_gpu_share_ram():
    assert load_target("jetson-orin-nano-8gb").unified_memory
    assert load_target("jetson-nano-4gb").unified_memory
    assert not load_target("laptop-rtx4060-8gb").unified_memory
    jetson = load_target("jetson-orin-nano-8gb")
    assert jetson.budget_bytes == int(0.75 * 8 * 10**9) - int(1.5 * 2**30)


def write_target(tmp_path, **changes):
    raw = tomllib.loads(target_toml(load_target("cpu-x86")))
    raw.update(changes)
    raw = {k: v for k, v in raw.items() if v is not None}
    lines = [f"{k} = {json.dumps(v)}" for k, v in raw.items()]  # JSON scalars/lists are TOML
    path = tmp_path / "mine.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"cpu_thread": 4}, "unknown key 'cpu_thread' in target .*did you mean 'cpu_threads'"),
        ({"unified_memory": None}, "missing the key 'unified_memory'"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"precision": "fp16", "precisions": ["fp16"]}, "unknown cpu precision 'fp16'"),
        ({"precision": "bf16", "precisions": ["fp32"]}, "precision bf16 is not in precisions"),
        ({"budget_fraction": 0.01}, "the budget rule leaves nothing"),
        ({"execution_providers": ["CPU"]}, "not an ONNX Runtime execution provider"),
        ({"memory": 16}, "wrong type"),
    ],
)
def test_a_bad_target_file_is_one_line_naming_the_key(tmp_path, changes, message):
    path = write_target(tmp_path, **changes)
    with pytest.raises(EdgeSVPError, match=message):
        load_target(str(path))
    result = CliRunner().invoke(main, ["plan", "--target", str(path)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_unknown_target_name_suggests_the_closest():
    result = CliRunner().invoke(main, ["plan", "--target", "jetson-orin-nano"])
    assert result.exit_code == 2
    assert "did you mean 'jetson-orin-nano-8gb'" in result.stderr


def test_detect_describes_this_machine_in_the_target_format(tmp_path):
    import psutil
    import torch

    result = CliRunner().invoke(main, ["targets", "detect"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "here.toml"
    path.write_text(result.output)
    target = load_target(str(path))
    assert target.device == ("cuda" if torch.cuda.is_available() else "cpu")
    if target.device == "cpu":
        assert abs(target.memory_bytes - psutil.virtual_memory().total) < 2**24
    assert detect_target() == target


def test_targets_lists_every_shipped_target():
    output = CliRunner().invoke(main, ["targets"]).output
    for name in SHIPPED:
        assert name in output


def test_target_sets_device_budget_precision_and_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpu = load_target("cpu-x86")
    config, note = apply_target(load_profile("digits-mlp"), cpu)
    assert note is None and config.target == "cpu-x86"
    assert config.train.device == "cpu" and config.train.precision == cpu.precision
    assert int(config.memory.budget) == cpu.budget_bytes
    assert config.train.threads == min(cpu.cpu_threads, os.cpu_count())
    # what the user gave wins; threads stay the operator's where OMP_NUM_THREADS is set
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    given = override(load_profile("digits-mlp"), **{"memory.budget": "64MB",
                                                    "train.precision": "bf16"})  # fmt: skip
    config, _ = apply_target(given, cpu, {"memory.budget", "train.precision"})
    assert config.memory.budget == "64MB" and config.train.precision == "bf16"
    assert config.train.threads == 0


def test_backprop_twin_gets_no_budget():
    bp = override(load_profile("digits-mlp"), **{"train.method": "bp"})
    config, _ = apply_target(bp, load_target("cpu-x86"))
    assert config.memory.budget is None


def test_precision_the_target_lacks_is_refused():
    config = override(load_profile("digits-mlp"), **{"train.precision": "bf16"})
    with pytest.raises(EdgeSVPError, match="raspberry-pi-5-8gb trains in fp32, not bf16"):
        apply_target(config, load_target("raspberry-pi-5-8gb"), {"train.precision"})


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr("edge_svp.target.cuda_available", lambda: False)


def test_cuda_target_without_cuda_falls_back_to_the_cpu(no_cuda):
    config, note = apply_target(load_profile("digits-mlp"), load_target("jetson-orin-nano-8gb"))
    assert config.train.device == "cpu" and config.train.precision == "bf16"
    assert "wants CUDA" in note and "CPU" in note and "\n" not in note
    config, note = apply_target(load_profile("digits-mlp"), load_target("jetson-nano-4gb"))
    assert config.train.precision == "fp32" and "fp32 instead of fp16" in note  # no fp16 on CPU
    with pytest.raises(EdgeSVPError, match="needs CUDA"):
        apply_target(load_profile("digits-mlp"), load_target("jetson-nano-4gb"), strict=True)


def test_strict_refuses_a_cuda_target_without_cuda(no_cuda, tmp_path, tiny_run):
    out = tmp_path / "run"
    args = ["fit", *tiny_run, "--target", "jetson-nano-4gb", "--strict", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "needs CUDA" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_cuda_target_plan_is_for_the_target_and_fit_follows_it_on_the_cpu(
    no_cuda, tmp_path, tiny_run
):
    args = [*tiny_run, "--target", "jetson-orin-nano-8gb", "--schedule", "layerwise",
            "--host-budget", "100GB"]  # fmt: skip
    result = CliRunner().invoke(main, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert (plan["device"], plan["unified_memory"], plan["probe_device"]) == ("cuda", True, "cpu")
    assert plan["budget"] == load_target("jetson-orin-nano-8gb").budget_bytes
    assert plan["precision"] == "bf16"
    # unified memory: a host cache frees nothing, even with room in --host-budget
    assert [b["output_cache"] for b in plan["blocks"]] == ["device", None]
    assert "wants CUDA" in result.stderr
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", *args, "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"] == "jetson-orin-nano-8gb" and summary["device"] == "cpu"
    followed = json.loads((out / "plan.json").read_text())
    assert [b["micro_batch"] for b in followed["blocks"]] == summary["memory"]["micro_batch"]
    assert followed["device"] == "cuda" and followed["unified_memory"]
