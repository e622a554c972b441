"""Accuracy study: named grids of SVP configurations, each row x seed in its own process.

    python bench/study.py cnn --data-dir ../shared/data --seeds 0 1
    python bench/study.py cnn-seeds --data-dir ../shared/data --seeds 0 1 2 --reuse
    python bench/study.py vit --data-dir ../shared/data --epochs 3 --reuse
    python bench/study.py cnn-deep --data-dir ../shared/data --train-limit 5000 --reuse
    python bench/study.py vit-deep --data-dir ../shared/data --train-limit 5000 --reuse
    python bench/study.py cnn-projection --data-dir ../shared/data --seeds 0 1 2 --reuse
    python bench/study.py cnn-deep-levers --data-dir ../shared/data --train-limit 5000 --reuse
    python bench/study.py cnn-deep-epochs --data-dir ../shared/data --train-limit 5000 \
        --seeds 0 1 2 --reuse
    python bench/study.py cnn-deep-joint --data-dir ../shared/data --train-limit 5000 \
        --seeds 0 1 2 --reuse
    python bench/study.py vit-deep-projection --data-dir ../shared/data --train-limit 5000 \
        --seeds 0 1 2 --reuse
    python bench/study.py vit-deep-attention-norm --data-dir ../shared/data --train-limit 5000 \
        --seeds 0 1 2 --reuse
    python bench/study.py mnist-state --data-dir ../shared/data --seeds 0 1 2 --reuse
    python bench/study.py cnn-state-bp --data-dir ../shared/data --seeds 0 1 2 --reuse

Every grid trains on the first --train-limit training images (default 10,000) and tests on
the full test set. Prints a markdown table (mean +- sample std over seeds; "vs baseline" is
the mean paired difference to the grid's baseline row over the seeds both have) and writes
bench/results/study-<grid>.json with every run's raw numbers and command line. Separate
invocations (--only, other seeds, other epochs) merge into the same file; `--reuse` reads
finished identical runs instead of training them again, so an interrupted study resumes.

The CNN grids start from the SVP head cifar10-cnn had before this study (pool 2, d0 64,
linear head), set explicitly, so that they measure the same thing now that the profile ships
the study's winner.
"""

import argparse
import json
import shlex
import statistics
import sys

from common import EARLIER_CNN_HEAD, RESULTS, fit, table, write_results


def s(*settings: str) -> list[str]:
    return [a for x in settings for a in ("--set", x)]


CNN = {  # on EARLIER_CNN_HEAD: 32-64-128 channels, bhattacharyya 0.1
    "baseline": [],
    "pool 1": s("svp.pool_size=1"),
    "pool 4": s("svp.pool_size=4"),
    "d0 128": s("svp.proj_dim=128"),
    "d0 256": s("svp.proj_dim=256"),
    "d0 512": s("svp.proj_dim=512"),
    "pool 4 + d0 256": s("svp.pool_size=4", "svp.proj_dim=256"),
    "pool 4 + d0 512": s("svp.pool_size=4", "svp.proj_dim=512"),
    "T 0.5": s("svp.temperature=0.5"),
    "T 2": s("svp.temperature=2.0"),
    "proj_dropout 0.1": s("svp.proj_dropout=0.1"),
    "proj_dropout 0.3": s("svp.proj_dropout=0.3"),
    "head mlp": s("svp.head=mlp"),
    "plain CE (beta 0)": s("svp.beta=0.0"),
    "beta 0.3": s("svp.beta=0.3"),
    "lr 2e-3": s("optim.lr=0.002"),
    "lr 5e-4": s("optim.lr=0.0005"),
    "batch 64": ["--batch-size", "64"],
    "weight decay 5e-4": s("optim.weight_decay=0.0005"),
    "2 blocks [[32,64],[128]] (other network)": s("model.channels=[[32,64],[128]]"),
    # second wave: combinations of what helped in the first
    "pool 4 + d0 1024": s("svp.pool_size=4", "svp.proj_dim=1024"),
    "pool 4 + d0 512 + head mlp": s("svp.pool_size=4", "svp.proj_dim=512", "svp.head=mlp"),
    "pool 4 + d0 512 + lr 2e-3": s("svp.pool_size=4", "svp.proj_dim=512", "optim.lr=0.002"),
    "pool 4 + d0 512 + batch 64": s("svp.pool_size=4", "svp.proj_dim=512") + ["--batch-size", "64"],
}  # fmt: skip

