"""Arithmetic of one training step, SVP against backprop, counted by torch's FlopCounterMode.

    python bench/flops.py
    python bench/flops.py --profiles mnist-mlp cifar10-cnn --set svp.proj_dim=64

For each profile (default: every shipped one), one SVP step (every block, as the joint schedule trains them) and one
backprop step with the standard head, on a batch of the profile's size of random inputs of
its dataset's shape. Columns, in MFLOP per training example: the blocks' forward passes; the
fixed projections (R_l pool(h_l) of every block, and R_0 of the input, block 1's reference);
the heads and losses; the backward pass; the total, and SVP's total over backprop's.
FlopCounterMode counts matrix products, convolutions and attention (2 FLOPs a
multiply-add), not element-wise work; the counts depend on shapes only, not on the data.
Prints a markdown table and writes bench/results/flops.json (with --set, flops-VALUE.json).
"""

import argparse

import torch
from common import results_name, table, write_results
from torch.utils.flop_counter import FlopCounterMode

from edge_svp.config import load_profile, override, parse_settings, profile_names
from edge_svp.data.registry import SHAPES
from edge_svp.network import build_network
from edge_svp.training.backprop import backprop_step

DIGITS = ((1, 8, 8), 10)  # scikit-learn's digits: 8 x 8 grey images, 10 classes
PHASES = ["block forward", "projection", "head and loss", "backward"]


def counted(fn):
    """(fn's result, the FLOPs of its matrix products)."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, counter.get_total_flops()


def svp_step(net, x, y) -> dict[str, int]:
    """FLOPs of one SVP step through every block, per phase."""
    flops = dict.fromkeys(PHASES, 0)
    v_ref, flops["projection"] = counted(lambda: net.reference(x))
    h = x
    for block, objective in zip(net.blocks, net.objectives, strict=True):
        h, forward = counted(lambda b=block, h=h: b(h.detach()))
        out, local = counted(lambda o=objective, h=h, r=v_ref: o(h, r, y))
        projection = counted(lambda o=objective, h=h: o.project(h))[1]
        projection += counted(lambda o=objective, r=v_ref: o.reference(r))[1]
        flops["block forward"] += forward
        flops["projection"] += projection
        flops["head and loss"] += local - projection
        flops["backward"] += counted(lambda out=out: out.loss.backward())[1]
        v_ref = out.v
    return flops


def backprop_step_flops(net, x, y) -> dict[str, int]:
    """FLOPs of one backprop step through the whole network and its classifier, per phase."""
    module, objective, _ = backprop_step(net, recompute=False)
    h, forward = counted(lambda: module(x))
    out, local = counted(lambda: objective(h, None, y))
    backward = counted(lambda: out.loss.backward())[1]
    return {"block forward": forward, "projection": 0, "head and loss": local, "backward": backward}


def count(profile: str, settings: list[str]) -> list[dict]:
    config = load_profile(profile)
    config = override(config, **parse_settings(settings))
    shape, classes = DIGITS if config.data.dataset == "digits" else SHAPES[config.data.dataset][:2]
    batch = config.train.batch_size
    torch.manual_seed(0)
    x, y = torch.randn(batch, *shape), torch.randint(0, classes, (batch,))
    rows = []
    for method, step in (("svp", svp_step), ("bp", backprop_step_flops)):
        bp = override(config, **{"train.method": "bp"}) if method == "bp" else config
        flops = step(build_network(bp, shape, classes), x, y)
        per_example = {k: v / batch / 1e6 for k, v in flops.items()}
        rows.append({"profile": profile, "method": method, "batch": batch,
                     **{f"{k} MFLOP": round(v, 3) for k, v in per_example.items()},
                     "total MFLOP": round(sum(per_example.values()), 3)})  # fmt: skip
    rows[0]["svp / bp"] = round(rows[0]["total MFLOP"] / rows[1]["total MFLOP"], 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=profile_names(),
                        help="default: every shipped profile")  # fmt: skip
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="a setting for every profile")  # fmt: skip
    args = parser.parse_args()
    rows = [row for profile in args.profiles for row in count(profile, args.settings)]
    columns = [("profile", "profile"), ("method", "method"), ("batch", "batch")]
    columns += [(k, k) for k in rows[0] if k.endswith("MFLOP") or k == "svp / bp"]
    print(table(rows, columns))
    write_results(results_name("flops", args.settings), {"rows": rows})  # with its command


if __name__ == "__main__":
    main()
