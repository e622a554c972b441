"""The smallest memory budget of each method as the network deepens: by default the deep ViT
(cifar10-vit-deep: patch 4, dim 192, 3 heads, one transformer layer per block) at 4, 8 and
16 blocks; --family picks another of bench/families.py.

    python bench/depth.py --data-dir ../shared/data
    python bench/depth.py --data-dir ../shared/data --depths 4 8 16 --no-measure
    python bench/depth.py --data-dir ../shared/data --family cnn --depths 4 8 12 16 --no-measure

Per depth, the planner's smallest budget for backprop (micro-batching and activation
checkpointing allowed), SVP joint and SVP layerwise; then, unless --no-measure, one short
run of SVP layerwise and of backprop (--train-limit and --test-limit examples, 256 each), each
at its own smallest budget, each in its own process, to confirm that the minimum trains
within budget. Prints a markdown table and writes bench/results/depth.json and a plot of the
minimums against depth, depth.png (depth-<family>.* for another family, depth-cuda.* with
--device cuda).
"""

import argparse
import sys

from common import RESULTS, fit, plot_lines, smallest_budget, table, write_results
from families import FAMILIES, depth_settings

MIB = 2**20
METHODS = {
    "bp": ["--method", "bp"],
    "svp joint": ["--schedule", "joint"],
    "svp layerwise": ["--schedule", "layerwise"],
}
MEASURED = ["svp layerwise", "bp"]


def measured(name: str, method: str, depth: int, args: list[str], budget: int) -> dict:
    summary = fit(f"{method.replace(' ', '-')}-{depth}", [*args, "--mem-budget", str(budget)],
                  name)  # fmt: skip
    memory = summary["memory"]
    return {
        f"{method} measured MiB": round(max(memory["measured_peak_bytes"]) / MIB, 1),
        f"{method} budget MiB": round(budget / MIB, 1),
        f"{method} within": memory["within_budget"],
        f"{method} micro-batch": "/".join(str(m) for m in sorted(set(memory["micro_batch"]))),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--family", default="vit-192", choices=FAMILIES)
    parser.add_argument("--depths", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument("--no-measure", dest="measure", action="store_false")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    # a short run: enough steps to reach every block's peak, a test set that evaluates quickly
    # at the micro-batch of a smallest budget
    parser.add_argument("--train-limit", type=int, default=256)
    parser.add_argument("--test-limit", type=int, default=256)
    args = parser.parse_args()
    short = ["--epochs", "1", "--train-limit", str(args.train_limit),
             "--test-limit", str(args.test_limit)]  # fmt: skip
    name = "depth" + ("" if args.family == "vit-192" else f"-{args.family}")
    name += "-cuda" if args.device == "cuda" else ""
    rows = []
    for depth in args.depths:
        base = ["--profile", FAMILIES[args.family], "--data-dir", args.data_dir, *short,
                *depth_settings(args.family, depth), "--device", args.device]  # fmt: skip
        row = {"depth": depth}
        minimum = {m: smallest_budget(base + extra) for m, extra in METHODS.items()}
        row.update({f"{m} MiB": round(b / MIB, 1) for m, b in minimum.items()})
        row["layerwise / bp"] = round(minimum["svp layerwise"] / minimum["bp"], 3)
        if args.measure:
            for method in MEASURED:
                row.update(measured(name, method, depth, base + METHODS[method], minimum[method]))
        rows.append(row)
        print(row, flush=True)
    first = rows[0]
    for row in rows:  # growth from the shallowest network
        for method in METHODS:
            row[f"{method} growth %"] = round(
                100 * (row[f"{method} MiB"] / first[f"{method} MiB"] - 1), 1
            )
    columns = [("blocks", "depth")]
    columns += [(f"{m} smallest MiB", f"{m} MiB") for m in METHODS]
    columns += [(f"{m} growth %", f"{m} growth %") for m in METHODS]
    columns += [("layerwise / bp", "layerwise / bp")]
    if args.measure:
        columns += [(key, key) for m in MEASURED for key in (f"{m} budget MiB",
                    f"{m} measured MiB", f"{m} within", f"{m} micro-batch")]  # fmt: skip
    print(table(rows, columns))
    command = " ".join(["python", "bench/depth.py", *sys.argv[1:]])
    print("wrote", write_results(name, {"command": command, "rows": rows}))
    lines = {m: [(r["depth"], r[f"{m} MiB"]) for r in rows] for m in METHODS}
    if plot_lines(RESULTS / f"{name}.png", lines, f"blocks ({FAMILIES[args.family]})",
                  "smallest budget (MiB)", xticks=[r["depth"] for r in rows]):  # fmt: skip
        print("wrote", RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
