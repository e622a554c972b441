"""Mixed precision on the CPU: bf16 autocast runs per block, fp16 is refused; the planner
probes under the same autocast. fp16 with its gradient scaler needs CUDA:
bench/precision_cuda.py checks it on a GPU."""

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edge_svp import build_network, load_dataset, load_profile, train
from edge_svp.cli import main
from edge_svp.config import override
from edge_svp.errors import EdgeSVPError
from edge_svp.training.precision import grad_scaler
from edge_svp.training.step import BlockTrainer, StepSettings, step_blocks


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").limit(600)


def config_for(**changes):
    small = {"model.widths": [64, 64], "svp.proj_dim": 32, "train.batch_size": 32,
             "optim.lr": 3e-3, "train.precision": "bf16", "train.epochs": 4}  # fmt: skip
    return override(load_profile("digits-mlp"), **{**small, **changes})


@pytest.mark.parametrize(
    "method, schedule", [("svp", "joint"), ("svp", "layerwise"), ("bp", "joint")]
)
def test_bf16_runs_every_block_under_autocast_and_learns(digits, method, schedule):
    config = config_for(**{"train.method": method, "train.schedule": schedule})
    net = build_network(config, digits.input_shape, digits.num_classes)
    dtypes = []
    for block in net.blocks:
        block.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    records = train(net, digits, config.train, config.optim)
    assert torch.bfloat16 in dtypes  # the training forward ran in bf16 (evaluation in fp32)
    assert records[-1]["test_accuracy"] > 0.8
    assert all(p.dtype == torch.float32 for p in net.parameters())  # master weights stay fp32


def test_fp16_on_the_cpu_is_refused(tmp_path):
    with pytest.raises(EdgeSVPError, match="fp16 needs CUDA"):
        grad_scaler("fp16", torch.device("cpu"))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", "--precision", "fp16", "--out", str(out)])
    assert result.exit_code == 2 and "fp16 needs CUDA" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


PROBED_PER_EXAMPLE = """
import sys, torch
from torch import nn
from edge_svp import SVPConfig, SVPNetwork
from edge_svp.memory.meter import set_host_allocator
from edge_svp.memory.probe import Probe, probe_sizes
from edge_svp.training.precision import autocast

set_host_allocator(exact=True)  # as the planner probes
cpu, shape, precision = torch.device("cpu"), (1024,), sys.argv[1]
torch.manual_seed(0)
block = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU())
net = SVPNetwork([block], shape, 10, SVPConfig(proj_dim=16))
probe = Probe(net, lambda p: torch.optim.SGD(p, lr=0.1), cpu, lambda m: torch.randn(m, *shape),
              lambda: autocast(precision, cpu))
print(probe.costs(probe_sizes(256))[0].example_bytes)
"""


def test_the_planner_probes_under_the_training_precision():
    """bf16 activations are half the bytes of fp32 ones; the probe must see that.

    Linear layers keep autocast's bf16 copies for their backward on any CPU. A convolution
    is a poor witness: without native bf16 (AVX2 only) oneDNN's bf16 convolution keeps
    fp32 workspace and saves nothing, which the probe then measures, as it should.

    Each precision is probed in a process of its own, under the planner's exact allocator:
    in the test suite's process the allocator and heap are whatever earlier tests left, and
    bf16 once measured 0.83 of fp32 there (0.44-0.47 in eight fresh processes)."""

    def per_example(precision: str) -> float:
        probed = subprocess.run([sys.executable, "-c", PROBED_PER_EXAMPLE, precision],
                                capture_output=True, text=True, check=True)  # fmt: skip
        return float(probed.stdout)

    fp32, bf16 = per_example("fp32"), per_example("bf16")
    assert fp32 > 40_000  # three 4,096-float maps saved for backward, and their gradients
    assert bf16 < 0.75 * fp32


def test_an_fp16_overflow_skips_that_step_and_a_finite_step_is_unscaled():
    """The loss scaler of fp16 runs (CUDA), exercised on the CPU: an overflowed gradient is
    the scaler's business (skip the step, lower the scale), not a NaN fault of the run."""
    param = nn.Parameter(torch.ones(2))
    optim = override(config_for(), **{"optim.name": "sgd", "optim.momentum": 0.0}).optim
    trainer = BlockTrainer(1, (nn.Identity(), nn.Identity(), [param]), StepSettings(optim, 10))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # as fp16 on CUDA has

    def fault(block, what):
        raise AssertionError(f"an fp16 overflow is not a fault ({what} of block {block})")

    trainer.scaler.scale((param * float("inf")).sum()).backward()
    assert step_blocks([trainer], False, fault)
    assert torch.equal(param.detach(), torch.ones(2))  # skipped by the scaler
    assert trainer.scaler.get_scale() < 1024.0
    lr = trainer.lr
    trainer.scaler.scale(param.sum()).backward()  # gradient 1, scaled by 512
    step_blocks([trainer], False, fault)
    assert torch.allclose(param.detach(), torch.full((2,), 1 - lr))  # unscaled before the step
