"""ONNX Runtime training against torch.

    python bench/ort.py steps                      # step time and peak RSS per block kind
    python bench/ort.py mnist --data-dir ../shared/data --epochs 3

`steps` exports the first block of each shipped profile (mnist-mlp, cifar10-cnn, cifar10-vit),
checks ORT's first step against torch's on the same weights and batch, then times training
steps of that block (block, SVP loss, backward, optimizer) in a fresh process per framework.
The ORT process never imports torch; peak RSS is each process's VmHWM.

`mnist` trains the mnist-mlp profile layerwise with `--backend torch` and `--backend ort` at
equal epochs, each in its own `edge-svp fit` process.

Prints a markdown table and writes the suite's results into bench/results/ort.json.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tomllib
from common import RESULTS, RUNS, fit, table, write_results

PROFILES = {"mlp": "mnist-mlp", "cnn": "cifar10-cnn", "vit": "cifar10-vit"}
INPUT_SHAPES = {"mlp": (1, 28, 28), "cnn": (3, 32, 32), "vit": (3, 32, 32)}
NUM_CLASSES = 10


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def network(kind: str):
    from edge_svp.config import load_profile
    from edge_svp.network import build_network

    config = load_profile(PROFILES[kind])
    return config, build_network(config, INPUT_SHAPES[kind], NUM_CLASSES)


def batch_data(kind: str, batch: int, entry_shape, ref_dim: int):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *entry_shape)).astype(np.float32)
    v_ref = rng.standard_normal((batch, ref_dim)).astype(np.float32)
    return x, v_ref, rng.integers(0, NUM_CLASSES, batch).astype(np.int64)


def worker(framework: str, kind: str, export_dir: Path, threads: int, steps: int, warmup: int):
    """Time `steps` training steps of block 1 and print one JSON line."""
    from edge_svp.ort.manifest import Manifest

    manifest = Manifest.read(export_dir)
    entry, batch = manifest.blocks[0], manifest.schedule["batch_size"]
    x, v_ref, y = batch_data(kind, batch, entry.inputs[0].shape[1:], entry.inputs[1].shape[1])
    if framework == "ort":
        from edge_svp.ort.runtime import BlockSession

        trainer = BlockSession(export_dir, entry, threads)
        feeds = {"x": x, "v_ref": v_ref, "labels": y}

        def step():
            trainer.step(feeds, 1e-3)
    else:
        import torch

        from edge_svp.training.optim import make_optimizer

        torch.set_num_threads(threads)
        config, net = network(kind)
        block, objective = net.blocks[0].train(), net.objectives[0].train()
        optimizer = make_optimizer(net.trainable_parameters(0), config.optim)
        xt, vt, yt = torch.from_numpy(x), torch.from_numpy(v_ref), torch.from_numpy(y)

        def step():
            loss = objective(block(xt), vt, yt).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    result = {
        "framework": framework,
        "kind": kind,
        "threads": threads,
        "batch": batch,
        "median_step_ms": round(1000 * float(np.median(times)), 2),
        "p90_step_ms": round(1000 * float(np.percentile(times, 90)), 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "torch_imported": "torch" in sys.modules,
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(framework, kind, export_dir, threads, steps, warmup) -> dict:
    cmd = [sys.executable, __file__, "worker", framework, kind, str(export_dir),
           "--threads", str(threads), "--steps", str(steps), "--warmup", str(warmup)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{framework} {kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[0].removeprefix("RESULT "))


def steps_suite(args) -> dict:
    import torch

    from edge_svp.data import Preprocess
    from edge_svp.ort.export import export_training
    from edge_svp.ort.parity import first_step

    rows = []
    for kind in args.kinds:
        config, net = network(kind)
        export_dir = RUNS / "ort" / kind
        channels = INPUT_SHAPES[kind][0]
        preprocess = Preprocess([0.0] * channels, [1.0] * channels)
        classes = [str(i) for i in range(NUM_CLASSES)]
        export_training(net, config, classes, preprocess, torch.float32, export_dir)
        parity = first_step(net, export_dir, 0, batch=config.train.batch_size)
        for threads in args.threads:
            timed = {fw: run_worker(fw, kind, export_dir, threads, args.steps, args.warmup)
                     for fw in ("torch", "ort")}  # fmt: skip
            row = {
                "kind": kind,
                "profile": PROFILES[kind],
                "threads": threads,
                "batch": timed["ort"]["batch"],
                "torch_ms": timed["torch"]["median_step_ms"],
                "ort_ms": timed["ort"]["median_step_ms"],
                "torch_peak_mib": timed["torch"]["peak_rss_mib"],
                "ort_peak_mib": timed["ort"]["peak_rss_mib"],
                "ort_process_imported_torch": timed["ort"]["torch_imported"],
                "first_step_loss_torch": round(parity.loss_torch, 6),
                "first_step_loss_ort": round(parity.loss_ort, 6),
                "first_step_loss_abs_diff": float(f"{parity.loss_diff:.2e}"),
                "first_step_max_grad_diff": float(f"{parity.max_grad_diff:.2e}"),
                "workers": timed,
            }
            rows.append(row)
            print({k: v for k, v in row.items() if k != "workers"}, flush=True)
    columns = [("block (profile)", "profile"), ("threads", "threads"), ("batch", "batch"),
               ("torch ms/step", "torch_ms"), ("ORT ms/step", "ort_ms"),
               ("torch peak RSS MiB", "torch_peak_mib"), ("ORT peak RSS MiB", "ort_peak_mib"),
               ("step-0 loss abs diff", "first_step_loss_abs_diff"),
               ("step-0 max grad diff", "first_step_max_grad_diff")]  # fmt: skip
    print(table(rows, columns))
    return {"rows": rows}


def mnist_suite(args) -> dict:
    base = ["--profile", "mnist-mlp", "--schedule", "layerwise", "--epochs", str(args.epochs)]
    base += ["--data-dir", args.data_dir] if args.data_dir else []
    rows = []
    for backend in ("torch", "ort"):
        name = f"mnist-layerwise-{backend}"
        s = fit(name, [*base, "--backend", backend], "ort")
        svp = tomllib.loads((RUNS / "ort" / name / "config.toml").read_text())["svp"]
        rows.append(
            {
                "backend": backend,
                "svp": " ".join(
                    f"{k}={svp[k]}" for k in ("divergence", "beta", "alignment", "lam")
                ),
                "test_accuracy": round(100 * s["test_accuracy"], 2),
                "per_block": " / ".join(f"{100 * a:.2f}" for a in s["per_block_accuracy"]),
                "epochs": s["epochs"],
                "train_examples": s["train_examples"],
                "peak_rss_mib": round(s["peak_memory_bytes"] / 2**20),
                "wall_seconds": round(s["wall_seconds"], 1),
            }
        )
        print(rows[-1], flush=True)
    gap = abs(rows[0]["test_accuracy"] - rows[1]["test_accuracy"])
    print(table(rows, [("backend", "backend"), ("svp", "svp"), ("test acc %", "test_accuracy"),
                       ("per-block acc %", "per_block"), ("epochs per block", "epochs"),
                       ("peak RSS MiB", "peak_rss_mib"), ("wall s", "wall_seconds")]))  # fmt: skip
    print(f"accuracy gap: {gap:.2f} points")
    return {"rows": rows, "accuracy_gap_points": round(gap, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="suite", required=True)
    steps = sub.add_parser("steps")
    steps.add_argument("--kinds", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    steps.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    steps.add_argument("--steps", type=int, default=30)
    steps.add_argument("--warmup", type=int, default=5)
    mnist = sub.add_parser("mnist")
    mnist.add_argument("--data-dir")
    mnist.add_argument("--epochs", type=int, default=3)
    w = sub.add_parser("worker")
    w.add_argument("framework", choices=["torch", "ort"])
    w.add_argument("kind", choices=list(PROFILES))
    w.add_argument("export_dir", type=Path)
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--steps", type=int, default=30)
    w.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if args.suite == "worker":
        worker(args.framework, args.kind, args.export_dir, args.threads, args.steps, args.warmup)
        return
    payload = steps_suite(args) if args.suite == "steps" else mnist_suite(args)
    command = " ".join(["python", "bench/ort.py", *sys.argv[1:]])
    previous = RESULTS / "ort.json"
    results = json.loads(previous.read_text()) if previous.exists() else {}
    results[args.suite] = {"command": command, **payload}  # one file, one entry per suite
    print("wrote", write_results("ort", results))


if __name__ == "__main__":
    main()
