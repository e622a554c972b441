"""The best model under a budget: at each memory budget, SVP layerwise and backprop each train
the deepest member of a deep family (bench/families.py) that fits it.

    python bench/depth_frontier.py cnn --data-dir ../shared/data --epochs 3 \
        --train-limit 5000 --test-limit 2000
    python bench/depth_frontier.py vit --data-dir ../shared/data --budgets 7.5MiB 5.9MiB \
        --only "svp layerwise" "svp layerwise, aux 2" bp   # SVP with svp.aux_blocks=2 too

Each method's smallest budget at each depth is the planner's, with every lever open. The
budgets run, unless given (--budgets), are backprop's smallest at each depth (where backprop
trains that many blocks and no more) and SVP's smallest at the deepest. Under each budget,
each method trains, in its own process, the deepest member whose smallest budget fits,
planned under that budget (so at its micro-batch, optimizer state and caches); a method that
fits no member is "refused". Prints the runs and a table of the best model per budget (blocks
and test accuracy per method, and each SVP method's less backprop's), and writes
bench/results/depth-frontier-<family>.json and a plot of accuracy against budget,
depth-frontier-<family>.png. With --reuse, a finished identical run is read instead of run
again: from its run directory, or, where that is gone, from the results file, if that file
trained the same size (so seeds run on separate checkouts add up to one table).
"""

import argparse
import json
import shlex
import statistics
import sys

import depth_accuracy
from common import RESULTS, RUNS, fit, plot_lines, slug, smallest_budget, table, write_results
from families import FAMILIES, depth_settings

MIB = 2**20
GROUP = "depth-frontier"  # runs/bench/GROUP/<run name>
METHODS = {
    m: depth_accuracy.METHODS[m]
    for m in (
        "svp layerwise",
        "svp layerwise, aux 2",
        "svp layerwise, small head",
        "svp layerwise, linear head",
        "bp",
    )
}


def deepest(floors: dict[int, int], budget: int) -> int | None:
    """The most blocks whose smallest budget is within `budget` (None: no member fits)."""
    return max((depth for depth, floor in floors.items() if floor <= budget), default=None)


def run_name(args, method: str, depth: int, budget: int, seed: int) -> str:
    return f"{args.family}-{slug(method)}-{depth}-{budget}-s{seed}"


def run(args, base: list[str], method: str, depth: int, budget: int, seed: int) -> dict:
    extra = [*METHODS[method], *depth_settings(args.family, depth), "--seed", str(seed)]
    name = run_name(args, method, depth, budget, seed)
    summary = fit(name, [*base, *extra, "--mem-budget", str(budget)], GROUP, args.reuse)
    memory = summary["memory"]
    return {
        "budget_mib": round(budget / MIB, 1), "method": method, "blocks": depth, "seed": seed,
        "test_accuracy": round(100 * summary["test_accuracy"], 2),
        "measured_mib": round(max(memory["measured_peak_bytes"]) / MIB, 1),
        "within_budget": memory["within_budget"],
        "micro_batch": "/".join(str(m) for m in sorted(set(memory["micro_batch"]))),
        "wall_seconds": round(summary["wall_seconds"], 1),
    }  # fmt: skip


def recorded_runs(args) -> dict[tuple, dict]:
    """The runs the last results file holds, by (budget, method, blocks, seed), where it
    trained the same size: with --reuse, a run whose directory is gone (made on another
    checkout) is read from there."""
    path = RESULTS / f"depth-frontier-{args.family}.json"
    if not args.reuse or not path.exists():
        return {}
    old = json.loads(path.read_text())
    size = ("profile", "epochs", "train_limit", "test_limit")
    now = {"profile": FAMILIES[args.family], "epochs": args.epochs,
           "train_limit": args.train_limit, "test_limit": args.test_limit}  # fmt: skip
    if any(old.get(k) != now[k] for k in size):
        return {}
    return {(r["budget_mib"], r["method"], r["blocks"], r["seed"]): r for r in old["runs"]}


