"""What bf16 saves on this CPU: the planner's probe of one block's training step, bytes per
example under fp32 and under bf16 autocast, for a convolution block and an MLP block.

    python bench/precision_cpu.py
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/precision_cpu.py  # no native bf16

Linear layers keep autocast's bf16 copies for their backward on any CPU; a convolution saves
memory only where the CPU has native bf16 (oneDNN's bf16 convolution otherwise keeps fp32
workspace). Prints a table and writes bench/results/precision-cpu-<capability>.json.
"""

import torch
from common import table, write_results
from torch import nn

from edge_svp import SVPConfig, SVPNetwork
from edge_svp.memory.probe import Probe, probe_sizes
from edge_svp.training.precision import autocast

CPU = torch.device("cpu")
BLOCKS = {  # name: (input shape, the block)
    "conv 3-64-64, 32 x 32": ((3, 32, 32), lambda: nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())),
    "mlp 1024-4096-4096": ((1024,), lambda: nn.Sequential(
        nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU())),
}  # fmt: skip


def example_bytes(shape, make_block, precision: str) -> float:
    torch.manual_seed(0)
    net = SVPNetwork([make_block()], shape, 10, SVPConfig(proj_dim=16))
    probe = Probe(net, lambda p: torch.optim.SGD(p, lr=0.1), CPU,
                  lambda m: torch.randn(m, *shape), lambda: autocast(precision, CPU))  # fmt: skip
    return probe.costs(probe_sizes(64))[0].example_bytes


def main():
    torch.set_num_threads(1)
    capability = torch.backends.cpu.get_cpu_capability()
    rows = []
    for name, (shape, make_block) in BLOCKS.items():
        fp32, bf16 = (example_bytes(shape, make_block, p) for p in ("fp32", "bf16"))
        rows.append({"block": name, "cpu_capability": capability,
                     "fp32_kib_per_example": round(fp32 / 1024, 1),
                     "bf16_kib_per_example": round(bf16 / 1024, 1),
                     "bf16_over_fp32": round(bf16 / fp32, 2)})  # fmt: skip
    print(table(rows, [("block", "block"), ("CPU", "cpu_capability"),
                       ("fp32 KiB / example", "fp32_kib_per_example"),
                       ("bf16 KiB / example", "bf16_kib_per_example"),
                       ("bf16 / fp32", "bf16_over_fp32")]))  # fmt: skip
    print("wrote", write_results(f"precision-cpu-{capability.lower()}", {"rows": rows}))


if __name__ == "__main__":
    main()
