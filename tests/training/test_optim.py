"""What the schedules share (edge_svp/training/optim.py): the learning-rate schedule and the
optimizers."""

import math

import pytest
import torch

from edge_svp.config import OptimConfig
from edge_svp.errors import EdgeSVPError
from edge_svp.training.optim import (
    HOST_STATE,
    OptimizerLevers,
    block_optim,
    check_state_on_host,
    lever_options,
    levers_of,
    make_lr_schedule,
    make_optimizer,
    stepping_in_backward,
    torchao_installed,
)


def test_warm_up_rises_linearly_then_the_cosine_decays():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = make_lr_schedule(optimizer, OptimConfig(), total_steps=100, warmup_steps=4)
    lrs = []
    for _ in range(6):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    cosine = [0.5 * (1 + math.cos(math.pi * s / 100)) for s in range(6)]
    assert lrs[:4] == pytest.approx([(s + 1) / 4 * cosine[s] for s in range(4)])
    assert lrs[4:] == pytest.approx(cosine[4:])
    scaled = OptimConfig(lr=0.01, block_lr=[2.0, 0.5])
    assert [block_optim(scaled, i).lr for i in range(4)] == pytest.approx(
        [0.02, 0.005, 0.005, 0.005]
    )
    assert block_optim(OptimConfig(lr=0.01), 3).lr == 0.01


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_are_fused_and_step_as_the_plain_ones_do(name):
    cfg = OptimConfig(name=name, lr=0.1, weight_decay=0.01)
    torch.manual_seed(0)
    fused, plain = (torch.nn.Parameter(torch.randn(64, 32)) for _ in range(2))
    plain.data.copy_(fused.data)
    optimizer = make_optimizer([fused], cfg)
    assert optimizer.defaults["fused"]
    cls = type(optimizer)
    options = {"momentum": cfg.momentum} if name == "sgd" else {}
    reference = cls([plain], lr=cfg.lr, weight_decay=cfg.weight_decay, **options)
    for _ in range(3):
        grad = torch.randn(64, 32)
        for param, opt in ((fused, optimizer), (plain, reference)):
            param.grad = grad.clone()
            opt.step()
    assert torch.allclose(fused, plain, atol=1e-6)


def test_levers_are_offered_only_under_a_budget_and_as_configured():
    plain = OptimizerLevers()
    assert lever_options(OptimConfig(), budgeted=False, precision="fp32") == [plain]
    offered = lever_options(OptimConfig(), budgeted=True, precision="fp32")
    assert offered[0] == plain and len(offered) == (4 if torchao_installed() else 2)
    assert offered[1] == OptimizerLevers("fp32", step_in_backward=True)
    # fp8 only where asked for: it failed cifar10-cnn (docs/memory.md)
    assert [o.state_precision for o in offered[::2]] == ["fp32", "bf16"][: len(offered) // 2]
    # SGD has no Adam moments to shrink; fp16's scaler needs every gradient before a step
    assert lever_options(OptimConfig(name="sgd"), True, "fp32") == offered[:2]
    assert lever_options(OptimConfig(), True, "fp16") == offered[::2]
    fixed = OptimConfig(state_precision="bf16", step_in_backward="on")
    assert lever_options(fixed, False, "fp32") == [OptimizerLevers("bf16", True)]
    assert levers_of(fixed, None) == OptimizerLevers("bf16", True)
    assert levers_of(OptimConfig(), None) == plain


@pytest.mark.skipif(not torchao_installed(), reason="host state is torchao's CPUOffloadOptimizer")
def test_the_state_in_host_ram_is_offered_last_and_only_for_a_gpu_of_its_own():
    on_gpu = lever_options(OptimConfig(), budgeted=True, precision="bf16", discrete_gpu=True)
    assert on_gpu[:-1] == lever_options(OptimConfig(), True, "bf16") and on_gpu[-1] == HOST_STATE
    assert HOST_STATE == OptimizerLevers("fp32", step_in_backward=False, state_on_host=True)
    assert HOST_STATE not in lever_options(OptimConfig(), False, "fp32", discrete_gpu=True)
    # fp16's scaler checks the gradients the CPU would step with; a fixed lever clashes
    assert HOST_STATE not in lever_options(OptimConfig(), True, "fp16", discrete_gpu=True)
    for fixed in (
        {"state_precision": "bf16"},
        {"step_in_backward": "on"},
        {"state_on_host": "off"},
    ):
        assert HOST_STATE not in lever_options(OptimConfig(**fixed), True, "fp32", True)
    assert lever_options(OptimConfig(state_on_host="on"), False, "fp32") == [HOST_STATE]
    assert levers_of(OptimConfig(state_on_host="on"), None) == HOST_STATE


@pytest.mark.parametrize(
    "device, unified, message",
    [("cpu", False, "trains on the CPU"), ("cuda", True, "shares the host's RAM")],
)
def test_the_state_in_host_ram_is_refused_where_there_is_no_gpu_memory_to_save(
    device, unified, message
):
    check_state_on_host(OptimConfig(state_on_host="auto"), device, unified)  # auto: never refused
    with pytest.raises(EdgeSVPError, match=message):
        check_state_on_host(OptimConfig(state_on_host="on"), device, unified)


def test_stepping_in_backward_steps_as_after_backward_and_skips_a_bad_gradient():
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
            for _ in range(2)]  # fmt: skip
    nets[1].load_state_dict(nets[0].state_dict())
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    optimizers = [make_optimizer(n.parameters(), OptimConfig(lr=0.1)) for n in nets]
    seen = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(nets[0](x), y)
        loss.backward()
        optimizers[0].step()
        optimizers[0].zero_grad(set_to_none=True)
        params = list(nets[1].parameters())
        with stepping_in_backward(optimizers[1], params):
            torch.nn.functional.cross_entropy(nets[1](x), y).backward()
            seen.append([p.grad for p in params])
    assert all(g is None for grads in seen for g in grads)  # each dropped once stepped
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(p, q)
    before = [p.detach().clone() for p in nets[1].parameters()]
    with stepping_in_backward(optimizers[1], list(nets[1].parameters())):
        (nets[1](x).sum() * float("nan")).backward()
    for p, b in zip(nets[1].parameters(), before, strict=True):
        assert torch.equal(p, b) and p.grad is None
    # outside the context, backward leaves gradients for a step as usual
    nets[1](x).sum().backward()
    assert all(p.grad is not None for p in nets[1].parameters())
