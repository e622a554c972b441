import torch

from edge_svp.memory.meter import MemoryMeter


def test_cpu_meter_sees_an_allocation_and_not_the_baseline():
    meter = MemoryMeter(torch.device("cpu"))
    with meter.section() as big:
        x = torch.ones(50_000_000 // 4)  # 50 MB, touched
        del x
    with meter.section() as small:
        y = torch.ones(1000)
        del y
    assert 45e6 < big.peak < 80e6
    assert small.peak < 10e6
    assert meter.peaks == [big.peak, small.peak]
