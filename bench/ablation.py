"""Ablation of the SVP objective: divergence, alignment, beta, lambda and d0.

    python bench/ablation.py --profile mnist-mlp --data-dir ../shared/data --epochs 5
    python bench/ablation.py --profile cifar10-cnn --data-dir ../shared/data --epochs 3 \
        --train-limit 5000 --d0 64 --set svp.pool_size=2 --set svp.head=linear

One configuration is changed at a time against plain local cross-entropy (beta = lam = 0).
Prints a markdown table and writes bench/results/ablation-<profile>.json.
"""

import argparse

from common import fit, table, write_results

GRID = {
    "plain CE (beta=lam=0)": [],
    "kl, beta=0.1": ["svp.divergence=kl", "svp.beta=0.1"],
    "kl, beta=1": ["svp.divergence=kl", "svp.beta=1.0"],
    "bhattacharyya, beta=0.1": ["svp.divergence=bhattacharyya", "svp.beta=0.1"],
    "bhattacharyya, beta=1": ["svp.divergence=bhattacharyya", "svp.beta=1.0"],
    "cosine, lam=0.1": ["svp.alignment=cosine", "svp.lam=0.1"],
    "cosine, lam=1": ["svp.alignment=cosine", "svp.lam=1.0"],
    "mse, lam=0.1": ["svp.alignment=mse", "svp.lam=0.1"],
    "mse, lam=1": ["svp.alignment=mse", "svp.lam=1.0"],
    "kl 0.1 + cosine 0.1": [
        "svp.divergence=kl", "svp.beta=0.1", "svp.alignment=cosine", "svp.lam=0.1",
    ],
    "d0 = 0.25x": ["svp.proj_dim={d0_small}"],
    "d0 = 2x": ["svp.proj_dim={d0_large}"],
}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-limit", type=int)
    parser.add_argument("--d0", type=int, required=True, help="the baseline's proj_dim")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="applied to every row")  # fmt: skip
    parser.add_argument("--only", nargs="*", help="run only these grid entries")
    parser.add_argument("--reuse", action="store_true", help="reuse finished identical runs")
    args = parser.parse_args()

    base = ["--profile", args.profile, "--data-dir", args.data_dir, "--epochs", str(args.epochs)]
    # the baseline is plain CE whatever the profile says
    base += ["--set", "svp.divergence=none", "--set", "svp.alignment=none"]
    base += ["--set", "svp.beta=0.0", "--set", "svp.lam=0.0", "--set", f"svp.proj_dim={args.d0}"]
    base += [a for s in args.settings for a in ("--set", s)]
    if args.train_limit:
        base += ["--train-limit", str(args.train_limit)]
    sizes = {"d0_small": max(args.d0 // 4, 1), "d0_large": args.d0 * 2}
    rows = []
    for i, (name, settings) in enumerate(GRID.items()):
        if args.only and name not in args.only:
            continue
        extra = [a for s in settings for a in ("--set", s.format(**sizes))]
        summary = fit(f"{args.profile}-{i:02d}", base + extra, "ablation", args.reuse)
        rows.append(
            {
                "config": name.replace("0.25x", str(sizes["d0_small"])).replace(
                    "2x", str(sizes["d0_large"])
                ),
                "settings": " ".join(s.format(**sizes) for s in settings) or "(baseline)",
                "test_accuracy": round(100 * summary["test_accuracy"], 2),
                "per_block": " / ".join(f"{100 * a:.1f}" for a in summary["per_block_accuracy"]),
                "wall_seconds": round(summary["wall_seconds"], 1),
            }
        )
        print(rows[-1], flush=True)
    print(
        table(
            rows,
            [
                ("configuration", "config"),
                ("test acc %", "test_accuracy"),
                ("per-block acc %", "per_block"),
                ("wall s", "wall_seconds"),
            ],
        )
    )
    payload = {"profile": args.profile, "epochs": args.epochs, "train_limit": args.train_limit,
               "command": " ".join(["python", "bench/ablation.py", *__import__("sys").argv[1:]]),
               "rows": rows}  # fmt: skip
    print("wrote", write_results(f"ablation-{args.profile}", payload))


if __name__ == "__main__":
    main()
