"""Accuracy against depth: SVP joint, SVP layerwise and backprop on one network family at
4, 8, 12 and 16 blocks, over seeds.

    python bench/depth_accuracy.py vit --data-dir ../shared/data --seeds 0 1 2
    python bench/depth_accuracy.py cnn --data-dir ../shared/data --seeds 0 1 2 --depths 12
    python bench/depth_accuracy.py cnn --data-dir ../shared/data --depths 12 \
        --only "svp layerwise, aux 2"   # with svp.aux_blocks=2

The families (bench/families.py): `vit` is cifar10-vit-deep-cpu, one transformer layer per
block; `cnn` is cifar10-cnn-deep, one conv-norm-ReLU per block. Backprop trains the same blocks
end to end with the standard head (--method bp). Each run is its own `edge-svp fit` process, on
the first --train-limit training images (default 10,000) and the full test set (or its first
--test-limit images); `--reuse` reads finished identical runs, and separate invocations (other
depths, seeds, methods) merge into bench/results/depth-accuracy-<family>.json, which keeps
every run's head accuracies and command, and a table for each size trained (epochs, training
and test images). Prints the table at this invocation's size ("last - best earlier": the last
head against the best head before it, the decay with depth; "vs bp": the mean paired difference
to backprop at that depth; the seconds of training each took to reach backprop's final
accuracy, and its accuracy when backprop's runs had finished, as bench/accuracy.py) and draws
its two plots, where matplotlib is installed: depth-accuracy-<family><size>.png (final accuracy
against depth) and depth-accuracy-<family><size>-heads.png (each SVP configuration's head
accuracy against the block, mean over seeds); <size> is empty at the default size (10 epochs on
10,000 images, all test images), else e.g. "-3ep-5000-test2000", so that a screening's plots
and the finals' stand side by side.
"""

import argparse
import json
import shlex
import statistics
import sys

from accuracy import against_backprop, as_text, curve, mean_std
from common import EARLIER_CNN_HEAD, RESULTS, fit, plot_lines, slug, table, write_results
from families import FAMILIES, depth_settings

# the lever that lifted every head at 12 blocks (docs/svp.md, "Levers at depth")
LAYERWISE_AUX_2 = ["--schedule", "layerwise", "--set", "svp.aux_blocks=2"]
METHODS = {
    "svp joint": [],
    "svp joint, aux 2": ["--set", "svp.aux_blocks=2"],
    "svp layerwise": ["--schedule", "layerwise"],
    "svp layerwise, aux 2": LAYERWISE_AUX_2,
    # the frozen prefix run again on every batch: every block sees augmented images, not the
    # one fixed cache of block 1's outputs on which later blocks overfit
    "svp layerwise, recompute": ["--schedule", "layerwise", "--recompute"],
    "svp layerwise, aux 2, recompute": [*LAYERWISE_AUX_2, "--recompute"],
    # blocks 3 on train 3 epochs (the 12-block ViT's heads level off from block 2)
    "svp layerwise, aux 2, recompute, epochs 10/10/3": [
        *LAYERWISE_AUX_2,
        "--recompute",
        "--set",
        "train.block_epochs=[10,10,3]",
    ],
    "svp layerwise, small head": ["--schedule", "layerwise", *EARLIER_CNN_HEAD],
    # the CNN's pooling and projection with a linear head: its floor under backprop's at 8 blocks
    "svp layerwise, linear head": ["--schedule", "layerwise", "--set", "svp.head=linear"],
    "bp": ["--method", "bp"],
}


def record(args, command: str, depth: int, method: str, seed: int, summary: dict) -> dict:
    points = curve([json.loads(line) for line in open(f"{summary['run_dir']}/metrics.jsonl")],
                   summary["schedule"])  # fmt: skip
    return {
        "family": args.family, "depth": depth, "method": method, "seed": seed, "command": command,
        "train_limit": args.train_limit, "test_limit": args.test_limit,
        "test_accuracy": round(100 * summary["test_accuracy"], 2),
        "per_block": [None if a is None else round(100 * a, 2)
                      for a in summary["per_block_accuracy"]],
        "epochs": summary["epochs"], "train_examples": summary["train_examples"],
        "seconds_per_epoch": round(points[-1][0] / summary["epochs"], 1),
        "wall_seconds": round(summary["wall_seconds"], 1),
        "curve": points,  # [training seconds, test accuracy %] after each epoch
    }  # fmt: skip


def time_to_accuracy(runs: list[dict], bp: list[dict], method: str) -> dict:
    """The seconds to backprop's final accuracy and the accuracy at backprop's training time
    (bench/accuracy.py), where every run kept its curve (runs recorded before curves were
    kept: "-")."""
    if method == "bp" or not all("curve" in r for r in runs + bp):
        return {"to_bp_accuracy": "-", "at_bp_time": "-"}
    return against_backprop(runs, bp)


