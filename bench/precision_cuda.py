"""Mixed precision on a CUDA GPU: every precision trains, and the allocator's peak stays
within the budget and near the planner's prediction.

    python bench/precision_cuda.py                  # a CNN on digits: needs no data files
    python bench/precision_cuda.py --profile cifar10-cnn --data-dir ../shared/data --train-limit 5000
    python bench/precision_cuda.py --profile cifar10-cnn --data-dir DIR --seeds 0 1 2

For fp32, fp16 and bf16 (bf16 where the GPU has it), each configuration in its own process:
SVP joint without a budget (once per seed), SVP layerwise under a budget of 60 % of its
unbudgeted peak (so the planner must split batches), and backprop. Prints a table, each lower
precision's SVP joint accuracy against fp32's (mean +- sample std over the seeds), writes
bench/results/precision-cuda.json, and exits 1 if a check fails:
  - every run learns (test accuracy at least --min-accuracy, 50 %: well above chance);
  - the planner's probe sees fp16 and bf16 keep fewer activation bytes per example than fp32;
  - under the budget, the measured peak of every block is within the budget;
  - SVP joint in a lower precision is within --tolerance points of fp32 (mean over seeds).

`--device cpu` runs the same on the CPU (fp32 and bf16; fp16 is CUDA only) to try the script
out (with few examples, lower --min-accuracy and raise --tolerance); there the probe check is
left out, since a CPU without native bf16 keeps fp32 convolution workspace
(bench/precision_cpu.py), and results go to precision-cpu.json.
"""

import argparse
import statistics
import sys

import torch
from common import fit, plan, table, write_results

from edge_svp.memory.plan import MemoryPlan

DIGITS_CNN = ["--profile", "digits-mlp", "--set", 'model.kind="cnn"', "--set",
              "model.channels=[[64], [128]]", "--set", "svp.proj_dim=32", "--batch-size", "256"]  # fmt: skip


def mib(values) -> str:
    return " / ".join(f"{v / 2**20:.1f}" for v in values) if values else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="a profile instead of the digits CNN")
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int)
    parser.add_argument("--test-limit", type=int)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="seeds of the SVP joint runs (the others run the first)")  # fmt: skip
    parser.add_argument("--min-accuracy", type=float, default=50.0,
                        help="test accuracy (percent) every run must reach")  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=0.5,
                        help="points SVP joint may lose against fp32")  # fmt: skip
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("precision_cuda.py needs a CUDA GPU; torch sees none")
    base = ["--profile", args.profile] if args.profile else list(DIGITS_CNN)
    base += ["--device", args.device, "--epochs", str(args.epochs)]
    base += ["--data-dir", args.data_dir] if args.data_dir else []
    base += ["--train-limit", str(args.train_limit)] if args.train_limit else []
    base += ["--test-limit", str(args.test_limit)] if args.test_limit else []
    bf16 = torch.cuda.is_bf16_supported() if cuda else True
    precisions = ["fp32"] + (["fp16"] if cuda else []) + (["bf16"] if bf16 else [])
    rows, failures = [], []
    predicted = {}  # activation bytes per example, summed over blocks, as the probe saw them
    joint = {}  # SVP joint test accuracy % per seed
    for precision in precisions:
        common = [*base, "--precision", precision]
        layerwise = [*common, "--schedule", "layerwise"]
        free = plan(layerwise)
        budget = max(int(0.6 * free["predicted_peak"]), free["min_budget"])
        predicted[precision] = sum(c.example_bytes for c in MemoryPlan.from_dict(free).costs)
        first = ["--seed", str(args.seeds[0])]
        runs = {("svp joint", seed): [*common, "--seed", str(seed)] for seed in args.seeds}
        runs[("svp layerwise, budget", args.seeds[0])] = [*layerwise, *first, "--mem-budget",
                                                          str(budget)]  # fmt: skip
        runs[("bp", args.seeds[0])] = [*common, *first, "--method", "bp"]
        for (name, seed), run_args in runs.items():
            tag = f"{precision}-{name.replace(' ', '-').replace(',', '')}-s{seed}"
            s = fit(tag, run_args, "precision")
            memory = s["memory"]
            if name == "svp joint":
                joint.setdefault(precision, []).append(100 * s["test_accuracy"])
            row = {
                "precision": precision,
                "run": name,
                "seed": seed,
                "test_accuracy": round(100 * s["test_accuracy"], 2),
                "budget_mib": round(budget / 2**20, 1) if memory["budget_bytes"] else "-",
                "predicted_mib": mib(memory["predicted_peak_bytes"]),
                "measured_mib": mib(memory["measured_peak_bytes"]),
                "micro_batch": " / ".join(map(str, memory["micro_batch"] or [])) or "-",
                "peak_mib": round(s["peak_memory_bytes"] / 2**20, 1),
                "wall_seconds": round(s["wall_seconds"], 1),
            }
            rows.append(row)
            print(row, flush=True)
            if row["test_accuracy"] < args.min_accuracy:
                failures.append(f"{precision} {name}: test accuracy {row['test_accuracy']} %")
            if memory["budget_bytes"] and not memory["within_budget"]:
                failures.append(f"{precision} {name}: measured {row['measured_mib']} MiB over "
                                f"the budget {row['budget_mib']} MiB")  # fmt: skip
    for precision in precisions[1:]:
        if cuda and predicted[precision] >= 0.8 * predicted["fp32"]:
            failures.append(f"{precision} probes {predicted[precision]} activation bytes per "
                            f"example, not well below fp32's {predicted['fp32']}")  # fmt: skip
    columns = [("precision", "precision"), ("run", "run"), ("seed", "seed"),
               ("test acc %", "test_accuracy"), ("budget MiB", "budget_mib"),
               ("predicted per block MiB", "predicted_mib"),
               ("measured per block MiB", "measured_mib"), ("micro-batch", "micro_batch"),
               ("peak MiB", "peak_mib"), ("wall s", "wall_seconds")]  # fmt: skip
    print(table(rows, columns))
    against_fp32 = {}
    for precision, accuracies in joint.items():
        mean = statistics.mean(accuracies)
        std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        difference = mean - statistics.mean(joint["fp32"])
        against_fp32[precision] = {"mean": round(mean, 2), "std": round(std, 2),
                                   "minus_fp32": round(difference, 2)}  # fmt: skip
        print(f"svp joint {precision}: {mean:.2f} +- {std:.2f} % over seeds "
              f"{' '.join(map(str, args.seeds))}, {difference:+.2f} points against fp32")  # fmt: skip
        if difference < -args.tolerance:
            failures.append(f"{precision} svp joint {-difference:.2f} points below fp32, more "
                            f"than {args.tolerance}")  # fmt: skip
    command = " ".join(["python", "bench/precision_cuda.py", *sys.argv[1:]])
    payload = {"device": torch.cuda.get_device_name() if cuda else "cpu", "command": command,
               "rows": rows, "svp_joint": against_fp32, "failures": failures}  # fmt: skip
    print("wrote", write_results(f"precision-{args.device}", payload))
    for failure in failures:
        print("CHECK FAILED:", failure)
    print("all checks passed" if not failures else f"{len(failures)} checks failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