BEST_CNN = s("svp.pool_size=4", "svp.proj_dim=512", "svp.head=mlp") + ["--batch-size", "64"]
CNN_SEEDS = {  # what helped in the screening, 10 epochs, 3 seeds
    "baseline": [],
    "batch 64": ["--batch-size", "64"],
    "pool 4 + d0 512": s("svp.pool_size=4", "svp.proj_dim=512"),
    "pool 4 + d0 512 + head mlp": s("svp.pool_size=4", "svp.proj_dim=512", "svp.head=mlp"),
    "pool 4 + d0 512 + head mlp + batch 64": BEST_CNN,
    "layerwise": ["--schedule", "layerwise"],
    "layerwise, pool 4 + d0 512 + head mlp + batch 64": BEST_CNN + ["--schedule", "layerwise"],
    "layerwise --recompute, pool 4 + d0 512 + head mlp + batch 64": BEST_CNN
    + ["--schedule", "layerwise", "--recompute"],
}

VIT = {  # cifar10-vit: dim 128, 3 blocks of 2 layers, d0 10, token mean, AdamW 1e-3 wd 0.05
    "baseline": [],
    "d0 64": s("svp.proj_dim=64"),
    "d0 128": s("svp.proj_dim=128"),
    "token_pool first": s("svp.token_pool=first"),
    "head mlp": s("svp.head=mlp"),
    "proj_dropout 0.1": s("svp.proj_dropout=0.1"),
    "plain CE (beta 0)": s("svp.beta=0.0"),
    "lr 5e-4": s("optim.lr=0.0005"),
    "lr 2e-3": s("optim.lr=0.002"),
}  # fmt: skip

# The 12-block networks of the depth study (docs/svp.md): the levers that exist as options,
# against backprop (standard head) and layerwise on the same data and epochs
DEPTH = {
    "baseline": [],
    "bp": ["--method", "bp"],
    "layerwise": ["--schedule", "layerwise"],
    "divergence on posteriors (SLL)": s("svp.divergence_on=posterior"),
    "alignment cosine 0.1": s("svp.alignment=cosine", "svp.lam=0.1"),
    "plain CE (beta 0)": s("svp.beta=0.0"),
}
CNN_DEEP = {  # cifar10-cnn-deep: pool 4, d0 512, MLP head
    **DEPTH,
    "head linear": s("svp.head=linear"),
    "pool 2": s("svp.pool_size=2"),
    # backprop through the last block's SVP head (pool 4 x 4, projection, MLP): how much of a
    # difference to backprop is the head's
    "bp, svp head": ["--method", "bp", *s("train.bp_head=svp")],
}
VIT_DEEP = {  # cifar10-vit-deep-cpu: d0 10, token mean, linear head
    **DEPTH,
    "d0 64": s("svp.proj_dim=64"),
    "d0 64 + head mlp": s("svp.proj_dim=64", "svp.head=mlp"),
    "layerwise, d0 64": ["--schedule", "layerwise", *s("svp.proj_dim=64")],
}
# a screening tests on the first 2,000 test images, which a 12-block network evaluates after
# every epoch with every head
SCREENING_TEST = ["--test-limit", "2000"]

# svp.projection: the Hadamard projection against the Gaussian (the baseline), paired by seed
PROJECTION = {"baseline": [], "hadamard": s("svp.projection=hadamard")}
# on the 12-block CNN, 10 epochs, layerwise (the baseline row: the profile's settings)
CNN_DEEP_LEVERS = {
    "baseline": [],
    "hadamard": s("svp.projection=hadamard"),
    "head linear": s("svp.head=linear"),
    "d0 1024": s("svp.proj_dim=1024"),
    "warmup 1 epoch": s("optim.warmup_epochs=1"),
    "block_lr 1 / 0.7 / 0.5 (blocks 1-4, 5-8, 9-12)": s(
        "optim.block_lr=[1.0,1.0,1.0,1.0,0.7,0.7,0.7,0.7,0.5,0.5,0.5,0.5]"
    ),
    "divergence on posteriors (SLL)": s("svp.divergence_on=posterior"),
    # auxiliary layers shaped like the blocks after (AugLocal's lever)
    "aux_blocks 1": s("svp.aux_blocks=1"),
    "aux_blocks 2": s("svp.aux_blocks=2"),
}
# epochs per block on the 12-block CNN with two auxiliary layers (the baseline row): fewer for
# the blocks that train on a fixed cache of the block before's outputs and overfit it (their
# heads fall after the middle blocks)
CNN_DEEP_EPOCHS = {
    "baseline": [],
    "block_epochs 10 / 5 / 3 (blocks 1-4, 5-8, 9-12)": s(
        "train.block_epochs=[10,10,10,10,5,5,5,5,3,3,3,3]"
    ),
}
# the auxiliary layers and a class token on the 12-block ViT, layerwise, the depth study's 3
# epochs (the baseline row: the profile's settings)
VIT_DEEP_LEVERS = {"baseline": [], "aux_blocks 1": s("svp.aux_blocks=1"),
                   "aux_blocks 2": s("svp.aux_blocks=2"),
                   # each head reads a learned class token instead of the mean token
                   "class token": s("model.class_token=true", "svp.token_pool=first"),
                   "class token, aux_blocks 2": s("model.class_token=true", "svp.token_pool=first",
                                                  "svp.aux_blocks=2")}  # fmt: skip
