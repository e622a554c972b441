"""Training memory of SVP against backprop on the same model, data, batch and epochs.

    python bench/memory.py --data-dir ../shared/data
    python bench/memory.py --data-dir ../shared/data --profiles mnist-mlp --epochs 1

Per profile (batch 128): bp; bp with activation checkpointing per block; SVP joint; SVP
layerwise under the scheduler at a tight budget (the planner's own prediction for
micro-batch --micro, with every cache on disk). Each configuration runs in its own
process; peak memory is the process's resident memory above its baseline (after imports,
data loading and the planner's probe) on CPU, the allocator's peak on CUDA. Prints a
markdown table and writes bench/results/memory.json (memory-cuda.json on a GPU).
"""

import argparse
import json
import sys

from common import DISK_ONLY, fit, table, tight_budget, write_results

MIB = 2**20


def row(profile: str, name: str, summary: dict, bp_peak: int | None) -> dict:
    memory = summary["memory"]
    peak = max(memory["measured_peak_bytes"])
    epochs = summary["epochs"]
    records = [json.loads(line) for line in open(f"{summary['run_dir']}/metrics.jsonl")]
    if summary["schedule"] == "joint":  # each block's record of an epoch repeats its time
        records = [r for r in records if r["block"] == 1]
    seconds = sum(r["seconds"] for r in records)
    return {
        "profile": profile,
        "config": name,
        "peak_mib": round(peak / MIB, 1),
        "ratio_to_bp": round(peak / bp_peak, 3) if bp_peak else 1.0,
        "predicted_mib": " / ".join(f"{p / MIB:.1f}" for p in memory["predicted_peak_bytes"])
        if memory["predicted_peak_bytes"]
        else "-",
        "measured_mib": " / ".join(f"{p / MIB:.1f}" for p in memory["measured_peak_bytes"]),
        "budget_mib": round(memory["budget_bytes"] / MIB, 1) if memory["budget_bytes"] else "-",
        "within_budget": memory["within_budget"],
        "micro_batch": memory["micro_batch"] or summary["batch_size"],
        "seconds_per_epoch": round(seconds / epochs, 1),
        "test_accuracy": round(100 * summary["test_accuracy"], 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--profiles", nargs="+", default=["cifar10-cnn", "mnist-mlp"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=10000)
    parser.add_argument("--micro", type=int, default=16,
                        help="micro-batch the layerwise budget is sized for")  # fmt: skip
    args = parser.parse_args()
    rows = []
    for profile in args.profiles:
        base = ["--profile", profile, "--data-dir", args.data_dir, "--batch-size", "128"]
        base += ["--train-limit", str(args.train_limit)]
        run = base + ["--epochs", str(args.epochs)]
        budget = tight_budget(base, args.micro)
        configs = {
            "bp": ["--method", "bp"],
            "bp + checkpointing": ["--method", "bp", "--set", "train.checkpointing=true"],
            "svp joint": ["--schedule", "joint"],
            "svp layerwise, tight budget": [
                "--schedule", "layerwise", "--mem-budget", str(budget), *DISK_ONLY,
            ],
        }  # fmt: skip
        bp_peak = None
        for name, extra in configs.items():
            summary = fit(
                f"{profile}-{name.split(',')[0].replace(' ', '-')}", run + extra, "memory"
            )
            rows.append(row(profile, name, summary, bp_peak))
            bp_peak = bp_peak or max(summary["memory"]["measured_peak_bytes"])
            print(rows[-1], flush=True)
    print(
        table(
            rows,
            [
                ("profile", "profile"),
                ("configuration", "config"),
                ("peak MiB", "peak_mib"),
                ("vs bp", "ratio_to_bp"),
                ("budget MiB", "budget_mib"),
                ("predicted per block MiB", "predicted_mib"),
                ("measured per block MiB", "measured_mib"),
                ("micro-batch", "micro_batch"),
                ("s / epoch", "seconds_per_epoch"),
                ("test acc %", "test_accuracy"),
            ],
        )
    )
    command = " ".join(["python", "bench/memory.py", *sys.argv[1:]])
    name = "memory-cuda" if summary["device"].startswith("cuda") else "memory"
    print("wrote", write_results(name, {"command": command, "epochs": args.epochs,
                                            "train_limit": args.train_limit, "rows": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
