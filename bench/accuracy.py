"""SVP against backprop on the same network, data, epochs and batch.

    python bench/accuracy.py digits
    python bench/accuracy.py mnist --data-dir ../shared/data
    python bench/accuracy.py cifar10 --data-dir ../shared/data --epochs 5

Each configuration runs in its own process (`edge-svp fit`); `--only NAME ...` runs some of
them (results of separate invocations merge). Prints a markdown table and writes
bench/results/accuracy-<suite>.json.
"""

import argparse
import json
import sys

from common import RESULTS, fit, table, write_results

SUITES = {
    "digits": {"profile": "digits-mlp", "runs": {"svp joint": [], "bp": ["--method", "bp"]}},
    "mnist": {
        "profile": "mnist-mlp",
        "runs": {
            "svp joint": [],
            "svp layerwise": ["--schedule", "layerwise"],
            "bp": ["--method", "bp"],
        },
    },
    "cifar10": {"profile": "cifar10-cnn", "runs": {"svp joint": [], "bp": ["--method", "bp"]}},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("--data-dir")
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs")
    args = parser.parse_args()
    suite = SUITES[args.suite]
    base = ["--profile", suite["profile"]] + (
        ["--data-dir", args.data_dir] if args.data_dir else []
    )
    rows = []
    for name, extra in suite["runs"].items():
        if args.only and name not in args.only:
            continue
        epochs = ["--epochs", str(args.epochs)] if args.epochs else []
        s = fit(f"{args.suite}-{name.replace(' ', '-')}", base + extra + epochs, "accuracy")
        rows.append(
            {
                "run": name,
                "test_accuracy": round(100 * s["test_accuracy"], 2),
                "per_block": " / ".join(
                    "-" if a is None else f"{100 * a:.1f}" for a in s["per_block_accuracy"]
                ),
                "epochs": s["epochs"],
                "batch_size": s["batch_size"],
                "train_examples": s["train_examples"],
                "peak_rss_mib": round(s["peak_memory_bytes"] / 2**20),
                "wall_seconds": round(s["wall_seconds"], 1),
            }
        )
        print(rows[-1], flush=True)
    print(
        table(
            rows,
            [
                ("run", "run"),
                ("test acc %", "test_accuracy"),
                ("per-block acc %", "per_block"),
                ("epochs", "epochs"),
                ("batch", "batch_size"),
                ("peak RSS MiB", "peak_rss_mib"),
                ("wall s", "wall_seconds"),
            ],
        )
    )
    command = " ".join(["python", "bench/accuracy.py", *sys.argv[1:]])
    for r in rows:
        r["command"] = command
    # runs of one suite made by separate invocations (--only) share one results file
    path = RESULTS / f"accuracy-{args.suite}.json"
    earlier = json.loads(path.read_text())["rows"] if path.exists() else []
    merged = {r["run"]: r for r in earlier + rows}
    print("wrote", write_results(f"accuracy-{args.suite}", {"rows": list(merged.values())}))


if __name__ == "__main__":
    main()
