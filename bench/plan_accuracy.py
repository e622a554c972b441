"""The planner's predicted peak against the measured peak, per block, for shipped profiles.

    python bench/plan_accuracy.py --data-dir ../shared/data
    python bench/plan_accuracy.py --profiles digits-mlp --epochs 1

Per profile, five runs, each in its own process: SVP layerwise under a tight budget (the
planner's own prediction for micro-batch --micro, every cache on disk), layerwise with no
budget (full batch, caches in host RAM), joint with no budget, and layerwise and backprop
with Adam's state in bf16 stepped inside backward (the optimizer's memory levers; on CUDA
also with its state in host RAM). Each block's predicted
peak is compared with its measured peak (CPU: resident memory above the baseline; CUDA:
the allocator's peak; every run's host allocator returns freed memory, as a budgeted one
does). Prints a markdown table and writes bench/results/plan-accuracy.json
(plan-accuracy-cuda.json on a GPU).
"""

import argparse
import sys

from common import DISK_ONLY, fit, table, tight_budget, write_results

MIB = 2**20
LEVERS = ["--set", "optim.state_precision=bf16", "--set", "optim.step_in_backward=on"]
HOST = ["--set", "optim.state_on_host=on"]
NEEDS_DATA = {"mnist-mlp", "cifar10-cnn", "cifar10-vit", "cifar10-vit-deep"}


def rows_of(profile: str, name: str, summary: dict) -> list[dict]:
    memory = summary["memory"]
    predicted, measured = memory["predicted_peak_bytes"], memory["measured_peak_bytes"]
    if summary["schedule"] == "joint":  # one measurement for the whole step: its largest block
        predicted, measured = [max(predicted)], measured[:1]
    rows = []
    for block, (p, m) in enumerate(zip(predicted, measured, strict=True), start=1):
        rows.append({
            "profile": profile,
            "config": name,
            "block": block if summary["schedule"] != "joint" else "all",
            "budget_mib": round(memory["budget_bytes"] / MIB, 1) if memory["budget_bytes"] else "-",
            "predicted_mib": round(p / MIB, 1),
            "measured_mib": round(m / MIB, 1),
            "error_pct": round(100 * (p - m) / m, 1),
            "within_budget": memory["within_budget"],
            "device": summary["device"],
        })  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--profiles", nargs="+",
                        default=["digits-mlp", "mnist-mlp", "cifar10-cnn", "cifar10-vit"])  # fmt: skip
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-limit", type=int, default=5000)
    parser.add_argument("--test-limit", type=int, help="test on the first N examples")
    parser.add_argument("--micro", type=int, default=16,
                        help="micro-batch the tight budget is sized for")  # fmt: skip
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    rows = []
    for profile in args.profiles:
        if profile in NEEDS_DATA and not args.data_dir:
            print(f"skipping {profile}: it needs --data-dir", flush=True)
            continue
        base = ["--profile", profile, "--batch-size", "128", "--device", args.device]
        # the prediction is of live memory: the runs without a budget return freed memory too
        # (by default they keep it for reuse: docs/memory.md)
        base += ["--set", 'memory.host_allocator="exact"']
        base += ["--train-limit", str(args.train_limit)]
        base += ["--test-limit", str(args.test_limit)] if args.test_limit else []
        base += ["--data-dir", args.data_dir] if args.data_dir else []
        budget = tight_budget(base, args.micro)
        configs = {
            "layerwise, tight budget": [
                "--schedule", "layerwise", "--mem-budget", str(budget), *DISK_ONLY,
            ],
            "layerwise, no budget": ["--schedule", "layerwise"],
            "joint, no budget": ["--schedule", "joint"],
            # the optimizer's levers (docs/memory.md), fixed, for both methods
            "layerwise, bf16 state stepped in backward": ["--schedule", "layerwise", *LEVERS],
            "backprop, bf16 state stepped in backward": ["--method", "bp", *LEVERS],
        }  # fmt: skip
        if args.device == "cuda":  # a GPU's own memory spared the optimizer's state
            configs["layerwise, fp32 state in host RAM"] = ["--schedule", "layerwise", *HOST]
            configs["backprop, fp32 state in host RAM"] = ["--method", "bp", *HOST]
        for name, extra in configs.items():
            run = f"{profile}-{name.split(',')[0]}-{name.split(', ')[1].replace(' ', '-')}"
            try:
                summary = fit(run, base + ["--epochs", str(args.epochs)] + extra, "plan-accuracy")
            except SystemExit as failure:  # a run that failed is a result too
                print(failure, flush=True)
                rows.append({"profile": profile, "config": name, "block": "failed",
                             "error_pct": 0.0, "within_budget": str(failure).splitlines()[-1]})  # fmt: skip
                continue
            rows += rows_of(profile, name, summary)
            print(rows[-1], flush=True)
    print(
        table(
            rows,
            [
                ("profile", "profile"),
                ("configuration", "config"),
                ("block", "block"),
                ("budget MiB", "budget_mib"),
                ("predicted MiB", "predicted_mib"),
                ("measured MiB", "measured_mib"),
                ("error %", "error_pct"),
                ("within budget", "within_budget"),
            ],
        )
    )
    worst = max((abs(r["error_pct"]) for r in rows), default=0.0)
    print(f"largest error {worst:.1f} % over {len(rows)} blocks")
    trained = [r for r in rows if r["block"] != "failed"]
    close = sum(abs(r["error_pct"]) <= 15 for r in trained)
    over = {(r["profile"], r["config"]) for r in rows if r["within_budget"] is not True}
    print(f"{close} of {len(trained)} predictions within 15 % of the measured peak; "
          f"{len(over)} runs failed or went over budget")  # fmt: skip
    device = next((r["device"] for r in rows if "device" in r), "cpu")
    name = "plan-accuracy-cuda" if device.startswith("cuda") else "plan-accuracy"
    command = " ".join(["python", "bench/plan_accuracy.py", *sys.argv[1:]])
    print("wrote", write_results(name, {"command": command, "epochs": args.epochs,
                                        "train_limit": args.train_limit,
                                        "test_limit": args.test_limit, "rows": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
