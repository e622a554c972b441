"""What the schedules share (edge_svp/training/optim.py): the learning-rate schedule and the
optimizers."""

import math

import pytest
import torch

from edge_svp.config import OptimConfig
from edge_svp.training.optim import block_optim, make_lr_schedule, make_optimizer


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
