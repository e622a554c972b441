"""Mixed precision on a CUDA GPU: every precision trains, and the allocator's peak stays
within the budget and near the planner's prediction.

    python bench/precision_cuda.py                  # a CNN on digits: needs no data files
    python bench/precision_cuda.py --profile cifar10-cnn --data-dir ../shared/data --train-limit 5000

For fp32, fp16 and bf16 (bf16 where the GPU has it), each configuration in its own process:
SVP joint without a budget, SVP layerwise under a budget of 60 % of its unbudgeted peak (so
the planner must split batches), and backprop. Prints a table, writes
bench/results/precision-cuda.json, and exits 1 if a check fails:
  - every run learns (test accuracy well above chance);
  - the planner's probe sees fp16 and bf16 keep fewer activation bytes per example than fp32;
  - under the budget, the measured allocator peak of every block is within the budget.
"""

import argparse
import sys

import torch
from common import fit, plan, table, write_results

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
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("precision_cuda.py needs a CUDA GPU; torch sees none")
    base = ["--profile", args.profile] if args.profile else list(DIGITS_CNN)
    base += ["--device", "cuda", "--epochs", str(args.epochs)]
    base += ["--data-dir", args.data_dir] if args.data_dir else []
    base += ["--train-limit", str(args.train_limit)] if args.train_limit else []
    precisions = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    rows, failures = [], []
    predicted = {}  # activation bytes per example, summed over blocks, as the probe saw them
    for precision in precisions:
        common = [*base, "--precision", precision]
        layerwise = [*common, "--schedule", "layerwise"]
        free = plan(layerwise)
        budget = max(int(0.6 * free["predicted_peak"]), free["min_budget"])
        predicted[precision] = sum(c["example_bytes"] for c in free["costs"])
        runs = {
            "svp joint": common,
            "svp layerwise, budget": [*layerwise, "--mem-budget", str(budget)],
            "bp": [*common, "--method", "bp"],
        }
        for name, run_args in runs.items():
            s = fit(f"{precision}-{name.replace(' ', '-').replace(',', '')}", run_args, "precision")
            memory = s["memory"]
            row = {
                "precision": precision,
                "run": name,
                "test_accuracy": round(100 * s["test_accuracy"], 2),
                "budget_mib": round(budget / 2**20, 1) if memory["budget_bytes"] else "-",
                "predicted_mib": mib(memory["predicted_peak_bytes"]),
                "measured_mib": mib(memory["measured_peak_bytes"]),
                "micro_batch": " / ".join(map(str, memory["micro_batch"] or [])) or "-",
                "allocator_peak_mib": round(s["peak_memory_bytes"] / 2**20, 1),
                "wall_seconds": round(s["wall_seconds"], 1),
            }
            rows.append(row)
            print(row, flush=True)
            if s["test_accuracy"] < 0.5:
                failures.append(f"{precision} {name}: test accuracy {row['test_accuracy']} %")
            if memory["budget_bytes"] and not memory["within_budget"]:
                failures.append(f"{precision} {name}: measured {row['measured_mib']} MiB over "
                                f"the budget {row['budget_mib']} MiB")  # fmt: skip
    for precision in precisions[1:]:
        if predicted[precision] >= 0.8 * predicted["fp32"]:
            failures.append(f"{precision} probes {predicted[precision]} activation bytes per "
                            f"example, not well below fp32's {predicted['fp32']}")  # fmt: skip
    columns = [("precision", "precision"), ("run", "run"), ("test acc %", "test_accuracy"),
               ("budget MiB", "budget_mib"), ("predicted per block MiB", "predicted_mib"),
               ("measured per block MiB", "measured_mib"), ("micro-batch", "micro_batch"),
               ("allocator peak MiB", "allocator_peak_mib"), ("wall s", "wall_seconds")]  # fmt: skip
    print(table(rows, columns))
    command = " ".join(["python", "bench/precision_cuda.py", *sys.argv[1:]])
    payload = {"device": torch.cuda.get_device_name(), "command": command, "rows": rows,
               "failures": failures}  # fmt: skip
    print("wrote", write_results("precision-cuda", payload))
    for failure in failures:
        print("CHECK FAILED:", failure)
    print("all checks passed" if not failures else f"{len(failures)} checks failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
