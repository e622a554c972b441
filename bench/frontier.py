"""Accuracy against the memory budget: SVP joint, SVP layerwise and backprop, each planned
under the same budget by the same planner, on the same model, data, batch and epochs.

    python bench/frontier.py --profile cifar10-cnn --data-dir ../shared/data
    python bench/frontier.py --profile digits-mlp --epochs 10 --train-limit 0

Budgets run from backprop's whole-batch peak down to SVP layerwise's smallest budget, evenly
on a log scale (--steps), or as given (--budgets). Backprop may micro-batch with gradient
accumulation and recompute activations, as the planner chooses; a method that cannot fit is
a row "refused" with the smallest budget it names. Each run in its own process. Prints a
markdown table and writes bench/results/frontier-<profile>.json and a plot of accuracy
against budget, frontier-<profile>.png (-cuda before the suffix with --device cuda).
"""

import argparse
import sys

from common import RESULTS, fit, plan, plot_lines, smallest_budget, table, write_results

MIB = 2**20
METHODS = {
    "svp layerwise": ["--schedule", "layerwise"],
    "svp joint": ["--schedule", "joint"],
    "bp": ["--method", "bp"],
}


def ladder(top: int, bottom: int, steps: int) -> list[int]:
    """`steps` budgets from `top` down to `bottom`, evenly spaced on a log scale."""
    ratio = (bottom / top) ** (1 / max(steps - 1, 1))
    return [round(top * ratio**k) for k in range(steps)]


def row(method: str, budget: int, result, minimum: int) -> dict:
    out = {"method": method, "budget_mib": round(budget / MIB, 1),
           "min_budget_mib": round(minimum / MIB, 1)}  # fmt: skip
    if isinstance(result, str):  # the one line of a refusal
        return {**out, "status": "refused", "refusal": result}
    memory = result["memory"]
    predicted, measured = max(memory["predicted_peak_bytes"]), max(memory["measured_peak_bytes"])
    return {
        **out,
        "status": "trained",
        "test_accuracy": round(100 * result["test_accuracy"], 2),
        "wall_seconds": round(result["wall_seconds"], 1),
        "measured_mib": round(measured / MIB, 1),
        "predicted_mib": round(predicted / MIB, 1),
        "error_pct": round(100 * (predicted - measured) / measured, 1),
        "within_budget": memory["within_budget"],
        "micro_batch": "/".join(str(m) for m in memory["micro_batch"]),
        "checkpointing": any(memory["recompute_activations"]),
        # the memory levers the plan reached for
        "state": memory["optimizer_state"] + ", in backward" * bool(memory["step_in_backward"]),
        "projections": {True: "held", False: "drawn", None: "-"}[memory.get("projections_stored")],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cifar10-cnn")
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=10000, help="0: all examples")
    parser.add_argument("--test-limit", type=int, help="test on the first N examples")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--budgets", nargs="*", help="budgets to run instead (e.g. 64MB 20MB)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--reuse", action="store_true", help="reuse finished identical runs")
    args = parser.parse_args()
    base = ["--profile", args.profile, "--batch-size", str(args.batch_size),
            "--device", args.device]  # fmt: skip
    base += ["--data-dir", args.data_dir] if args.data_dir else []
    base += ["--train-limit", str(args.train_limit)] if args.train_limit else []
    base += ["--test-limit", str(args.test_limit)] if args.test_limit else []
    minimum = {method: smallest_budget(base + extra) for method, extra in METHODS.items()}
    if args.budgets:
        from edge_svp.memory.size import parse_size

        budgets = [parse_size(b) for b in args.budgets]
    else:
        top = plan(base + METHODS["bp"])  # backprop on the whole batch, no recomputation
        budgets = ladder(top["predicted_peak"] + top["margin"], minimum["svp layerwise"],
                         args.steps)  # fmt: skip
    rows = []
    for budget in budgets:
        for method, extra in METHODS.items():
            run = [*base, *extra, "--epochs", str(args.epochs), "--mem-budget", str(budget)]
            name = f"{args.profile}-{method.replace(' ', '-')}-{budget}"
            result = fit(name, run, "frontier", args.reuse, refusable=True)
            rows.append(row(method, budget, result, minimum[method]))
            print(rows[-1], flush=True)
    columns = [("budget MiB", "budget_mib"), ("method", "method"), ("status", "status"),
               ("test acc %", "test_accuracy"), ("wall s", "wall_seconds"),
               ("measured MiB", "measured_mib"), ("predicted MiB", "predicted_mib"),
               ("error %", "error_pct"), ("within budget", "within_budget"),
               ("micro-batch", "micro_batch"), ("recomputed", "checkpointing"),
               ("state", "state"), ("projections", "projections"),
               ("smallest budget MiB", "min_budget_mib")]  # fmt: skip
    print(table(rows, columns))
    command = " ".join(["python", "bench/frontier.py", *sys.argv[1:]])
    payload = {"profile": args.profile, "epochs": args.epochs, "train_limit": args.train_limit,
               "test_limit": args.test_limit,
               "batch_size": args.batch_size, "command": command,
               "min_budget_mib": {m: round(b / MIB, 1) for m, b in minimum.items()},
               "rows": rows}  # fmt: skip
    name = f"frontier-{args.profile}" + ("-cuda" if args.device == "cuda" else "")
    print("wrote", write_results(name, payload))
    lines = {m: [(r["budget_mib"], r["test_accuracy"]) for r in rows
                 if r["method"] == m and r["status"] == "trained"] for m in METHODS}  # fmt: skip
    if plot_lines(RESULTS / f"{name}.png", lines, "memory budget (MiB)", "test accuracy (%)",
                  log_x=True):  # fmt: skip
        print("wrote", RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
