"""Pipelined SVP against a GPipe-style backprop pipeline: throughput and traffic.

    python bench/pipeline.py --data-dir ../shared/data
    python bench/pipeline.py --data-dir ../shared/data --train-limit 60000 --epochs 2
    python bench/pipeline.py --data-dir ../shared/data --set 'svp.projection="hadamard"'

Same model (profile mnist-mlp, 3 x 1000 MLP), data, batch (128) and split into stages, one
thread per process (OMP_NUM_THREADS=1), every configuration in its own processes, one after
another:

  svp joint, 1 process    `edge-svp fit`: the single-process reference (accuracy only)
  svp pipeline, 1 rank    `edge-svp fit --nproc 1`
  svp pipeline, 2 ranks   `edge-svp fit --nproc 2`: blocks split as the planner balances them
  svp data parallel, 2    `edge-svp fit --nproc 2 --stages 1`: two replicas, gradients summed
  bp, 1 rank              end-to-end backprop, in this script
  bp gpipe, 2 ranks       backprop over the same two stages, GPipe's schedule: each batch in
                          --micro micro-batches, every forward, then every backward; activations
                          go forward and their gradients come back (gloo send/recv)

Throughput is training examples per second of training time (the slowest rank's, evaluation
and start-up excluded). Bytes per step are measured by counting what each rank sends, and
printed next to what the shapes predict. "wait s" is the time a rank spent blocked on its
links, "CPU s" its CPU time while training: well below the training time, the rank waited or
other work on the machine had its core. Prints a table and writes bench/results/pipeline.json
(with --set, pipeline-VALUE.json), with the machine's load average: on a shared machine the
throughputs are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported, here and in every child

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import fit, results_name, table, write_results  # noqa: E402

from edge_svp.config import load_profile, override  # noqa: E402
from edge_svp.data import batches, load_data  # noqa: E402
from edge_svp.distributed.launch import free_port  # noqa: E402
from edge_svp.network import build_network  # noqa: E402
from edge_svp.training.batches import TrainData  # noqa: E402
from edge_svp.training.optim import make_optimizer  # noqa: E402


def bp_rank(rank: int, world: int, port: int, args, split: int, folder: str) -> None:
    """One rank of the backprop pipeline; writes its measurements to folder/rank{rank}.json."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=300))  # fmt: skip
    config = override(load_profile(args.profile), **{"data.data_dir": args.data_dir,
                      "data.train_limit": args.train_limit, "train.batch_size": args.batch_size})  # fmt: skip
    dataset, preprocess = load_data(config.data)
    data = TrainData(dataset, preprocess, torch.device("cpu"))
    net = build_network(config, dataset.input_shape, dataset.num_classes)
    first, stop = (0, len(net)) if world == 1 else [(0, split), (split, len(net))][rank]
    blocks = torch.nn.Sequential(*net.blocks[first:stop])
    last = stop == len(net)
    params = [*blocks.parameters(), *(net.objectives[-1].head.parameters() if last else [])]
    optimizer = make_optimizer(params, config.optim)
    with torch.no_grad():  # the shape crossing the boundary
        shape = torch.nn.Sequential(*net.blocks[:split])(torch.zeros(1, *dataset.input_shape))[
            0
        ].shape
    order = torch.Generator().manual_seed(config.train.seed)
    micro = -(-args.batch_size // (args.micro if world > 1 else 1))
    sent, waited, steps = 0, 0.0, 0

    def wait_all(works):
        nonlocal waited
        start = time.perf_counter()
        for work in works:
            work.wait()
        waited += time.perf_counter() - start

    dist.barrier()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.epochs):
        for idx in batches(len(dataset.y_train), args.batch_size, True, order):
            optimizer.zero_grad(set_to_none=True)
            chunks = idx.split(micro)
            if first == 0:  # all forwards (sending), then all backwards (receiving)
                outputs, works = [], []
                for chunk in chunks:
                    x, y = data.batch("train", chunk, train=True)
                    outputs.append(blocks(x))
                    if not last:
                        works += [dist.isend(outputs[-1].detach(), 1), dist.isend(y, 1)]
                        sent += outputs[-1].numel() * 4 + y.numel() * 8
                for chunk, h in zip(reversed(chunks), reversed(outputs), strict=True):
                    if last:
                        y = dataset.y_train[chunk]
                        loss = F.cross_entropy(net.objectives[-1].classify(h), y)
                        (loss * len(chunk) / len(idx)).backward()
                    else:
                        grad = torch.empty_like(h)
                        wait_all([dist.irecv(grad, 1)])
                        h.backward(grad)
                wait_all(works)
            else:  # receive, forward and loss for every micro-batch; then backwards, sending
                inputs, losses, works = [], [], []
                for chunk in chunks:
                    h = torch.empty(len(chunk), *shape)
                    y = torch.empty(len(chunk), dtype=torch.long)
                    wait_all([dist.irecv(h, 0), dist.irecv(y, 0)])
                    inputs.append(h.requires_grad_())
                    loss = F.cross_entropy(net.objectives[-1].classify(blocks(h)), y)
                    losses.append(loss * len(chunk) / len(idx))
                for h, loss in zip(reversed(inputs), reversed(losses), strict=True):
                    loss.backward()
                    works.append(dist.isend(h.grad, 0))
                    sent += h.grad.numel() * 4
                wait_all(works)
            optimizer.step()
            steps += 1
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    result = {"seconds": seconds, "cpu_seconds": cpu_seconds, "sent_bytes": sent,
              "wait_seconds": waited, "steps": steps}  # fmt: skip
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def run_bp(args, world: int, split: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(bp_rank, (world, free_port(), args, split, folder), nprocs=world)
        ranks = [json.loads((Path(folder) / f"rank{r}.json").read_text()) for r in range(world)]
    steps = ranks[0]["steps"]
    return {
        "samples_per_second": round(
            args.epochs * args.train_limit / max(r["seconds"] for r in ranks), 1
        ),
        # rank 0 sends activations and labels forward, rank 1 gradients back
        "forward_bytes_per_step": round(ranks[0]["sent_bytes"] / steps),
        "backward_bytes_per_step": round(ranks[1]["sent_bytes"] / steps) if world > 1 else 0,
        "allreduce_bytes_per_step": 0,
        "wait_seconds": [round(r["wait_seconds"], 2) for r in ranks],
        "cpu_seconds": [round(r["cpu_seconds"], 2) for r in ranks],
    }


def svp_row(summary: dict) -> dict:
    pipe = summary["pipeline"]
    return {
        "ranks": pipe["processes"],
        "stages": " / ".join(f"{a}-{b}" if a != b else str(a) for a, b in pipe["stage_blocks"]),
        "samples_per_second": pipe["train_samples_per_second"],
        "forward_bytes_per_step": pipe["activation_bytes_per_step"],
        "backward_bytes_per_step": 0,
        "allreduce_bytes_per_step": pipe["allreduce_bytes_per_step"],
        "wait_seconds": pipe["wait_seconds"],
        "cpu_seconds": pipe["cpu_seconds"],
        "test_accuracy": round(100 * summary["test_accuracy"], 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--profile", default="mnist-mlp")
    parser.add_argument("--train-limit", type=int, default=12800)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--micro", type=int, default=4, help="GPipe micro-batches per batch")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="svp.KEY=VALUE", help="an SVP setting for the SVP runs")  # fmt: skip
    args = parser.parse_args()
    load_start = os.getloadavg()
    base = ["--profile", args.profile, "--data-dir", args.data_dir, "--epochs", str(args.epochs),
            "--train-limit", str(args.train_limit), "--batch-size", str(args.batch_size)]  # fmt: skip
    svp = base + [arg for setting in args.settings for arg in ("--set", setting)]
    joint = fit("svp-joint", svp, "pipeline")
    one = fit("svp-pipeline-1", svp + ["--nproc", "1"], "pipeline")
    two = fit("svp-pipeline-2", svp + ["--nproc", "2"], "pipeline")
    dp = fit("svp-data-parallel-2", svp + ["--nproc", "2", "--stages", "1"], "pipeline")
    split = two["pipeline"]["stage_blocks"][0][1]  # the blocks of the first stage
    width = load_profile(args.profile).model.options.widths[split - 1]
    examples = args.train_limit / -(-args.train_limit // args.batch_size)  # per step, on average
    activations = round(examples * 4 * width)  # what crosses the boundary, per step
    labels = round(examples * 8)
    rows = [
        {"config": "svp joint, 1 process", "ranks": 1, "stages": f"1-{joint['num_blocks']}",
         "test_accuracy": round(100 * joint["test_accuracy"], 2)},
        {"config": "svp pipeline, 1 rank", **svp_row(one), "computed_bytes_per_step": 0},
        {"config": "svp pipeline, 2 ranks", **svp_row(two),
         "computed_bytes_per_step": activations + labels},
        {"config": "svp data parallel, 2 ranks", **svp_row(dp),
         "computed_bytes_per_step": 2 * 4 * dp["parameters"]},
    ]  # fmt: skip
    for name, world in [("bp, 1 rank", 1), (f"bp gpipe, 2 ranks, {args.micro} micro-batches", 2)]:
        print(f"$ {name}", flush=True)
        rows.append({
            "config": name, "ranks": world, "stages": rows[world]["stages"],
            **run_bp(args, world, split), "test_accuracy": "-",
            "computed_bytes_per_step": 2 * activations + labels if world > 1 else 0,
        })  # fmt: skip
    print(table(rows, [
        ("configuration", "config"), ("ranks", "ranks"), ("blocks per stage", "stages"),
        ("samples/s", "samples_per_second"), ("forward B/step", "forward_bytes_per_step"),
        ("backward B/step", "backward_bytes_per_step"),
        ("all-reduce B/step", "allreduce_bytes_per_step"),
        ("computed B/step", "computed_bytes_per_step"), ("wait s per rank", "wait_seconds"),
        ("CPU s per rank", "cpu_seconds"),
        ("test acc %", "test_accuracy"),
    ]))  # fmt: skip
    command = " ".join(["python", "bench/pipeline.py", *sys.argv[1:]])
    payload = {"command": command, "profile": args.profile, "train_limit": args.train_limit,
               "epochs": args.epochs, "batch_size": args.batch_size, "micro_batches": args.micro,
               "threads_per_process": 1, "cpus": os.cpu_count(),
               "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "rows": rows}  # fmt: skip
    print("wrote", write_results(results_name("pipeline", args.settings), payload))


if __name__ == "__main__":
    main()
