"""SVP against backprop on the same network, data, epochs and batch, over seeds.

    python bench/accuracy.py digits --seeds 0 1 2
    python bench/accuracy.py mnist --data-dir ../shared/data --seeds 0 1 2
    python bench/accuracy.py cifar10 --data-dir ../shared/data --seeds 0 1 2
    python bench/accuracy.py cifar10-vit --data-dir ../shared/data --seeds 0 1 2

Backprop trains the same blocks end to end with the standard head (global average pooling
and a linear layer: train.bp_head = "standard"). Each run in its own process (`edge-svp
fit`); `--only NAME ...` runs some of them, and results of separate invocations (other runs,
other seeds) merge into one file; `--reuse` reads finished identical runs instead of training
them again, and `--no-run` prints the table of the recorded runs. Prints a markdown table
(test accuracy mean +- sample std over seeds, per-block means, seconds per epoch, the accuracy
each configuration had reached when the fastest one finished: equal wall time, the seconds it
took to reach backprop's final accuracy and the accuracy it had when backprop finished) and
writes bench/results/accuracy-<suite>.json with every run's numbers and its accuracy curve over training time (accuracy-<suite>-cuda.json with
--device cuda).
"""

import argparse
import itertools
import json
import statistics
import sys

from common import RESULTS, fit, table, write_results