def decay(per_block: list[float]) -> float | None:
    """The last head's accuracy less the best earlier head's (None without earlier heads)."""
    earlier = [a for a in per_block[:-1] if a is not None]
    return per_block[-1] - max(earlier) if earlier else None


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per (depth, method): mean +- sample std over seeds."""
    groups = {}
    for r in sorted(runs, key=lambda r: (r["depth"], list(METHODS).index(r["method"]))):
        groups.setdefault((r["depth"], r["method"]), {})[r["seed"]] = r
    rows = []
    for (depth, method), seeds in groups.items():
        bp = groups.get((depth, "bp"), {})
        paired = [seeds[s]["test_accuracy"] - bp[s]["test_accuracy"] for s in seeds if s in bp]
        heads = [statistics.mean(col) if col[0] is not None else None
                 for col in zip(*(r["per_block"] for r in seeds.values()), strict=True)]  # fmt: skip
        decays = [decay(r["per_block"]) for r in seeds.values()]
        rows.append({
            "depth": depth, "method": method, "seeds": " ".join(map(str, sorted(seeds))),
            "accuracy": as_text(*mean_std([r["test_accuracy"] for r in seeds.values()])),
            "mean": round(statistics.mean(r["test_accuracy"] for r in seeds.values()), 2),
            "vs_bp": f"{statistics.mean(paired):+.2f}" if paired and method != "bp" else "",
            "decay": "" if None in decays else as_text(*mean_std(decays)),
            "per_block_mean": heads,
            "per_block": " / ".join("-" if a is None else f"{a:.1f}" for a in heads),
            "seconds_per_epoch": round(statistics.mean(r["seconds_per_epoch"]
                                                       for r in seeds.values()), 1),
            **time_to_accuracy(list(seeds.values()), list(bp.values()), method),
        })  # fmt: skip
    return rows


SIZE = ("epochs", "train_limit", "test_limit")  # a run's training and test size


def size_name(size: tuple, default: tuple) -> str:
    """The plots' suffix for a size (epochs, train_limit, test_limit): "" at the default."""
    if size == default:
        return ""
    epochs, train_limit, test_limit = size
    return f"-{epochs}ep-{train_limit}" + (f"-test{test_limit}" if test_limit else "")


def tables_by_size(runs: list[dict]) -> dict[tuple, list[dict]]:
    """The table of each size (epochs, train_limit, test_limit) the runs were trained at."""
    by_size = {}
    for r in runs:
        by_size.setdefault(tuple(r[k] for k in SIZE), []).append(r)
    return {size: aggregate(same) for size, same in sorted(by_size.items(), key=str)}


def plots(name: str, rows: list[dict]) -> None:
    by_method = {m: [(r["depth"], r["mean"]) for r in rows if r["method"] == m] for m in METHODS}
    depths = sorted({r["depth"] for r in rows})
    path = RESULTS / f"{name}.png"
    if plot_lines(path, by_method, "blocks", "test accuracy %", xticks=depths):
        print("wrote", path)
    heads = {f"{r['method']}, {r['depth']} blocks": list(enumerate(r["per_block_mean"], 1))
             for r in rows if r["method"] != "bp"}  # fmt: skip
    path = RESULTS / f"{name}-heads.png"
    if plot_lines(
        path, heads, "block", "head test accuracy %", xticks=list(range(1, max(depths) + 1))
    ):
        print("wrote", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=["vit", "cnn"])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 12, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="*", choices=METHODS, help="run only these methods")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-limit", type=int, default=10000)
    parser.add_argument("--test-limit", type=int, help="test on the first N images (screening)")
    parser.add_argument("--reuse", action="store_true", help="reuse finished identical runs")
    args = parser.parse_args()
    command = shlex.join(["python", "bench/depth_accuracy.py", *sys.argv[1:]])
    base = ["--profile", FAMILIES[args.family], "--data-dir", args.data_dir,
            "--epochs", str(args.epochs), "--train-limit", str(args.train_limit)]  # fmt: skip
    base += ["--test-limit", str(args.test_limit)] if args.test_limit else []
    runs = []
    for depth in args.depths:
        for method, extra in METHODS.items():
            if args.only and method not in args.only:
                continue
            for seed in args.seeds:
                name = f"{args.family}-{depth}-{slug(method)}-s{seed}"
                run_args = [*base, *depth_settings(args.family, depth), *extra, "--seed", str(seed)]
                summary = fit(name, run_args, "depth-accuracy", args.reuse)
                runs.append(record(args, command, depth, method, seed, summary))
                print(runs[-1], flush=True)
    path = RESULTS / f"depth-accuracy-{args.family}.json"
    earlier = json.loads(path.read_text())["runs"] if path.exists() else []
    merged = {tuple(r[k] for k in ("depth", "method", "seed", *SIZE)): r
              for r in earlier + runs}  # fmt: skip
    tables = tables_by_size(list(merged.values()))
    size = tuple(getattr(args, k) for k in SIZE)
    rows = tables[size]
    tested = f"the first {args.test_limit}" if args.test_limit else "all"
    print(f"{args.epochs} epochs on {args.train_limit} images, tested on {tested} test images")
    print(table(rows, [("blocks", "depth"), ("method", "method"), ("test acc %", "accuracy"),
                       ("seeds", "seeds"), ("vs bp", "vs_bp"),
                       ("last - best earlier head", "decay"), ("per-block head acc %", "per_block"),
                       ("s / epoch", "seconds_per_epoch"), ("s to bp's acc", "to_bp_accuracy"),
                       ("acc % at bp's time", "at_bp_time")]))  # fmt: skip
    payload = {"command": command,
               "tables": [{**dict(zip(SIZE, s, strict=True)), "rows": r} for s, r in tables.items()],
               "runs": list(merged.values())}  # fmt: skip
    print("wrote", write_results(f"depth-accuracy-{args.family}", payload))
    default = tuple(parser.get_default(k) for k in SIZE)
    plots(f"depth-accuracy-{args.family}{size_name(size, default)}", rows)


if __name__ == "__main__":
    main()
