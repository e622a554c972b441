"""Seconds per epoch, SVP against backprop, in paired runs.

    python bench/epoch_time.py mnist-mlp --data-dir ../shared/data
    python bench/epoch_time.py cifar10-cnn --data-dir ../shared/data --train-limit 5000 --reps 3
    python bench/epoch_time.py mnist-mlp --data-dir ../shared/data --levers --reps 3
    python bench/epoch_time.py cifar10-vit-deep --data-dir ../shared/data --train-limit 1000 \
        --reps 3 --set model.attention_norm_affine=false

Each repetition runs every configuration once, one after another (A B C A B C ...), each in
its own process on one thread (`edge-svp fit --threads 1`, one epoch): a machine whose speed
drifts slows the runs of one repetition alike, so the ratio to backprop is taken within each
repetition and its median quoted. An epoch's seconds are those the run records in
metrics.jsonl (training and the epoch's evaluation; start-up, data loading and the memory
probe excluded). --set SECTION.KEY=VALUE applies to every configuration (the same network for
both methods). Prints a table and writes bench/results/epoch-time-<profile>.json (with --set,
named by common.results_name: epoch-time-cifar10-vit-deep-attention_norm_affine-false.json).
"""

import argparse
import json
import statistics
import sys

from common import fit, results_name, slug, table, write_results

CONFIGS = {
    "svp joint": [],
    "svp joint, hadamard": ["--set", 'svp.projection="hadamard"'],
    "bp": ["--method", "bp"],
}
# --levers: what the optimizer's memory levers (docs/memory.md) cost in time, for both methods
STATE = {p: ["--set", f"optim.state_precision={p}"] for p in ("bf16", "fp8")}
IN_BACKWARD = ["--set", "optim.step_in_backward=on"]
LEVERS = {
    "bp": ["--method", "bp"],
    "bp, bf16 state": ["--method", "bp", *STATE["bf16"]],
    "bp, fp8 state": ["--method", "bp", *STATE["fp8"]],
    "bp, bf16 state, step in backward": ["--method", "bp", *STATE["bf16"], *IN_BACKWARD],
    "svp joint": [],
    "svp joint, bf16 state": STATE["bf16"],
    "svp joint, bf16 state, step in backward": [*STATE["bf16"], *IN_BACKWARD],
}


def epoch_seconds(summary: dict) -> float:
    with open(f"{summary['run_dir']}/metrics.jsonl") as f:
        return json.loads(f.readline())["seconds"]  # joint: every block's record has it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--data-dir")
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument("--test-limit", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--levers", action="store_true",
                        help="time the optimizer's memory levers instead")  # fmt: skip
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="for every configuration")  # fmt: skip
    args = parser.parse_args()
    base = ["--profile", args.profile, "--epochs", "1", "--threads", "1",
            "--train-limit", str(args.train_limit), "--test-limit", str(args.test_limit)]  # fmt: skip
    base += ["--data-dir", args.data_dir] if args.data_dir else []
    base += [a for setting in args.settings for a in ("--set", setting)]
    configs = LEVERS if args.levers else CONFIGS
    seconds = {name: [] for name in configs}
    for _ in range(args.reps):
        for name, extra in configs.items():
            tag = results_name(f"{args.profile}-{slug(name)}", args.settings)
            seconds[name].append(round(epoch_seconds(fit(tag, [*base, *extra], "epoch-time")), 2))
        print({name: s[-1] for name, s in seconds.items()}, flush=True)
    rows = []
    for name, runs in seconds.items():
        ratios = [s / b for s, b in zip(runs, seconds["bp"], strict=True)]
        rows.append({"run": name, "seconds": " ".join(f"{s:.2f}" for s in runs),
                     "median_seconds": round(statistics.median(runs), 2),
                     "ratio": " ".join(f"{r:.2f}" for r in ratios),
                     "median_ratio": round(statistics.median(ratios), 2)})  # fmt: skip
    print(table(rows, [("run", "run"), ("s / epoch, each repetition", "seconds"),
                       ("median s", "median_seconds"), ("/ bp, each repetition", "ratio"),
                       ("median / bp", "median_ratio")]))  # fmt: skip
    command = " ".join(["python", "bench/epoch_time.py", *sys.argv[1:]])
    name = results_name(f"epoch-time-{args.profile}", args.settings)
    name += "-levers" if args.levers else ""
    write_results(name, {"command": command, "rows": rows})


if __name__ == "__main__":
    main()