SUITES = {
    "digits": {"profile": "digits-mlp", "runs": {"svp joint": [], "bp": ["--method", "bp"]}},
    "mnist": {
        "profile": "mnist-mlp",
        "runs": {
            "svp joint": [],
            "bp": ["--method", "bp"],
            # R_l as a Hadamard transform (docs/svp.md): the step's arithmetic, 0.80 of backprop's
            "svp joint, hadamard": ["--set", 'svp.projection="hadamard"'],
        },
    },
    "cifar10": {
        "profile": "cifar10-cnn",
        "runs": {
            "svp joint": [],
            "svp layerwise": ["--schedule", "layerwise"],
            "bp": ["--method", "bp"],
            # the classifier SVP's last block has (pool 4 x 4, fixed projection, MLP head),
            # trained end to end: how much of a difference is the head's
            "bp, svp head": ["--method", "bp", "--set", "train.bp_head=svp"],
        },
    },
    "cifar10-vit": {
        "profile": "cifar10-vit",
        "runs": {"svp joint": [], "bp": ["--method", "bp"]},
    },
}


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def as_text(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def curve(records: list[dict], schedule: str) -> list[list[float]]:
    """[training seconds so far, test accuracy %] after each epoch: the accuracy of the model
    as it stood then (joint: its last head; layerwise: the head of the block in training)."""
    if schedule == "joint":  # every block's record of an epoch has the epoch's time
        last = max(r["block"] for r in records)
        times = [r["seconds"] for r in records if r["block"] == 1]
        records = [r for r in records if r["block"] == last]
    else:
        times = [r["seconds"] for r in records]
    elapsed = itertools.accumulate(times)
    return [[round(t, 1), round(100 * r["test_accuracy"], 2)]
            for t, r in zip(elapsed, records, strict=True)]  # fmt: skip


def accuracy_at(points: list[list[float]], seconds: float) -> float | None:
    """The accuracy a run had reached after `seconds` of training (None: no epoch done yet)."""
    reached = [acc for t, acc in points if t <= seconds * 1.001]  # timing noise at the end
    return reached[-1] if reached else None


def seconds_to(points: list[list[float]], accuracy: float) -> float | None:
    """When a run first reached `accuracy` % (None: never)."""
    return next((t for t, acc in points if acc >= accuracy), None)


def against_backprop(runs: list[dict], bp: list[dict]) -> dict:
    """Time to accuracy against backprop's runs: the seconds a configuration took to reach
    backprop's final accuracy (mean over seeds), and the accuracy it had when backprop's runs
    finished (their mean training time)."""
    if not bp:
        return {"to_bp_accuracy": "-", "at_bp_time": "-"}
    target = statistics.mean(r["test_accuracy"] for r in bp)
    finish = statistics.mean(r["curve"][-1][0] for r in bp)
    reached = [seconds_to(r["curve"], target) for r in runs]
    at_time = [accuracy_at(r["curve"], finish) for r in runs]
    hits = [t for t in reached if t is not None]
    to_accuracy = f"{len(hits)} of {len(runs)} reach it"
    if len(hits) == len(runs):
        to_accuracy = as_text(*mean_std(hits))
    return {
        "to_bp_accuracy": to_accuracy,
        "at_bp_time": "-" if None in at_time else as_text(*mean_std(at_time)),
    }


def aggregate(name: str, runs: list[dict], equal_seconds: float, bp: list[dict]) -> dict:
    """One row of the table: a configuration over its seeds."""
    accuracy, spread = mean_std([r["test_accuracy"] for r in runs])
    at_time = [accuracy_at(r["curve"], equal_seconds) for r in runs]
    columns = zip(*(r["per_block"] for r in runs), strict=True)
    per_block = [None if col[0] is None else statistics.mean(col) for col in columns]
    return {
        "run": name,
        "seeds": " ".join(str(r["seed"]) for r in runs),
        "accuracy": as_text(accuracy, spread),
        "mean": round(accuracy, 2),
        "std": round(spread, 2) if spread is not None else None,
        "per_block": " / ".join("-" if a is None else f"{a:.1f}" for a in per_block),
        "at_equal_time": "-" if None in at_time else as_text(*mean_std(at_time)),
        **against_backprop(runs, bp),
        "seconds_per_epoch": round(statistics.mean(r["seconds_per_epoch"] for r in runs), 1),
        "epochs": runs[0]["epochs"],
        "batch_size": runs[0]["batch_size"],
        "train_examples": runs[0]["train_examples"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("--data-dir")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs")
    parser.add_argument("--train-limit", type=int)
    parser.add_argument("--test-limit", type=int, help="test on the first N examples")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the profile's")
    parser.add_argument("--reuse", action="store_true", help="reuse finished identical runs")
    parser.add_argument("--no-run", action="store_true",
                        help="print the table of the runs bench/results holds; train nothing")  # fmt: skip
    args = parser.parse_args()
    suite = SUITES[args.suite]
    base = ["--profile", suite["profile"]]
    base += ["--data-dir", args.data_dir] if args.data_dir else []
    base += ["--epochs", str(args.epochs)] if args.epochs else []
    base += ["--train-limit", str(args.train_limit)] if args.train_limit else []
    base += ["--test-limit", str(args.test_limit)] if args.test_limit else []
    base += ["--device", args.device] if args.device else []
    command = " ".join(["python", "bench/accuracy.py", *sys.argv[1:]])
    runs = []
    for name, extra in suite["runs"].items():
        if args.no_run or (args.only and name not in args.only):
            continue
        for seed in args.seeds:
            tag = f"{args.suite}-{name.replace(' ', '-')}-s{seed}"
            s = fit(tag, [*base, *extra, "--seed", str(seed)], "accuracy", args.reuse)
            records = [json.loads(line) for line in open(f"{s['run_dir']}/metrics.jsonl")]
            points = curve(records, s["schedule"])
            runs.append({
                "run": name, "seed": seed, "command": command,
                "test_accuracy": round(100 * s["test_accuracy"], 2),
                "per_block": [None if a is None else round(100 * a, 2) for a in s["per_block_accuracy"]],
                "epochs": s["epochs"], "batch_size": s["batch_size"],
                "train_examples": s["train_examples"], "wall_seconds": round(s["wall_seconds"], 1),
                "seconds_per_epoch": round(points[-1][0] / s["epochs"], 1), "curve": points,
            })  # fmt: skip
            print({k: v for k, v in runs[-1].items() if k != "curve"}, flush=True)
    # runs of one suite made by separate invocations share one results file
    results_name = f"accuracy-{args.suite}" + ("-cuda" if args.device == "cuda" else "")
    path = RESULTS / f"{results_name}.json"
    earlier = json.loads(path.read_text()).get("runs", []) if path.exists() else []
    merged = {(r["run"], r["seed"]): r for r in earlier + runs if "curve" in r}
    by_name = {name: [r for (n, _), r in sorted(merged.items()) if n == name]
               for name in suite["runs"] if any(n == name for n, _ in merged)}  # fmt: skip
    # equal wall time: where the fastest configuration (mean over its seeds) finished
    equal_seconds = min(statistics.mean(r["curve"][-1][0] for r in rs) for rs in by_name.values())
    rows = [aggregate(name, rs, equal_seconds, by_name.get("bp", []))
            for name, rs in by_name.items()]  # fmt: skip
    print(table(rows, [("run", "run"), ("test acc %", "accuracy"), ("seeds", "seeds"),
                       ("per-block acc %", "per_block"),
                       (f"acc % after {equal_seconds:.0f} s", "at_equal_time"),
                       ("s to bp's acc", "to_bp_accuracy"),
                       ("acc % at bp's time", "at_bp_time"),
                       ("s / epoch", "seconds_per_epoch"), ("epochs", "epochs"),
                       ("batch", "batch_size"), ("train examples", "train_examples")]))  # fmt: skip
    if runs:
        payload = {"rows": rows, "equal_time_seconds": round(equal_seconds, 1),
                   "runs": list(merged.values())}  # fmt: skip
        print("wrote", write_results(results_name, payload))


if __name__ == "__main__":
    main()