# optim.state_precision: Adam's moments in bf16 and fp8 against fp32 (the baseline), paired
# by seed, for SVP (the profile's schedule) and backprop ("-bp" grids). The other lever,
# optim.step_in_backward, takes the very steps of a step after backward
# (tests/training/test_schedules.py): it costs no accuracy
STATE = {"baseline": [], "bf16 state": s("optim.state_precision=bf16"),
         "fp8 state": s("optim.state_precision=fp8")}  # fmt: skip
BP = ["--method", "bp"]
# model.attention_norm_affine=false on the 12-block ViT: the same functions, and SVP's backward
# skips each block's qkv input-gradient product (docs/svp.md); both methods, paired by seed
PLAIN_NORM = s("model.attention_norm_affine=false")
ATTENTION_NORM = {"baseline": [], "attention norm without scale": PLAIN_NORM,
                  "bp": BP, "bp, attention norm without scale": BP + PLAIN_NORM}  # fmt: skip

# SVP joint on the 12-block CNN, 10 epochs: each block's epochs ending from half-way through
# the run (block 1) to its end (blocks 11-12), after which the block runs frozen and the
# blocks after it train on inputs that no longer move (as FreezeOut, Brock et al. 2017, stops
# layers); backprop beside it, the target's reference
CNN_DEEP_JOINT = {
    "baseline": [],
    "block_epochs 5 to 10": s("train.block_epochs=[5,5,6,6,7,7,8,8,9,9,10]"),
    "bp": BP,
}