def best_per_budget(budgets: list[int], floors: dict, runs: list[dict]) -> list[dict]:
    """One row per budget: each method's deepest member, its accuracy over seeds, and each
    SVP method's less backprop's."""
    rows = []
    for budget in budgets:
        row = {"budget_mib": round(budget / MIB, 1)}
        means = {}
        for method in floors:
            depth = deepest(floors[method], budget)
            accuracies = [r["test_accuracy"] for r in runs
                          if r["method"] == method and r["budget_mib"] == row["budget_mib"]]  # fmt: skip
            if depth is None or not accuracies:
                row[f"{method} blocks"], row[f"{method} %"] = "-", "refused"
                continue
            means[method] = statistics.mean(accuracies)
            spread = f" ± {statistics.stdev(accuracies):.2f}" if len(accuracies) > 1 else ""
            row[f"{method} blocks"] = depth
            row[f"{method} %"] = f"{means[method]:.2f}{spread}"
        for method in [m for m in means if m != "bp" and "bp" in means]:
            row[f"{method} - bp"] = f"{means[method] - means['bp']:+.2f}"
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 12, 16])
    parser.add_argument("--budgets", nargs="*", help="budgets to run instead (e.g. 20MB 9MiB)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="+", choices=METHODS, default=["svp layerwise", "bp"],
                        help="the methods (default: SVP layerwise and backprop)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=5000)
    parser.add_argument("--test-limit", type=int, help="test on the first N images")
    parser.add_argument("--reuse", action="store_true", help="reuse finished identical runs")
    args = parser.parse_args()
    if "bp" not in args.only and not args.budgets:
        parser.error("without backprop (--only), name the budgets (--budgets)")
    base = ["--profile", FAMILIES[args.family], "--data-dir", args.data_dir,
            "--epochs", str(args.epochs), "--train-limit", str(args.train_limit)]  # fmt: skip
    base += ["--test-limit", str(args.test_limit)] if args.test_limit else []
    floors = {method: {depth: smallest_budget([*base, *extra, *depth_settings(args.family, depth)])
                       for depth in args.depths}
              for method, extra in METHODS.items() if method in args.only}  # fmt: skip
    for method, by_depth in floors.items():
        print(method, {d: f"{b / MIB:.1f} MiB" for d, b in by_depth.items()}, flush=True)
    if args.budgets:
        from edge_svp.memory.size import parse_size

        budgets = sorted((parse_size(b) for b in args.budgets), reverse=True)
    else:
        # where backprop trains each depth and no more, and where only SVP layerwise trains
        deepest_svp = min(floors[m][max(args.depths)] for m in floors if m != "bp")
        budgets = sorted({*floors["bp"].values(), deepest_svp}, reverse=True)
    recorded, runs = recorded_runs(args), []
    for budget in budgets:
        for method in floors:
            depth = deepest(floors[method], budget)
            for seed in args.seeds if depth else []:
                name = run_name(args, method, depth, budget, seed)
                key = (round(budget / MIB, 1), method, depth, seed)
                if key in recorded and not (RUNS / GROUP / name).exists():
                    print("reusing the recorded run", name, flush=True)
                    runs.append(recorded[key])
                else:
                    runs.append(run(args, base, method, depth, budget, seed))
                print(runs[-1], flush=True)
    print(table(runs, [(k, k) for k in runs[0]]) if runs else "no run fits")
    rows = best_per_budget(budgets, floors, runs)
    columns = [("budget MiB", "budget_mib")]
    columns += [(f"{m} {what}", f"{m} {what}") for m in floors for what in ("blocks", "%")]
    columns += [(f"{m} - bp", f"{m} - bp") for m in floors if m != "bp"]
    print(table(rows, columns))
    payload = {
        "command": shlex.join(["python", "bench/depth_frontier.py", *sys.argv[1:]]),
        "family": args.family, "profile": FAMILIES[args.family], "epochs": args.epochs,
        "train_limit": args.train_limit, "test_limit": args.test_limit,
        "smallest_budget_mib": {m: {d: round(b / MIB, 1) for d, b in by_depth.items()}
                                for m, by_depth in floors.items()},
        "rows": rows, "runs": runs,
    }  # fmt: skip
    name = f"depth-frontier-{args.family}"
    print("wrote", write_results(name, payload))
    lines = {m: [(r["budget_mib"], statistics.mean(x["test_accuracy"] for x in runs
                  if x["method"] == m and x["budget_mib"] == r["budget_mib"]))
                 for r in rows if isinstance(r[f"{m} blocks"], int)] for m in floors}  # fmt: skip
    if plot_lines(RESULTS / f"{name}.png", lines, "memory budget (MiB)", "test accuracy (%)",
                  log_x=True):  # fmt: skip
        print("wrote", RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