GRIDS = {
    "cnn": {"profile": "cifar10-cnn", "epochs": 5, "base": EARLIER_CNN_HEAD, "rows": CNN},
    "cnn-seeds": {"profile": "cifar10-cnn", "epochs": 10, "base": EARLIER_CNN_HEAD,
                  "rows": CNN_SEEDS},
    "vit": {"profile": "cifar10-vit", "epochs": 3, "base": [], "rows": VIT},
    "cnn-deep": {"profile": "cifar10-cnn-deep", "epochs": 3, "base": SCREENING_TEST,
                 "rows": CNN_DEEP},
    "vit-deep": {"profile": "cifar10-vit-deep-cpu", "epochs": 3, "base": SCREENING_TEST,
                 "rows": VIT_DEEP},
    # cifar10-cnn with the profile's settings (pool 4, d0 512, MLP head): the size of
    # cnn-seeds (10 epochs, 10,000 images, full test set)
    "cnn-projection": {"profile": "cifar10-cnn", "epochs": 10, "base": [], "rows": PROJECTION},
    "cnn-deep-levers": {"profile": "cifar10-cnn-deep", "epochs": 10,
                        "base": SCREENING_TEST + ["--schedule", "layerwise"],
                        "rows": CNN_DEEP_LEVERS},
    "cnn-deep-epochs": {"profile": "cifar10-cnn-deep", "epochs": 10,
                        "base": SCREENING_TEST + ["--schedule", "layerwise", "--set",
                                                  "svp.aux_blocks=2"],
                        "rows": CNN_DEEP_EPOCHS},
    "cnn-deep-joint": {"profile": "cifar10-cnn-deep", "epochs": 10, "base": SCREENING_TEST,
                       "rows": CNN_DEEP_JOINT},
    "vit-deep-projection": {"profile": "cifar10-vit-deep-cpu", "epochs": 3,
                            "base": SCREENING_TEST, "rows": PROJECTION},
    "vit-deep-levers": {"profile": "cifar10-vit-deep-cpu", "epochs": 3,
                        "base": SCREENING_TEST + ["--schedule", "layerwise"],
                        "rows": VIT_DEEP_LEVERS},
    "vit-deep-attention-norm": {"profile": "cifar10-vit-deep-cpu", "epochs": 3,
                                "base": SCREENING_TEST, "rows": ATTENTION_NORM},
    "mnist-state": {"profile": "mnist-mlp", "epochs": 20, "base": [], "rows": STATE},
    "mnist-state-bp": {"profile": "mnist-mlp", "epochs": 20, "base": BP, "rows": STATE},
    "cnn-state": {"profile": "cifar10-cnn", "epochs": 10, "base": [], "rows": STATE},
    "cnn-state-bp": {"profile": "cifar10-cnn", "epochs": 10, "base": BP, "rows": STATE},
}  # fmt: skip


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text).strip("_")


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def aggregate(grid: dict, runs: list[dict], epochs: int, limit: int) -> list[dict]:
    """One row per grid row: mean and std over its seeds at these epochs and train limit."""
    by_row = {}
    for r in runs:
        if r["epochs"] == epochs and r["train_limit"] == limit:
            by_row.setdefault(r["row"], {})[r["seed"]] = r
    base = by_row.get("baseline", {})
    rows = []
    order = [n for n in grid["rows"] if n in by_row] + [n for n in by_row if n not in grid["rows"]]
    for name in order:
        seeds = by_row[name]
        acc = [100 * r["test_accuracy"] for r in seeds.values()]
        blocks = list(zip(*(r["per_block_accuracy"] for r in seeds.values()), strict=True))
        common = sorted(set(seeds) & set(base))
        diff = [100 * (seeds[k]["test_accuracy"] - base[k]["test_accuracy"]) for k in common]
        rows.append({
            "row": name,
            "settings": " ".join(a for a in seeds[min(seeds)]["extra"] if a != "--set") or "-",
            "seeds": sorted(seeds),
            "n": len(seeds),
            "test_accuracy": acc,
            "test_accuracy_mean": round(statistics.mean(acc), 2),
            "test_accuracy_std": round(statistics.stdev(acc), 2) if len(acc) > 1 else None,
            "acc": mean_std(acc),
            "vs_baseline": f"{statistics.mean(diff):+.2f}" if diff else "",
            # backprop has a head on its last block only
            "per_block_mean": [None if None in b else round(100 * statistics.mean(b), 2)
                               for b in blocks],
            "per_block": " / ".join("-" if None in b else f"{100 * statistics.mean(b):.1f}"
                                    for b in blocks),
            "wall_seconds_mean": round(statistics.mean(r["wall_seconds"] for r in seeds.values()), 1),
        })  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", choices=GRIDS)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, help="default: the grid's")
    parser.add_argument("--train-limit", type=int, default=10000)
    parser.add_argument("--only", nargs="*", help="run only these rows")
    parser.add_argument("--reuse", action="store_true", help="reuse finished identical runs")
    args = parser.parse_args()
    grid = GRIDS[args.grid]
    epochs = args.epochs or grid["epochs"]
    command = shlex.join(["python", "bench/study.py", *sys.argv[1:]])
    base = ["--profile", grid["profile"], "--data-dir", args.data_dir, "--epochs", str(epochs),
            "--train-limit", str(args.train_limit), *grid["base"]]  # fmt: skip

    path = RESULTS / f"study-{args.grid}.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    for name, extra in grid["rows"].items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            run_args = base + extra + ["--seed", str(seed)]
            run_name = f"{args.grid}-{slug(name)}-e{epochs}-n{args.train_limit}-s{seed}"
            summary = fit(run_name, run_args, "study", args.reuse)
            key = (name, seed, epochs, args.train_limit)
            same = [r for r in runs if (r["row"], r["seed"], r["epochs"], r["train_limit"]) == key]
            reused = args.reuse and same and same[0]["args"] == run_args
            run = {"row": name, "seed": seed, "epochs": epochs, "train_limit": args.train_limit,
                   "extra": extra, "args": run_args,
                   "command": same[0]["command"] if reused else command,
                   "test_accuracy": summary["test_accuracy"],
                   "per_block_accuracy": summary["per_block_accuracy"],
                   "wall_seconds": summary["wall_seconds"]}  # fmt: skip
            runs = [r for r in runs if (r["row"], r["seed"], r["epochs"], r["train_limit"]) != key]
            runs.append(run)
            print(f"{name} seed {seed}: {100 * run['test_accuracy']:.2f} %", flush=True)
            # written after every run, so that an interrupted study keeps what it finished
            write_results(f"study-{args.grid}", {
                "grid": args.grid, "profile": grid["profile"], "runs": runs, "aggregates": {
                    f"{e} epochs, {n} images": aggregate(grid, runs, e, n)
                    for e, n in sorted({(r["epochs"], r["train_limit"]) for r in runs})},
            })  # fmt: skip
    rows = aggregate(grid, runs, epochs, args.train_limit)
    print(f"\n{grid['profile']}, {epochs} epochs, first {args.train_limit} training images\n")
    print(
        table(
            rows,
            [
                ("row", "row"),
                ("settings", "settings"),
                ("n", "n"),
                ("test acc %", "acc"),
                ("vs baseline", "vs_baseline"),
                ("per-block acc %", "per_block"),
                ("wall s", "wall_seconds_mean"),
            ],
        )
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
